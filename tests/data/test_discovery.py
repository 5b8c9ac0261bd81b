"""Case discovery in every BraTS layout, built from phantoms in a temp folder."""

from __future__ import annotations

import shutil

import pytest

from brats_mtl.conventions import BRATS_2019, BRATS_2023, MSD
from brats_mtl.data import LAYOUTS, discover_cases, write_phantom_case, write_phantom_cohort

SHAPE = (16, 16, 16)


@pytest.mark.parametrize("compress", [True, False], ids=["nii.gz", "nii"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_cohort_round_trip(tmp_path, layout, compress):
    written = write_phantom_cohort(
        tmp_path, n_labeled=4, n_unlabeled=2, layout=layout, shape=SHAPE, compress=compress
    )
    found = discover_cases(tmp_path)
    assert found == written
    assert [c.case_id for c in found] == sorted(c.case_id for c in found)
    assert [c.labeled for c in found].count(True) == 4
    assert all(c.layout == layout for c in found)
    ext = ".nii.gz" if compress else ".nii"
    for case in found:
        assert all(p.name.endswith(ext) and p.is_file() for p in case.images.values())
        assert case.seg is None or case.seg.name.endswith(ext)
    expected_convention = {"brats2023": BRATS_2023, "msd": MSD}.get(layout, BRATS_2019)
    assert {c.label_convention for c in found} == {expected_convention}
    labeled = [c for c in found if c.labeled]
    if layout in ("brats2018", "brats2020"):
        assert [c.grade for c in labeled] == ["HGG", "LGG", "HGG", "LGG"]
    else:
        assert all(c.grade is None for c in found)
    assert all(c.grade is None for c in found if not c.labeled)


def test_file_names_per_layout(tmp_path):
    c18 = write_phantom_case(
        tmp_path / "a", "BraTS19_CBICA_AAB_1", layout="brats2018", shape=SHAPE, grade="LGG"
    )
    assert c18.images["t1ce"].relative_to(tmp_path / "a").as_posix() == (
        "LGG/BraTS19_CBICA_AAB_1/BraTS19_CBICA_AAB_1_t1ce.nii.gz"
    )
    c23 = write_phantom_case(tmp_path / "b", "BraTS-GLI-00000-000", layout="brats2023", shape=SHAPE)
    assert {m: p.name for m, p in c23.images.items()} == {
        "t1": "BraTS-GLI-00000-000-t1n.nii.gz",
        "t1ce": "BraTS-GLI-00000-000-t1c.nii.gz",
        "t2": "BraTS-GLI-00000-000-t2w.nii.gz",
        "flair": "BraTS-GLI-00000-000-t2f.nii.gz",
    }
    assert c23.seg.name == "BraTS-GLI-00000-000-seg.nii.gz"
    msd = write_phantom_case(tmp_path / "c", "BRATS_001", layout="msd", shape=SHAPE)
    assert set(msd.images.values()) == {tmp_path / "c" / "imagesTr" / "BRATS_001.nii.gz"}
    assert msd.seg == tmp_path / "c" / "labelsTr" / "BRATS_001.nii.gz"


def test_2023_task_prefixes(tmp_path):
    ids = [
        "BraTS-GLI-00001-000",
        "BraTS-MET-00110-000",
        "BraTS-PED-00002-000",
        "BraTS-SSA-00003-000",
        "BraTS-MEN-00004-000",
    ]
    for case_id in ids:
        write_phantom_case(
            tmp_path,
            case_id,
            layout="brats2023",
            shape=SHAPE,
            labeled=case_id.startswith("BraTS-M"),
        )
    found = discover_cases(tmp_path)
    assert [c.case_id for c in found] == sorted(ids)
    assert {c.layout for c in found} == {"brats2023"}
    assert [c.labeled for c in found] == [False, True, True, False, False]


def test_mixed_flat_folder(tmp_path):
    # As ../shared/data/brats: 2021 IDs beside a 2018 ID, plus a 2023-named case.
    write_phantom_case(tmp_path, "BraTS2021_00000", shape=SHAPE)
    write_phantom_case(tmp_path, "Brats18_2013_2_1", layout="brats2021", shape=SHAPE)
    write_phantom_case(tmp_path, "BraTS-GLI-00002-000", layout="brats2023", shape=SHAPE)
    write_phantom_case(
        tmp_path, "BraTS20_Training_355", layout="brats2021", shape=SHAPE, compress=False
    )
    found = {c.case_id: c for c in discover_cases(tmp_path)}
    assert {k: v.layout for k, v in found.items()} == {
        "BraTS-GLI-00002-000": "brats2023",
        "BraTS2021_00000": "brats2021",
        "BraTS20_Training_355": "brats2020",
        "Brats18_2013_2_1": "brats2018",
    }
    assert all(c.labeled and c.grade is None for c in found.values())


def test_root_is_one_case_folder(tmp_path):
    case = write_phantom_case(tmp_path, "BraTS2021_00007", shape=SHAPE)
    assert discover_cases(tmp_path / "BraTS2021_00007") == [case]
    graded = write_phantom_case(
        tmp_path / "d", "Brats18_TCIA_1", layout="brats2018", shape=SHAPE, grade="LGG"
    )
    assert discover_cases(tmp_path / "d" / "LGG" / "Brats18_TCIA_1") == [graded]


def test_brats2020_misnamed_seg_of_case_355(tmp_path):
    case = write_phantom_case(
        tmp_path,
        "BraTS20_Training_355",
        layout="brats2020",
        shape=SHAPE,
        compress=False,
        grade="HGG",
    )
    misnamed = case.seg.with_name("W39_1998.09.19_Segm.nii")
    case.seg.rename(misnamed)
    (found,) = discover_cases(tmp_path)
    assert found.seg == misnamed
    assert found.grade == "HGG" and found.layout == "brats2020"
    # Two candidates are ambiguous: the case is then read as unlabeled.
    shutil.copy(misnamed, misnamed.with_name("other_seg_copy.nii"))
    (found,) = discover_cases(tmp_path)
    assert found.seg is None


def test_grade_from_2019_name_mapping(tmp_path, shared_data):
    # A flat BraTS 2019 folder with the 2019 name_mapping.csv (no 2020 column) in its root.
    shutil.copy(shared_data / "survival" / "brats2019" / "name_mapping.csv", tmp_path)
    write_phantom_case(tmp_path, "BraTS19_CBICA_AAB_1", layout="brats2021", shape=SHAPE)
    write_phantom_case(tmp_path, "BraTS19_2013_0_1", layout="brats2021", shape=SHAPE)
    grades = {c.case_id: c.grade for c in discover_cases(tmp_path)}
    assert grades == {"BraTS19_CBICA_AAB_1": "HGG", "BraTS19_2013_0_1": "LGG"}


def test_t1_never_matches_t1ce(tmp_path):
    case = write_phantom_case(tmp_path, "BraTS2021_00000", shape=SHAPE)
    assert case.images["t1"].name == "BraTS2021_00000_t1.nii.gz"
    assert discover_cases(tmp_path)[0].images["t1"].name == "BraTS2021_00000_t1.nii.gz"
    case.images["t1"].unlink()
    with pytest.raises(ValueError, match=r"BraTS2021_00000.*lacks modality t1\b"):
        discover_cases(tmp_path)


def test_duplicate_modality_files(tmp_path):
    case = write_phantom_case(tmp_path, "BraTS2021_00000", shape=SHAPE)
    t2 = case.images["t2"]
    shutil.copy(t2, t2.with_name("BraTS2021_00000_t2.nii"))
    with pytest.raises(ValueError, match=r"2 files for modality t2.*_t2\.nii'.*_t2\.nii\.gz"):
        discover_cases(tmp_path)


def test_mixed_naming_styles_are_duplicates(tmp_path):
    case = write_phantom_case(tmp_path, "BraTS2021_00000", shape=SHAPE)
    shutil.copy(case.images["flair"], case.images["flair"].with_name("BraTS2021_00000-t2f.nii.gz"))
    with pytest.raises(ValueError, match="modality flair"):
        discover_cases(tmp_path)


def test_nothing_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        discover_cases(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no BraTS cases found under .*empty"):
        discover_cases(tmp_path / "empty")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="file.txt"):
        discover_cases(tmp_path / "file.txt")


def test_prediction_folders_are_not_cases(tmp_path):
    case = write_phantom_case(tmp_path / "data", "BraTS2021_00000", shape=SHAPE)
    predictions = tmp_path / "data" / "predictions"
    predictions.mkdir()
    shutil.copy(case.seg, predictions / "BraTS2021_00000_seg.nii.gz")
    shutil.copy(case.seg, predictions / "BraTS2021_00001.nii.gz")
    assert discover_cases(tmp_path / "data") == [case]


def test_same_case_twice(tmp_path):
    write_phantom_case(tmp_path / "a", "BraTS2021_00000", shape=SHAPE)
    write_phantom_case(tmp_path / "b", "BraTS2021_00000", shape=SHAPE)
    with pytest.raises(ValueError, match=r"BraTS2021_00000 found twice: .*a.* and .*b"):
        discover_cases(tmp_path)


def test_msd_ignores_resource_forks_and_needs_labels(tmp_path):
    write_phantom_cohort(tmp_path, n_labeled=2, n_unlabeled=1, layout="msd", shape=SHAPE)
    (tmp_path / "imagesTr" / "._BRATS_001.nii.gz").write_bytes(b"\x00\x05\x16\x07")
    (tmp_path / "labelsTr" / "._BRATS_001.nii.gz").write_bytes(b"\x00\x05\x16\x07")
    found = discover_cases(tmp_path)
    assert [(c.case_id, c.labeled) for c in found] == [
        ("BRATS_001", True),
        ("BRATS_002", True),
        ("BRATS_003", False),
    ]
    (tmp_path / "labelsTr" / "BRATS_002.nii.gz").unlink()
    with pytest.raises(ValueError, match=r"imagesTr.BRATS_002\.nii\.gz has no label file"):
        discover_cases(tmp_path)


def test_invalid_collects_broken_case_folders(tmp_path):
    good = write_phantom_case(tmp_path, "BraTS2021_00000", shape=SHAPE)
    broken = write_phantom_case(tmp_path, "BraTS2021_00001", shape=SHAPE)
    broken.images["flair"].unlink()
    # without the option the broken folder stops discovery, as before
    with pytest.raises(ValueError, match=r"BraTS2021_00001.*lacks modality flair"):
        discover_cases(tmp_path)
    invalid: list[tuple[str, str]] = []
    assert discover_cases(tmp_path, invalid=invalid) == [good]
    ((case_id, message),) = invalid
    assert case_id == "BraTS2021_00001"
    assert str(broken.images["t1"].parent) in message and "lacks modality flair" in message
    assert "BraTS2021_00001_t1.nii.gz" in message  # the files found


def test_invalid_judges_each_case_of_a_flat_folder(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    cases = [write_phantom_case(tmp_path, f"BraTS2021_0000{i}", shape=SHAPE) for i in range(3)]
    for case in cases:
        for path in [*case.images.values(), case.seg]:
            shutil.move(path, flat / path.name)
    (flat / "BraTS2021_00001_t2.nii.gz").unlink()
    shutil.copy(flat / "BraTS2021_00002_t1.nii.gz", flat / "BraTS2021_00002_t1.nii")
    invalid: list[tuple[str, str]] = []
    found = discover_cases(flat, invalid=invalid)
    assert [(c.case_id, c.labeled) for c in found] == [("BraTS2021_00000", True)]
    assert [cid for cid, _ in invalid] == ["BraTS2021_00001", "BraTS2021_00002"]
    assert "lacks modality t2" in invalid[0][1]
    assert "2 files for modality t1" in invalid[1][1]


def test_invalid_still_raises_for_the_cohort(tmp_path):
    # no case folder at all
    (tmp_path / "empty").mkdir()
    invalid: list[tuple[str, str]] = []
    with pytest.raises(ValueError, match="no BraTS cases found"):
        discover_cases(tmp_path / "empty", invalid=invalid)
    # only broken cases: returned empty, the errors collected
    only = write_phantom_case(tmp_path / "only", "BraTS2021_00000", shape=SHAPE)
    only.images["t1ce"].unlink()
    assert discover_cases(tmp_path / "only", invalid=invalid) == []
    assert [cid for cid, _ in invalid] == ["BraTS2021_00000"]
    # a case ID twice, once readable and once broken: nothing collected
    write_phantom_case(tmp_path / "only" / "copy", "BraTS2021_00000", shape=SHAPE)
    invalid.clear()
    with pytest.raises(ValueError, match="BraTS2021_00000 found twice"):
        discover_cases(tmp_path / "only", invalid=invalid)
    assert invalid == []
    # a broken MSD task folder
    write_phantom_cohort(tmp_path / "msd", n_labeled=2, n_unlabeled=0, layout="msd", shape=SHAPE)
    (tmp_path / "msd" / "labelsTr" / "BRATS_002.nii.gz").unlink()
    with pytest.raises(ValueError, match="has no label file"):
        discover_cases(tmp_path / "msd", invalid=invalid)
