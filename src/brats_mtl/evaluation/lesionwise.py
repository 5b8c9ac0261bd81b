"""Lesion-wise Dice and HD95 of the BraTS 2023-2025 challenges, per case and region.

Definition (BraTS 2023 lesion-wise metrics code, ``rachitsaluja/BraTS-2023-Metrics``),
for each region of the case's label scheme:

1. Reference lesions: the 26-connected components of the reference mask, merged when
   they fall into one 26-connected component of the reference dilated ``d`` times by the
   3-D structuring element of connectivity 2 (``d`` = the task's dilation iterations).
   Predicted components: the 26-connected components of the prediction.
2. A reference lesion's match: the union of every predicted component that touches the
   lesion dilated ``d`` times. Lesion Dice and HD95 between the lesion and its match (HD95
   area-weighted: ``metrics.robust_hausdorff_mm``); a lesion with no match scores Dice 0,
   HD95 374 mm.
3. False positives: predicted components matched to no reference lesion (a component
   touching only a lesion too small to count is not one). Each scores Dice 0, HD95 374.
4. Reference lesions of at most the task's volume threshold (mm^3) are left out.
   Case score = (sum over kept lesions + false-positive penalties) / (kept lesions +
   false positives); with neither: Dice 1, HD95 0.
5. Also per region: Dice and HD95 of the whole region as that code computes them (both
   empty: 1 and 0; one empty: Dice 0, HD95 374; HD95 area-weighted, not medpy's),
   sensitivity and specificity over the volume, and the counts of true-positive, false-
   positive and missed (kept) lesions.

Volumes and distances use the reference's voxel spacing (the 2023 code reads the
prediction's header; both must agree, and ``evaluate`` warns when they do not). The
volume threshold is in mm^3 as in that code (voxels at 1 mm).

Everything is computed on the bounding box of the case's tumour voxels. That is exact:
dilating inside the box gives the whole-volume dilation restricted to the box (a path
of structuring-element steps leaving the box can be clamped back into it, step by step),
and no predicted voxel lies outside the box. The dilated component of a merged lesion is
the lesion's own dilation, so one dilation and one labelling per region replace the
code's per-lesion whole-volume dilations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from brats_mtl.conventions import Box
from brats_mtl.evaluation.metrics import (
    _bounding_box,
    _counts,
    _dice,
    _sensitivity,
    _spacing,
    _specificity,
    robust_hausdorff_mm,
)
from brats_mtl.tasks import LESIONWISE_HD95_PENALTY_MM, LabelScheme, LesionwiseParameters

#: Metric names of the lesion-wise result table, in column order (then ``_<region>``):
#: the names of the BraTS 2023+ online evaluation (Synapse) result files.
LESIONWISE_METRICS: tuple[str, ...] = (
    "LesionWise_Dice",
    "LesionWise_Hausdorff95",
    "Dice",
    "Hausdorff95",
    "Sensitivity",
    "Specificity",
    "Num_TP",
    "Num_FP",
    "Num_FN",
)
#: Columns of the per-lesion table (``evaluate_lesionwise(..., lesions=[])``).
LESION_COLUMNS: tuple[str, ...] = (
    "Label",
    "Region",
    "Lesion",
    "Volume_mm3",
    "Matched_Components",
    "Dice",
    "Hausdorff95",
    "Counted",
)

_STRUCTURE = ndimage.generate_binary_structure(3, 2)  # 18-neighbourhood


def lesionwise_columns(scheme: LabelScheme) -> tuple[str, ...]:
    """Result columns for a scheme: ``LesionWise_Dice_ET``, ..., ``Num_FN_<last region>``."""
    return tuple(f"{m}_{r}" for m in LESIONWISE_METRICS for r in scheme.region_names)


@dataclass(frozen=True)
class Lesion:
    """One (merged) reference lesion and its match.

    Attributes:
        volume_mm3: voxels x voxel volume.
        matched_components: number of predicted components touching its dilation.
        dice: lesion Dice with its match (0 when unmatched).
        hd95_mm: area-weighted HD95 with its match (374 when unmatched).
        counted: volume above the task's threshold (enters the scores and counts).
    """

    volume_mm3: float
    matched_components: int
    dice: float
    hd95_mm: float
    counted: bool


@dataclass(frozen=True)
class RegionScores:
    """Lesion-wise and whole-region scores of one region of one case.

    Attributes:
        lesionwise_dice, lesionwise_hd95_mm: the case's lesion-wise scores.
        dice, hd95_mm: whole-region Dice and area-weighted HD95 (one empty: 0 and 374).
        sensitivity, specificity: voxel-wise over the volume.
        num_tp, num_fp, num_fn: counted lesions matched, false-positive components,
            counted lesions missed.
        lesions: every reference lesion, counted or not, in labelling order.
    """

    lesionwise_dice: float
    lesionwise_hd95_mm: float
    dice: float
    hd95_mm: float
    sensitivity: float
    specificity: float
    num_tp: int
    num_fp: int
    num_fn: int
    lesions: tuple[Lesion, ...]


def lesionwise_region(
    pred_mask: np.ndarray,
    ref_mask: np.ndarray,
    parameters: LesionwiseParameters,
    spacing_mm: Sequence[float] = (1.0, 1.0, 1.0),
    *,
    n_voxels: int | None = None,
) -> RegionScores:
    """Lesion-wise scores of one region (module docstring).

    Args:
        pred_mask: bool (X, Y, Z), predicted region (may be a crop of the volume that holds
            every foreground voxel of both masks).
        ref_mask: bool (X, Y, Z), reference region, same shape.
        parameters: the task's dilation and volume threshold.
        spacing_mm: voxel size along X, Y, Z in mm.
        n_voxels: voxels of the whole volume, for specificity; default ``pred_mask.size``.

    Returns:
        The region's scores.

    Raises:
        ValueError: if the shapes differ or ``spacing_mm`` is invalid.

    Source: BraTS 2023 lesion-wise metrics code (``get_LesionWiseScores``,
    ``get_LesionWiseResults``).
    """
    import cc3d

    pred = np.asarray(pred_mask).astype(bool, copy=False)
    ref = np.asarray(ref_mask).astype(bool, copy=False)
    if pred.shape != ref.shape or pred.ndim != 3:
        raise ValueError(
            f"prediction mask shape {pred.shape} and reference mask shape {ref.shape} "
            "must be the same 3-D grid (X, Y, Z)"
        )
    spacing = _spacing(spacing_mm)
    n_voxels = pred.size if n_voxels is None else n_voxels
    penalty = LESIONWISE_HD95_PENALTY_MM
    sx, sy, sz = (float(s) for s in spacing)

    tp, fp, fn = _counts(pred, ref)
    box = _bounding_box(pred | ref)
    if box is None:  # both empty
        return RegionScores(1.0, 0.0, 1.0, 0.0, 1.0, _specificity(0, 0, 0, n_voxels), 0, 0, 0, ())
    pred, ref = pred[box], ref[box]
    if pred.any() and ref.any():
        full_hd95 = robust_hausdorff_mm(ref, pred, spacing)
    else:
        full_hd95 = penalty

    pred_cc = cc3d.connected_components(pred, connectivity=26)
    n_pred = int(pred_cc.max())
    # Reference lesions live in the reference's box grown by the dilation (``near``).
    d = parameters.dilation_iterations
    near = _grow(_bounding_box(ref), d, ref.shape)
    if near is not None:
        dilated = ndimage.binary_dilation(ref[near], structure=_STRUCTURE, iterations=d)
        dilated_cc = cc3d.connected_components(dilated, connectivity=26)
    else:
        near = (slice(0, 0),) * 3
        dilated_cc = np.zeros((0, 0, 0), dtype=np.uint32)
    n_lesions = int(dilated_cc.max(initial=0))
    lesion_near = np.where(ref[near], dilated_cc, 0)  # merged lesions, numbered as dilated
    lesion_of_voxel = np.zeros(ref.shape, dtype=lesion_near.dtype)
    lesion_of_voxel[near] = lesion_near

    # (lesion, predicted component) pairs: the component touches the lesion's dilation,
    # which is the lesion's dilated component.
    pred_near = pred_cc[near]
    both = (dilated_cc > 0) & (pred_near > 0)
    pairs = np.unique(
        dilated_cc[both].astype(np.int64) * (n_pred + 1) + pred_near[both].astype(np.int64)
    )
    pair_lesion, pair_component = np.divmod(pairs, n_pred + 1)
    matched_any = np.zeros(n_pred + 1, dtype=bool)
    matched_any[pair_component] = True

    lesion_voxels = np.bincount(lesion_near.ravel(), minlength=n_lesions + 1)
    component_voxels = np.bincount(pred_cc.ravel(), minlength=n_pred + 1)
    overlap = np.bincount(lesion_near[pred[near]].ravel(), minlength=n_lesions + 1)
    offset = [b.start for b in near]
    lesion_boxes = [
        tuple(slice(b.start + o, b.stop + o) for b, o in zip(box, offset, strict=True))
        for box in (ndimage.find_objects(lesion_near) if n_lesions else [])
    ]
    component_boxes = ndimage.find_objects(pred_cc)

    lesions = []
    starts = np.searchsorted(pair_lesion, np.arange(1, n_lesions + 2))
    for k in range(1, n_lesions + 1):
        components = pair_component[starts[k - 1] : starts[k]]
        volume_mm3 = float(lesion_voxels[k]) * sx * sy * sz  # the 2023 code's order
        if components.size == 0:
            dice, hd95 = 0.0, penalty
        else:
            matched_voxels = int(component_voxels[components].sum())
            dice = 2.0 * int(overlap[k]) / (matched_voxels + int(lesion_voxels[k]))
            if n_lesions == 1 and components.size == n_pred:
                hd95 = full_hd95  # the lesion is the region, its match the prediction
            else:
                sub = _union_box(
                    [lesion_boxes[k - 1], *(component_boxes[c - 1] for c in components)]
                )
                lesion_mask = lesion_of_voxel[sub] == k
                match_mask = np.isin(pred_cc[sub], components)
                hd95 = robust_hausdorff_mm(lesion_mask, match_mask, spacing)
            if not np.isfinite(hd95):
                hd95 = penalty
        lesions.append(
            Lesion(
                volume_mm3=volume_mm3,
                matched_components=int(components.size),
                dice=float(dice),
                hd95_mm=float(hd95),
                counted=volume_mm3 > parameters.volume_threshold_mm3,
            )
        )

    num_fp = int(n_pred - np.count_nonzero(matched_any[1:]))
    counted = [lesion for lesion in lesions if lesion.counted]
    denominator = len(counted) + num_fp
    if denominator == 0:
        lesionwise_dice, lesionwise_hd95 = 1.0, 0.0
    else:
        lesionwise_dice = sum(lesion.dice for lesion in counted) / denominator
        lesionwise_hd95 = (sum(lesion.hd95_mm for lesion in counted) + num_fp * penalty) / (
            denominator
        )
    return RegionScores(
        lesionwise_dice=float(lesionwise_dice),
        lesionwise_hd95_mm=float(lesionwise_hd95),
        dice=_dice(tp, fp, fn),
        hd95_mm=float(full_hd95),
        sensitivity=_sensitivity(tp, fp, fn),
        specificity=_specificity(tp, fp, fn, n_voxels),
        num_tp=sum(lesion.matched_components > 0 for lesion in counted),
        num_fp=num_fp,
        num_fn=sum(lesion.matched_components == 0 for lesion in counted),
        lesions=tuple(lesions),
    )


def evaluate_lesionwise(
    pred_labels: np.ndarray,
    ref_labels: np.ndarray,
    scheme: LabelScheme,
    parameters: LesionwiseParameters,
    spacing_mm: Sequence[float] = (1.0, 1.0, 1.0),
    *,
    case_id: str = "",
    lesions: list[dict[str, object]] | None = None,
) -> dict[str, float]:
    """Lesion-wise result row of one case: every region of ``scheme``.

    Args:
        pred_labels: integer (X, Y, Z), predicted labels in ``scheme``'s values.
        ref_labels: integer (X, Y, Z), reference labels in ``scheme``'s values.
        scheme: the label scheme (regions scored).
        parameters: the task's lesion-wise parameters.
        spacing_mm: voxel size along X, Y, Z in mm.
        case_id: the ``Label`` of rows appended to ``lesions``.
        lesions: when a list, one ``LESION_COLUMNS`` dict per reference lesion and region
            is appended to it.

    Returns:
        ``{column: value}`` for ``lesionwise_columns(scheme)`` (HD95 in mm; counts as
        floats so that summary rows can average them).

    Raises:
        ValueError: if the shapes differ or ``spacing_mm`` is invalid.

    Source: BraTS 2023 lesion-wise metrics code; regions from ``brats_mtl.tasks``.
    """
    pred_labels = np.asarray(pred_labels)
    ref_labels = np.asarray(ref_labels)
    if pred_labels.shape != ref_labels.shape or pred_labels.ndim != 3:
        raise ValueError(
            f"prediction shape {pred_labels.shape} and reference shape {ref_labels.shape} "
            "must be the same 3-D grid (X, Y, Z)"
        )
    box = _bounding_box((pred_labels != 0) | (ref_labels != 0)) or (slice(0, 0),) * 3
    pred_crop, ref_crop = pred_labels[box], ref_labels[box]
    out: dict[str, float] = {}
    for region in scheme.region_names:
        scores = lesionwise_region(
            scheme.region_mask(pred_crop, region),
            scheme.region_mask(ref_crop, region),
            parameters,
            spacing_mm,
            n_voxels=ref_labels.size,
        )
        out[f"LesionWise_Dice_{region}"] = scores.lesionwise_dice
        out[f"LesionWise_Hausdorff95_{region}"] = scores.lesionwise_hd95_mm
        out[f"Dice_{region}"] = scores.dice
        out[f"Hausdorff95_{region}"] = scores.hd95_mm
        out[f"Sensitivity_{region}"] = scores.sensitivity
        out[f"Specificity_{region}"] = scores.specificity
        out[f"Num_TP_{region}"] = float(scores.num_tp)
        out[f"Num_FP_{region}"] = float(scores.num_fp)
        out[f"Num_FN_{region}"] = float(scores.num_fn)
        if lesions is not None:
            for number, lesion in enumerate(scores.lesions, start=1):
                lesions.append(
                    {
                        "Label": case_id,
                        "Region": region,
                        "Lesion": number,
                        "Volume_mm3": lesion.volume_mm3,
                        "Matched_Components": lesion.matched_components,
                        "Dice": lesion.dice,
                        "Hausdorff95": lesion.hd95_mm,
                        "Counted": lesion.counted,
                    }
                )
    return {column: out[column] for column in lesionwise_columns(scheme)}


def _grow(box: Box | None, margin: int, shape: tuple[int, ...]) -> Box | None:
    if box is None:
        return None
    return tuple(
        slice(max(b.start - margin, 0), min(b.stop + margin, n))
        for b, n in zip(box, shape, strict=True)
    )


def _union_box(boxes: list[Box]) -> Box:
    return tuple(
        slice(min(b[axis].start for b in boxes), max(b[axis].stop for b in boxes))
        for axis in range(3)
    )
