"""Uncertainty figure: one axial slice with the label overlay beside each region's map.

Matplotlib is imported inside the function (Agg backend); save the figure with
``brats_mtl.figures.common.save_figure``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from brats_mtl.conventions import ED, ET, NCR_NET, UNCERTAINTY_MAP_WORDS
from brats_mtl.figures.common import pyplot as _pyplot
from brats_mtl.figures.slices import LABEL_COLOURS, LABEL_NAMES, overlay_rgba, tumor_slice_index

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure


def uncertainty_figure(
    background: np.ndarray,
    labels: np.ndarray,
    maps: Mapping[str, np.ndarray],
    z: int | None = None,
    title: str = "",
) -> Figure:
    """The predicted labels on one axial slice beside the WT, TC and ET uncertainty maps.

    Args:
        background: float (X, Y, Z) intensity volume under the labels (e.g. flair).
        labels: uint8 (X, Y, Z) internal predicted labels {0, 1, 2, 4}.
        maps: region ("WT", "TC", "ET") -> (X, Y, Z) uncertainty in [0, 100].
        z: axial index; default the slice with the most predicted tumour voxels.
        title: figure title (e.g. the case ID and the estimator).

    Returns:
        A matplotlib Figure of four panels: the labels (edema green, NCR/NET yellow, ET
        red, as Fig. 3), then each region's map (0 certain, dark; 100 most uncertain,
        bright) with one colour bar.

    Raises:
        ValueError: if a map is missing or the volumes do not share one shape.

    Source: QU-BraTS maps (Mehta et al., MELBA 2022); colours of the paper's Fig. 3.
    """
    regions = list(UNCERTAINTY_MAP_WORDS)
    absent = [r for r in regions if r not in maps]
    if absent:
        raise ValueError(f"uncertainty maps of {absent} are missing")
    shapes = {np.shape(background), np.shape(labels), *(np.shape(maps[r]) for r in regions)}
    if len(shapes) != 1:
        raise ValueError(f"background, labels and maps must have one shape, got {shapes}")
    plt = _pyplot()
    from matplotlib.patches import Patch

    if z is None:
        z = tumor_slice_index(labels)

    def axial(volume: np.ndarray) -> np.ndarray:  # as figures.slices: anterior up
        return np.rot90(np.asarray(volume)[:, :, z])

    fig, axes = plt.subplots(1, 4, figsize=(14, 4.2))
    axes[0].imshow(axial(background), cmap="gray", interpolation="nearest")
    axes[0].imshow(overlay_rgba(axial(labels)), interpolation="nearest")
    axes[0].set_title(f"prediction (slice {z})", fontsize=10)
    image = None
    for ax, region in zip(axes[1:], regions, strict=True):
        ax.imshow(axial(background), cmap="gray", interpolation="nearest")
        image = ax.imshow(
            axial(maps[region]),
            cmap="inferno",
            vmin=0,
            vmax=100,
            alpha=0.85,
            interpolation="nearest",
        )
        ax.set_title(f"{region} uncertainty", fontsize=10)
    for ax in axes:
        ax.set_axis_off()
    fig.colorbar(image, ax=list(axes[1:]), fraction=0.02, pad=0.01, label="uncertainty (0-100)")
    handles = [Patch(color=LABEL_COLOURS[v][:3], label=LABEL_NAMES[v]) for v in (ED, NCR_NET, ET)]
    fig.legend(handles=handles, loc="lower left", ncol=3, frameon=False, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig
