"""What ``evaluate`` does with the inputs it is given: grids, bad files, reference folders.

A prediction is scored on its reference's voxel grid: the same grid stored in another axis
order is reoriented onto it (noted), any other grid is refused; a case that cannot be
scored is listed and the others are; stray files and image folders are not references.
"""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

from brats_mtl.cli.evaluate import command
from brats_mtl.conventions import REGION_ORDER
from brats_mtl.data import load_label_map, write_phantom_cohort
from brats_mtl.data.discovery import discover_label_maps
from brats_mtl.evaluation import (
    METRIC_COLUMNS,
    RESULT_COLUMNS,
    SUMMARY_ROWS,
    evaluate_case,
    evaluate_folders,
    evaluate_labels,
)
from brats_mtl.evaluation.tables import NOTE_COLUMN

SHAPE = (40, 36, 32)


def _save(labels: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(labels).astype(np.uint8), affine), str(path))
    return path


def _reoriented(path: Path, axcodes: str, out: Path) -> Path:
    """``path`` saved again in the orientation ``axcodes``: same grid, other voxel order."""
    img = nib.load(str(path))
    transform = ornt_transform(io_orientation(img.affine), axcodes2ornt(tuple(axcodes)))
    nib.save(img.as_reoriented(transform), str(out))
    return out


def _invoke(pred_dir: Path, ref_dir: Path, out: Path, *extra: str):
    return CliRunner().invoke(command, [str(pred_dir), str(ref_dir), "--out", str(out), *extra])


@pytest.fixture(scope="module")
def cohort(tmp_path_factory, phantom_cohort):
    """The three labeled phantom cases (BraTS LPS affine) and imperfect LPS predictions.

    Each prediction is its reference shifted by ``i + 1`` voxels along X, so every case
    has a distinct Dice below 1 and a reorientation error would change the scores.
    """
    root = tmp_path_factory.mktemp("inputs")
    refs, preds = {}, {}
    for i, case in enumerate(phantom_cohort.cases):
        labels, affine, _ = load_label_map(case.seg)
        refs[case.case_id] = (case.seg, labels, affine)
        preds[case.case_id] = _save(
            np.roll(labels, i + 1, axis=0), affine, root / "preds" / f"{case.case_id}.nii.gz"
        )
    return {
        "root": root,
        "ref_dir": phantom_cohort.root,
        "pred_dir": root / "preds",
        "refs": refs,
        "preds": preds,
        "ids": sorted(refs),
    }


# --- the same grid in another voxel order: reoriented, noted ---------------------------------


@pytest.mark.parametrize("axcodes", ["RAS", "SAR"])
def test_reoriented_reference_scores_as_the_original(cohort, tmp_path, axcodes, caplog):
    """References saved in RAS (as ``nib.as_closest_canonical`` does) or with permuted axes
    give the very scores of the LPS originals, with the reorientation noted."""
    ref_dir = tmp_path / axcodes
    ref_dir.mkdir()
    for case_id, (seg, labels, _) in cohort["refs"].items():
        out = _reoriented(seg, axcodes, ref_dir / f"{case_id}.nii.gz")
        img = nib.load(str(out))
        assert "".join(nib.aff2axcodes(img.affine)) == axcodes
        assert np.asarray(img.dataobj).shape != labels.shape or not np.array_equal(
            np.asarray(img.dataobj), labels
        )  # another voxel order: scored voxel by voxel it would be wrong
    want, _ = evaluate_folders(cohort["pred_dir"], cohort["ref_dir"])
    with caplog.at_level(logging.WARNING, logger="brats_mtl.evaluation"):
        got, missing = evaluate_folders(cohort["pred_dir"], ref_dir)
    assert missing == {"predictions": [], "references": []}
    assert list(got.columns) == [*RESULT_COLUMNS, NOTE_COLUMN]
    pd.testing.assert_frame_equal(got.loc[:, list(RESULT_COLUMNS)], want)
    assert (want["Dice_WT"] < 1).all()  # the scores compared are not trivial
    assert list(got[NOTE_COLUMN]) == [f"prediction reoriented LPS -> {axcodes}"] * 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum(f"reoriented LPS -> {axcodes}" in w for w in warnings) == 3
    # the same, the other way round: an RAS prediction against the LPS reference
    case_id = cohort["ids"][0]
    ras_pred = _reoriented(cohort["preds"][case_id], axcodes, tmp_path / "pred.nii.gz")
    row = evaluate_case(ras_pred, cohort["refs"][case_id][0], case_id=case_id)
    assert row[NOTE_COLUMN] == f"prediction reoriented {axcodes} -> LPS"
    for column in METRIC_COLUMNS:
        assert row[column] == want.iloc[0][column]


def test_cli_notes_the_reorientation_in_the_csv_and_the_output(cohort, tmp_path):
    ref_dir = tmp_path / "ras"
    ref_dir.mkdir()
    for case_id, (seg, _, _) in cohort["refs"].items():
        nib.save(nib.as_closest_canonical(nib.load(str(seg))), str(ref_dir / f"{case_id}.nii.gz"))
    out = tmp_path / "r.csv"
    result = _invoke(cohort["pred_dir"], ref_dir, out)
    assert result.exit_code == 0, result.output
    assert "Predictions reoriented onto the reference grid (3" in result.output
    table = pd.read_csv(out, keep_default_na=False)
    assert list(table.columns) == [*RESULT_COLUMNS, NOTE_COLUMN]
    assert list(table["Label"]) == [*cohort["ids"], *SUMMARY_ROWS]
    assert list(table[NOTE_COLUMN]) == ["prediction reoriented LPS -> RAS"] * 3 + [""] * 5
    # predictions already on the reference grid: the online system's columns only
    result = _invoke(cohort["pred_dir"], cohort["ref_dir"], out, "--overwrite")
    assert result.exit_code == 0, result.output
    assert list(pd.read_csv(out).columns) == list(RESULT_COLUMNS)
    assert "reoriented" not in result.output


def test_real_case_scored_against_its_ras_copy(shared_data, tmp_path):
    """The issue's case on a real scan: an LPS prediction against an RAS reference gave
    ET 0.00 / WT 0.06; it now scores as against the LPS original."""
    seg = shared_data / "brats" / "BraTS2021_00000" / "BraTS2021_00000_seg.nii.gz"
    labels, affine, _ = load_label_map(seg)
    pred = _save(np.roll(labels, 2, axis=1), affine, tmp_path / "preds" / "BraTS2021_00000.nii.gz")
    ras = tmp_path / "ras" / "BraTS2021_00000.nii"  # uncompressed: quicker
    ras.parent.mkdir()
    nib.save(nib.as_closest_canonical(nib.load(str(seg))), str(ras))
    row = evaluate_case(pred, ras)
    want = evaluate_labels(np.roll(labels, 2, axis=1), labels)
    assert row[NOTE_COLUMN] == "prediction reoriented LPS -> RAS"
    for column in METRIC_COLUMNS:
        assert row[column] == pytest.approx(want[column])
    assert 0.8 < row["Dice_WT"] < 1


# --- another grid: refused with both grids named ---------------------------------------------


def test_shifted_origin_refused_naming_files_orientations_and_the_shift(cohort, tmp_path):
    case_id = cohort["ids"][0]
    seg, labels, affine = cohort["refs"][case_id]
    shifted_affine = affine.copy()
    shifted_affine[0, 3] += 10.0
    pred = _save(labels, shifted_affine, tmp_path / f"{case_id}.nii.gz")
    with pytest.raises(ValueError) as info:
        evaluate_case(pred, seg)
    message = str(info.value)
    assert str(pred) in message and str(seg) in message
    assert "does not lie on the voxel grid" in message and "not scored" in message
    assert message.count("LPS") == 2
    assert "origin shifted by (10, 0, 0) mm (10 mm away)" in message
    assert "spacing" in message and "instead of" not in message  # only the origin differs
    # in another orientation as well: both orientations named, shift measured on its axes
    ras = _reoriented(pred, "RAS", tmp_path / "ras.nii.gz")
    with pytest.raises(ValueError) as info:
        evaluate_case(ras, seg)
    message = str(info.value)
    assert "RAS" in message and "LPS" in message and "once reoriented to LPS" in message
    assert "origin shifted by (10, 0, 0) mm" in message


def _rotated_z(affine: np.ndarray, degrees: float) -> np.ndarray:
    theta = np.radians(degrees)
    rotation = np.eye(4)
    rotation[:2, :2] = [[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]
    return rotation @ affine


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("spacing", "spacing (2, 1, 1) mm instead of (1, 1, 1) mm"),
        ("rotated", "its axes rotated by up to 10 degrees"),
        ("cropped", "shape (39, 36, 32) instead of (40, 36, 32)"),
        ("identity", "saved with an identity affine"),
        ("no_orientation", "qform_code and sform_code 0"),
    ],
)
def test_other_grids_refused_with_what_differs(cohort, tmp_path, how, expected):
    """Not a permutation or flip of the reference grid: refused, never scored."""
    case_id = cohort["ids"][1]
    seg, labels, affine = cohort["refs"][case_id]
    path = tmp_path / f"{case_id}.nii.gz"
    if how == "spacing":
        _save(labels, affine @ np.diag([2.0, 1.0, 1.0, 1.0]), path)
    elif how == "rotated":
        _save(labels, _rotated_z(affine, 10.0), path)
    elif how == "cropped":
        _save(labels[:-1], affine, path)
    elif how == "identity":  # a common slip: the array right, the affine np.eye(4)
        _save(labels, np.eye(4), path)
    else:
        img = nib.Nifti1Image(labels.astype(np.uint8), None)
        img.set_qform(None, code=0)
        img.set_sform(None, code=0)
        nib.save(img, str(path))
    with pytest.raises(ValueError, match="does not lie on the voxel grid") as info:
        evaluate_case(path, seg)
    message = " ".join(str(info.value).split())
    assert expected in message
    assert str(path) in message and str(seg) in message
    assert "shape (" in message and "origin (" in message  # both grids spelled out


# --- a case that cannot be scored does not stop the others -----------------------------------


@pytest.fixture
def broken_preds(cohort, tmp_path):
    """Predictions: case 0 fine, case 1 with a label 7, case 2 truncated."""
    pred_dir = tmp_path / "preds"
    id0, id1, id2 = cohort["ids"]
    pred_dir.mkdir()
    (pred_dir / f"{id0}.nii.gz").write_bytes(cohort["preds"][id0].read_bytes())
    _, labels1, affine1 = cohort["refs"][id1]
    poked = labels1.copy()
    poked[0, 0, 0] = 7
    _save(poked, affine1, pred_dir / f"{id1}.nii.gz")
    data = cohort["preds"][id2].read_bytes()
    (pred_dir / f"{id2}.nii.gz").write_bytes(data[: len(data) // 2])
    return pred_dir


@pytest.mark.parametrize("workers", ["1", "2"])
def test_cli_scores_the_others_lists_the_failed_and_exits_1(
    cohort, broken_preds, tmp_path, workers
):
    id0, id1, id2 = cohort["ids"]
    out = tmp_path / "r.csv"
    result = _invoke(broken_preds, cohort["ref_dir"], out, "--workers", workers)
    assert result.exit_code == 1
    output = " ".join(result.output.split())
    assert f"FAILED {id1}: prediction {broken_preds / f'{id1}.nii.gz'} holds label values [7]" in (
        output
    )
    assert f"FAILED {id2}: " in output and "truncated or damaged" in output
    assert "2 cases could not be scored" in output and "--overwrite" in output
    assert "Evaluated 1 case; results written to" in output
    table = pd.read_csv(out)
    assert list(table["Label"]) == [id0, *SUMMARY_ROWS]
    want = evaluate_case(cohort["preds"][id0], cohort["refs"][id0][0])
    assert table.iloc[0]["Dice_WT"] == pytest.approx(want["Dice_WT"])


def test_api_collects_failed_cases_or_raises_listing_them(cohort, broken_preds):
    id0, id1, id2 = cohort["ids"]
    failed: dict[str, str] = {}
    per_case, _ = evaluate_folders(broken_preds, cohort["ref_dir"], failed=failed)
    assert list(per_case["Label"]) == [id0]
    assert sorted(failed) == [id1, id2]
    assert "label values [7]" in failed[id1] and str(broken_preds / f"{id2}.nii.gz") in failed[id2]
    with pytest.raises(ValueError, match="2 of 3 cases could not be scored") as info:
        evaluate_folders(broken_preds, cohort["ref_dir"])
    assert f"  {id1}: " in str(info.value) and f"  {id2}: " in str(info.value)


def test_cli_writes_nothing_when_no_case_could_be_scored(cohort, tmp_path):
    case_id = cohort["ids"][0]
    seg, labels, affine = cohort["refs"][case_id]
    shifted = affine.copy()
    shifted[0, 3] += 10.0
    pred_dir = tmp_path / "preds"
    _save(labels, shifted, pred_dir / f"{case_id}.nii.gz")
    out = tmp_path / "r.csv"
    result = _invoke(pred_dir, cohort["ref_dir"], out)
    assert result.exit_code == 1
    assert f"FAILED {case_id}" in result.output and "origin shifted" in result.output
    assert "no case scored" in result.output
    assert not out.exists()


# --- reference folders: stray files, image folders -------------------------------------------


def test_stray_nifti_in_a_flat_reference_folder_is_not_a_case(cohort, tmp_path, caplog):
    ref_dir = tmp_path / "gt"
    for case_id, (_, labels, affine) in cohort["refs"].items():
        _save(labels, affine, ref_dir / f"{case_id}.nii.gz")
    template = np.zeros(SHAPE, np.float32)
    nib.save(nib.Nifti1Image(template, np.eye(4)), str(ref_dir / "template.nii.gz"))
    _save(np.zeros(SHAPE), np.eye(4), ref_dir / "atlas_labels.nii.gz")
    with caplog.at_level(logging.WARNING, logger="brats_mtl.data"):
        found = discover_label_maps(ref_dir)
    assert sorted(found) == cohort["ids"]
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "ignored 2 NIfTI files" in warning
    assert "atlas_labels.nii.gz, template.nii.gz" in warning
    # --missing-as-empty scores the reference cases only
    per_case, missing = evaluate_folders(cohort["pred_dir"], ref_dir, missing_as_empty=True)
    assert list(per_case["Label"]) == cohort["ids"] and missing["predictions"] == []


def test_flat_folders_without_brats_ids_and_seg_folders_with_strays(cohort, tmp_path, caplog):
    """Own case IDs: every <ID>.nii.gz is a case (nothing tells a stray); in a folder of
    <ID>_seg files a file of another name is ignored, with the warning."""
    own = tmp_path / "own"
    for i, (_, labels, affine) in enumerate(cohort["refs"].values()):
        _save(labels, affine, own / f"patient{i}.nii.gz")
    assert sorted(discover_label_maps(own)) == ["patient0", "patient1", "patient2"]
    seg_dir = tmp_path / "seg"
    for case_id, (_, labels, affine) in cohort["refs"].items():
        _save(labels, affine, seg_dir / f"{case_id}_seg.nii.gz")
    _save(np.zeros(SHAPE), np.eye(4), seg_dir / "template.nii.gz")
    with caplog.at_level(logging.WARNING, logger="brats_mtl.data"):
        assert sorted(discover_label_maps(seg_dir)) == cohort["ids"]
    assert any(
        "ignored 1 NIfTI file" in r.getMessage() and "template.nii.gz" in r.getMessage()
        for r in caplog.records
    )


@pytest.mark.parametrize("images", ["imagesTr", "imagesTs"])
def test_msd_images_folder_as_ref_dir_says_which_folder_to_pass(tmp_path, images):
    root = tmp_path / "Task01_BrainTumour"
    write_phantom_cohort(root, n_labeled=2, n_unlabeled=1, layout="msd", shape=(24, 24, 20))
    pred_dir = tmp_path / "preds"
    pred_dir.mkdir()
    result = _invoke(pred_dir, root / images, tmp_path / "r.csv")
    assert result.exit_code == 1
    message = " ".join(result.output.split())
    labels = images.replace("images", "labels")
    assert f"looks like an MSD/nnU-Net {images} folder" in message
    assert str(root / labels) in message
    assert ("not found beside it" in message) == (images == "imagesTs")
    # the hint is right: the labelsTr folder (or the task folder) is read
    if images == "imagesTr":
        assert sorted(discover_label_maps(root / "labelsTr")) == ["BRATS_001", "BRATS_002"]
        per_case, _ = evaluate_folders(root / "labelsTr", root / "labelsTr")
        for region in REGION_ORDER:  # scored against themselves through the hint
            assert (per_case[f"Dice_{region}"] == 1.0).all()


# --- every protocol: one grid rule, failed cases listed --------------------------------------


def _ras_references(cohort, ref_dir: Path) -> Path:
    """The cohort's references saved again in RAS (``nib.as_closest_canonical``)."""
    ref_dir.mkdir()
    for case_id, (seg, _, _) in cohort["refs"].items():
        nib.save(nib.as_closest_canonical(nib.load(str(seg))), str(ref_dir / f"{case_id}.nii.gz"))
    return ref_dir


def test_lesionwise_ras_reference_scores_as_the_lps_original_with_the_note(cohort, tmp_path):
    """The grid rule holds on the label-scheme path: lesion-wise scores and lesion rows
    against RAS copies of the references equal those against the LPS originals."""
    ras_dir = _ras_references(cohort, tmp_path / "ras")
    runs = {}
    for name, ref_dir in (("lps", cohort["ref_dir"]), ("ras", ras_dir)):
        out, lesions = tmp_path / f"{name}.csv", tmp_path / f"{name}_lesions.csv"
        result = _invoke(
            cohort["pred_dir"], ref_dir, out, "--protocol", "lesionwise", "--lesions-out", lesions
        )
        assert result.exit_code == 0, result.output
        runs[name] = (
            pd.read_csv(out, keep_default_na=False),
            pd.read_csv(lesions),
            result.output,
        )
    (want, want_lesions, want_output), (got, got_lesions, got_output) = runs["lps"], runs["ras"]
    assert NOTE_COLUMN not in want.columns and "reoriented" not in want_output
    assert list(got.columns) == [*want.columns, NOTE_COLUMN]
    assert list(got[NOTE_COLUMN]) == ["prediction reoriented LPS -> RAS"] * 3 + [""] * 5
    assert "Predictions reoriented onto the reference grid (3" in got_output
    pd.testing.assert_frame_equal(got.drop(columns=NOTE_COLUMN), want)
    pd.testing.assert_frame_equal(got_lesions, want_lesions)
    dice_wt = want.loc[: len(cohort["ids"]) - 1, "LesionWise_Dice_WT"].astype(float)
    assert (dice_wt < 1).all() and (dice_wt > 0).all()  # the scores compared are not trivial
    assert sorted(set(got_lesions["Label"])) == cohort["ids"]


def test_2023_references_under_legacy_follow_the_grid_rule(tmp_path):
    """BraTS 2023+ references go through the label-scheme path under legacy too: RAS
    copies score as the LPS originals (noted), a shifted origin fails that case only."""
    cases = write_phantom_cohort(
        tmp_path / "refs", n_labeled=2, n_unlabeled=0, layout="brats2023", shape=SHAPE, seed=6
    )
    ras_dir, pred_dir = tmp_path / "ras", tmp_path / "preds"
    ras_dir.mkdir()
    for i, case in enumerate(cases):
        img = nib.load(str(case.seg))
        labels = np.asarray(img.dataobj)
        _save(np.roll(labels, i + 1, axis=0), img.affine, pred_dir / f"{case.case_id}.nii.gz")
        nib.save(nib.as_closest_canonical(img), str(ras_dir / f"{case.case_id}.nii.gz"))
    want, _ = evaluate_folders(pred_dir, tmp_path / "refs")
    got, _ = evaluate_folders(pred_dir, ras_dir)
    assert list(got.columns) == [*RESULT_COLUMNS, NOTE_COLUMN]
    assert list(got[NOTE_COLUMN]) == ["prediction reoriented LPS -> RAS"] * 2
    pd.testing.assert_frame_equal(got.drop(columns=NOTE_COLUMN), want)
    assert (want["Dice_WT"] < 1).all()
    shifted = nib.load(str(pred_dir / f"{cases[1].case_id}.nii.gz"))
    affine = shifted.affine.copy()
    affine[2, 3] -= 4.0
    _save(np.asarray(shifted.dataobj), affine, pred_dir / f"{cases[1].case_id}.nii.gz")
    failed: dict[str, str] = {}
    per_case, _ = evaluate_folders(pred_dir, tmp_path / "refs", failed=failed)
    assert list(per_case["Label"]) == [cases[0].case_id] and list(failed) == [cases[1].case_id]
    assert "origin shifted by (0, 0, -4) mm" in failed[cases[1].case_id]


def test_lesionwise_shifted_origin_fails_that_case_the_other_is_scored_exit_1(cohort, tmp_path):
    id0, id1, _ = cohort["ids"]
    pred_dir = tmp_path / "preds"
    pred_dir.mkdir()
    (pred_dir / f"{id0}.nii.gz").write_bytes(cohort["preds"][id0].read_bytes())
    seg1, labels1, affine1 = cohort["refs"][id1]
    shifted = affine1.copy()
    shifted[0, 3] += 10.0
    pred1 = _save(labels1, shifted, pred_dir / f"{id1}.nii.gz")
    out, lesions = tmp_path / "r.csv", tmp_path / "lesions.csv"
    result = _invoke(
        pred_dir, cohort["ref_dir"], out, "--protocol", "lesionwise", "--lesions-out", lesions
    )
    assert result.exit_code == 1
    output = " ".join(result.output.split())
    assert f"FAILED {id1}: prediction {pred1} does not lie on the voxel grid of reference" in output
    assert str(seg1) in output and "origin shifted by (10, 0, 0) mm (10 mm away)" in output
    assert "1 case could not be scored" in output and "Evaluated 1 case (lesionwise)" in output
    table = pd.read_csv(out)
    assert list(table["Label"]) == [id0, *SUMMARY_ROWS]
    alone, _ = evaluate_folders(pred_dir, cohort["ref_dir"], protocol="lesionwise", failed={})
    want, _ = evaluate_folders(cohort["pred_dir"], cohort["ref_dir"], protocol="lesionwise")
    pd.testing.assert_frame_equal(alone, want.iloc[:1])  # case 0 as scored with the others
    assert table.iloc[0]["LesionWise_Dice_WT"] == pytest.approx(want.iloc[0]["LesionWise_Dice_WT"])
    assert set(pd.read_csv(lesions)["Label"]) == {id0}


@pytest.mark.parametrize("workers", ["1", "2"])
def test_lesionwise_bad_label_and_truncated_file_do_not_stop_the_others(
    cohort, broken_preds, tmp_path, workers
):
    id0, id1, id2 = cohort["ids"]
    out, lesions = tmp_path / "r.csv", tmp_path / "lesions.csv"
    result = _invoke(
        broken_preds,
        cohort["ref_dir"],
        out,
        "--protocol",
        "lesionwise",
        "--lesions-out",
        lesions,
        "--workers",
        workers,
    )
    assert result.exit_code == 1
    output = " ".join(result.output.split())
    assert f"FAILED {id1}: " in output and str(broken_preds / f"{id1}.nii.gz") in output
    assert "[7]" in output.split(f"FAILED {id1}: ")[1].split("FAILED")[0]
    assert f"FAILED {id2}: " in output and "truncated or damaged" in output
    assert "2 cases could not be scored" in output
    table = pd.read_csv(out)
    assert list(table["Label"]) == [id0, *SUMMARY_ROWS]
    want, _ = evaluate_folders(cohort["pred_dir"], cohort["ref_dir"], protocol="lesionwise")
    for column in want.columns[1:]:
        assert table.iloc[0][column] == pytest.approx(want.iloc[0][column], nan_ok=True)
    assert set(pd.read_csv(lesions)["Label"]) == {id0}
    # the API: collected, or one error listing both
    with pytest.raises(ValueError, match="2 of 3 cases could not be scored") as info:
        evaluate_folders(broken_preds, cohort["ref_dir"], protocol="lesionwise")
    assert f"  {id1}: " in str(info.value) and f"  {id2}: " in str(info.value)


def test_scheme_refusal_fails_that_case_only(cohort, tmp_path):
    """--labels brats2017 refuses a case named as BraTS 2023+; the others are scored."""
    ref_dir, pred_dir = tmp_path / "refs", tmp_path / "preds"
    for case_id, (_, labels, affine) in cohort["refs"].items():
        _save(labels, affine, ref_dir / f"{case_id}.nii.gz")
        (pred_dir / f"{case_id}.nii.gz").parent.mkdir(exist_ok=True)
        (pred_dir / f"{case_id}.nii.gz").write_bytes(cohort["preds"][case_id].read_bytes())
    gli = "BraTS-GLI-00009-000"
    _, labels, affine = cohort["refs"][cohort["ids"][0]]
    _save(labels, affine, ref_dir / f"{gli}.nii.gz")
    _save(labels, affine, pred_dir / f"{gli}.nii.gz")
    out = tmp_path / "r.csv"
    result = _invoke(pred_dir, ref_dir, out, "--protocol", "lesionwise", "--labels", "brats2017")
    assert result.exit_code == 1
    output = " ".join(result.output.split())
    assert f"FAILED {gli}: " in output and "is named as a BraTS 2023+ case" in output
    assert list(pd.read_csv(out)["Label"]) == [*cohort["ids"], *SUMMARY_ROWS]


def test_brats2017_names_the_brats2019_convention_on_the_command_line(tmp_path, phantom_cohort):
    """--pred-convention / --ref-convention brats2017 (the --labels name of the same values)
    score as brats2019."""
    tables = {}
    for name in ("brats2017", "brats2019"):
        out = tmp_path / f"{name}.csv"
        result = CliRunner().invoke(
            command,
            [
                str(phantom_cohort.root),
                str(phantom_cohort.root),
                "--out",
                str(out),
                "--pred-convention",
                name,
                "--ref-convention",
                name,
            ],
        )
        assert result.exit_code == 0, result.output
        tables[name] = pd.read_csv(out)
    pd.testing.assert_frame_equal(tables["brats2017"], tables["brats2019"])
    assert (tables["brats2017"].iloc[:-5]["Dice_WT"] == 1.0).all()
