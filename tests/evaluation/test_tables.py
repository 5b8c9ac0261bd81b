"""Result tables, folder evaluation and the ``brats-mtl evaluate`` command."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from brats_mtl.cli.evaluate import command
from brats_mtl.conventions import BRATS_2023, HD95_ONE_EMPTY_MM, MSD, REGION_ORDER
from brats_mtl.data import load_label_map, write_phantom_cohort
from brats_mtl.evaluation import (
    METRIC_COLUMNS,
    RESULT_COLUMNS,
    SUMMARY_ROWS,
    evaluate_case,
    evaluate_folders,
    evaluate_labels,
    find_predictions,
    summary_rows,
    write_results_csv,
)

SHAPE = (40, 36, 32)


# --- summary rows ---------------------------------------------------------------------


def _per_case(column_values: list[float]) -> pd.DataFrame:
    data = {c: [0.0] * len(column_values) for c in METRIC_COLUMNS}
    data["Dice_ET"] = column_values
    frame = pd.DataFrame(data)
    frame.insert(0, "Label", [f"case{i}" for i in range(len(column_values))])
    return frame


def test_summary_rows_hand_computed():
    table = summary_rows(_per_case([1.0, 0.5, 0.0, 0.5]))
    assert list(table["Label"]) == list(SUMMARY_ROWS)
    assert list(table.columns) == list(RESULT_COLUMNS)
    got = dict(zip(table["Label"], table["Dice_ET"], strict=True))
    assert got["Mean"] == pytest.approx(0.5)
    # sample std: squared deviations 0.25 + 0 + 0.25 + 0 over n - 1 = 3
    assert got["StdDev"] == pytest.approx(np.sqrt(0.5 / 3))
    assert got["Median"] == pytest.approx(0.5)
    # linear interpolation on sorted [0, .5, .5, 1]: positions 0.75 and 2.25
    assert got["25quantile"] == pytest.approx(0.375)
    assert got["75quantile"] == pytest.approx(0.625)
    population = summary_rows(_per_case([1.0, 0.5, 0.0, 0.5]), ddof=0)
    assert population["Dice_ET"][1] == pytest.approx(np.sqrt(0.5 / 4))


def test_summary_rows_single_case():
    table = summary_rows(_per_case([0.7]))
    assert table["Dice_ET"][0] == pytest.approx(0.7)
    assert np.isnan(table["Dice_ET"][1])  # no sample std of one value
    assert table["Dice_ET"][3] == pytest.approx(0.7)


def test_write_results_csv_refuses_overwrite(tmp_path):
    per_case = _per_case([1.0, 0.5])
    out = write_results_csv(per_case, tmp_path / "r.csv")
    table = pd.read_csv(out)
    assert list(table.columns) == list(RESULT_COLUMNS)
    assert list(table["Label"]) == ["case0", "case1", *SUMMARY_ROWS]
    with pytest.raises(FileExistsError, match="overwrite"):
        write_results_csv(per_case, out)
    write_results_csv(_per_case([0.0]), out, overwrite=True)
    assert len(pd.read_csv(out)) == 1 + len(SUMMARY_ROWS)
    assert [p.name for p in tmp_path.iterdir()] == ["r.csv"]  # no temp file left


# --- folders --------------------------------------------------------------------------


def _save(labels: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    nib.save(nib.Nifti1Image(labels.astype(np.uint8), affine), str(path))
    return path


@pytest.fixture(scope="module")
def cohort(tmp_path_factory, phantom_cohort):
    """References: the 3 labeled phantom cases; predictions for 2 of them + 1 stray.

    - case 0: the reference written in the BraTS 2023 convention (ET = 3): perfect;
    - case 1: the reference shifted by 2 voxels (BraTS 2019 convention, ``.nii``);
    - case 2: no prediction;
    - ``BraTS2021_09999``: a prediction without a reference case.
    """
    ref_dir = phantom_cohort.root
    pred_dir = tmp_path_factory.mktemp("evaluation") / "preds"
    pred_dir.mkdir()
    refs = {}
    for case in phantom_cohort.cases:
        labels, affine, _ = load_label_map(case.seg)
        refs[case.case_id] = (labels, affine)
    id0, id1, id2 = sorted(refs)
    labels0, affine0 = refs[id0]
    _save(BRATS_2023.from_internal(labels0), affine0, pred_dir / f"{id0}.nii.gz")
    labels1, affine1 = refs[id1]
    shifted = np.roll(labels1, 2, axis=0)
    _save(shifted, affine1, pred_dir / f"{id1}.nii")
    _save(labels0, affine0, pred_dir / "BraTS2021_09999.nii.gz")
    return {
        "ref_dir": ref_dir,
        "pred_dir": pred_dir,
        "ids": (id0, id1, id2),
        "refs": refs,
        "shifted": shifted,
    }


def test_evaluate_folders_matches_and_reports_missing(cohort):
    id0, id1, id2 = cohort["ids"]
    per_case, missing = evaluate_folders(cohort["pred_dir"], cohort["ref_dir"])
    assert list(per_case.columns) == list(RESULT_COLUMNS)
    assert list(per_case["Label"]) == [id0, id1]
    assert missing == {"predictions": [id2], "references": ["BraTS2021_09999"]}
    perfect = per_case.iloc[0]
    for region in REGION_ORDER:  # 2023-convention prediction read as ET = 3 -> internal 4
        assert perfect[f"Dice_{region}"] == 1.0
        assert perfect[f"Hausdorff95_{region}"] == 0.0
    want = evaluate_labels(cohort["shifted"], cohort["refs"][id1][0])
    for column in METRIC_COLUMNS:
        assert per_case.iloc[1][column] == pytest.approx(want[column])
    assert 0 < per_case.iloc[1]["Dice_WT"] < 1


def test_evaluate_folders_missing_as_empty(cohort):
    id0, id1, id2 = cohort["ids"]
    per_case, missing = evaluate_folders(
        cohort["pred_dir"], cohort["ref_dir"], missing_as_empty=True
    )
    assert list(per_case["Label"]) == [id0, id1, id2]
    assert missing["predictions"] == [id2]
    empty = per_case.iloc[2]
    assert empty["Dice_WT"] == 0.0
    assert empty["Hausdorff95_WT"] == HD95_ONE_EMPTY_MM
    assert empty["Sensitivity_WT"] == 0.0
    assert empty["Specificity_WT"] == 1.0


def test_evaluate_folders_parallel_equals_serial(cohort):
    serial, _ = evaluate_folders(cohort["pred_dir"], cohort["ref_dir"], missing_as_empty=True)
    parallel, _ = evaluate_folders(
        cohort["pred_dir"], cohort["ref_dir"], missing_as_empty=True, workers=2
    )
    pd.testing.assert_frame_equal(serial, parallel)


def test_shape_mismatch_names_both_files(cohort, tmp_path):
    id0 = cohort["ids"][0]
    labels, affine = cohort["refs"][id0]
    bad = _save(labels[:-1], affine, tmp_path / "bad.nii.gz")
    ref = next(Path(cohort["ref_dir"]).rglob(f"{id0}_seg.nii.gz"))
    with pytest.raises(ValueError, match="shape") as info:
        evaluate_case(bad, ref)
    assert str(bad) in str(info.value) and str(ref) in str(info.value)


def test_predictions_in_a_case_layout(cohort):
    """A case layout as PRED_DIR: its segmentation files are the predictions."""
    found = find_predictions(cohort["ref_dir"])
    assert sorted(found) == sorted(cohort["ids"])
    per_case, missing = evaluate_folders(cohort["ref_dir"], cohort["ref_dir"])
    assert missing == {"predictions": [], "references": []}
    assert (per_case["Dice_WT"] == 1.0).all()


def test_no_matching_prediction(tmp_path, cohort):
    empty = tmp_path / "nothing"
    empty.mkdir()
    _save(np.zeros(SHAPE, np.uint8), np.eye(4), empty / "other_case.nii.gz")
    with pytest.raises(ValueError, match="no prediction"):
        evaluate_folders(empty, cohort["ref_dir"])


# --- command line ---------------------------------------------------------------------


def test_cli_writes_online_system_csv(cohort, tmp_path):
    out = tmp_path / "results.csv"
    args = [str(cohort["pred_dir"]), str(cohort["ref_dir"]), "--out", str(out)]
    runner = CliRunner()
    result = runner.invoke(command, args)
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    id0, id1, id2 = cohort["ids"]
    assert list(table.columns) == list(RESULT_COLUMNS)
    assert list(table["Label"]) == [id0, id1, *SUMMARY_ROWS]
    assert "mean Dice" in result.output and id2 in result.output
    assert "BraTS2021_09999" in result.output

    again = runner.invoke(command, args)
    assert again.exit_code != 0 and "--overwrite" in again.output

    result = runner.invoke(command, [*args, "--overwrite", "--missing-as-empty", "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert list(pd.read_csv(out)["Label"]) == [id0, id1, id2, *SUMMARY_ROWS]


def test_cli_error_exit(tmp_path):
    result = CliRunner().invoke(
        command,
        [str(tmp_path / "absent"), str(tmp_path / "absent2"), "--out", str(tmp_path / "r.csv")],
    )
    assert result.exit_code != 0
    assert "absent" in result.output
    assert not (tmp_path / "r.csv").exists()


def test_cli_real_data_against_itself(shared_data, tmp_path):
    """The real sample cases scored against themselves: Dice 1 and HD95 0 everywhere."""
    brats = shared_data / "brats"
    out = tmp_path / "self.csv"
    result = CliRunner().invoke(command, [str(brats), str(brats), "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out).set_index("Label")
    cases = table.drop(index=list(SUMMARY_ROWS))
    assert len(cases) == len([p for p in brats.iterdir() if p.is_dir()])
    for region in REGION_ORDER:
        assert (cases[f"Dice_{region}"] == 1.0).all()
        assert (cases[f"Hausdorff95_{region}"] == 0.0).all()
        assert (cases[f"Sensitivity_{region}"] == 1.0).all()
        assert (cases[f"Specificity_{region}"] == 1.0).all()


@pytest.mark.parametrize("layout", ["brats2018", "brats2020", "brats2023", "msd"])
def test_layouts_scored_against_their_own_labels(tmp_path, layout):
    """Reference label files copied as <ID>.nii.gz predictions score perfectly in every layout
    (MSD predictions are read as MSD, whose {0, 1, 2, 3} would otherwise read as BraTS 2023)."""
    ref_dir, pred_dir = tmp_path / "refs", tmp_path / "preds"
    pred_dir.mkdir()
    cases = write_phantom_cohort(
        ref_dir, n_labeled=2, n_unlabeled=0, layout=layout, shape=(24, 24, 20)
    )
    for case in cases:
        (pred_dir / f"{case.case_id}.nii.gz").write_bytes(case.seg.read_bytes())
    per_case, missing = evaluate_folders(pred_dir, ref_dir)
    assert missing == {"predictions": [], "references": []}
    assert len(per_case) == 2
    for region in REGION_ORDER:
        assert (per_case[f"Dice_{region}"] == 1.0).all()
        assert (per_case[f"Hausdorff95_{region}"] == 0.0).all()


# --- label values outside the convention ----------------------------------------------


def _copy_as_prediction(case, pred_dir: Path, convention=None, poke: int | None = None) -> Path:
    """The case's reference as a prediction file (in ``convention``; one voxel = ``poke``)."""
    labels, affine, _ = load_label_map(case.seg, case.label_convention)
    if convention is not None:
        labels = convention.from_internal(labels)
    if poke is not None:
        labels[0, 0, 0] = poke
    return _save(labels, affine, pred_dir / f"{case.case_id}.nii.gz")


def _invoke(pred_dir: Path, ref_dir: Path, out: Path, *extra: str):
    return CliRunner().invoke(command, [str(pred_dir), str(ref_dir), "--out", str(out), *extra])


def test_invalid_prediction_value_names_file_values_and_allowed_sets(tmp_path):
    """A 7 in a prediction for a BraTS 2021 cohort: no convention would fit, so no
    --pred-convention hint; the message names the file, the 7 and both inferred sets."""
    ref_dir, pred_dir = tmp_path / "refs", tmp_path / "preds"
    pred_dir.mkdir()
    (case,) = write_phantom_cohort(ref_dir, n_labeled=1, n_unlabeled=0, shape=(16, 16, 16))
    pred = _copy_as_prediction(case, pred_dir, poke=7)
    result = _invoke(pred_dir, ref_dir, tmp_path / "r.csv")
    assert result.exit_code == 1
    message = " ".join(result.output.split())
    assert str(pred) in message
    assert "label values [7]" in message
    assert "brats2019 (BraTS 2017-2021) allows [0, 1, 2, 4]" in message
    assert "brats2023 (BraTS 2023+) allows [0, 1, 2, 3]" in message
    assert "--pred-convention" not in message
    assert not (tmp_path / "r.csv").exists()
    # stated convention: only its set is listed, still no hint
    result = _invoke(pred_dir, ref_dir, tmp_path / "r.csv", "--pred-convention", "brats2019")
    message = " ".join(result.output.split())
    assert result.exit_code == 1 and "label values [7]" in message
    assert "allows [0, 1, 2, 4]" in message and "brats2023" not in message
    assert "--pred-convention" not in message


def test_prediction_in_another_convention_suggests_it_and_the_hint_works(tmp_path):
    """BraTS 2019 values {0, 1, 2, 4} for an MSD cohort (read as MSD by default): the
    message suggests --pred-convention brats2019, and passing it scores perfectly."""
    ref_dir, pred_dir = tmp_path / "refs", tmp_path / "preds"
    pred_dir.mkdir()
    cases = write_phantom_cohort(
        ref_dir, n_labeled=1, n_unlabeled=0, layout="msd", shape=(24, 24, 20)
    )
    pred = _copy_as_prediction(cases[0], pred_dir)  # internal = BraTS 2019 values
    assert 4 in np.unique(np.asanyarray(nib.load(pred).dataobj))
    result = _invoke(pred_dir, ref_dir, tmp_path / "r.csv")
    message = " ".join(result.output.split())
    assert result.exit_code == 1 and str(pred) in message
    assert "label values [4]" in message and "msd (MSD Task01) allows [0, 1, 2, 3]" in message
    assert "--pred-convention brats2019" in message
    result = _invoke(pred_dir, ref_dir, tmp_path / "r.csv", "--pred-convention", "brats2019")
    assert result.exit_code == 0, result.output
    assert (pd.read_csv(tmp_path / "r.csv").iloc[0][[f"Dice_{r}" for r in REGION_ORDER]] == 1).all()


def test_label_value_messages_for_mixed_values_references_and_other_errors(tmp_path):
    (case,) = write_phantom_cohort(
        tmp_path / "refs", n_labeled=1, n_unlabeled=0, shape=(16, 16, 16)
    )
    labels, affine, _ = load_label_map(case.seg)
    # 3 and 4 together: each fits one inferred convention, none holds both; no hint
    mixed = labels.copy()
    mixed[0, 0, 0], mixed[0, 0, 1] = 3, 4
    pred = _save(mixed, affine, tmp_path / "mixed.nii.gz")
    with pytest.raises(ValueError) as info:
        evaluate_case(pred, case.seg, pred_convention=None)
    assert "label values [3, 4] together" in str(info.value) and str(pred) in str(info.value)
    assert "--pred-convention" not in str(info.value)
    # stated brats2019 but BraTS 2023 values: both brats2023 and msd would fit
    pred = _save(BRATS_2023.from_internal(labels), affine, tmp_path / "b23.nii.gz")
    with pytest.raises(
        ValueError,
        match=r"fit the brats2023 or msd convention: .*"
        r"--pred-convention brats2023",
    ):
        evaluate_case(pred, case.seg, pred_convention="brats2019")
    # a bad reference is not blamed on --pred-convention
    bad_ref = labels.copy()
    bad_ref[0, 0, 0] = 9
    ref = _save(bad_ref, affine, tmp_path / "ref.nii.gz")
    with pytest.raises(ValueError) as info:
        evaluate_case(None, ref, ref_convention="brats2019")
    assert f"reference {ref} holds label values [9]" in str(info.value)
    assert "--pred-convention" not in str(info.value)
    # a 9 fits no convention: no convention is suggested, the file is to be fixed
    assert "--ref-convention" not in str(info.value) and "fix or re-export" in str(info.value)
    # BraTS 2023 values in a reference read as brats2019: the convention that fits is named
    ref23 = _save(BRATS_2023.from_internal(labels), affine, tmp_path / "ref23.nii.gz")
    with pytest.raises(ValueError, match=r"layout.*--ref-convention brats2023"):
        evaluate_case(None, ref23, ref_convention="brats2019")
    # not a value problem: the loader's own message stays
    stack = _save(np.stack([labels, labels], axis=-1), affine, tmp_path / "stack.nii.gz")
    with pytest.raises(ValueError, match="stack of 2 volumes"):
        evaluate_case(stack, case.seg)


# --- reference layouts: label maps alone ---------------------------------------------------


def _relayout(cohort, root: Path, how: str) -> Path:
    """The cohort's reference label maps copied into another layout (no image files)."""
    ref_dir = root / how
    for case_id, (labels, affine) in cohort["refs"].items():
        if how == "seg_only_case_folders":
            path = ref_dir / case_id / f"{case_id}_seg.nii.gz"
        elif how == "flat_seg":
            path = ref_dir / f"{case_id}_seg.nii.gz"
        elif how == "flat_ids":  # online system / nnU-Net gt_segmentations naming
            path = ref_dir / f"{case_id}.nii"
        else:  # labelsTr alone: MSD convention
            path = ref_dir / "labelsTr" / f"{case_id}.nii.gz"
            labels = MSD.from_internal(labels)
        path.parent.mkdir(parents=True, exist_ok=True)
        _save(labels, affine, path)
    return ref_dir


@pytest.mark.parametrize("how", ["seg_only_case_folders", "flat_seg", "flat_ids", "labels_tr"])
def test_references_without_images_score_as_the_full_cohort(cohort, tmp_path, how):
    full, full_missing = evaluate_folders(cohort["pred_dir"], cohort["ref_dir"])
    ref_dir = _relayout(cohort, tmp_path, how)
    # predictions in BraTS conventions are read as such: the MSD rule only guesses
    pred_convention = None if how != "labels_tr" else "brats2019"
    if how == "labels_tr":  # case 0's prediction is in the 2023 convention: give both
        shutil.copytree(cohort["pred_dir"], tmp_path / "preds")
        (tmp_path / "preds" / f"{cohort['ids'][0]}.nii.gz").unlink()
        labels0, affine0 = cohort["refs"][cohort["ids"][0]]
        _save(labels0, affine0, tmp_path / "preds" / f"{cohort['ids'][0]}.nii.gz")
        pred_dir = tmp_path / "preds"
    else:
        pred_dir = cohort["pred_dir"]
    per_case, missing = evaluate_folders(pred_dir, ref_dir, pred_convention=pred_convention)
    pd.testing.assert_frame_equal(per_case, full)
    assert missing == full_missing


def test_reference_case_without_its_flair_still_counts(cohort, tmp_path):
    ref_dir = tmp_path / "refs"
    shutil.copytree(cohort["ref_dir"], ref_dir)
    id0 = cohort["ids"][0]
    (flair,) = ref_dir.rglob(f"{id0}_flair.nii*")
    flair.unlink()
    per_case, _ = evaluate_folders(cohort["pred_dir"], ref_dir)
    full, _ = evaluate_folders(cohort["pred_dir"], cohort["ref_dir"])
    pd.testing.assert_frame_equal(per_case, full)


def test_reference_layout_errors(cohort, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no label maps here")
    with pytest.raises(ValueError, match=r"holds no label map: expected case folders"):
        evaluate_folders(cohort["pred_dir"], tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        evaluate_folders(cohort["pred_dir"], tmp_path / "absent")
    twice = tmp_path / "twice"
    labels, affine = cohort["refs"][cohort["ids"][0]]
    for path in (twice / f"{cohort['ids'][0]}_seg.nii.gz", twice / "x" / f"{cohort['ids'][0]}.nii"):
        path.parent.mkdir(parents=True, exist_ok=True)
        _save(labels, affine, path)
    with pytest.raises(ValueError, match=f"case {cohort['ids'][0]} has two reference label maps"):
        evaluate_folders(cohort["pred_dir"], twice)


def test_cli_ref_convention_and_layouts_in_help(cohort, tmp_path):
    help_text = CliRunner().invoke(command, ["--help"]).output
    for layout in (
        "BraTS2021_00000_seg.nii.gz",
        "gt_segmentations",
        "labelsTr",
        "--ref-convention",
    ):
        assert layout in help_text
    # nnU-Net-style label files (MSD order) in a flat folder: wrong unless --ref-convention msd
    ref_dir = tmp_path / "gt_segmentations"
    ref_dir.mkdir()
    for case_id, (labels, affine) in cohort["refs"].items():
        _save(MSD.from_internal(labels), affine, ref_dir / f"{case_id}.nii.gz")
    out = tmp_path / "r.csv"
    result = CliRunner().invoke(
        command,
        [
            str(cohort["pred_dir"]),
            str(ref_dir),
            "--out",
            str(out),
            "--ref-convention",
            "msd",
            "--pred-convention",
            "brats2019",
        ],
    )
    # case 0's prediction is in the 2023 convention: read as 2019 it fails loudly, alone
    assert result.exit_code == 1 and "--pred-convention brats2023" in result.output
    assert f"FAILED {cohort['ids'][0]}" in result.output
    assert list(pd.read_csv(out)["Label"]) == [cohort["ids"][1], *SUMMARY_ROWS]
    pred_dir = tmp_path / "preds"
    pred_dir.mkdir()
    id1 = cohort["ids"][1]
    shutil.copy(cohort["pred_dir"] / f"{id1}.nii", pred_dir / f"{id1}.nii")
    result = CliRunner().invoke(
        command,
        [
            str(pred_dir),
            str(ref_dir),
            "--out",
            str(out),
            "--ref-convention",
            "msd",
            "--pred-convention",
            "brats2019",
            "--overwrite",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Evaluated 1 case; results written to" in result.output
    want = evaluate_labels(cohort["shifted"], cohort["refs"][id1][0])
    row = pd.read_csv(out).iloc[0]
    assert row["Label"] == id1 and row["Dice_TC"] == pytest.approx(want["Dice_TC"])


def test_an_empty_prediction_folder_is_described_as_one(tmp_path, phantom_cohort):
    """The error speaks of label maps, not of the image files of a case folder."""
    empty = tmp_path / "preds"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"holds no label map: expected <case ID>\.nii\.gz") as e:
        evaluate_folders(empty, phantom_cohort.root)
    assert "_t1.nii.gz" not in str(e.value)
