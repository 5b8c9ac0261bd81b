"""The data layer on the real BraTS sample cases in ../shared/data (skipped when absent)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from brats_mtl.conventions import BRATS_2023
from brats_mtl.data import discover_cases, load_case, load_label_map, write_segmentation
from brats_mtl.preprocessing import preprocess_case, uncrop

pytestmark = pytest.mark.data

ALL_CASES = [
    "BraTS2021_00000",
    "BraTS2021_00002",
    "BraTS2021_00006",
    "BraTS2021_00014",
    "Brats18_2013_2_1",
]
# 2021 -> 2023 file names of the same images (shared/data/README.md).
NAMES_2023 = {"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f"}


def test_discover_shared_brats(shared_data):
    cases = discover_cases(shared_data / "brats")
    assert [c.case_id for c in cases] == sorted(ALL_CASES)
    assert all(c.labeled and c.grade is None for c in cases)
    assert {c.case_id: c.layout for c in cases}["Brats18_2013_2_1"] == "brats2018"
    assert {c.layout for c in cases if c.case_id.startswith("BraTS2021")} == {"brats2021"}


def _round_trip(shared_data, tmp_path, case_id):
    (files,) = [c for c in discover_cases(shared_data / "brats") if c.case_id == case_id]
    case = load_case(files)
    assert case.image.shape == (4, 240, 240, 155) and case.image.dtype == np.float32
    assert case.spacing_mm == (1.0, 1.0, 1.0)
    pre = preprocess_case(case)
    labels = uncrop(pre.labels, pre.box, pre.original_shape)
    out = nib.load(write_segmentation(labels, case, tmp_path / f"{case_id}.nii.gz"))
    ref = nib.load(files.seg)
    t1 = nib.load(files.images["t1"])
    np.testing.assert_array_equal(np.asarray(out.dataobj), np.asarray(ref.dataobj))
    assert out.get_data_dtype() == np.uint8
    np.testing.assert_allclose(out.affine, ref.affine, atol=1e-6)
    # Codes follow the input images (Brats18_2013_2_1: images qform 2, its seg file qform 1).
    for code in ("qform_code", "sform_code"):
        assert int(out.header[code]) == int(t1.header[code])


def test_round_trip_one_case(shared_data, tmp_path):
    _round_trip(shared_data, tmp_path, "BraTS2021_00000")


@pytest.mark.slow
@pytest.mark.parametrize("case_id", ALL_CASES)
def test_round_trip_every_case(shared_data, tmp_path, case_id):
    _round_trip(shared_data, tmp_path, case_id)


def test_2023_names_and_labels_match_2021(shared_data, tmp_path):
    src = shared_data / "brats" / "BraTS2021_00000"
    folder = tmp_path / "BraTS-GLI-00000-000"
    folder.mkdir()
    for old, new in NAMES_2023.items():
        (folder / f"BraTS-GLI-00000-000-{new}.nii.gz").symlink_to(
            src / f"BraTS2021_00000_{old}.nii.gz"
        )
    seg23 = shared_data / "brats2023_labels" / "BraTS-GLI-00000-000-seg.nii.gz"
    (folder / "BraTS-GLI-00000-000-seg.nii.gz").symlink_to(seg23)

    (files,) = discover_cases(tmp_path)
    assert files.layout == "brats2023" and files.label_convention == BRATS_2023
    case = load_case(files)
    labels21, _, _ = load_label_map(src / "BraTS2021_00000_seg.nii.gz")
    np.testing.assert_array_equal(case.labels, labels21)
    assert set(np.unique(case.labels).tolist()) == {0, 1, 2, 4}
    # Written back in the 2023 convention: the 2023 release file, voxel for voxel.
    out = write_segmentation(case.labels, case, tmp_path / "out" / "pred.nii.gz")
    np.testing.assert_array_equal(
        np.asarray(nib.load(out).dataobj), np.asarray(nib.load(seg23).dataobj).astype(np.uint8)
    )


def test_unlabeled_met_case(shared_data):
    (files,) = discover_cases(shared_data / "unlabeled")
    assert files.case_id == "BraTS-MET-00110-000"
    assert files.layout == "brats2023" and not files.labeled
    case = load_case(files)
    assert case.labels is None and case.image.shape == (4, 240, 240, 155)
    assert nib.aff2axcodes(case.affine) == ("R", "A", "S")
    glioma = nib.load(shared_data / "brats" / "BraTS2021_00000" / "BraTS2021_00000_t1.nii.gz")
    assert nib.aff2axcodes(glioma.affine) == ("L", "P", "S")
    assert (case.image != 0).any(axis=0).mean() > 0.05
