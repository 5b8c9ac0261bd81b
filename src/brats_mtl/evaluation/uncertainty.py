"""The QU-BraTS score of voxel-wise uncertainty maps (BraTS 2019-2020 uncertainty task).

Per case and region (WT, TC, ET), an uncertainty map with values in [0, 100] (0 certain,
100 most uncertain) is scored against the reference as the organisers did (Mehta et al.,
MELBA 2022, section 3; their script ``BraTS_Seg_Uncertainty.py``):

- **Thresholds**: ``n_points + 1`` values from 100 down to 0 in steps of
  ``100 / n_points`` (40 points by default: 100, 97.5, ..., 2.5, 0).
- **Filtering**: at threshold ``t`` a voxel whose uncertainty is ``> t`` is uncertain and
  filtered out; a voxel with uncertainty ``<= t`` is kept. At ``t = 100`` nothing is
  filtered.
- **Filtered Dice**: Dice of the reference and the prediction restricted to the kept
  voxels, over the whole volume; 1 when both restricted masks are empty (so filtering
  every tumour voxel gives Dice 1: the two ratios below are what penalises that).
- **Filtered true-positive ratio** (FTP): among the true positives inside the brain mask,
  the share filtered out: ``(TP - TP_kept) / (TP + eps)``.
- **Filtered true-negative ratio** (FTN): the same for true negatives inside the brain
  mask: ``(TN - TN_kept) / (TN + eps)``. ``eps`` is the float32 machine epsilon
  (1.1920929e-07), as the organisers' code, so a case without true positives has FTP 0.
- **AUCs**: the trapezoidal area under each curve over the thresholds, divided by 100
  (values in [0, 1]).
- **Score**: ``(AUC_Dice + (1 - AUC_FTP) + (1 - AUC_FTN)) / 3``, in [0, 1]: high when
  filtering uncertain voxels raises Dice quickly while few correct voxels are filtered.

**Brain mask** (where TP and TN are counted): by default the organisers' rule, the T1
image binarised at > 0 (their script's brain-mask argument takes the T1 image and sets
every positive voxel to 1). ``"any"`` (any modality non-zero: the mask brats-mtl crops
around) and ``"all"`` (all four modalities non-zero) are offered too.

The organisers' code sums in float32; this module counts voxels exactly and divides in
float64, so values agree to about 1e-7. Counting is done once per voxel class with sorted
uncertainty values, so the 41 thresholds cost about as much as one.

Source: Mehta et al., "QU-BraTS: MICCAI BraTS 2020 Challenge on Quantifying Uncertainty
in Brain Tumor Segmentation", MELBA 2022; the organisers' scoring script in the public
``RagMeh11/QU-BraTS`` repository (threshold grid, filtering rule, ratios, AUC, empty
masks).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy.integrate import trapezoid

from brats_mtl.atomic import atomic_output
from brats_mtl.conventions import REGIONS, UNCERTAINTY_MAP_WORDS, uncertainty_map_name
from brats_mtl.evaluation.metrics import region_mask
from brats_mtl.tasks import (
    LabelScheme,
    check_scheme_for_case,
    check_values,
    get_label_scheme,
    infer_label_scheme,
)

if TYPE_CHECKING:
    from brats_mtl.data import CaseFiles

logger = logging.getLogger(__name__)

#: Threshold points of the organisers' script (its ``--num_points`` default): 41 thresholds.
QUBRATS_N_POINTS: int = 40
#: The organisers' epsilon in the ratios' denominators: float32 machine epsilon.
RATIO_EPS: float = float(np.finfo(np.float32).eps)
#: Brain-mask rules: "t1" (T1 > 0, the organisers'), "any" / "all" modalities non-zero.
BRAIN_MASK_RULES: tuple[str, ...] = ("t1", "any", "all")
#: Regions scored, in the organisers' order.
UNCERTAINTY_REGIONS: tuple[str, ...] = tuple(UNCERTAINTY_MAP_WORDS)
#: Per-region columns of the score table, e.g. ``AUC_Dice_WT``, ``AUC_FTP_WT``, ...
UNCERTAINTY_METRICS: tuple[str, ...] = ("AUC_Dice", "AUC_FTP", "AUC_FTN", "Score")
UNCERTAINTY_COLUMNS: tuple[str, ...] = tuple(
    f"{metric}_{region}" for region in UNCERTAINTY_REGIONS for metric in UNCERTAINTY_METRICS
)
#: Columns of the per-threshold table (``curves``).
CURVE_COLUMNS: tuple[str, ...] = ("Label", "region", "threshold", "Dice", "FTP", "FTN")


def qubrats_thresholds(n_points: int = QUBRATS_N_POINTS) -> np.ndarray:
    """The uncertainty thresholds swept, from 100 down to 0.

    Args:
        n_points: number of steps; the organisers' default is 40.

    Returns:
        float64, (n_points + 1,): ``100, 100 - 100/n, ..., 0`` (for 40: 100, 97.5, ...,
        2.5, 0), the values of the organisers' ``arange(0, 100 + eps, 100 / n)`` reversed.

    Raises:
        ValueError: if ``n_points`` is below 1.

    Source: ``BraTS_Seg_Uncertainty.py`` (QU-BraTS organisers).
    """
    if n_points < 1:
        raise ValueError(f"the number of threshold points must be >= 1, got {n_points}")
    return (np.arange(n_points + 1, dtype=np.float64) * (100.0 / n_points))[::-1].copy()


@dataclass(frozen=True, eq=False)
class UncertaintyCurves:
    """Filtered Dice, FTP and FTN ratios of one case and region at each threshold.

    Attributes:
        thresholds: float64 (K,), descending (:func:`qubrats_thresholds`).
        dice: float64 (K,), filtered Dice at each threshold.
        ftp: float64 (K,), filtered true-positive ratio.
        ftn: float64 (K,), filtered true-negative ratio.
    """

    thresholds: np.ndarray
    dice: np.ndarray
    ftp: np.ndarray
    ftn: np.ndarray

    @property
    def auc_dice(self) -> float:
        """Area under the filtered-Dice curve / 100, in [0, 1]."""
        return curve_auc(self.thresholds, self.dice)

    @property
    def auc_ftp(self) -> float:
        """Area under the FTP curve / 100, in [0, 1]."""
        return curve_auc(self.thresholds, self.ftp)

    @property
    def auc_ftn(self) -> float:
        """Area under the FTN curve / 100, in [0, 1]."""
        return curve_auc(self.thresholds, self.ftn)

    @property
    def score(self) -> float:
        """``(AUC_Dice + (1 - AUC_FTP) + (1 - AUC_FTN)) / 3`` (:func:`qubrats_score`)."""
        return qubrats_score(self.auc_dice, self.auc_ftp, self.auc_ftn)


def curve_auc(thresholds: np.ndarray, values: np.ndarray) -> float:
    """Trapezoidal area under ``values`` over ``thresholds``, divided by 100.

    Args:
        thresholds: float (K,), monotonic (either direction), in [0, 100].
        values: float (K,), the curve at each threshold.

    Returns:
        The area as a positive number (the organisers' ``sklearn.metrics.auc`` of the
        descending grid), divided by 100: in [0, 1] for values in [0, 1] over [0, 100].

    Raises:
        ValueError: if the lengths differ or the thresholds are not monotonic.
    """
    x = np.asarray(thresholds, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"thresholds {x.shape} and values {y.shape} must be equal 1-D shapes")
    steps = np.diff(x)
    if not ((steps >= 0).all() or (steps <= 0).all()):
        raise ValueError("thresholds must be monotonic to integrate a curve over them")
    return abs(float(trapezoid(y, x))) / 100.0


def qubrats_score(auc_dice: float, auc_ftp: float, auc_ftn: float) -> float:
    """The QU-BraTS score of one region: ``(AUC_Dice + (1 - AUC_FTP) + (1 - AUC_FTN)) / 3``.

    Source: Mehta et al., MELBA 2022, section 3 (the ranking score).
    """
    return (auc_dice + (1.0 - auc_ftp) + (1.0 - auc_ftn)) / 3.0


def filtered_curves(
    ref_mask: np.ndarray,
    pred_mask: np.ndarray,
    uncertainty: np.ndarray,
    brain_mask: np.ndarray,
    thresholds: np.ndarray | None = None,
) -> UncertaintyCurves:
    """Filtered Dice, FTP and FTN of one region at each threshold (module docstring).

    Args:
        ref_mask: bool (X, Y, Z), reference region.
        pred_mask: bool (X, Y, Z), predicted region.
        uncertainty: (X, Y, Z), any real dtype, values in [0, 100] (0 certain).
        brain_mask: bool (X, Y, Z), where true positives and negatives are counted.
        thresholds: descending thresholds; default :func:`qubrats_thresholds`.

    Returns:
        :class:`UncertaintyCurves`.

    Raises:
        ValueError: if the shapes differ, or ``uncertainty`` holds NaN or values outside
            [0, 100].

    Source: ``BraTS_Seg_Uncertainty.py`` (QU-BraTS organisers); Mehta et al., MELBA 2022.
    """
    ref = np.asarray(ref_mask, dtype=bool)
    pred = np.asarray(pred_mask, dtype=bool)
    brain = np.asarray(brain_mask, dtype=bool)
    unc = np.asarray(uncertainty, dtype=np.float64)
    shapes = {ref.shape, pred.shape, brain.shape, unc.shape}
    if len(shapes) != 1:
        raise ValueError(
            f"reference {ref.shape}, prediction {pred.shape}, uncertainty {unc.shape} and "
            f"brain mask {brain.shape} must have one shape"
        )
    check_uncertainty_values(unc, "uncertainty map")
    th = qubrats_thresholds() if thresholds is None else np.asarray(thresholds, np.float64)

    def kept(mask: np.ndarray) -> np.ndarray:
        """Voxels of ``mask`` whose uncertainty is <= each threshold (int64, (K,))."""
        return np.searchsorted(np.sort(unc[mask]), th, side="right")

    tp = ref & pred
    intersection = kept(tp)
    union = kept(pred) + kept(ref)
    dice = np.where(union == 0, 1.0, 2.0 * intersection / np.maximum(union, 1))
    tp_brain = tp & brain
    tn_brain = ~ref & ~pred & brain
    n_tp, n_tn = int(tp_brain.sum()), int(tn_brain.sum())
    ftp = (n_tp - kept(tp_brain)) / (n_tp + RATIO_EPS)
    ftn = (n_tn - kept(tn_brain)) / (n_tn + RATIO_EPS)
    return UncertaintyCurves(th, dice.astype(np.float64), ftp, ftn)


def check_uncertainty_values(uncertainty: np.ndarray, what: str) -> None:
    """Raise ValueError (naming ``what``) unless every value is finite and in [0, 100]."""
    values = np.asarray(uncertainty)
    if values.size == 0:
        return
    low, high = float(np.min(values)), float(np.max(values))
    if not (np.isfinite(low) and np.isfinite(high)) or low < 0.0 or high > 100.0:
        raise ValueError(
            f"{what} holds values from {low} to {high}; QU-BraTS maps hold uncertainties "
            "in [0, 100] (0 certain, 100 most uncertain)"
        )


def brain_mask_of(image: np.ndarray, rule: str = "t1") -> np.ndarray:
    """The brain mask that true positives and negatives are counted in.

    Args:
        image: float32 (4, X, Y, Z), channels t1, t1ce, t2, flair (``data.load_case``).
        rule: "t1" (T1 > 0, the organisers'), "any" (any modality non-zero, the mask
            brats-mtl predicts in) or "all" (all four modalities non-zero).

    Returns:
        bool (X, Y, Z).

    Raises:
        ValueError: on an unknown rule or an image that is not (4, X, Y, Z).

    Source: the organisers' script (brain mask from the T1 image, > 0); docs/design.md section 2.1 for
    "any".
    """
    image = np.asarray(image)
    if image.ndim != 4 or image.shape[0] != 4:
        raise ValueError(f"image must have shape (4, X, Y, Z), got {image.shape}")
    if rule == "t1":
        return image[0] > 0
    if rule == "any":
        return np.any(image != 0, axis=0)
    if rule == "all":
        return np.all(image != 0, axis=0)
    raise ValueError(
        f"brain mask rule {rule!r} is not one of {list(BRAIN_MASK_RULES)}; use t1 (T1 > 0, "
        "the QU-BraTS organisers'), any or all (modalities non-zero)"
    )


def region_curves(
    pred_labels: np.ndarray,
    ref_labels: np.ndarray,
    maps: Mapping[str, np.ndarray],
    brain_mask: np.ndarray,
    n_points: int = QUBRATS_N_POINTS,
    regions: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, UncertaintyCurves]:
    """:func:`filtered_curves` of WT, TC and ET from label maps and the three maps.

    Args:
        pred_labels: integer (X, Y, Z) label map of the prediction, in the values that
            ``regions`` name.
        ref_labels: integer (X, Y, Z) label map of the reference, in the same values.
        maps: region ("WT", "TC", "ET") -> (X, Y, Z) uncertainty in [0, 100].
        brain_mask: bool (X, Y, Z).
        n_points: threshold steps (:func:`qubrats_thresholds`).
        regions: region name -> the labels it unites, e.g. a label scheme's
            ``tasks.LabelScheme.regions`` in file values (WT, TC and ET are used);
            default ``conventions.REGIONS`` (internal labels {0, 1, 2, 4}).

    Returns:
        region -> curves, in the order WT, TC, ET.

    Raises:
        ValueError: if a region's map is missing, or as :func:`filtered_curves`.
    """
    absent = [r for r in UNCERTAINTY_REGIONS if r not in maps]
    if absent:
        raise ValueError(f"uncertainty maps of {absent} are missing")
    thresholds = qubrats_thresholds(n_points)
    regions = REGIONS if regions is None else regions
    return {
        region: filtered_curves(
            region_mask(ref_labels, regions[region]),
            region_mask(pred_labels, regions[region]),
            maps[region],
            brain_mask,
            thresholds,
        )
        for region in UNCERTAINTY_REGIONS
    }


def score_row(case_id: str, curves: Mapping[str, UncertaintyCurves]) -> dict[str, object]:
    """One row of the score table: ``Label`` and :data:`UNCERTAINTY_COLUMNS`."""
    row: dict[str, object] = {"Label": case_id}
    for region in UNCERTAINTY_REGIONS:
        c = curves[region]
        row[f"AUC_Dice_{region}"] = c.auc_dice
        row[f"AUC_FTP_{region}"] = c.auc_ftp
        row[f"AUC_FTN_{region}"] = c.auc_ftn
        row[f"Score_{region}"] = c.score
    return row


def random_uncertainty_maps(
    shape: tuple[int, int, int], seed: int | Sequence[int]
) -> dict[str, np.ndarray]:
    """Uninformative baseline maps: independent uniform integers in [0, 100] per voxel.

    Args:
        shape: (X, Y, Z).
        seed: seed of ``numpy.random.default_rng`` (e.g. ``[seed, case index]``).

    Returns:
        region -> uint8 (X, Y, Z) map, for WT, TC, ET.
    """
    rng = np.random.default_rng(seed)
    return {r: rng.integers(0, 101, size=shape, dtype=np.uint8) for r in UNCERTAINTY_REGIONS}


def uncertainty_map_paths(pred_dir: str | Path, case_id: str) -> dict[str, Path]:
    """``PRED_DIR/<ID>_unc_{whole,core,enhance}.nii.gz`` by region."""
    return {r: Path(pred_dir) / uncertainty_map_name(case_id, r) for r in UNCERTAINTY_REGIONS}


def read_uncertainty_map(path: str | Path, shape: tuple[int, ...]) -> np.ndarray:
    """Read one uncertainty map as float64 (scaling applied, as nibabel's ``get_fdata``).

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if it is not 3-D of ``shape``, or its values leave [0, 100] (names
            the file).
    """
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"uncertainty map {path} does not exist")
    try:
        data = np.asarray(nib.load(str(path)).get_fdata(), dtype=np.float64)
    except Exception as error:  # noqa: BLE001 - any read problem is named with the file
        raise ValueError(f"uncertainty map {path} is unreadable: {error}") from error
    if data.ndim > 3 and all(n == 1 for n in data.shape[3:]):
        data = data.reshape(data.shape[:3])
    if data.shape != tuple(shape):
        raise ValueError(
            f"uncertainty map {path} has shape {data.shape}; its label map has {tuple(shape)}"
        )
    check_uncertainty_values(data, f"uncertainty map {path}")
    return data


@dataclass(frozen=True, eq=False)
class UncertaintyResults:
    """What :func:`evaluate_uncertainty_folders` returns.

    Attributes:
        per_case: one row per scored case: ``Label`` and :data:`UNCERTAINTY_COLUMNS`.
        random: the same for uniform random maps on the same cases (the uninformative
            baseline), or None when not asked.
        zero: the same for maps of 0 everywhere (every voxel certain: nothing is ever
            filtered, so the score is ``(Dice + 2) / 3`` of the unfiltered Dice): the
            baseline of a segmentation without uncertainty.
        curves: per case, region and threshold: :data:`CURVE_COLUMNS`.
        missing: ``"predictions"`` (reference cases without label map), ``"maps"``
            (predicted cases without their three maps), ``"references"`` (predictions
            without a labeled reference case); none of these is scored.
    """

    per_case: pd.DataFrame
    random: pd.DataFrame | None
    zero: pd.DataFrame
    curves: pd.DataFrame
    missing: dict[str, list[str]]


def evaluate_uncertainty_folders(
    pred_dir: str | Path,
    ref_dir: str | Path,
    *,
    brain_mask: str = "t1",
    n_points: int = QUBRATS_N_POINTS,
    random_seed: int | None = None,
    labels: LabelScheme | str | None = None,
) -> UncertaintyResults:
    """The QU-BraTS score of every predicted case with uncertainty maps and a reference.

    Label maps are scored in their label scheme's own values and regions (``labels``, or
    per case as ``evaluate`` infers it: layout, case ID, values), so WT, TC and ET are the
    scheme's (e.g. TC = NETC + ET for BraTS 2023+ gliomas, RC in no region); predictions
    must be on the reference's voxel grid, up to an axis permutation or flip, which is
    undone for the label map and its three maps alike (``grid.onto_reference_grid``).

    Args:
        pred_dir: ``<ID>.nii.gz`` label maps with ``<ID>_unc_whole.nii.gz``,
            ``<ID>_unc_core.nii.gz`` and ``<ID>_unc_enhance.nii.gz`` beside them (what
            ``brats-mtl predict --uncertainty`` writes).
        ref_dir: labeled cases with their images in any supported layout
            (``data.discover_cases``): the reference label maps and the images the brain
            mask comes from.
        brain_mask: :data:`BRAIN_MASK_RULES` (:func:`brain_mask_of`).
        n_points: threshold steps (:func:`qubrats_thresholds`).
        random_seed: also score uniform random maps (:func:`random_uncertainty_maps`,
            seeded with ``[random_seed, case index]``) on the same cases.
        labels: the label scheme of the references and predictions (or its name, see
            ``brats_mtl.tasks``); None infers it per case.

    Returns:
        :class:`UncertaintyResults` (with the all-zero-map baseline); rows sorted by case ID.

    Raises:
        FileNotFoundError: if a folder does not exist.
        ValueError: if ``ref_dir`` holds no labeled case with images, no case has both a
            prediction with its maps and a reference, or a file is bad (grid, values
            outside the scheme, map values; names the file).

    Source: Mehta et al., MELBA 2022; the organisers' ``BraTS_Seg_Uncertainty.py``.
    """
    from brats_mtl.data import discover_cases, load_case
    from brats_mtl.evaluation.tables import find_predictions

    brain_mask_of(np.zeros((4, 1, 1, 1)), brain_mask)  # validate the rule first
    qubrats_thresholds(n_points)
    try:
        references = {c.case_id: c for c in discover_cases(ref_dir, invalid=[]) if c.labeled}
    except ValueError as error:
        raise ValueError(
            f"reference folder {ref_dir}: {error}. evaluate-uncertainty needs the labeled "
            "cases with their images (the brain mask comes from the T1 image)"
        ) from error
    if not references:
        raise ValueError(f"reference folder {ref_dir} holds no labeled case")
    predictions = find_predictions(pred_dir)
    with_maps = {
        cid: path
        for cid, path in predictions.items()
        if all(p.is_file() for p in uncertainty_map_paths(pred_dir, cid).values())
    }
    missing = {
        "predictions": sorted(set(references) - set(predictions)),
        "maps": sorted(set(predictions) & set(references) - set(with_maps)),
        "references": sorted(set(predictions) - set(references)),
    }
    for side, what in (
        ("predictions", "reference cases without prediction"),
        ("maps", "predicted cases without their three uncertainty maps"),
        ("references", "predictions without a labeled reference case"),
    ):
        if missing[side]:
            logger.warning(
                "%d %s (not scored): %s", len(missing[side]), what, ", ".join(missing[side])
            )
    case_ids = sorted(set(with_maps) & set(references))
    if not case_ids:
        raise ValueError(
            f"no case of {pred_dir} has a label map, its three uncertainty maps "
            f"(<ID>_unc_whole/core/enhance.nii.gz) and a labeled reference in {ref_dir}; "
            "predict with --uncertainty entropy (or disagreement) first"
        )
    rows, random_rows, zero_rows, curve_rows = [], [], [], []
    for index, case_id in enumerate(case_ids):
        files = references[case_id]
        case = load_case(files, load_labels=False)  # the labels are read in their scheme
        mask = brain_mask_of(case.image, brain_mask)
        ref_labels, pred_labels, maps, scheme = _case_in_scheme(
            files, with_maps[case_id], uncertainty_map_paths(pred_dir, case_id), labels
        )
        shape = ref_labels.shape
        curves = region_curves(pred_labels, ref_labels, maps, mask, n_points, scheme.regions)
        rows.append(score_row(case_id, curves))
        for region, c in curves.items():
            for t, d, p, n in zip(c.thresholds, c.dice, c.ftp, c.ftn, strict=True):
                curve_rows.append((case_id, region, float(t), float(d), float(p), float(n)))
        certain = dict.fromkeys(UNCERTAINTY_REGIONS, np.zeros(shape, np.uint8))
        zero_curves = region_curves(
            pred_labels, ref_labels, certain, mask, n_points, scheme.regions
        )
        zero_rows.append(score_row(case_id, zero_curves))
        if random_seed is not None:
            noise = random_uncertainty_maps(shape, [random_seed, index])
            random_curves = region_curves(
                pred_labels, ref_labels, noise, mask, n_points, scheme.regions
            )
            random_rows.append(score_row(case_id, random_curves))
        logger.info(
            "%s: QU-BraTS score WT %.4f, TC %.4f, ET %.4f",
            case_id,
            *(rows[-1][f"Score_{r}"] for r in UNCERTAINTY_REGIONS),
        )
    columns = ["Label", *UNCERTAINTY_COLUMNS]
    return UncertaintyResults(
        per_case=pd.DataFrame(rows, columns=columns),
        random=None if random_seed is None else pd.DataFrame(random_rows, columns=columns),
        zero=pd.DataFrame(zero_rows, columns=columns),
        curves=pd.DataFrame(curve_rows, columns=list(CURVE_COLUMNS)),
        missing=missing,
    )


def _case_in_scheme(
    files: CaseFiles,
    pred_path: Path,
    map_paths: Mapping[str, Path],
    labels: LabelScheme | str | None,
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], LabelScheme]:
    """Reference and prediction in the case's label scheme, the maps on its grid.

    Returns:
        ``(ref_values, pred_values, maps, scheme)``: the reference's and the prediction's
        label values (X, Y, Z) in the scheme's file values, the prediction and its maps
        (region -> float64 (X, Y, Z)) reoriented onto the reference grid when needed.

    Raises:
        ValueError: as :func:`brats_mtl.evaluation.grid.onto_reference_grid` for the
            prediction or a map on another grid; values outside the scheme; a map of
            another shape than its label map (each names the file).
    """
    import nibabel as nib

    from brats_mtl.data import load_raw_label_map
    from brats_mtl.evaluation.grid import onto_reference_grid
    from brats_mtl.evaluation.protocols import in_scheme, present_values

    ref_values, ref_affine, _ = load_raw_label_map(files.seg)
    present = present_values(ref_values)
    scheme = (
        get_label_scheme(labels)
        if labels is not None
        else infer_label_scheme(files.case_id, files.label_convention, present)
    )
    check_scheme_for_case(scheme, files.case_id, files.seg)
    check_values(scheme, present, files.seg, "reference")
    pred_raw, pred_affine, _ = load_raw_label_map(pred_path)
    pred_raw = in_scheme(pred_raw, pred_path, scheme, None, infer=labels is None)
    pred_values, _ = onto_reference_grid(
        pred_raw, pred_affine, pred_path, ref_values.shape, ref_affine, files.seg
    )
    maps = {}
    for region, path in map_paths.items():
        data = read_uncertainty_map(path, pred_raw.shape)
        # each map onto the reference grid by its own affine (refused if on another grid)
        data, _ = onto_reference_grid(
            data, nib.load(str(path)).affine, path, ref_values.shape, ref_affine, files.seg
        )
        maps[region] = data
    return ref_values, pred_values, maps, scheme


def uncertainty_table(per_case: pd.DataFrame, *, ddof: int = 1) -> pd.DataFrame:
    """Per-case rows, then the online system's summary rows (Mean, StdDev, Median, ...).

    Args:
        per_case: ``Label`` and :data:`UNCERTAINTY_COLUMNS` (e.g.
            ``UncertaintyResults.per_case``).
        ddof: of StdDev (``evaluation.tables.summary_rows``).
    """
    from brats_mtl.evaluation.tables import summary_rows

    cases = per_case.loc[:, ["Label", *UNCERTAINTY_COLUMNS]]
    summary = summary_rows(per_case, ddof=ddof, columns=UNCERTAINTY_COLUMNS)
    return pd.concat([cases, summary], ignore_index=True)


def write_uncertainty_csv(
    per_case: pd.DataFrame, path: str | Path, *, overwrite: bool = False
) -> Path:
    """Write :func:`uncertainty_table` as CSV, atomically.

    Raises:
        FileExistsError: if ``path`` exists and ``overwrite`` is False.
    """
    with atomic_output(path, overwrite=overwrite) as tmp:
        uncertainty_table(per_case).to_csv(tmp, index=False)
    return Path(path)


def mean_scores(per_case: pd.DataFrame) -> dict[str, float]:
    """Mean over cases of each column of :data:`UNCERTAINTY_COLUMNS`."""
    return {c: float(pd.to_numeric(per_case[c]).mean()) for c in UNCERTAINTY_COLUMNS}
