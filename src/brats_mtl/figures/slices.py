"""Slice figures of the paper.

Preprocessing steps (Fig. 1) and ground truth beside prediction (Fig. 3).

Functions take plain arrays in the voxel order of their files, with the files' affine, and
return a ``matplotlib.figure.Figure``; save them with ``brats_mtl.figures.common.save_figure``.
Every slice is shown in radiological convention, read from the affine: anterior at the top,
the patient's left on the image's right. The volumes are reoriented for display only (axes
permuted and flipped, never resampled); the arrays themselves stay in file order. Matplotlib
is imported inside the functions (Agg backend), so importing this module is cheap and needs
no display.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from nibabel.affines import voxel_sizes
from nibabel.orientations import (
    apply_orientation,
    axcodes2ornt,
    io_orientation,
    ornt_transform,
)

from brats_mtl.conventions import ED, ET, NCR_NET, Box
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
#: Overlay colour of each sub-region name of every label scheme (``brats_mtl.tasks``):
#: the Fig. 3 colours for the three tumour sub-regions and their 2023+ names, blue for
#: the resection cavity, violet for the cyst.
SUBREGION_COLOURS: dict[str, tuple[float, float, float, float]] = {
    "ED": LABEL_COLOURS[ED],
    "SNFH": LABEL_COLOURS[ED],
    "NCR/NET": LABEL_COLOURS[NCR_NET],
    "NETC": LABEL_COLOURS[NCR_NET],
    "NET": LABEL_COLOURS[NCR_NET],
    "ET": LABEL_COLOURS[ET],
    "RC": (0.1, 0.4, 1.0, 0.7),
    "CC": (0.7, 0.3, 1.0, 0.7),
}
_LONG_NAMES = {
    "ED": "ED (edema)",
    "SNFH": "SNFH (edema)",
    "RC": "RC (resection cavity)",
    "CC": "CC (cyst)",
}


def scheme_colours(
    scheme: str | None = None,
) -> dict[int, tuple[tuple[float, float, float, float], str]]:
    """Internal label -> (RGBA colour, legend name) for every tumour label of a scheme.

    Args:
        scheme: a label scheme name (``brats_mtl.tasks``); None: the paper's labels.

    Returns:
        One entry per non-background class of ``tasks.network_classes(scheme)``; the
        three-label schemes give :data:`LABEL_COLOURS` and :data:`LABEL_NAMES`.
    """
    from brats_mtl.tasks import network_classes

    classes = network_classes(scheme)
    return {
        label: (SUBREGION_COLOURS[name], _LONG_NAMES.get(name, name))
        for label, name in zip(classes.labels[1:], classes.names[1:], strict=True)
    }


#: Display axes in nibabel axis codes (the direction each axis runs toward): image rows run
#: to posterior (anterior at the top), image columns to the patient's left (patient left on
#: the image's right), slices to superior. The radiological convention, as radiologists read
#: axial slices (viewed from the feet).
RADIOLOGICAL_AXCODES: tuple[str, str, str] = ("P", "L", "S")


@dataclass(frozen=True, eq=False)
class AxialView:
    """How to show a volume's axial slices in radiological convention, from its affine.

    Attributes:
        transform: int (3, 2) nibabel orientation transform from voxel axes to the display
            axes ``RADIOLOGICAL_AXCODES``: row ``i`` is (display axis, flip) of voxel axis i.
        aspect: row spacing / column spacing of the displayed slice (mm / mm), the
            ``aspect`` of ``imshow``.

    Source: nibabel.orientations (``io_orientation``, ``ornt_transform``); the radiological
    display convention of clinical viewers.
    """

    transform: np.ndarray
    aspect: float

    @classmethod
    def from_affine(cls, affine: np.ndarray) -> AxialView:
        """The view of volumes whose voxel -> world (RAS+, mm) matrix is ``affine``.

        An oblique affine is shown along its voxel axes closest to the anatomical ones
        (nibabel's ``io_orientation``); nothing is resampled.

        Args:
            affine: float (4, 4) voxel -> world affine (``nibabel`` image ``.affine``).

        Raises:
            ValueError: if ``affine`` is not a finite (4, 4) matrix with an invertible
                3 x 3 part.
        """
        affine = np.asarray(affine, dtype=np.float64)
        if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
            raise ValueError(f"affine must be a finite 4x4 matrix, got {affine.tolist()}")
        if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
            raise ValueError(
                f"affine {affine.tolist()} is singular: its voxel axes span no 3-D space, "
                "so the image has no orientation to display"
            )
        transform = ornt_transform(io_orientation(affine), axcodes2ornt(RADIOLOGICAL_AXCODES))
        transform = transform.astype(np.int64)
        spacing_mm = voxel_sizes(affine)
        row_axis, col_axis = (int(np.flatnonzero(transform[:, 0] == d)[0]) for d in (0, 1))
        return cls(transform, float(spacing_mm[row_axis] / spacing_mm[col_axis]))

    @property
    def axis(self) -> int:
        """The voxel axis that runs inferior-superior (2, the last, for BraTS files)."""
        return int(np.flatnonzero(self.transform[:, 0] == 2)[0])

    def volume(self, volume: np.ndarray) -> np.ndarray:
        """``volume`` in display axes: (rows, columns, slices) = (P, L, S); a view, no copy.

        Args:
            volume: (X, Y, Z) array in file voxel order, any dtype (a crop of the file's
                grid keeps its orientation).

        Returns:
            3-D view of ``volume``; ``[:, :, k]`` is an axial slice, anterior in row 0 and
            the patient's right in column 0, inferior slices first.
        """
        return apply_orientation(volume, self.transform)

    def display_index(self, index: int, n: int) -> int:
        """Voxel index along :attr:`axis` (of length ``n``) -> slice index in display order.

        Slices are displayed inferior first; the map is its own inverse.
        """
        return n - 1 - index if self.transform[self.axis, 1] == -1 else index

    def slice(self, volume: np.ndarray, index: int) -> np.ndarray:
        """The axial slice at voxel ``index`` along :attr:`axis`, laid out for display.

        Args:
            volume: (X, Y, Z) array in file voxel order, any dtype.
            index: voxel index along :attr:`axis`, in ``[0, volume.shape[axis])``.

        Returns:
            2-D view of ``volume``: rows anterior -> posterior, columns patient right ->
            patient left; show it with ``imshow(..., aspect=self.aspect)``.

        Raises:
            IndexError: if ``index`` lies outside the volume.
        """
        n = volume.shape[self.axis]
        if not 0 <= index < n:
            raise IndexError(f"axial index {index} outside [0, {n}) of a {volume.shape} volume")
        return self.volume(volume)[:, :, self.display_index(index, n)]


def tumor_slice_index(labels: np.ndarray) -> int:
    """Axial index (last axis) with the most tumor voxels.

    The first one if tied; the middle slice if there is no tumor.

    Args:
        labels: uint8 (X, Y, Z) label map, any convention (non-zero = tumor), its last axis
            inferior-superior (BraTS files, or ``AxialView.volume``).

    Returns:
        int in ``[0, Z)``.
    """
    per_slice = (np.asarray(labels) > 0).sum(axis=(0, 1))
    if per_slice.max() == 0:
        return labels.shape[2] // 2
    return int(np.argmax(per_slice))


def overlay_rgba(labels: np.ndarray, scheme: str | None = None) -> np.ndarray:
    """RGBA overlay of a 2-D internal label map with the Fig. 3 colours.

    Args:
        labels: uint8 (H, W) internal labels {0, 1, 2, 4} (a four-label scheme's values).
        scheme: the label scheme (:func:`scheme_colours`); None: the paper's labels.

    Returns:
        float32 (H, W, 4); transparent where the label is 0.
    """
    rgba = np.zeros((*labels.shape, 4), dtype=np.float32)
    colours = (
        LABEL_COLOURS if scheme is None else {v: c for v, (c, _) in scheme_colours(scheme).items()}
    )
    for value, colour in colours.items():
        rgba[labels == value] = colour
    return rgba


def preprocessing_figure(
    raw: np.ndarray,
    box: Box,
    normalised: np.ndarray,
    patch: Box,
    z: int | None = None,
    modality: str = "t2",
    *,
    affine: np.ndarray,
) -> Figure:
    """Fig. 1: one axial slice through the preprocessing steps, in radiological convention.

    Panels: original, cropped to the brain box, z-scored in the brain mask, one extracted
    patch (from left to right, as the paper's Fig. 1). Each panel has anterior at the top
    and the patient's left on the image's right, whatever the files' voxel order.

    Args:
        raw: float32 (X, Y, Z), one modality on the original grid, in file voxel order.
        box: the brain bounding box (``preprocessing.bounding_box``), three slices.
        normalised: float32 (x, y, z), the same modality cropped and z-scored.
        patch: three slices into ``normalised`` (may run past its end on padded axes; the
            padding lies after the last voxel, as the network gets it).
        z: voxel index along the *cropped* volume's axial axis (``AxialView.axis``, the
            last axis for BraTS files); default the middle of the patch.
        modality: channel name for the title.
        affine: float (4, 4) voxel -> world affine of ``raw``'s file (``Case.affine``).

    Returns:
        A matplotlib Figure with four panels; each title gives the shown slice's width x
        height in voxels.

    Raises:
        ValueError: if ``affine`` is not a valid 4x4 affine.
        IndexError: if ``z`` lies outside the cropped volume.

    Source: paper section 4.1, Fig. 1.
    """
    view = AxialView.from_affine(affine)
    plt = _pyplot()
    axis = view.axis
    if z is None:
        # the patch's middle slice counted in display order: every voxel order of one scan
        # then shows the same slice
        n = normalised.shape[axis]
        start, stop = patch[axis].start or 0, min(patch[axis].stop, n)
        low, high = sorted((view.display_index(start, n), view.display_index(stop - 1, n)))
        z = view.display_index((low + high) // 2, n)
    z_raw = box[axis].start + z
    cropped = raw[box]
    padded = np.zeros(
        tuple(max(s.stop, n) for s, n in zip(patch, normalised.shape, strict=True)),
        dtype=np.float32,
    )
    padded[tuple(slice(0, n) for n in normalised.shape)] = normalised
    original, cropped_slice = view.slice(raw, z_raw), view.slice(cropped, z)
    panels = [
        (original, f"original ({original.shape[1]}x{original.shape[0]})"),
        (cropped_slice, f"cropped ({cropped_slice.shape[1]}x{cropped_slice.shape[0]})"),
        (view.slice(normalised, z), "z-score normalised"),
        (view.slice(padded[patch], z - (patch[axis].start or 0)), "extracted patch"),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.6))
    for ax, (img, title) in zip(axes, panels, strict=True):
        ax.imshow(img, cmap="gray", interpolation="nearest", aspect=view.aspect)
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
    *,
    affine: np.ndarray,
    scheme: str | None = None,
) -> Figure:
    """Fig. 3: ground truth beside prediction on one axial slice.

    In radiological convention: anterior at the top, the patient's left on the image's
    right.

    Args:
        background: float32 (X, Y, Z) intensity volume shown under the labels (e.g. flair),
            in file voxel order.
        reference: uint8 (X, Y, Z) internal ground-truth labels {0, 1, 2, 4}.
        prediction: uint8 (X, Y, Z) internal predicted labels, same grid.
        z: voxel index along the axial axis (``AxialView.axis``, the last axis for BraTS
            files); default the slice with the most reference tumor voxels.
        title: figure title (e.g. the case ID and its Dice).
        affine: float (4, 4) voxel -> world affine of the three volumes' grid.
        scheme: the labels' scheme (``brats_mtl.tasks``): every label of it gets a colour
            and a legend entry (:func:`scheme_colours`); None: the paper's labels.

    Returns:
        A matplotlib Figure: ground truth left, prediction right; edema green, NCR/NET
        yellow, ET red (resection cavity blue, cyst violet), with a legend.

    Raises:
        ValueError: if the three volumes do not share one shape, or ``affine`` is not a
            valid 4x4 affine.
        IndexError: if ``z`` lies outside the volumes.

    Source: paper section 5.1, Fig. 3.
    """
    if not (background.shape == reference.shape == prediction.shape):
        raise ValueError(
            f"background {background.shape}, reference {reference.shape} and prediction "
            f"{prediction.shape} must have the same shape"
        )
    view = AxialView.from_affine(affine)
    plt = _pyplot()
    from matplotlib.patches import Patch

    if z is None:  # found in display order, so ties break the same for every voxel order
        z = view.display_index(
            tumor_slice_index(view.volume(reference)), reference.shape[view.axis]
        )
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.4))
    for ax, labels, name in (
        (axes[0], reference, "ground truth"),
        (axes[1], prediction, "prediction"),
    ):
        ax.imshow(
            view.slice(background, z), cmap="gray", interpolation="nearest", aspect=view.aspect
        )
        ax.imshow(
            overlay_rgba(view.slice(labels, z), scheme), interpolation="nearest", aspect=view.aspect
        )
        ax.set_title(f"{name} (slice {z})", fontsize=10)
        ax.set_axis_off()
    if scheme is None:
        entries = [(LABEL_COLOURS[v], LABEL_NAMES[v]) for v in (ED, NCR_NET, ET)]
    else:
        entries = list(scheme_colours(scheme).values())
    handles = [Patch(color=colour[:3], label=name) for colour, name in entries]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig
