import numpy as np
import pytest

from brats_mtl.figures.common import save_figure
from brats_mtl.figures.uncertainty import uncertainty_figure


def test_uncertainty_figure_shows_labels_beside_each_map(tmp_path):
    background = np.ones((20, 22, 18), np.float32)
    labels = np.zeros(background.shape, np.uint8)
    labels[8:12, 8:12, 5:9] = 4
    labels[8:10, 8:12, 6] = 2  # every tumour slice holds 16 voxels: the first (5) shown
    maps = {
        r: np.full(background.shape, v, np.uint8) for r, v in (("WT", 0), ("TC", 50), ("ET", 100))
    }
    fig = uncertainty_figure(background, labels, maps, title="case")
    panels = [a for a in fig.axes if a.get_title()]
    assert [a.get_title() for a in panels] == [
        "prediction (slice 5)",
        "WT uncertainty",
        "TC uncertainty",
        "ET uncertainty",
    ]
    # each map panel shows the axial slice (rotated for display) on a 0-100 scale
    for ax, value in zip(panels[1:], (0, 50, 100), strict=True):
        shown = ax.images[-1]
        assert shown.get_array().shape == (22, 20) and shown.get_clim() == (0, 100)
        assert (np.asarray(shown.get_array()) == value).all()
    path = save_figure(fig, tmp_path / "unc.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="missing"):
        uncertainty_figure(background, labels, {"WT": maps["WT"]})
    with pytest.raises(ValueError, match="one shape"):
        uncertainty_figure(background[:-1], labels, maps)
