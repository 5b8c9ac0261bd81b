"""Evaluation as the BraTS 2017-2020 online system: per-case metrics and summary tables;
the QU-BraTS score of uncertainty maps (``evaluation.uncertainty``).

Source: DESIGN.md section 6; paper Table 3.
"""

from brats_mtl.evaluation.metrics import (
    METRIC_COLUMNS,
    dice,
    evaluate_labels,
    hd95_mm,
    sensitivity,
    specificity,
)
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
    "METRIC_COLUMNS",
    "RESULT_COLUMNS",
    "SUMMARY_ROWS",
    "UNCERTAINTY_COLUMNS",
    "UncertaintyCurves",
    "UncertaintyResults",
    "dice",
    "evaluate_case",
    "evaluate_folders",
    "evaluate_labels",
    "evaluate_uncertainty_folders",
    "filtered_curves",
    "find_predictions",
    "hd95_mm",
    "read_label_map",
    "qubrats_score",
    "qubrats_thresholds",
    "results_table",
    "sensitivity",
    "specificity",
    "summary_rows",
    "write_results_csv",
    "write_uncertainty_csv",
]
