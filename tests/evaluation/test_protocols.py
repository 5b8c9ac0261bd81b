"""``evaluate --protocol/--labels``: schemes found from layout and values, refusals, tables."""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from brats_mtl.cli import evaluate as evaluate_cli
from brats_mtl.cli.evaluate import command
from brats_mtl.conventions import HD95_ONE_EMPTY_MM
from brats_mtl.evaluation import evaluate_folders
from brats_mtl.evaluation.lesionwise import LESION_COLUMNS
from brats_mtl.evaluation.protocols import PROTOCOLS, score_case, summary_table
from brats_mtl.tasks import LABEL_SCHEMES, LESIONWISE_PARAMETERS

SHAPE = (24, 24, 20)


def _save(labels: np.ndarray, path: Path, spacing=(1.0, 1.0, 1.0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(labels.astype(np.uint8), np.diag([*spacing, 1.0])), str(path))
    return path


def _labels(**cubes: int) -> np.ndarray:
    """A label map with one 4^3 cube per label: ``_labels(a=1, b=4)`` (corners fixed)."""
    corners = [(2, 2, 2), (2, 12, 2), (12, 2, 10), (14, 14, 12)]
    out = np.zeros(SHAPE, dtype=np.uint8)
    for corner, value in zip(corners, cubes.values(), strict=False):
        out[tuple(slice(c, c + 4) for c in corner)] = value
    return out


def _invoke(*args: str):
    return CliRunner().invoke(command, [str(a) for a in args])


def test_one_empty_hd95_is_the_unrounded_diagonal():
    assert HD95_ONE_EMPTY_MM == math.sqrt(240**2 + 240**2 + 155**2)
    assert round(HD95_ONE_EMPTY_MM, 6) == 373.128664


def test_cli_choices_are_the_registries():
    assert evaluate_cli._PROTOCOLS == PROTOCOLS
    assert evaluate_cli.SCHEMES[1:] == tuple(LABEL_SCHEMES)
    from brats_mtl.cli import evaluate_uncertainty

    labels = next(p for p in evaluate_uncertainty.command.params if p.name == "labels")
    assert tuple(labels.type.choices) == evaluate_cli.SCHEMES
    assert set(evaluate_cli._TASKS[1:]) == set(LESIONWISE_PARAMETERS)


def test_post_treatment_glioma_found_from_label_4_and_rc_kept_out_of_tumour(tmp_path):
    case = "BraTS-GLI-00001-000"  # a 2023-style name, but RC in the reference
    ref = _labels(netc=1, et=3, rc=4, snfh=2)
    _save(ref, tmp_path / "refs" / case / f"{case}-seg.nii.gz")
    pred = ref.copy()
    pred[pred == 4] = 0  # the cavity missed
    _save(pred, tmp_path / "preds" / f"{case}.nii.gz")
    per_case, _ = evaluate_folders(tmp_path / "preds", tmp_path / "refs")  # legacy, auto
    row = per_case.iloc[0]
    assert row["Dice_RC"] == 0.0 and row["Hausdorff95_RC"] == HD95_ONE_EMPTY_MM
    for region in ("ET", "WT", "TC", "NETC", "SNFH"):  # RC in none of them
        assert row[f"Dice_{region}"] == 1.0 and row[f"Hausdorff95_{region}"] == 0.0
    lesionwise, _ = evaluate_folders(tmp_path / "preds", tmp_path / "refs", protocol="lesionwise")
    row = lesionwise.iloc[0]
    assert (row["LesionWise_Dice_RC"], row["LesionWise_Hausdorff95_RC"]) == (0.0, 374.0)
    assert (row["Num_FN_RC"], row["Hausdorff95_RC"]) == (1.0, 374.0)
    # WT: the NETC and ET cubes (6 voxels apart) merge by dilation, SNFH is a lesion alone
    assert row["LesionWise_Dice_WT"] == 1.0 and row["Num_TP_WT"] == 2.0


def test_pediatric_2024_scheme_scores_et_as_label_1(tmp_path):
    case = "BraTS-PED-00001-000"
    ref = _labels(et=1, net=2, cc=3, ed=4)
    _save(ref, tmp_path / "refs" / f"{case}-seg.nii.gz")
    pred = ref.copy()
    pred[pred == 1] = 2  # ET predicted as NET: ET lost, TC and WT intact
    _save(pred, tmp_path / "preds" / f"{case}.nii.gz")
    per_case, _ = evaluate_folders(tmp_path / "preds", tmp_path / "refs", protocol="lesionwise")
    row = per_case.iloc[0]
    assert row["Dice_ET"] == 0.0 and row["Num_FN_ET"] == 1.0
    assert row["Dice_TC"] == 1.0 and row["Dice_WT"] == 1.0
    assert row["Dice_NET"] == pytest.approx(2 * 64 / (128 + 64))
    assert {"Dice_CC", "Dice_ED"} <= set(per_case.columns)


def test_lesionwise_parameters_follow_the_task(tmp_path):
    # 27-voxel lesion missed: left out for GLI (<= 50 mm^3), counted for MET (> 2 mm^3)
    ref = np.zeros(SHAPE, dtype=np.uint8)
    ref[2:5, 2:5, 2:5] = 3
    pred = np.zeros_like(ref)
    for case, task, want in (
        ("BraTS-GLI-00001-000", None, 1.0),
        ("BraTS-MET-00001-000", None, 0.0),
    ):
        _save(ref, tmp_path / f"{case}-ref.nii.gz")
        _save(pred, tmp_path / f"{case}-pred.nii.gz")
        row = score_case(
            tmp_path / f"{case}-pred.nii.gz",
            tmp_path / f"{case}-ref.nii.gz",
            case_id=case,
            task=task,
        )
        assert row["LesionWise_Dice_ET"] == want
    row = score_case(
        tmp_path / "BraTS-GLI-00001-000-pred.nii.gz",
        tmp_path / "BraTS-GLI-00001-000-ref.nii.gz",
        case_id="BraTS-GLI-00001-000",
        task="MET",
    )
    assert row["LesionWise_Dice_ET"] == 0.0


def test_mismatched_scheme_is_refused(tmp_path):
    refs, preds = tmp_path / "refs", tmp_path / "preds"
    ref = _labels(ncr=1, ed=2, et=4)
    _save(ref, refs / "BraTS2021_00001" / "BraTS2021_00001_seg.nii.gz")
    _save(ref, preds / "BraTS2021_00001.nii.gz")
    for scheme in ("gli-post", "brats2023", "ped2024"):
        result = _invoke(preds, refs, "--out", tmp_path / "r.csv", "--labels", scheme)
        message = " ".join(result.output.split())
        assert result.exit_code == 1, result.output
        assert "BraTS 2017-2021 case" in message and "refusing" in message
        assert "BraTS2021_00001_seg.nii.gz" in message
    assert not (tmp_path / "r.csv").exists()
    # a plain file name: the values tell the era
    _save(ref, tmp_path / "flat" / "case1.nii.gz")
    _save(ref, tmp_path / "flatpred" / "case1.nii.gz")
    result = _invoke(
        tmp_path / "flatpred",
        tmp_path / "flat",
        "--out",
        tmp_path / "r.csv",
        "--labels",
        "brats2023",
    )
    message = " ".join(result.output.split())
    assert result.exit_code == 1
    assert "label values [4]" in message and "case1.nii.gz" in message
    assert "--labels brats2017" in message


def test_value_outside_the_scheme_names_file_values_and_scheme(tmp_path):
    case = "BraTS-GLI-00001-000"
    ref = _labels(netc=1, et=3)
    _save(ref, tmp_path / "refs" / f"{case}-seg.nii.gz")
    pred = ref.copy()
    pred[0, 0, 0] = 7
    pred_path = _save(pred, tmp_path / "preds" / f"{case}.nii.gz")
    result = _invoke(
        tmp_path / "preds",
        tmp_path / "refs",
        "--out",
        tmp_path / "r.csv",
        "--protocol",
        "lesionwise",
    )
    message = " ".join(result.output.split())
    assert result.exit_code == 1
    assert str(pred_path) in message and "[7]" in message and "brats2023" in message


def test_unsupported_tasks_are_refused(tmp_path):
    case = "BraTS-MEN-RT-0001-1"
    gtv = np.zeros(SHAPE, dtype=np.uint8)
    gtv[2:6, 2:6, 2:6] = 1
    _save(gtv, tmp_path / "refs" / case / f"{case}_gtv.nii.gz")
    _save(gtv, tmp_path / "refs" / case / f"{case}_t1c.nii.gz")
    _save(gtv, tmp_path / "preds" / f"{case}.nii.gz")
    result = _invoke(tmp_path / "preds", tmp_path / "refs", "--out", tmp_path / "r.csv")
    assert result.exit_code == 1 and "MEN-RT" in result.output and "not supported" in result.output
    inpainting = tmp_path / "inpainting" / "BraTS-GLI-00001-000"
    _save(gtv, inpainting / "BraTS-GLI-00001-000-t1n-voided.nii.gz")
    _save(gtv, inpainting / "BraTS-GLI-00001-000-mask-healthy.nii.gz")
    result = _invoke(tmp_path / "preds", tmp_path / "inpainting", "--out", tmp_path / "r.csv")
    assert result.exit_code == 1 and "inpainting" in result.output


def test_cli_lesionwise_table_and_lesion_rows(tmp_path):
    case = "BraTS-GLI-00001-000"
    ref = _labels(netc=1, et=3, snfh=2)
    _save(ref, tmp_path / "refs" / f"{case}-seg.nii.gz", spacing=(1.0, 1.0, 2.0))
    _save(ref, tmp_path / "preds" / f"{case}.nii.gz", spacing=(1.0, 1.0, 2.0))
    out, lesions = tmp_path / "r.csv", tmp_path / "lesions.csv"
    result = _invoke(
        tmp_path / "preds",
        tmp_path / "refs",
        "--out",
        out,
        "--protocol",
        "lesionwise",
        "--lesions-out",
        lesions,
    )
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    assert list(table["Label"]) == [case, "Mean", "StdDev", "Median", "25quantile", "75quantile"]
    assert table.columns[1] == "LesionWise_Dice_ET"
    assert (table.loc[0, [c for c in table.columns if c.startswith("LesionWise_Dice")]] == 1).all()
    rows = pd.read_csv(lesions)
    assert list(rows.columns) == list(LESION_COLUMNS)
    et = rows[rows["Region"] == "ET"]
    assert et["Volume_mm3"].tolist() == [128.0]  # 64 voxels of 2 mm^3
    assert "mean lesion-wise Dice" in result.output
    # --lesions-out belongs to the lesion-wise protocol
    result = _invoke(
        tmp_path / "preds", tmp_path / "refs", "--out", out, "--overwrite", "--lesions-out", lesions
    )
    assert result.exit_code == 2 and "--protocol lesionwise" in result.output


def test_summary_table_leaves_out_missing_regions():
    per_case = pd.DataFrame(
        {"Label": ["a", "b", "c"], "Dice_ET": [1.0, 0.0, 0.5], "Dice_RC": [np.nan, 1.0, 0.0]}
    )
    table = summary_table(per_case)
    stats = table.set_index("Label")
    assert stats.loc["Mean", "Dice_ET"] == 0.5 and stats.loc["Mean", "Dice_RC"] == 0.5
    assert stats.loc["StdDev", "Dice_RC"] == pytest.approx(math.sqrt(0.5))
    assert stats.loc["Median", "Dice_ET"] == 0.5
    assert stats.loc["25quantile", "Dice_ET"] == 0.25


def test_cli_real_data_lesionwise_against_itself(shared_data, tmp_path):
    brats = shared_data / "brats"
    out = tmp_path / "lw.csv"
    result = _invoke(brats, brats, "--out", out, "--protocol", "lesionwise", "--workers", "2")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out).set_index("Label")
    cases = table.drop(index=["Mean", "StdDev", "Median", "25quantile", "75quantile"])
    assert len(cases) == 5
    for region in ("ET", "WT", "TC"):
        assert (cases[f"LesionWise_Dice_{region}"] == 1.0).all()
        assert (cases[f"LesionWise_Hausdorff95_{region}"] == 0.0).all()
        assert (cases[f"Num_FP_{region}"] == 0.0).all() and (cases[f"Num_FN_{region}"] == 0).all()


# --- panoptica ---------------------------------------------------------------------------


def test_panoptica_missing_extra_is_a_clear_error(tmp_path, monkeypatch):
    from brats_mtl.evaluation import panoptica

    monkeypatch.setattr(panoptica, "panoptica_available", lambda: False)
    result = _invoke(tmp_path, tmp_path, "--out", tmp_path / "r.csv", "--protocol", "panoptica")
    assert result.exit_code == 1
    assert 'pip install "brats-mtl[brats2026]"' in " ".join(result.output.split())


@pytest.mark.slow  # importing and running Panoptica takes seconds
def test_panoptica_equals_calling_brats_evaluation(tmp_path):
    brats_evaluation = pytest.importorskip("brats_evaluation")
    from panoptica import Panoptica_Evaluator

    from brats_mtl.evaluation.panoptica import panoptica_row
    from brats_mtl.tasks import BRATS2023

    case = "BraTS-GLI-00001-000"
    ref = _labels(netc=1, et=3, snfh=2)
    pred = np.roll(ref, 1, axis=0)
    pred[20:22, 20:22, 2:4] = 3  # a false-positive ET lesion
    ref_path = _save(ref, tmp_path / "refs" / f"{case}-seg.nii.gz")
    pred_path = _save(pred, tmp_path / "preds" / f"{case}.nii.gz")
    per_case, _ = evaluate_folders(tmp_path / "preds", tmp_path / "refs", protocol="panoptica")
    evaluator = Panoptica_Evaluator.load_from_config(str(brats_evaluation.config_path("gli")))
    direct = brats_evaluation.evaluate_single_exam(str(pred_path), str(ref_path), case, evaluator)
    want = panoptica_row(direct, BRATS2023)
    got = per_case.iloc[0]
    assert want["Num_FP_ET"] == 1.0
    for column, value in want.items():
        assert got[column] == pytest.approx(value, abs=1e-9, nan_ok=True), column
    # BraTS 2017-2021 values (ET = 4) of the same masks give the same numbers
    legacy = ref.copy()
    legacy[legacy == 3] = 4
    legacy_pred = pred.copy()
    legacy_pred[legacy_pred == 3] = 4
    _save(legacy, tmp_path / "refs21" / "BraTS2021_00001" / "BraTS2021_00001_seg.nii.gz")
    _save(legacy_pred, tmp_path / "preds21" / "BraTS2021_00001.nii.gz")
    per_case, _ = evaluate_folders(tmp_path / "preds21", tmp_path / "refs21", protocol="panoptica")
    for column, value in want.items():
        assert per_case.iloc[0][column] == pytest.approx(value, abs=1e-9, nan_ok=True), column


def test_region_metrics_of_a_three_region_scheme_equal_the_online_system():
    from brats_mtl.evaluation import evaluate_labels, evaluate_region_labels
    from brats_mtl.tasks import BRATS2023

    rng = np.random.default_rng(0)
    ref = _labels(netc=1, et=3, snfh=2)
    pred = np.roll(ref, 1, axis=1)
    pred[rng.random(SHAPE) < 0.01] = 3
    got = evaluate_region_labels(pred, ref, dict(BRATS2023.regions), (1.0, 0.8, 2.0))
    want = evaluate_labels(
        BRATS2023.convention.to_internal(pred),
        BRATS2023.convention.to_internal(ref),
        (1.0, 0.8, 2.0),
    )
    assert got == want  # same columns, same order, same values


def test_training_on_a_label_4_2023_file_says_why(tmp_path):
    from brats_mtl.conventions import BRATS_2023
    from brats_mtl.data import CaseDataError, load_label_map

    path = _save(_labels(netc=1, rc=4), tmp_path / "seg.nii.gz")
    with pytest.raises(CaseDataError, match="resection cavity.*gli-post, ped2024"):
        load_label_map(path, BRATS_2023)
