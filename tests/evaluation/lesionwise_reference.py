"""A plain reference of the BraTS 2023 lesion-wise metrics, for tests only.

Written step by step from the organisers' definition (``metrics.py`` of the public
``rachitsaluja/BraTS-2023-Metrics``): whole-volume float masks, one whole-volume dilation
per reference lesion, ``np.isin`` to pick the matched components, DeepMind-style surface
distances computed with ``scipy.ndimage.correlate`` and full distance maps. Nothing here
is fast or shared with ``brats_mtl.evaluation``; its only purpose is to be obviously the
definition, so that the package's cropped, vectorised code can be compared with it.
"""

from __future__ import annotations

import math

import cc3d
import numpy as np
from scipy import ndimage

PENALTY = 374.0
_KERNEL = np.array([[[128, 64], [32, 16]], [[8, 4], [2, 1]]])


def area_table(spacing) -> np.ndarray:
    """Surfel area per 2x2x2 code: DeepMind's own table (the definition's data)."""
    from surface_distance.lookup_tables import create_table_neighbour_code_to_surface_area

    return create_table_neighbour_code_to_surface_area(spacing)


def surface_distances(gt, pred, spacing) -> dict[str, np.ndarray]:
    """DeepMind ``compute_surface_distances``, transcribed (NumPy 2 safe)."""
    gt = np.asarray(gt).astype(bool)
    pred = np.asarray(pred).astype(bool)
    both = gt | pred
    if not both.any():
        return {k: np.array([]) for k in ("d_gt", "a_gt", "d_pred", "a_pred")}
    idx = [np.nonzero(both.any(axis=tuple(a for a in range(3) if a != ax)))[0] for ax in range(3)]
    lo = np.array([i.min() for i in idx])
    hi = np.array([i.max() for i in idx])
    crops = []
    for mask in (gt, pred):
        crop = np.zeros(hi - lo + 2, np.uint8)
        crop[:-1, :-1, :-1] = mask[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1, lo[2] : hi[2] + 1]
        crops.append(ndimage.correlate(crop, _KERNEL, mode="constant", cval=0))
    code_gt, code_pred = crops
    border_gt = (code_gt != 0) & (code_gt != 255)
    border_pred = (code_pred != 0) & (code_pred != 255)
    dist_gt = (
        ndimage.distance_transform_edt(~border_gt, sampling=spacing)
        if border_gt.any()
        else np.full(border_gt.shape, np.inf)
    )
    dist_pred = (
        ndimage.distance_transform_edt(~border_pred, sampling=spacing)
        if border_pred.any()
        else np.full(border_pred.shape, np.inf)
    )
    table = area_table(spacing)
    out = {}
    for name, border, codes, other in (
        ("gt", border_gt, code_gt, dist_pred),
        ("pred", border_pred, code_pred, dist_gt),
    ):
        d, a = other[border], table[codes][border]
        if d.size:
            pairs = np.array(sorted(zip(d.tolist(), a.tolist(), strict=True)))
            d, a = pairs[:, 0], pairs[:, 1]
        out[f"d_{name}"], out[f"a_{name}"] = d, a
    return out


def robust_hausdorff(sd: dict[str, np.ndarray], percent: float = 95) -> float:
    """DeepMind ``compute_robust_hausdorff``, transcribed."""
    values = []
    for name in ("gt", "pred"):
        d, a = sd[f"d_{name}"], sd[f"a_{name}"]
        if len(d) == 0:
            values.append(math.inf)
            continue
        cumulative = np.cumsum(a) / np.sum(a)
        i = np.searchsorted(cumulative, percent / 100.0)
        values.append(d[min(i, len(d) - 1)])
    return float(max(values))


def region_scores(pred, gt, dilation: int, threshold: float, spacing) -> dict[str, float]:
    """One region of one case, as ``get_LesionWiseScores`` + ``get_LesionWiseResults``."""
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    sx, sy, sz = spacing
    both_empty = np.all(gt == 0) and np.all(pred == 0)
    if both_empty:
        full_dice, full_hd95 = 1.0, 0.0
    else:
        full_dice = (
            2.0 * np.logical_and(pred, gt).sum() / (pred.astype(bool).sum() + gt.astype(bool).sum())
        )
        full_hd95 = robust_hausdorff(surface_distances(gt, pred, spacing))
    tp_vox = np.count_nonzero((pred == 1) & (gt == 1))
    fp_vox = np.count_nonzero(pred) - tp_vox
    fn_vox = np.count_nonzero(gt) - tp_vox
    tn_vox = np.count_nonzero((pred != 1) & (gt != 1))
    sensitivity = tp_vox / (tp_vox + fn_vox) if tp_vox + fn_vox else 0.0
    specificity = tn_vox / (tn_vox + fp_vox) if tn_vox + fp_vox else 0.0
    if both_empty:
        sensitivity = 1.0

    structure = ndimage.generate_binary_structure(3, 2)
    gt_cc = cc3d.connected_components(gt.astype(np.uint8), connectivity=26)
    pred_cc = cc3d.connected_components(pred.astype(np.uint8), connectivity=26)
    dilated_cc = cc3d.connected_components(
        ndimage.binary_dilation(gt, structure=structure, iterations=dilation).astype(np.uint8),
        connectivity=26,
    )
    combined = np.zeros_like(dilated_cc)
    for comp in range(1, int(dilated_cc.max()) + 1):
        part = (dilated_cc == comp).astype(dilated_cc.dtype) * gt_cc
        combined[part > 0] = comp

    tp_components: list[int] = []
    rows = []  # (n matched, volume, dice, hd95)
    for comp in range(1, int(combined.max()) + 1):
        lesion = (combined == comp).astype(np.uint8)
        around = ndimage.binary_dilation(lesion, structure=structure, iterations=dilation)
        touching = np.unique(pred_cc * around)
        touching = touching[touching != 0]
        tp_components += touching.tolist()
        matched = np.isin(pred_cc, touching)
        dice = 2.0 * np.logical_and(matched, lesion).sum() / (matched.sum() + lesion.sum())
        hd = robust_hausdorff(surface_distances(lesion, matched, spacing))
        rows.append((len(touching), np.sum(lesion) * sx * sy * sz, dice, hd))
    fp = np.unique(pred_cc[np.isin(pred_cc, [*tp_components, 0], invert=True)])

    kept = [r for r in rows if r[1] > threshold]
    n = len(kept) + len(fp)
    if n == 0:
        lw_dice, lw_hd95 = 1.0, 0.0
    else:
        lw_dice = sum(r[2] for r in kept) / n
        lw_hd95 = (sum(PENALTY if math.isinf(r[3]) else r[3] for r in kept) + PENALTY * len(fp)) / n
    return {
        "LesionWise_Dice": float(lw_dice),
        "LesionWise_Hausdorff95": float(lw_hd95),
        "Dice": float(full_dice),
        "Hausdorff95": PENALTY if math.isinf(full_hd95) else float(full_hd95),
        "Sensitivity": float(sensitivity),
        "Specificity": float(specificity),
        "Num_TP": float(sum(1 for r in kept if r[0] > 0)),
        "Num_FP": float(len(fp)),
        "Num_FN": float(sum(1 for r in kept if r[0] == 0)),
    }


def case_scores(pred_labels, ref_labels, regions, dilation, threshold, spacing) -> dict[str, float]:
    """Every region of a case: ``{f"{metric}_{region}": value}``."""
    out = {}
    for region, values in regions.items():
        scores = region_scores(
            np.isin(pred_labels, values), np.isin(ref_labels, values), dilation, threshold, spacing
        )
        out.update({f"{k}_{region}": v for k, v in scores.items()})
    return out
