"""The synthetic phantom: structure, contrasts, determinism, writers."""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from brats_mtl.conventions import ED, ET, NCR_NET
from brats_mtl.data import (
    load_case,
    load_label_map,
    make_phantom,
    write_phantom_case,
    write_phantom_cohort,
)

T1, T1CE, T2, FLAIR = range(4)


@pytest.mark.parametrize("shape", [(64, 64, 64), (40, 32, 24), (16, 16, 16)])
def test_shapes_and_background(shape):
    image, labels = make_phantom(shape, seed=0)
    assert image.shape == (4, *shape) and image.dtype == np.float32
    assert labels.shape == shape and labels.dtype == np.uint8
    nonzero = image != 0
    brain = nonzero.any(axis=0)
    # Every modality is non-zero on exactly the same voxels: the brain ellipsoid.
    assert all(np.array_equal(nonzero[c], brain) for c in range(4))
    assert (image[:, ~brain] == 0).all() and (image[:, brain] >= 1).all()
    assert np.array_equal(image, np.rint(image))  # whole numbers: int16 files are exact
    # Ellipsoid with semi-axes 0.37-0.42 of each axis: 4/3 pi 0.37^3 .. 4/3 pi 0.42^3.
    assert 0.2 < brain.mean() < 0.32
    assert np.array_equal(ndimage.binary_fill_holes(brain), brain)
    assert ndimage.label(brain)[1] == 1
    assert not labels[~brain].any()


@pytest.mark.parametrize("shape", [(48, 48, 48), (16, 16, 16)])
def test_tumor_structure(shape):
    for seed in range(10):
        _, labels = make_phantom(shape, seed=seed)
        ncr, et = labels == NCR_NET, labels == ET
        core = ncr | et
        assert ncr.any() and et.any() and (labels == ED).any()
        assert set(np.unique(labels).tolist()) == {0, NCR_NET, ED, ET}
        # ET is a rim around the NCR/NET core; edema surrounds the tumor core.
        assert not (ndimage.binary_dilation(ncr) & (labels == 0)).any()
        assert not (ndimage.binary_dilation(ncr) & (labels == ED)).any()
        assert not (ndimage.binary_dilation(core) & (labels == 0)).any()
        assert ndimage.label(core)[1] == 1


def test_without_et():
    _, labels = make_phantom((32, 32, 32), with_et=False, seed=4)
    assert set(np.unique(labels).tolist()) == {0, NCR_NET, ED}


def test_contrasts():
    image, labels = make_phantom((64, 64, 64), seed=1)
    brain = image[0] > 0
    normal = brain & (labels == 0)

    def mean(c, mask):
        return float(image[c][mask].mean())

    et, ncr, ed = labels == ET, labels == NCR_NET, labels == ED
    assert mean(T1CE, et) > 1.5 * max(mean(T1CE, m) for m in (normal, ncr, ed))
    assert mean(FLAIR, ed) > 1.3 * mean(FLAIR, normal)
    assert mean(T2, ed) > 1.3 * mean(T2, normal)
    assert mean(T1CE, ncr) < 0.6 * mean(T1CE, normal)
    assert mean(T1, ncr) < 0.6 * mean(T1, normal)
    # Smooth texture and noise: no tissue is constant.
    assert all(image[c][normal].std() > 5 for c in range(4))


@pytest.mark.parametrize("with_et", [True, False])
def test_enhancing_vessel_is_bright_on_t1ce_dark_on_t2_and_labeled_edema(with_et):
    plain, labels = make_phantom((48, 48, 48), with_et=with_et, seed=2)
    image, vessel_labels = make_phantom(
        (48, 48, 48), with_et=with_et, seed=2, enhancing_vessel=True
    )
    assert np.array_equal(labels, vessel_labels)  # a vessel is not tumor
    ed = labels == ED
    # vessel voxels: t1ce far above the edema's (the edema around them stays as it was)
    vessel = ed & (image[T1CE] > 1.5 * np.median(plain[T1CE][ed]))
    assert 10 <= vessel.sum() <= 60  # a thin tube through the edema shell
    assert not (plain[T1CE][ed] > 1.5 * np.median(plain[T1CE][ed])).any()
    assert ndimage.label(vessel, np.ones((3, 3, 3)))[1] <= 2  # one tube (the core may cut it)
    normal = (labels == 0) & (image[0] > 0)
    assert image[T2][vessel].mean() < 0.7 * image[T2][normal].mean()  # flow void
    assert image[FLAIR][vessel].mean() < 0.7 * image[FLAIR][normal].mean()
    if with_et:  # dimmer on t1ce than the enhancing rim
        assert image[T1CE][vessel].mean() < 0.9 * image[T1CE][labels == ET].mean()


def test_seeded_randomness():
    a = make_phantom((32, 32, 32), seed=5)
    b = make_phantom((32, 32, 32), seed=5)
    c = make_phantom((32, 32, 32), seed=np.random.default_rng(5))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    centres, sizes = [], []
    for seed in range(6):
        _, labels = make_phantom((32, 32, 32), seed=seed)
        centres.append(ndimage.center_of_mass(labels > 0))
        sizes.append(int((labels > 0).sum()))
    assert len({tuple(np.round(c, 1)) for c in centres}) == 6
    assert len(set(sizes)) == 6


def test_bad_shape():
    with pytest.raises(ValueError, match="at least 16"):
        make_phantom((8, 32, 32))


def test_cohort_et_presence_and_grades(tmp_path):
    cases = write_phantom_cohort(
        tmp_path, n_labeled=8, n_unlabeled=1, layout="brats2020", shape=(16, 16, 16), seed=3
    )
    has_et = [ET in load_label_map(c.seg)[0] for c in cases if c.labeled]
    assert has_et == [True, True, True, False, True, True, True, False]
    with (tmp_path / "name_mapping.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == [
        "Grade",
        "BraTS_2017_subject_ID",
        "BraTS_2018_subject_ID",
        "TCGA_TCIA_subject_ID",
        "BraTS_2019_subject_ID",
        "BraTS_2020_subject_ID",
    ]
    assert [(r["BraTS_2020_subject_ID"], r["Grade"]) for r in rows][:3] == [
        ("BraTS20_Training_001", "HGG"),
        ("BraTS20_Training_002", "LGG"),
        ("BraTS20_Training_003", "HGG"),
    ]
    assert len(rows) == 8  # the unlabeled case has no grade


def test_written_files_are_brats_like(tmp_path):
    files = write_phantom_case(tmp_path, "BraTS2021_00001", shape=(24, 20, 16))
    img = nib.load(files.images["flair"])
    assert img.get_data_dtype() == np.int16
    assert (int(img.header["qform_code"]), int(img.header["sform_code"])) == (1, 1)
    assert nib.aff2axcodes(img.affine) == ("L", "P", "S")
    assert nib.load(files.seg).get_data_dtype() == np.uint8
    assert load_case(files).spacing_mm == (1.0, 1.0, 1.0)


def test_writer_errors(tmp_path):
    write_phantom_case(tmp_path, "BraTS2021_00001", shape=(16, 16, 16))
    with pytest.raises(FileExistsError, match="BraTS2021_00001_t1.nii.gz exists"):
        write_phantom_case(tmp_path, "BraTS2021_00001", shape=(16, 16, 16))
    write_phantom_case(tmp_path, "BraTS2021_00001", shape=(16, 16, 16), overwrite=True)
    with pytest.raises(ValueError, match="unknown layout 'brats2017'"):
        write_phantom_case(tmp_path, "X", layout="brats2017")
    with pytest.raises(ValueError, match="plain file name"):
        write_phantom_case(tmp_path, "a/b")
    with pytest.raises(ValueError, match="grade"):
        write_phantom_case(tmp_path, "X", layout="brats2018", grade="GBM")
