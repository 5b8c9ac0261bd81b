"""Protocol ``panoptica``: the BraTS 2026 evaluator ``brats-evaluation``, as an optional extra.

brats-mtl does not re-implement it: each case is passed to
``brats_evaluation.evaluate_single_exam`` with the package's bundled Panoptica config of
the task (connected components, one-to-one matching, DSC / NSD / HD95 global and per
matched lesion, detection counts). The images are handed over in memory as NIfTI images
with the reference's affine, so that any file naming works (the package's own command
line only pairs files whose names carry a BraTS 2023+ subject number), and label maps of
the three-region schemes (BraTS 2017-2021 ET = 4, MSD) are first written in the
2023 values the configs expect.

Install with ``pip install "brats-mtl[brats2026]"``. Its package metadata says AGPL-3.0
while its LICENSE file is Apache-2.0, so it stays an optional extra, never vendored.

Source: the ``brats-evaluation`` package (BraTS 2026) and Panoptica (Kofler et al.).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from brats_mtl.conventions import BRATS_2023
from brats_mtl.tasks import PED2024, LabelScheme, lesionwise_parameters

#: Result metrics of the panoptica protocol (then ``_<region>``), and the Panoptica result
#: field each comes from.
PANOPTICA_FIELDS: dict[str, str] = {
    "LesionWise_Dice": "sq_dsc",
    "LesionWise_NSD": "sq_nsd",
    "LesionWise_Hausdorff95": "sq_hd95",
    "Dice": "global_bin_dsc",
    "NSD": "global_bin_nsd",
    "Hausdorff95": "global_bin_hd95",
    "Num_TP": "tp",
    "Num_FP": "fp",
    "Num_FN": "fn",
    "F1": "rq",
}
PANOPTICA_METRICS: tuple[str, ...] = tuple(PANOPTICA_FIELDS)
#: HD95 reported for an infinite distance, as the package's result parser does (the
#: diameter of the SRI24 grid, rounded down).
PANOPTICA_INF_HD95_MM: float = 373.0

#: Bundled config per task for the 2023 values (gli-post and brats2023-valued files).
_CONFIG_OF_TASK = {
    "GLI": "gli",
    "SSA": "gli",
    "PED": "gli",  # PED 2023 used the glioma values; PED 2024+ (ped2024) uses "ped"
    "MEN": "MenPre",
    "MET": "mets",
    "GoAT": "GoAT",
}
#: Panoptica group of each region name of the schemes.
_GROUP_OF_REGION = {
    "ET": "et",
    "WT": "wt",
    "TC": "tc",
    "NETC": "netc",
    "SNFH": "snfh",
    "RC": "rc",
    "NET": "netc",  # the ped config calls label 2 "netc"
    "CC": "cc",
    "ED": "ed",
}
_MISSING = (
    "the panoptica protocol needs the optional BraTS 2026 evaluator: "
    'pip install "brats-mtl[brats2026]" (installs brats-evaluation and panoptica)'
)


def panoptica_available() -> bool:
    """True when ``brats-evaluation`` (and Panoptica) can be imported."""
    try:
        import brats_evaluation  # noqa: F401
        import panoptica  # noqa: F401
    except ImportError:
        return False
    return True


def panoptica_columns(scheme: LabelScheme) -> tuple[str, ...]:
    """Result columns for a scheme: ``LesionWise_Dice_ET``, ..., ``F1_<last region>``."""
    return tuple(f"{m}_{r}" for m in PANOPTICA_METRICS for r in scheme.region_names)


def config_name(scheme: LabelScheme, task: str) -> str:
    """The bundled ``brats-evaluation`` config that scores ``scheme`` for ``task``."""
    return "ped" if scheme is PED2024 else _CONFIG_OF_TASK[task]


def evaluate_panoptica(
    pred_values: np.ndarray,
    ref_values: np.ndarray,
    scheme: LabelScheme,
    affine: np.ndarray,
    *,
    case_id: str,
    task: str | None = None,
) -> dict[str, float]:
    """One case's panoptica row: every region of ``scheme``.

    Args:
        pred_values: uint8 (X, Y, Z), prediction in ``scheme``'s values.
        ref_values: uint8 (X, Y, Z), reference in ``scheme``'s values.
        scheme: the label scheme.
        affine: float64 (4, 4), the reference's affine (voxel spacing for distances).
        case_id: subject name passed to the evaluator; names the task when ``task`` is None.
        task: ``GLI``, ``MET``, ... (selects the bundled config).

    Returns:
        ``{column: value}`` for ``panoptica_columns(scheme)``; NaN where Panoptica gives
        none (both masks empty); an infinite HD95 is reported as 373.

    Raises:
        ValueError: if ``brats-evaluation`` is not installed (says how to install it), or
            the evaluator reports an error for the case.

    Source: ``brats_evaluation.evaluate_single_exam`` with its bundled configs.
    """
    if not panoptica_available():
        raise ValueError(_MISSING)
    import nibabel as nib
    from brats_evaluation import evaluate_single_exam

    task_name = lesionwise_parameters(case_id, task).task
    config = config_name(scheme, task_name)
    if scheme.convention is not None and scheme.convention is not BRATS_2023:
        # BraTS 2017-2021 (ET = 4) or MSD values -> the 2023 values of the configs
        pred_values = BRATS_2023.from_internal(scheme.convention.to_internal(pred_values))
        ref_values = BRATS_2023.from_internal(scheme.convention.to_internal(ref_values))
    result = evaluate_single_exam(
        nib.Nifti1Image(np.asarray(pred_values, dtype=np.uint8), affine),
        nib.Nifti1Image(np.asarray(ref_values, dtype=np.uint8), affine),
        case_id,
        _evaluator(config),
    )
    if "error" in result:
        raise ValueError(f"case {case_id}: brats-evaluation failed: {result['error']}")
    return panoptica_row(result, scheme)


def panoptica_row(result: dict, scheme: LabelScheme) -> dict[str, float]:
    """Result columns from an ``evaluate_single_exam`` result dict (groups by name)."""
    out: dict[str, float] = {}
    for metric, field in PANOPTICA_FIELDS.items():
        for region in scheme.region_names:
            group = result.get(_GROUP_OF_REGION[region])
            value = np.nan if not isinstance(group, dict) else group.get(field, np.nan)
            value = np.nan if value is None else float(value)
            if "Hausdorff95" in metric and math.isinf(value):
                value = PANOPTICA_INF_HD95_MM
            out[f"{metric}_{region}"] = value
    return out


@functools.lru_cache(maxsize=8)
def _evaluator(config: str):
    from brats_evaluation import config_path
    from panoptica import Panoptica_Evaluator

    return Panoptica_Evaluator.load_from_config(str(config_path(config)))
