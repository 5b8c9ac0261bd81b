"""The voxel-grid rule of every evaluation protocol: score a prediction on its reference's grid.

A BraTS prediction is submitted on the grid of the provided scans, so a prediction and its
reference must share shape and affine (within ``brats_mtl.data.io.AFFINE_TOLERANCE``). A
prediction on the same grid stored under another axis order or direction (e.g. the
reference saved in RAS through ``nibabel.as_closest_canonical``, the prediction in the
BraTS files' LPS) is reoriented onto the reference grid; any other difference is refused
with a message naming both files and both grids. ``evaluation.tables`` (legacy protocol)
and ``evaluation.protocols`` (every protocol by label scheme) both call
:func:`onto_reference_grid`.

Source: BraTS submission rules (label maps on the grid of the provided scans);
``nibabel.orientations`` for the reorientation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: Last column of a per-case table where some prediction was reoriented onto its
#: reference's grid (e.g. ``prediction reoriented LPS -> RAS``); absent otherwise, so a
#: table of predictions on their references' grids keeps the online system's columns.
NOTE_COLUMN: str = "Note"


def onto_reference_grid(
    pred_labels: np.ndarray,
    pred_affine: np.ndarray,
    pred_path: Path,
    ref_shape: tuple[int, ...],
    ref_affine: np.ndarray,
    ref_path: Path,
) -> tuple[np.ndarray, str]:
    """The prediction's labels on the reference grid, and a note when they were reoriented.

    Same grid: returned as is, note ``""``. The same grid under an axis permutation or
    flip: reoriented with ``nibabel.orientations`` (the transform that takes the
    prediction's closest axes to the reference's), note ``"prediction reoriented LPS ->
    RAS"``. Anything else is refused.

    Args:
        pred_labels: the prediction's label values, any integer dtype, shape (X, Y, Z) in
            its file's voxel order.
        pred_affine: float (4, 4) voxel-to-world affine of the prediction (mm).
        pred_path: the prediction file (named in the error).
        ref_shape: the reference's (X, Y, Z) shape.
        ref_affine: float (4, 4) affine of the reference (mm).
        ref_path: the reference file (named in the error).

    Returns:
        ``(labels, note)``: ``pred_labels``' values (same dtype) in the reference's voxel
        order, shape ``ref_shape``; ``note`` is ``""`` or ``"prediction reoriented <from>
        -> <to>"`` (``nibabel.aff2axcodes`` codes).

    Raises:
        ValueError: if the prediction is not on the reference grid up to an axis
            permutation or flip (a shifted origin, another spacing or shape, rotated axes,
            a degenerate affine): names both files and both grids (shape, orientation
            code, origin, spacing), what differs and how to fix it.

    Source: BraTS label maps are submitted on the grid of the provided scans;
    ``nibabel.orientations`` (``io_orientation``, ``ornt_transform``,
    ``apply_orientation``, ``inv_ornt_aff``).
    """
    from nibabel.orientations import (
        apply_orientation,
        inv_ornt_aff,
        io_orientation,
        ornt_transform,
    )

    if pred_labels.shape == tuple(ref_shape) and _same_affine(pred_affine, ref_affine):
        return pred_labels, ""
    pred_ornt, ref_ornt = io_orientation(pred_affine), io_orientation(ref_affine)
    if np.isnan(pred_ornt).any() or np.isnan(ref_ornt).any():  # a degenerate affine
        raise ValueError(
            _grid_mismatch_message(
                pred_path, pred_labels.shape, pred_affine, ref_path, ref_shape, ref_affine, None
            )
        )
    transform = ornt_transform(pred_ornt, ref_ornt)
    moved = apply_orientation(pred_labels, transform)  # a view: flips and a transpose
    moved_affine = pred_affine @ inv_ornt_aff(transform, pred_labels.shape)
    if moved.shape != tuple(ref_shape) or not _same_affine(moved_affine, ref_affine):
        raise ValueError(
            _grid_mismatch_message(
                pred_path,
                pred_labels.shape,
                pred_affine,
                ref_path,
                ref_shape,
                ref_affine,
                (moved.shape, moved_affine),
            )
        )
    note = f"prediction reoriented {_axcodes(pred_affine)} -> {_axcodes(ref_affine)}"
    return np.ascontiguousarray(moved), note


def _grid_mismatch_message(
    pred_path: Path,
    pred_shape: tuple[int, ...],
    pred_affine: np.ndarray,
    ref_path: Path,
    ref_shape: tuple[int, ...],
    ref_affine: np.ndarray,
    moved: tuple[tuple[int, ...], np.ndarray] | None,
) -> str:
    """Why a prediction is not on its reference's grid: both grids and what differs.

    ``moved`` is the prediction's (shape, affine) after reorienting it to the reference's
    axes, or None when no reorientation could be computed.
    """
    from nibabel.affines import voxel_sizes

    from brats_mtl.data.io import AFFINE_TOLERANCE

    message = (
        f"prediction {pred_path} does not lie on the voxel grid of reference {ref_path}, so "
        f"the case is not scored: prediction {_grid_text(pred_shape, pred_affine)}; "
        f"reference {_grid_text(ref_shape, ref_affine)}"
    )
    if moved is not None:
        moved_shape, moved_affine = moved
        differences = []
        if tuple(moved_shape) != tuple(ref_shape):
            differences.append(f"shape {tuple(moved_shape)} instead of {tuple(ref_shape)}")
        offset = moved_affine[:3, 3] - ref_affine[:3, 3]
        if not np.allclose(offset, 0, atol=AFFINE_TOLERANCE):
            differences.append(
                f"its origin shifted by {_mm(offset)} mm ({float(np.linalg.norm(offset)):.4g} "
                "mm away)"
            )
        moved_spacing, ref_spacing = voxel_sizes(moved_affine), voxel_sizes(ref_affine)
        if not np.allclose(
            moved_spacing, ref_spacing, rtol=AFFINE_TOLERANCE, atol=AFFINE_TOLERANCE
        ):
            differences.append(f"spacing {_mm(moved_spacing)} mm instead of {_mm(ref_spacing)} mm")
        cosines = np.sum(_unit_axes(moved_affine) * _unit_axes(ref_affine), axis=0)
        angle = float(np.degrees(np.arccos(np.clip(cosines.min(), -1.0, 1.0))))
        if angle > 1e-3:  # degrees; float32 storage of an affine is far finer
            differences.append(f"its axes rotated by up to {angle:.3g} degrees")
        if not differences:  # within tolerance one by one, not as a whole
            differences.append("an affine beyond the tolerance of the reference's")
        same = _axcodes(pred_affine) == _axcodes(ref_affine)
        on_axes = "" if same else f" once reoriented to {_axcodes(ref_affine)}"
        message += f"; the prediction{on_axes} has " + ", ".join(differences)
    header = _nifti_header(pred_path)
    if header is not None and int(header["qform_code"]) == 0 and int(header["sform_code"]) == 0:
        message += (
            "; its header holds no orientation (qform_code and sform_code 0: saved without an "
            "affine?)"
        )
    return message + (
        ". Write each prediction on its reference's grid (same shape and affine): undo any "
        "crop, resampling or shift; a label array already in the reference's voxel order "
        "(e.g. saved with an identity affine) can be saved again with the reference's affine "
        "and header"
    )


def _grid_text(shape: tuple[int, ...], affine: np.ndarray) -> str:
    """``shape (X, Y, Z), LPS, origin (x, y, z) mm, spacing (a, b, c) mm``."""
    from nibabel.affines import voxel_sizes

    return (
        f"shape {tuple(int(s) for s in shape)}, {_axcodes(affine)}, origin "
        f"{_mm(affine[:3, 3])} mm, spacing {_mm(voxel_sizes(affine))} mm"
    )


def _axcodes(affine: np.ndarray) -> str:
    """Orientation code of an affine, e.g. ``"LPS"`` (``nibabel.aff2axcodes``)."""
    import nibabel as nib

    return "".join(str(c) for c in nib.aff2axcodes(affine))


def _unit_axes(affine: np.ndarray) -> np.ndarray:
    """Unit direction of each voxel axis in world space, columns of a (3, 3) array."""
    axes = np.asarray(affine, dtype=np.float64)[:3, :3]
    return axes / np.maximum(np.linalg.norm(axes, axis=0), np.finfo(np.float64).tiny)


def _mm(values: np.ndarray) -> str:
    """A vector of millimetres as ``(1, -2.5, 0)``, without float noise."""
    return "(" + ", ".join(f"{float(v) + 0.0:.6g}" for v in values) + ")"  # + 0.0: no -0


def _nifti_header(path: Path):
    """The NIfTI header of ``path``, or None when it cannot be read."""
    import nibabel as nib

    try:
        return nib.load(str(path)).header
    except Exception:  # noqa: BLE001 - only used to add a hint to another error
        return None


def _same_affine(a: np.ndarray, b: np.ndarray) -> bool:
    """Affines equal within ``AFFINE_TOLERANCE`` (relative and absolute), as ``load_case``."""
    from brats_mtl.data.io import AFFINE_TOLERANCE

    return bool(np.allclose(a, b, rtol=AFFINE_TOLERANCE, atol=AFFINE_TOLERANCE))
