"""Brain mask, crop/uncrop, z-score, padding and the patch grid (docs/design.md section 2)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from brats_mtl.conventions import BRATS_2019, MODALITIES
from brats_mtl.data import Case, CaseFiles, make_phantom
from brats_mtl.preprocessing import (
    ConstantChannelError,
    bounding_box,
    brain_mask,
    crop,
    pad_to_multiple,
    pad_to_size,
    patch_grid,
    preprocess_case,
    uncrop,
    zscore_in_mask,
)


def _case(image, labels=None):
    files = CaseFiles(
        case_id="P1",
        layout="brats2021",
        images={m: f"/data/P1/P1_{m}.nii.gz" for m in MODALITIES},
        seg=None,
        grade=None,
        label_convention=BRATS_2019,
    )
    return Case(files, image, labels, np.eye(4), None, (1.0, 1.0, 1.0))


def test_brain_mask_and_box_analytic():
    image = np.zeros((4, 10, 12, 14), np.float32)
    image[2, 3, 4:6, 5] = 7.0  # one modality suffices
    image[0, 6, 5, 2:9] = -1.0  # negative intensities count as brain too
    mask = brain_mask(image)
    assert mask.dtype == bool and mask.sum() == 2 + 7
    assert bounding_box(mask) == (slice(3, 7), slice(4, 6), slice(2, 9))
    with pytest.raises(ValueError, match="empty"):
        bounding_box(np.zeros((3, 3, 3), bool))


def test_crop_uncrop_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(20):
        shape = tuple(int(s) for s in rng.integers(3, 12, 3))
        lo = [int(rng.integers(0, s)) for s in shape]
        box = tuple(
            slice(a, int(rng.integers(a + 1, s + 1))) for a, s in zip(lo, shape, strict=True)
        )
        array = rng.normal(size=(2, *shape)).astype(np.float32)
        cropped = crop(array, box)
        back = uncrop(cropped, box, shape, fill=-5)
        assert back.shape == array.shape and back.dtype == array.dtype
        np.testing.assert_array_equal(crop(back, box), cropped)
        outside = np.ones(shape, bool)
        outside[box] = False
        assert (back[:, outside] == -5).all()
        np.testing.assert_array_equal(uncrop(crop(array[0], box), box, shape)[box], array[0][box])
    with pytest.raises(ValueError, match="does not fit box"):
        uncrop(np.zeros((2, 2, 2)), (slice(0, 3), slice(0, 2), slice(0, 2)), (4, 4, 4))


def test_crop_to_brain_is_exactly_undone():
    image, labels = make_phantom((40, 36, 32), seed=2)
    box = bounding_box(brain_mask(image))
    assert np.array_equal(uncrop(crop(image, box), box, labels.shape), image)
    assert np.array_equal(uncrop(crop(labels, box), box, labels.shape), labels)


def test_zscore_statistics():
    image, _ = make_phantom((32, 32, 32), seed=3)
    mask = brain_mask(image)
    out = zscore_in_mask(image, mask)
    assert out.dtype == np.float32
    assert (out[:, ~mask] == 0).all()
    for c in range(4):
        inside = out[c][mask].astype(np.float64)
        assert abs(inside.mean()) < 1e-5 and abs(inside.std() - 1) < 1e-5
        raw = image[c][mask].astype(np.float64)
        np.testing.assert_allclose(inside, (raw - raw.mean()) / raw.std(), atol=1e-5)


def test_zscore_constant_channel():
    image, _ = make_phantom((16, 16, 16), seed=0)
    mask = brain_mask(image)
    image[2][mask] = 5.0
    with pytest.raises(ConstantChannelError, match="modality t2 is constant") as info:
        zscore_in_mask(image, mask)
    assert info.value.channel == "t2"
    with pytest.raises(ValueError, match="modality t2 is constant") as info:
        preprocess_case(_case(image))
    assert "/data/P1/P1_t2.nii.gz" in str(info.value)


def test_preprocess_case():
    image, labels = make_phantom((40, 36, 32), seed=5)
    pre = preprocess_case(_case(image, labels))
    box = bounding_box(brain_mask(image))
    assert pre.box == box and pre.original_shape == (40, 36, 32) and pre.case_id == "P1"
    assert pre.image.shape == (4, *crop(labels, box).shape) and pre.image.dtype == np.float32
    np.testing.assert_array_equal(uncrop(pre.labels, pre.box, pre.original_shape), labels)
    assert pre.labels.flags.c_contiguous
    with pytest.raises(ValueError, match=r"P1_t1.nii.gz.*is 0"):
        preprocess_case(_case(np.zeros_like(image)))


def test_padding():
    a = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    padded = pad_to_size(a, (4, 4, 8))
    assert padded.shape == (2, 4, 4, 8)
    np.testing.assert_array_equal(padded[:, :3, :4, :5], a)
    assert padded.sum() == a.sum()
    assert pad_to_size(a, (2, 2, 2)) is a  # already large enough
    assert pad_to_multiple(a, 4).shape == (2, 4, 4, 8)
    assert pad_to_multiple(a[0], 16).shape == (16, 16, 16)


@pytest.mark.parametrize(
    "shape, p",
    [
        ((10, 10, 10), 4),
        ((8, 12, 16), 4),
        ((3, 5, 2), 4),
        ((9, 4, 7), 4),
        ((5, 17, 4), 8),
        ((136, 171, 146), 128),
    ],
)
def test_patch_grid_covers_the_volume(shape, p):
    tiles = patch_grid(shape, p)
    padded = tuple(max(n, p) for n in shape)
    cover = np.zeros(padded, np.int32)
    for tile in tiles:
        assert all(
            s.stop - s.start == p and 0 <= s.start and s.stop <= n
            for s, n in zip(tile, padded, strict=True)
        )
        cover[tile] += 1
    assert (cover >= 1).all()
    # Tiles per axis: ceil(n / p), and exact multiples are tiled without overlap.
    counts = [-(-n // p) for n in padded]
    assert len(tiles) == np.prod(counts)
    if all(n % p == 0 for n in padded):
        assert (cover == 1).all()


def test_patch_grid_starts():
    starts = sorted({t[0].start for t in patch_grid((257, 4, 4), 128)})
    assert starts == [0, 128, 129]  # the last tile is shifted back to end at the border
    assert patch_grid((100, 128, 50), 128) == [(slice(0, 128),) * 3]
    tiles = patch_grid((6, 6, 6), (2, 3, 6))
    assert len(tiles) == 3 * 2 * 1
    assert list(itertools.islice(tiles, 2)) == [
        (slice(0, 2), slice(0, 3), slice(0, 6)),
        (slice(0, 2), slice(3, 6), slice(0, 6)),
    ]
    with pytest.raises(ValueError):
        patch_grid((4, 4, 4), 0)
