"""NIfTI reading and writing: phantom round trips and every bad input."""

from __future__ import annotations

import gzip
import os

import nibabel as nib
import numpy as np
import pytest

from brats_mtl.conventions import BRATS_2019, BRATS_2023, MSD
from brats_mtl.data import (
    LAYOUTS,
    CaseDataError,
    discover_cases,
    load_case,
    load_label_map,
    make_phantom,
    write_phantom_case,
    write_segmentation,
)

SHAPE = (20, 18, 16)
# The phantom's grid, as the BraTS releases: 1 mm, x and y flipped, origin (0, Y - 1, 0).
LPS = np.array([[-1.0, 0, 0, 0], [0, -1.0, 0, 17], [0, 0, 1.0, 0], [0, 0, 0, 1]])


def _save(data, path, affine=LPS, dtype=None):
    img = nib.Nifti1Image(np.asarray(data), affine, dtype=dtype or np.asarray(data).dtype)
    nib.save(img, path)
    return path


@pytest.fixture
def case_files(tmp_path):
    return write_phantom_case(tmp_path, "BraTS2021_00000", shape=SHAPE, seed=3)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_load_equals_phantom(tmp_path, layout):
    files = write_phantom_case(tmp_path, "Case_001", layout=layout, shape=SHAPE, seed=7)
    image, labels = make_phantom(SHAPE, seed=7)
    case = load_case(files)
    assert case.image.dtype == np.float32 and case.image.shape == (4, *SHAPE)
    np.testing.assert_array_equal(case.image, image)  # channels t1, t1ce, t2, flair
    assert case.labels.dtype == np.uint8
    np.testing.assert_array_equal(case.labels, labels)  # internal {0, 1, 2, 4}
    np.testing.assert_array_equal(case.affine, LPS)
    assert case.spacing_mm == (1.0, 1.0, 1.0)
    assert case.case_id == "Case_001"
    assert load_case(files, load_labels=False).labels is None


def test_labels_on_disk_follow_the_layout(tmp_path):
    _, labels = make_phantom(SHAPE, seed=1)
    for layout, convention in (("brats2021", BRATS_2019), ("brats2023", BRATS_2023), ("msd", MSD)):
        files = write_phantom_case(tmp_path / layout, "C", layout=layout, shape=SHAPE, seed=1)
        stored = np.asarray(nib.load(files.seg).dataobj)
        np.testing.assert_array_equal(stored, convention.from_internal(labels))


def test_trailing_singleton_axis_is_squeezed(tmp_path, case_files):
    t2 = case_files.images["t2"]
    data = np.asarray(nib.load(t2).dataobj)
    _save(data[..., None], t2)
    case = load_case(case_files)
    np.testing.assert_array_equal(case.image[2], data)


def test_missing_modality_file(case_files):
    case_files.images["t1ce"].unlink()
    with pytest.raises(FileNotFoundError, match="BraTS2021_00000_t1ce.nii.gz"):
        load_case(case_files)


def test_shape_mismatch(case_files):
    _save(np.ones((20, 18, 15), np.int16), case_files.images["flair"])
    with pytest.raises(CaseDataError, match=r"_flair.nii.gz \(flair\) has shape \(20, 18, 15\)"):
        load_case(case_files)


def test_affine_mismatch_names_both(case_files):
    data = np.asarray(nib.load(case_files.images["t2"]).dataobj)
    shifted = LPS.copy()
    shifted[0, 3] += 0.5
    _save(data, case_files.images["t2"], affine=shifted)
    with pytest.raises(CaseDataError, match=r"(?s)_t2.nii.gz \(t2\) has affine.*0\.5.*_t1.nii.gz"):
        load_case(case_files)
    # Float noise far below the tolerance is accepted.
    nearly = LPS.copy() * (1 + 1e-7)
    _save(data, case_files.images["t2"], affine=nearly)
    load_case(case_files)


def test_4d_stack_where_3d_expected(case_files):
    _save(np.ones((*SHAPE, 2), np.int16), case_files.images["t1"])
    with pytest.raises(CaseDataError, match=r"_t1.nii.gz has shape .*stack of 2 volumes"):
        load_case(case_files)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_voxels(case_files, bad):
    data = np.asarray(nib.load(case_files.images["t1ce"]).dataobj).astype(np.float32)
    data[3, 4, 5] = bad
    _save(data, case_files.images["t1ce"])
    with pytest.raises(CaseDataError, match=r"_t1ce.nii.gz holds 1 NaN/inf voxels"):
        load_case(case_files)


def test_label_values_outside_convention(tmp_path, case_files):
    labels = np.asarray(nib.load(case_files.seg).dataobj).copy()
    labels[0, 0, 0] = 3  # ET is 4 in the 2021 convention
    _save(labels, case_files.seg)
    with pytest.raises(
        CaseDataError, match=r"_seg.nii.gz holds values \[3\] outside the brats2019"
    ):
        load_case(case_files)
    files23 = write_phantom_case(
        tmp_path / "b", "BraTS-GLI-00000-000", layout="brats2023", shape=SHAPE
    )
    labels = np.asarray(nib.load(files23.seg).dataobj).copy()
    labels[0, 0, 0] = 4  # ET is 3 in the 2023 convention
    _save(labels, files23.seg)
    with pytest.raises(
        CaseDataError, match=r"-seg.nii.gz holds values \[4\] outside the brats2023"
    ):
        load_case(files23)


def test_non_integer_and_mismatched_labels(case_files):
    _save(np.full(SHAPE, 0.5, np.float32), case_files.seg)
    with pytest.raises(CaseDataError, match="_seg.nii.gz holds non-integer values"):
        load_case(case_files)
    _save(np.zeros((20, 18, 17), np.uint8), case_files.seg)
    with pytest.raises(CaseDataError, match=r"segmentation .*_seg.nii.gz has shape \(20, 18, 17\)"):
        load_case(case_files)


@pytest.mark.parametrize("compress", [True, False], ids=["nii.gz", "nii"])
def test_truncated_file(tmp_path, compress):
    files = write_phantom_case(tmp_path, "BraTS2021_00000", shape=SHAPE, compress=compress)
    path = files.images["t2"]
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CaseDataError, match=r"(?s)_t2.nii(.gz)? .*truncated or damaged"):
        load_case(files)


def test_garbage_file(case_files):
    case_files.images["flair"].write_bytes(gzip.compress(b"not a nifti file" * 10))
    with pytest.raises(CaseDataError, match=r"cannot read .*_flair.nii.gz"):
        load_case(case_files)


def test_load_label_map_infers_convention(tmp_path):
    internal = np.zeros(SHAPE, np.uint8)
    internal[2:5, 2:5, 2:5], internal[5, 5, 5], internal[6, 6, 6] = 2, 1, 4
    for convention in (BRATS_2019, BRATS_2023):
        path = _save(convention.from_internal(internal), tmp_path / f"{convention.name}.nii.gz")
        labels, affine, spacing = load_label_map(path)
        np.testing.assert_array_equal(labels, internal)
        np.testing.assert_array_equal(affine, LPS)
        assert spacing == (1.0, 1.0, 1.0)
    msd_path = _save(MSD.from_internal(internal), tmp_path / "msd.nii.gz")
    np.testing.assert_array_equal(load_label_map(msd_path, MSD)[0], internal)
    both = _save(np.array([0, 3, 4], np.int16).reshape(1, 1, 3), tmp_path / "both.nii")
    with pytest.raises(CaseDataError, match=r"both.nii holds values \[0, 3, 4\]"):
        load_label_map(both)


# --- writing ---------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["brats2021", "brats2023", "msd"])
def test_write_round_trip(tmp_path, layout):
    files = write_phantom_case(tmp_path / "in", "C", layout=layout, shape=SHAPE, seed=2)
    case = load_case(files)
    out = write_segmentation(case.labels, case, tmp_path / "out" / "sub" / "C.nii.gz")
    img = nib.load(out)
    assert img.shape == SHAPE and img.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(img.affine, case.affine)
    assert np.isnan(img.header["scl_slope"]) and np.isnan(img.header["scl_inter"])
    # The file holds the input dataset's convention, byte for byte as the reference.
    np.testing.assert_array_equal(np.asarray(img.dataobj), np.asarray(nib.load(files.seg).dataobj))
    np.testing.assert_array_equal(load_label_map(out, files.label_convention)[0], case.labels)


def test_write_copies_qform_and_sform_codes(tmp_path, case_files):
    t1 = nib.load(case_files.images["t1"])
    img = nib.Nifti1Image(np.asarray(t1.dataobj), t1.affine, t1.header)
    img.set_qform(t1.affine, code=2)
    img.set_sform(t1.affine, code=4)
    nib.save(img, case_files.images["t1"])
    case = load_case(case_files)
    out = nib.load(write_segmentation(case.labels, case, tmp_path / "o.nii.gz"))
    assert (int(out.header["qform_code"]), int(out.header["sform_code"])) == (2, 4)
    np.testing.assert_allclose(out.get_qform(), case.affine)
    np.testing.assert_allclose(out.get_sform(), case.affine)


def test_write_convention_override(tmp_path):
    files = write_phantom_case(tmp_path, "BraTS-GLI-00000-000", layout="brats2023", shape=SHAPE)
    case = load_case(files)
    assert 4 in case.labels
    as23 = write_segmentation(case.labels, case, tmp_path / "a.nii.gz")
    as19 = write_segmentation(case.labels, case, tmp_path / "b.nii.gz", convention="brats2019")
    as_msd = write_segmentation(case.labels, case, tmp_path / "c.nii.gz", convention=MSD)
    values = {
        p.name: set(np.unique(np.asarray(nib.load(p).dataobj)).tolist())
        for p in (as23, as19, as_msd)
    }
    assert values == {"a.nii.gz": {0, 1, 2, 3}, "b.nii.gz": {0, 1, 2, 4}, "c.nii.gz": {0, 1, 2, 3}}
    for path, conv in ((as23, None), (as19, None), (as_msd, MSD)):
        np.testing.assert_array_equal(load_label_map(path, conv)[0], case.labels)
    with pytest.raises(ValueError, match="unknown label convention 'brats2017'"):
        write_segmentation(case.labels, case, tmp_path / "d.nii.gz", convention="brats2017")


def test_write_refuses_overwrite_and_is_atomic(tmp_path, case_files, monkeypatch):
    case = load_case(case_files)
    out_dir = tmp_path / "out"
    path = write_segmentation(case.labels, case, out_dir / "p.nii.gz")
    assert sorted(os.listdir(out_dir)) == ["p.nii.gz"]  # no temporary file left
    with pytest.raises(FileExistsError, match="p.nii.gz exists"):
        write_segmentation(np.zeros_like(case.labels), case, path)
    assert np.asarray(nib.load(path).dataobj).any()  # untouched
    write_segmentation(np.zeros_like(case.labels), case, path, overwrite=True)
    assert not np.asarray(nib.load(path).dataobj).any()

    def broken_save(img, filename):
        with open(filename, "wb") as fh:
            fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write_segmentation(case.labels, case, path, overwrite=True)
    assert sorted(os.listdir(out_dir)) == ["p.nii.gz"]
    assert not np.asarray(nib.load(path).dataobj).any()  # the old file is intact


def test_write_extension_and_bad_input(tmp_path, case_files):
    case = load_case(case_files)
    plain = write_segmentation(case.labels, case, tmp_path / "p.nii")
    assert plain.read_bytes()[344:348] == b"n+1\x00"  # uncompressed single-file NIfTI-1
    packed = write_segmentation(case.labels, case, tmp_path / "p.nii.gz")
    assert packed.read_bytes()[:2] == b"\x1f\x8b"  # gzip magic
    with pytest.raises(ValueError, match=r"p.mha must end in .nii.gz or .nii"):
        write_segmentation(case.labels, case, tmp_path / "p.mha")
    with pytest.raises(ValueError, match=r"shape \(20, 18\)"):
        write_segmentation(case.labels[..., 0], case, tmp_path / "q.nii.gz")
    with pytest.raises(ValueError, match=r"\[3\]"):
        write_segmentation(np.full(SHAPE, 3, np.uint8), case, tmp_path / "q.nii.gz")
    with pytest.raises(ValueError, match="input file"):
        write_segmentation(case.labels, case, case_files.seg, overwrite=True)
    assert not (tmp_path / "q.nii.gz").exists()


def test_discovered_case_loads(tmp_path):
    write_phantom_case(
        tmp_path, "BraTS20_Training_001", layout="brats2020", shape=SHAPE, compress=False
    )
    (files,) = discover_cases(tmp_path)
    assert load_case(files).image.shape == (4, *SHAPE)
