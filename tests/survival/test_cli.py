"""`brats-mtl survival` commands and the Fig. 4 plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from brats_mtl.cli.main import cli
from brats_mtl.figures.common import save_figure
from brats_mtl.survival import (
    fit_age_model,
    load_model,
    predict_table,
    read_survival_csv,
    survival_metrics,
)
from brats_mtl.survival.plot import plot_age_regression


@pytest.fixture()
def table_csv(tmp_path: Path) -> Path:
    """40 GTR patients, 5 STR, 2 censored GTR, 3 with NA values (2019 column names)."""
    rng = np.random.default_rng(7)
    ages = rng.uniform(25, 85, 50)
    days = np.clip(1250 - 13 * ages + rng.normal(0, 250, 50), 5, None)
    lines = ["BraTS19ID,Age,Survival,ResectionStatus"]
    for i, (age, day) in enumerate(zip(ages, days, strict=True)):
        resection = "STR" if i < 5 else "GTR"
        survival = f"ALIVE ({day:.0f} days later)" if i in (10, 11) else f"{day:.0f}"
        if i in (12, 13, 14):
            survival, resection = "NA", "NA"
        lines.append(f"BraTS19_T_{i:03d}_1,{age:.4f},{survival},{resection}")
    path = tmp_path / "survival_data.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def run(*args: str) -> str:
    result = CliRunner().invoke(cli, ["survival", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result.output


def test_fit_predict_evaluate_round_trip(tmp_path, table_csv):
    model_json, pred, metrics = tmp_path / "m.json", tmp_path / "p.csv", tmp_path / "metrics.csv"
    out = run("fit", table_csv, "--out", model_json)
    assert "n = 40" in out and "2 censored rows of the fitted group left out" in out
    out = run("predict", model_json, table_csv, "--out", pred)
    assert "predicted 42 GTR cases" in out
    assert pred.read_text().splitlines()[0].startswith("BraTS19_T_005_1,")  # no header
    per_case = tmp_path / "cases.csv"
    out = run("evaluate", pred, table_csv, "--out", metrics, "--per-case", per_case)
    assert "scored 40 of 42" in out

    written = pd.read_csv(metrics)
    assert list(written.columns) == ["Accuracy", "MSE", "medianSE", "stdSE", "SpearmanR"]
    table = read_survival_csv(table_csv)
    model = load_model(model_json)
    assert model == fit_age_model(table)
    rows = table.usable_rows()
    expected = survival_metrics(model.predict_days(rows["age_years"]), rows["survival_days"])
    got = written.iloc[0]
    assert got["Accuracy"] == pytest.approx(expected.accuracy)
    assert got["SpearmanR"] == pytest.approx(expected.spearman_r)
    # the submission holds days to 2 decimals
    assert got["MSE"] == pytest.approx(expected.mse_days2, abs=2.0)
    assert len(pd.read_csv(per_case)) == 40


def test_predict_all_rows_and_header(tmp_path, table_csv):
    model_json, pred = tmp_path / "m.json", tmp_path / "p.csv"
    run("fit", table_csv, "--out", model_json, "--all-resections")
    assert load_model(model_json).n == 45 and not load_model(model_json).gtr_only
    run("predict", model_json, table_csv, "--out", pred, "--all-rows", "--header")
    lines = pred.read_text().splitlines()
    assert lines[0] == "ID,days" and len(lines) == 51


def test_outputs_are_not_overwritten_without_flag(tmp_path, table_csv):
    model_json = tmp_path / "m.json"
    run("fit", table_csv, "--out", model_json)
    before = model_json.read_text()
    result = CliRunner().invoke(
        cli, ["survival", "fit", str(table_csv), "--out", str(model_json), "--all-resections"]
    )
    assert result.exit_code == 1 and "--overwrite" in result.output
    assert model_json.read_text() == before
    run("fit", table_csv, "--out", model_json, "--all-resections", "--overwrite")
    assert model_json.read_text() != before


def test_user_errors_are_clean_messages(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("Patient,Age,Survival\nA,40,300\n")
    result = CliRunner().invoke(
        cli, ["survival", "fit", str(bad), "--out", str(tmp_path / "m.json")]
    )
    assert result.exit_code == 1
    assert (
        "Error:" in result.output
        and "BraTS19ID" in result.output
        and "Traceback" not in result.output
    )
    no_gtr = tmp_path / "nogtr.csv"
    no_gtr.write_text("BraTS19ID,Age,Survival,ResectionStatus\nA,40,300,STR\nB,50,400,STR\n")
    result = CliRunner().invoke(
        cli, ["survival", "fit", str(no_gtr), "--out", str(tmp_path / "m.json")]
    )
    assert result.exit_code == 1 and "--all-resections" in result.output


def test_cv_command_and_config_override(tmp_path, table_csv):
    out_csv = tmp_path / "cv.csv"
    out = run("cv", table_csv, "--out", out_csv, "--folds", "4", "--seed", "2")
    assert "4-fold" in out and "fold sizes [10, 10, 10, 10]" in out
    table = pd.read_csv(out_csv)
    assert list(table["fold"].astype(str)) == ["0", "1", "2", "3", "all"]
    assert table["n"].iloc[-1] == 40
    # boundaries from --set change the accuracy column only
    shifted = tmp_path / "cv2.csv"
    run(
        "cv",
        table_csv,
        "--out",
        shifted,
        "--folds",
        "4",
        "--seed",
        "2",
        "--set",
        "survival.short_days=100",
        "--set",
        "survival.long_days=2000",
    )
    other = pd.read_csv(shifted)
    assert other["MSE"].iloc[-1] == pytest.approx(table["MSE"].iloc[-1])
    assert other["Accuracy"].iloc[-1] != pytest.approx(table["Accuracy"].iloc[-1])


def test_plot_command_writes_png(tmp_path, table_csv):
    model_json, png = tmp_path / "m.json", tmp_path / "fig" / "fig4.png"
    run("fit", table_csv, "--out", model_json)
    run("plot", model_json, table_csv, "--out", png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(png.parent.glob(".*"))  # no temp file left


def test_figure_points_labels_and_band(tmp_path, table_csv):
    table = read_survival_csv(table_csv)
    model = fit_age_model(table)
    fig = plot_age_regression(model, table)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "Age [years]" and ax.get_ylabel() == "Survival [days]"
    dots, censored = ax.collections[0], ax.collections[1]
    assert len(dots.get_offsets()) == model.n == 40
    np.testing.assert_allclose(
        np.asarray(dots.get_offsets())[:, 1], table.usable_rows()["survival_days"]
    )
    assert len(censored.get_offsets()) == 2
    line = next(ln for ln in ax.get_lines() if ln.get_label().startswith("fit"))
    x, y = line.get_data()
    np.testing.assert_allclose(y, model.predict_days(x))
    band = ax.collections[2]  # fill_between
    vertices = band.get_paths()[0].vertices
    lower, upper = model.mean_confidence_band(x)
    assert vertices[:, 1].min() == pytest.approx(lower.min())
    assert vertices[:, 1].max() == pytest.approx(upper.max())
    path = save_figure(fig, tmp_path / "fig4.svg")
    assert path.read_text().lstrip().startswith("<?xml")
    with pytest.raises(FileExistsError):
        save_figure(plot_age_regression(model, table), path)


def test_predictions_cover_validation_format(tmp_path, table_csv):
    model = fit_age_model(read_survival_csv(table_csv))
    validation = tmp_path / "survival_evaluation.csv"
    validation.write_text(
        "BraTS20ID,Age,ResectionStatus\nV_001,68.2,GTR\nV_002,50,NA\nV_003,NA,GTR\n"
    )
    pred = predict_table(model, read_survival_csv(validation))
    assert list(pred["case_id"]) == ["V_001"]


def test_evaluate_truth_needs_id_and_survival_only(tmp_path):
    """A truth table without Age scores (its metrics equal the hand-computed ones); a
    truth table without survival or ID fails with a message naming the file and column."""
    truth = tmp_path / "truth.csv"
    truth.write_text("Brats20ID,Survival_days\nA,100\nB,500\nC,350\nD,ALIVE (90 days later)\n")
    pred = tmp_path / "pred.csv"
    pred.write_text("A,120\nB,400\nC,300\nD,50\n")
    out = tmp_path / "metrics.csv"
    output = run("evaluate", pred, truth, "--out", out)
    assert "scored 3 of 4" in output  # D is censored
    got = pd.read_csv(out).iloc[0]
    squared = np.array([20.0, 100.0, 50.0]) ** 2
    assert got["MSE"] == pytest.approx(squared.mean())
    assert got["medianSE"] == pytest.approx(2500.0)
    # true classes short, long, mid; predicted short (120), mid (400), mid (300 is not
    # < 300) -> A and C right
    assert got["Accuracy"] == pytest.approx(2 / 3)
    assert got["SpearmanR"] == pytest.approx(1.0)

    for header, missing in (
        ("Brats20ID,Age", "no survival column"),
        ("Name,Survival", "no case id"),
    ):
        bad = tmp_path / "bad.csv"
        bad.write_text(f"{header}\nA,100\n")
        result = CliRunner().invoke(
            cli, ["survival", "evaluate", str(pred), str(bad), "--out", str(tmp_path / "x.csv")]
        )
        assert result.exit_code == 1, result.output
        assert missing in result.output and str(bad) in result.output
        assert not (tmp_path / "x.csv").exists()


def test_fit_with_garbage_ages_fails_and_lists_the_rows(tmp_path, table_csv):
    lines = table_csv.read_text().splitlines()
    lines[3] = lines[3].replace(lines[3].split(",")[1], "abc")
    lines[7] = lines[7].replace(lines[7].split(",")[1], "-4")
    bad = tmp_path / "clinical.csv"
    bad.write_text("\n".join(lines) + "\n")
    model_json = tmp_path / "m.json"
    result = CliRunner().invoke(cli, ["survival", "fit", str(bad), "--out", str(model_json)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"Error: {bad}: 2 row(s) with an age that is not a number" in result.output
    assert "line 4 (BraTS19_T_002_1): age 'abc' is not a number" in result.output
    assert "line 8 (BraTS19_T_006_1): age '-4' is outside [0, 120] years" in result.output
    assert not model_json.exists()


def test_fit_refuses_an_existing_output_before_reading_the_table(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("BraTS19ID,Age,Survival,ResectionStatus\nA_1,abc,100,GTR\n")
    model_json = tmp_path / "m.json"
    model_json.write_text("{}")
    result = CliRunner().invoke(cli, ["survival", "fit", str(bad), "--out", str(model_json)])
    assert result.exit_code == 1
    assert "m.json exists; pass --overwrite" in result.output and "abc" not in result.output
    assert model_json.read_text() == "{}"
