"""Properties that hold for every input: crop/uncrop, Dice, label conventions and schemes.

Hypothesis draws small volumes (at most 6 voxels a side), so the whole file runs in seconds.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from brats_mtl.conventions import INTERNAL_LABELS, LABEL_CONVENTIONS
from brats_mtl.data import Case, CaseFiles, load_label_map, load_raw_label_map, write_segmentation
from brats_mtl.evaluation.metrics import dice
from brats_mtl.preprocessing import bounding_box, crop, uncrop
from brats_mtl.tasks import LABEL_SCHEMES, network_classes

FAST = settings(max_examples=25, deadline=None)

shapes = st.tuples(*[st.integers(1, 6)] * 3)


@st.composite
def boxes(draw, shape):
    """A crop box (three unit-step slices with explicit ends) inside ``shape``."""
    box = []
    for n in shape:
        start = draw(st.integers(0, n - 1))
        stop = draw(st.integers(start + 1, n))
        box.append(slice(start, stop))
    return tuple(box)


@st.composite
def volume_and_box(draw):
    """A float32 array (C, X, Y, Z) with C in 1..2 and a crop box inside its grid."""
    shape = draw(shapes)
    channels = draw(st.integers(1, 2))
    array = draw(hnp.arrays(np.float32, (channels, *shape), elements=st.floats(-5, 5, width=32)))
    return array, draw(boxes(shape))


@st.composite
def mask_pairs(draw):
    """Two boolean masks of one small shape."""
    shape = draw(shapes)
    return draw(hnp.arrays(bool, shape)), draw(hnp.arrays(bool, shape))


# --- crop / uncrop -------------------------------------------------------------------------


@FAST
@given(volume_and_box(), st.sampled_from([0, -1.5]))
def test_uncrop_inverts_crop_inside_the_box_and_fills_outside(data, fill):
    array, box = data
    cropped = crop(array, box)
    restored = uncrop(cropped, box, array.shape[1:], fill=fill)
    assert restored.shape == array.shape and restored.dtype == array.dtype
    np.testing.assert_array_equal(crop(restored, box), cropped)  # crop(uncrop(a)) == a
    inside = np.zeros(array.shape[1:], bool)
    inside[box] = True
    np.testing.assert_array_equal(restored[:, inside], array[:, inside])
    assert (restored[:, ~inside] == np.float32(fill)).all()


@FAST
@given(shapes.flatmap(lambda s: hnp.arrays(bool, s)))
def test_the_bounding_box_of_a_mask_loses_no_voxel(mask):
    if not mask.any():
        with pytest.raises(ValueError, match="empty"):
            bounding_box(mask)
        return
    box = bounding_box(mask)
    np.testing.assert_array_equal(uncrop(crop(mask, box), box, mask.shape), mask)
    for axis, sl in enumerate(box):  # the tightest box: its faces touch the mask
        face = crop(mask, box).take([0, sl.stop - sl.start - 1], axis=axis)
        assert face.take(0, axis=axis).any() and face.take(1, axis=axis).any()


# --- Dice ---------------------------------------------------------------------------------


@FAST
@given(mask_pairs())
def test_dice_is_symmetric_bounded_and_matches_its_definition(masks):
    a, b = masks
    d = dice(a, b)
    assert d == dice(b, a)
    assert 0.0 <= d <= 1.0
    total = int(a.sum() + b.sum())
    if total == 0:
        assert d == 1.0  # both empty: a perfect score (BraTS convention)
    else:
        assert d == pytest.approx(2 * int((a & b).sum()) / total, abs=1e-12)
        assert dice(a, a) == 1.0 or not a.any()
        assert (d == 0.0) == (not (a & b).any())


# --- label conventions and schemes ---------------------------------------------------------


@FAST
@pytest.mark.parametrize("name", sorted(LABEL_CONVENTIONS))
@given(data=st.data())
def test_label_convention_round_trips(name, data):
    convention = LABEL_CONVENTIONS[name]
    shape = data.draw(shapes)
    file_labels = data.draw(
        hnp.arrays(np.uint8, shape, elements=st.sampled_from(convention.values))
    )
    internal = convention.to_internal(file_labels)
    assert set(np.unique(internal).tolist()) <= set(INTERNAL_LABELS)
    np.testing.assert_array_equal(convention.from_internal(internal), file_labels)
    labels = data.draw(hnp.arrays(np.uint8, shape, elements=st.sampled_from(INTERNAL_LABELS)))
    np.testing.assert_array_equal(convention.to_internal(convention.from_internal(labels)), labels)


def _reference_case(shape: tuple[int, int, int], convention) -> Case:
    """A case held in memory on a 1 mm grid, to write label maps beside."""
    files = CaseFiles("BraTS-GLI-00000-000", "brats2023", {}, None, None, convention)
    image = np.zeros((4, *shape), np.float32)
    return Case(files, image, None, np.eye(4), None, (1.0, 1.0, 1.0))


@settings(max_examples=10, deadline=None)
@pytest.mark.parametrize("name", list(LABEL_SCHEMES))
@given(data=st.data())
def test_every_label_scheme_round_trips_through_classes_and_files(name, data):
    """File values -> internal labels -> network classes -> internal labels -> file values,
    in memory and through a written NIfTI file; regions are the same on both sides."""
    scheme = LABEL_SCHEMES[name]
    classes = network_classes(scheme)
    convention = scheme.convention
    shape = data.draw(shapes)
    file_labels = data.draw(hnp.arrays(np.uint8, shape, elements=st.sampled_from(scheme.values)))

    internal = file_labels if convention is None else convention.to_internal(file_labels)
    predicted = classes.to_labels(classes.to_classes(internal))
    np.testing.assert_array_equal(predicted, internal)
    for region, internal_values in classes.regions.items():
        np.testing.assert_array_equal(
            scheme.region_mask(file_labels, region), np.isin(internal, internal_values)
        )

    reference = _reference_case(shape, convention or LABEL_CONVENTIONS["brats2023"])
    with tempfile.TemporaryDirectory() as tmp:
        path = write_segmentation(
            predicted, reference, Path(tmp) / "pred.nii.gz", scheme=scheme, convention=convention
        )
        written, _, _ = load_raw_label_map(path)
        np.testing.assert_array_equal(written, file_labels)
        if convention is not None:
            np.testing.assert_array_equal(load_label_map(path, convention)[0], internal)
