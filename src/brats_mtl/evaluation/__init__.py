"""BraTS evaluation of predicted label maps against references.

The 2017-2021 online system (legacy), the 2023-2025 lesion-wise protocol and the 2026
evaluator (panoptica, optional); per-case and summary tables; the QU-BraTS score of
uncertainty maps (``evaluation.uncertainty``).

Source: BraTS online evaluation (paper Table 3), BraTS 2023 lesion-wise metrics code,
the ``brats-evaluation`` package.
"""

from brats_mtl.evaluation.lesionwise import (
    LESION_COLUMNS,
    LESIONWISE_METRICS,
    evaluate_lesionwise,
    lesionwise_region,
)
from brats_mtl.evaluation.metrics import (
    METRIC_COLUMNS,
    dice,
    evaluate_labels,
    evaluate_region_labels,
    hd95_mm,
    robust_hausdorff_mm,
    sensitivity,
    specificity,
    surface_distances_mm,
)
from brats_mtl.evaluation.protocols import PROTOCOLS, score_case
from brats_mtl.evaluation.tables import (
    RESULT_COLUMNS,
    SUMMARY_ROWS,
    evaluate_case,
    evaluate_folders,
    find_predictions,
    read_label_map,
    results_table,
    summary_rows,
    write_results_csv,
)
from brats_mtl.evaluation.uncertainty import (
    UNCERTAINTY_COLUMNS,
    UncertaintyCurves,
    UncertaintyResults,
    evaluate_uncertainty_folders,
    filtered_curves,
    qubrats_score,
    qubrats_thresholds,
    write_uncertainty_csv,
)

__all__ = [
    "LESIONWISE_METRICS",
    "LESION_COLUMNS",
    "METRIC_COLUMNS",
    "PROTOCOLS",
    "RESULT_COLUMNS",
    "SUMMARY_ROWS",
    "UNCERTAINTY_COLUMNS",
    "UncertaintyCurves",
    "UncertaintyResults",
    "dice",
    "evaluate_case",
    "evaluate_folders",
    "evaluate_labels",
    "evaluate_lesionwise",
    "evaluate_region_labels",
    "evaluate_uncertainty_folders",
    "filtered_curves",
    "find_predictions",
    "hd95_mm",
    "lesionwise_region",
    "read_label_map",
    "qubrats_score",
    "qubrats_thresholds",
    "results_table",
    "robust_hausdorff_mm",
    "score_case",
    "sensitivity",
    "specificity",
    "summary_rows",
    "surface_distances_mm",
    "write_results_csv",
    "write_uncertainty_csv",
]
