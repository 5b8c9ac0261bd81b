import numpy as np
import pytest

from brats_mtl.figures.common import save_figure
from brats_mtl.figures.slices import (
    LABEL_COLOURS,
    overlay_rgba,
    preprocessing_figure,
    segmentation_figure,
    tumor_slice_index,
)


def test_tumor_slice_index_and_overlay():
    labels = np.zeros((8, 8, 6), np.uint8)
    labels[2:4, 2:4, 1] = 2
    labels[1:7, 1:7, 4] = 1
    assert tumor_slice_index(labels) == 4
    assert tumor_slice_index(np.zeros((4, 4, 6), np.uint8)) == 3
    rgba = overlay_rgba(np.array([[0, 1], [2, 4]], np.uint8))
    assert rgba[0, 0, 3] == 0
    assert tuple(rgba[0, 1]) == pytest.approx(LABEL_COLOURS[1])
    assert tuple(rgba[1, 0]) == pytest.approx(LABEL_COLOURS[2])
    assert tuple(rgba[1, 1]) == pytest.approx(LABEL_COLOURS[4])


def test_figures_render_and_save(tmp_path):
    rng = np.random.default_rng(0)
    raw = np.zeros((20, 22, 18), np.float32)
    raw[4:16, 5:17, 3:15] = rng.random((12, 12, 12)) + 1
    box = (slice(4, 16), slice(5, 17), slice(3, 15))
    norm = raw[box] - raw[box].mean()
    fig = preprocessing_figure(raw, box, norm, (slice(0, 16), slice(0, 16), slice(0, 16)))
    assert len(fig.axes) == 4
    assert fig.axes[3].images[0].get_array().shape == (16, 16)
    ref = np.zeros(raw.shape, np.uint8)
    ref[8:12, 8:12, 6:9] = 4
    fig2 = segmentation_figure(raw, ref, ref, title="x")
    assert [a.get_title() for a in fig2.axes] == ["ground truth (slice 6)", "prediction (slice 6)"]
    out = save_figure(fig2, tmp_path / "f.png")
    assert out.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(FileExistsError):
        save_figure(segmentation_figure(raw, ref, ref), out)
    with pytest.raises(ValueError, match="same shape"):
        segmentation_figure(raw, ref[:-1], ref)
