"""Slice figures of the paper: preprocessing steps (Fig. 1) and ground truth beside
prediction (Fig. 3).

Functions take plain arrays and return a ``matplotlib.figure.Figure``; save them with
``brats_mtl.figures.common.save_figure``. Matplotlib is imported inside the functions (Agg backend), so importing
this module is cheap and needs no display.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from brats_mtl.conventions import ED, ET, NCR_NET
from brats_mtl.figures.common import pyplot as _pyplot

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

#: Overlay colours of Fig. 3 (RGBA): edema green, NCR/NET yellow, ET red.
LABEL_COLOURS: dict[int, tuple[float, float, float, float]] = {
    ED: (0.0, 0.8, 0.0, 0.6),
    NCR_NET: (1.0, 0.9, 0.0, 0.7),
    ET: (0.9, 0.0, 0.0, 0.8),
}
LABEL_NAMES: dict[int, str] = {ED: "ED (edema)", NCR_NET: "NCR/NET", ET: "ET"}


def _axial(volume: np.ndarray, z: int) -> np.ndarray:
    """Axial slice ``volume[:, :, z]`` rotated for display (anterior up, as radiologists read)."""
    return np.rot90(volume[:, :, z])


def tumor_slice_index(labels: np.ndarray) -> int:
    """Axial index (last axis) with the most tumor voxels; the middle slice if no tumor.

    Args:
        labels: uint8 (X, Y, Z) label map, any convention (non-zero = tumor).

    Returns:
        int in ``[0, Z)``.
    """
    per_slice = (np.asarray(labels) > 0).sum(axis=(0, 1))
    if per_slice.max() == 0:
        return labels.shape[2] // 2
    return int(np.argmax(per_slice))


def overlay_rgba(labels: np.ndarray) -> np.ndarray:
    """RGBA overlay of a 2-D internal label map with the Fig. 3 colours.

    Args:
        labels: uint8 (H, W) internal labels {0, 1, 2, 4}.

    Returns:
        float32 (H, W, 4); transparent where the label is 0.
    """
    rgba = np.zeros((*labels.shape, 4), dtype=np.float32)
    for value, colour in LABEL_COLOURS.items():
        rgba[labels == value] = colour
    return rgba


def preprocessing_figure(
    raw: np.ndarray,
    box: tuple[slice, slice, slice],
    normalised: np.ndarray,
    patch: tuple[slice, slice, slice],
    z: int | None = None,
    modality: str = "t2",
) -> Figure:
    """Fig. 1: one axial slice through the preprocessing steps.

    Panels: original, cropped to the brain box, z-scored in the brain mask, one extracted
    patch (from left to right, as the paper's Fig. 1).

    Args:
        raw: float32 (X, Y, Z), one modality on the original grid.
        box: the brain bounding box (``preprocessing.bounding_box``), three slices.
        normalised: float32 (x, y, z), the same modality cropped and z-scored.
        patch: three slices into ``normalised`` (may run past its end on padded axes).
        z: axial index in the *cropped* volume; default the middle of the patch.
        modality: channel name for the title.

    Returns:
        A matplotlib Figure with four panels.

    Source: paper section 4.1, Fig. 1.
    """
    plt = _pyplot()
    if z is None:
        start, stop = patch[2].start or 0, min(patch[2].stop, normalised.shape[2])
        z = (start + stop - 1) // 2
    z_raw = box[2].start + z
    cropped = raw[box]
    padded = np.zeros(
        tuple(max(s.stop, n) for s, n in zip(patch, normalised.shape, strict=True)),
        dtype=np.float32,
    )
    padded[tuple(slice(0, n) for n in normalised.shape)] = normalised
    panels = [
        (_axial(raw, z_raw), f"original ({raw.shape[0]}x{raw.shape[1]})"),
        (_axial(cropped, z), f"cropped ({cropped.shape[0]}x{cropped.shape[1]})"),
        (_axial(normalised, z), "z-score normalised"),
        (_axial(padded[patch], z - (patch[2].start or 0)), "extracted patch"),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.6))
    for ax, (img, title) in zip(axes, panels, strict=True):
        ax.imshow(img, cmap="gray", interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
    fig.suptitle(f"Preprocessing of a {modality} slice", fontsize=11)
    fig.tight_layout()
    return fig


def segmentation_figure(
    background: np.ndarray,
    reference: np.ndarray,
    prediction: np.ndarray,
    z: int | None = None,
    title: str = "",
) -> Figure:
    """Fig. 3: ground truth beside prediction on one axial slice.

    Args:
        background: float32 (X, Y, Z) intensity volume shown under the labels (e.g. flair).
        reference: uint8 (X, Y, Z) internal ground-truth labels {0, 1, 2, 4}.
        prediction: uint8 (X, Y, Z) internal predicted labels, same grid.
        z: axial index; default the slice with the most reference tumor voxels.
        title: figure title (e.g. the case ID and its Dice).

    Returns:
        A matplotlib Figure: ground truth left, prediction right; edema green, NCR/NET
        yellow, ET red.

    Raises:
        ValueError: if the three volumes do not share one shape.

    Source: paper section 5.1, Fig. 3.
    """
    if not (background.shape == reference.shape == prediction.shape):
        raise ValueError(
            f"background {background.shape}, reference {reference.shape} and prediction "
            f"{prediction.shape} must have the same shape"
        )
    plt = _pyplot()
    from matplotlib.patches import Patch

    if z is None:
        z = tumor_slice_index(reference)
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.4))
    for ax, labels, name in ((axes[0], reference, "ground truth"), (axes[1], prediction, "prediction")):
        ax.imshow(_axial(background, z), cmap="gray", interpolation="nearest")
        ax.imshow(overlay_rgba(_axial(labels, z)), interpolation="nearest")
        ax.set_title(f"{name} (slice {z})", fontsize=10)
        ax.set_axis_off()
    handles = [Patch(color=LABEL_COLOURS[v][:3], label=LABEL_NAMES[v]) for v in (ED, NCR_NET, ET)]
    fig.legend(handles=handles, loc="lower center", ncol=3, frameon=False, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig
