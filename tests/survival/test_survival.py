"""Survival tables, age regression and BraTS survival metrics (paper 4.3, Table 4)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from brats_mtl.config import SurvivalConfig
from brats_mtl.survival import (
    SurvivalTableError,
    cross_validate,
    evaluate_predictions,
    fit_age_model,
    fit_ols,
    kfold_assignment,
    load_model,
    predict_table,
    read_predictions,
    read_survival_csv,
    save_model,
    survival_class,
    survival_metrics,
    write_submission,
)


def write(tmp_path: Path, text: str, name: str = "survival.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


#: A 2019-style table: 6 usable GTR rows, one censored GTR row, one STR, NA values.
TABLE_2019 = """BraTS19ID,Age,Survival,ResectionStatus
BraTS19_A_1,40,800,GTR
BraTS19_B_1,50.5,600,GTR
BraTS19_C_1,60,420,GTR
BraTS19_D_1,70.25,300,GTR
BraTS19_E_1,45,700,GTR
BraTS19_F_1,65,200,GTR
BraTS19_G_1,61.6,ALIVE (361 days later),GTR
BraTS19_H_1,55,1000,STR
BraTS19_I_1,NA,500,NA
BraTS19_J_1,52,,
"""


# ---------------------------------------------------------------------------------------
# Reading


def test_reads_2019_table_with_na_empty_decimal_and_censored(tmp_path):
    table = read_survival_csv(write(tmp_path, TABLE_2019))
    rows = table.rows.set_index("case_id")
    assert table.warnings == ()
    assert table.columns == {
        "case_id": "BraTS19ID",
        "age": "Age",
        "survival": "Survival",
        "resection": "ResectionStatus",
    }
    assert rows.loc["BraTS19_A_1", "age_years"] == 40.0
    assert rows.loc["BraTS19_D_1", "age_years"] == 70.25
    assert math.isnan(rows.loc["BraTS19_I_1", "age_years"])  # NA
    assert math.isnan(rows.loc["BraTS19_J_1", "survival_days"])  # empty
    assert rows.loc["BraTS19_J_1", "resection"] == "NA"  # empty resection
    assert rows.loc["BraTS19_G_1", "censored"]
    assert rows.loc["BraTS19_G_1", "survival_days"] == 361.0
    assert rows.loc["BraTS19_G_1", "line"] == 8
    assert list(table.usable_rows()["case_id"]) == [f"BraTS19_{c}_1" for c in "ABCDEF"]
    with_censored = table.usable_rows(include_censored=True)
    assert "BraTS19_G_1" in set(with_censored["case_id"])
    assert len(table.usable_rows(gtr_only=False)) == 7  # + the STR row


@pytest.mark.parametrize(
    ("header", "columns"),
    [
        ("BraTS18ID,Age,Survival,ResectionStatus", ("BraTS18ID", "Survival", "ResectionStatus")),
        (
            "Brats20ID,Age,Survival_days,Extent_of_Resection",
            ("Brats20ID", "Survival_days", "Extent_of_Resection"),
        ),
        (
            "brats19id, age ,survival_days,resection_status",
            ("brats19id", "survival_days", "resection_status"),
        ),
    ],
)
def test_column_names_of_each_year(tmp_path, header, columns):
    body = "\n".join(TABLE_2019.splitlines()[1:])
    table = read_survival_csv(write(tmp_path, header + "\n" + body + "\n"))
    assert (
        table.columns["case_id"],
        table.columns["survival"],
        table.columns["resection"],
    ) == columns
    assert len(table.usable_rows()) == 6


@pytest.mark.parametrize("id_column", ["ID", "BraTS20ID"])
def test_validation_table_has_no_survival(tmp_path, id_column):
    text = f"{id_column},Age,ResectionStatus\nBraTS20_Validation_001,68.17,GTR\nBraTS20_Validation_002,50,NA\n"
    table = read_survival_csv(write(tmp_path, text))
    assert not table.has_survival
    assert table.rows["survival_days"].isna().all()
    assert list(table.rows["resection"]) == ["GTR", "NA"]


def test_extra_columns_blank_lines_and_bom(tmp_path):
    text = "\ufeffBraTS19ID,Grade,Age,Survival,ResectionStatus,Note\n\nX_1,HGG,40,800,GTR,hello\n\nX_2,LGG,50,600,GTR,\n"
    table = read_survival_csv(write(tmp_path, text))
    assert table.warnings == ()
    assert list(table.rows["line"]) == [3, 5]  # blank lines keep line numbers right
    assert list(table.rows["age_years"]) == [40.0, 50.0]


def test_bad_values_are_reported_with_line_numbers(tmp_path):
    text = """BraTS19ID,Age,Survival,ResectionStatus
A_1,,800,GTR
B_1,50,-5,GTR
C_1,60,soon,GTR
D_1,61,400,partial
E_1,62,400,GTR,surplus
A_1,63,500,GTR
,64,500,GTR
"""
    path = write(tmp_path, text)
    table = read_survival_csv(path)
    messages = "\n".join(table.warnings)
    expected = {
        3: "survival '-5' is negative",
        4: "survival 'soon'",
        5: "resection 'partial'",
        6: "5 fields but the header has 4",
        7: "repeats line 2",
        8: "no case ID",
    }
    assert len(table.warnings) == len(expected)
    for line, text_part in expected.items():
        assert any(
            f"line {line}" in w and text_part in w and str(path) in w for w in table.warnings
        ), (line, messages)
    rows = table.rows.set_index("case_id")
    assert math.isnan(rows.loc["A_1", "age_years"])  # empty: missing, not bad
    assert math.isnan(rows.loc["B_1", "survival_days"])
    assert rows.loc["D_1", "resection"] == "NA"
    assert "E_1" not in rows.index
    assert rows.loc["A_1", "line"] == 2  # the first A_1 is kept
    with pytest.raises(SurvivalTableError, match=r"line 3 .*survival '-5'"):
        read_survival_csv(path, strict=True)


def test_bad_values_are_logged(tmp_path, caplog):
    path = write(tmp_path, "BraTS19ID,Age,Survival\nA_1,40,soon\n")
    with caplog.at_level("WARNING", logger="brats_mtl.survival.io"):
        read_survival_csv(path)
    assert "line 2" in caplog.text and "soon" in caplog.text


@pytest.mark.parametrize("strict", [False, True])
def test_unparseable_or_implausible_ages_are_one_error_listing_every_row(tmp_path, strict):
    text = (
        "BraTS19ID,Age,Survival,ResectionStatus\n"
        "A_1,abc,800,GTR\n"
        "B_1,50,600,GTR\n"
        "C_1,-3,500,GTR\n"
        "D_1,150,400,GTR\n"
        "E_1,120,400,GTR\n"  # the bounds are plausible
        "F_1,0,400,GTR\n"
        "G_1,60 years,400,GTR\n"
    )
    path = write(tmp_path, text, "clinical.csv")
    with pytest.raises(SurvivalTableError) as err:
        read_survival_csv(path, strict=strict)
    message = str(err.value)
    assert message.startswith(
        f"{path}: 4 row(s) with an age that is not a number of years in [0, 120]"
    )
    lines = message.splitlines()[1:]
    assert lines == [
        "  line 2 (A_1): age 'abc' is not a number",
        "  line 4 (C_1): age '-3' is outside [0, 120] years",
        "  line 5 (D_1): age '150' is outside [0, 120] years",
        "  line 8 (G_1): age '60 years' is not a number",
    ]
    # a scoring-only read does not need the age, but the file is still wrong
    with pytest.raises(SurvivalTableError, match="4 row"):
        read_survival_csv(path, require=("case_id", "survival"))


def test_missing_ages_are_one_warning_listing_the_cases(tmp_path, caplog):
    text = (
        "BraTS19ID,Age,Survival,ResectionStatus\n"
        "A_1,40,800,GTR\nB_1,NA,600,GTR\nC_1,,500,STR\nD_1,n/a,NA,NA\nE_1,60,400,GTR\n"
    )
    path = write(tmp_path, text)
    with caplog.at_level("WARNING", logger="brats_mtl.survival"):
        table = read_survival_csv(path)
    records = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(records) == 1
    assert records[0].getMessage() == (
        f"{path}: 3 row(s) without age (empty or NA) are left out of fitting and "
        "prediction: B_1, C_1, D_1"
    )
    assert table.missing_age_ids == ("B_1", "C_1", "D_1") and table.warnings == ()
    assert list(table.usable_rows(gtr_only=False)["case_id"]) == ["A_1", "E_1"]
    # predicting does not warn about them again
    model = fit_age_model(read_survival_csv(write(tmp_path, TABLE_2019, "fit.csv")))
    caplog.clear()
    with caplog.at_level("WARNING", logger="brats_mtl.survival"):
        assert list(predict_table(model, table, all_rows=True)["case_id"]) == ["A_1", "E_1"]
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    # a table read for scoring only does not use the age: no warning
    caplog.clear()
    with caplog.at_level("WARNING", logger="brats_mtl.survival"):
        read_survival_csv(path, require=("case_id", "survival"))
    assert not caplog.records


def test_missing_columns_name_the_file_and_the_names_looked_for(tmp_path):
    path = write(tmp_path, "Patient,Years,Survival\nA,40,800\n")
    with pytest.raises(SurvivalTableError) as err:
        read_survival_csv(path)
    message = str(err.value)
    assert str(path) in message
    assert "BraTS19ID" in message and "Brats20ID" in message and "Patient" in message
    path = write(tmp_path, "BraTS19ID,Years,Survival\nA,40,800\n", "noage.csv")
    with pytest.raises(SurvivalTableError, match="no age column; looked for Age"):
        read_survival_csv(path)


def test_empty_or_absent_file(tmp_path):
    with pytest.raises(SurvivalTableError, match="empty"):
        read_survival_csv(write(tmp_path, "\n"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_survival_csv(tmp_path / "absent.csv")


# ---------------------------------------------------------------------------------------
# Fit and predict


def test_fit_equals_least_squares_and_band_equals_statsmodels(tmp_path):
    import statsmodels.api as sm

    table = read_survival_csv(write(tmp_path, TABLE_2019))
    model = fit_age_model(table)
    rows = table.usable_rows()
    x, y = rows["age_years"].to_numpy(), rows["survival_days"].to_numpy()
    design = np.column_stack([np.ones_like(x), x])
    coef, ssr, *_ = np.linalg.lstsq(design, y, rcond=None)
    np.testing.assert_allclose([model.intercept_days, model.slope_days_per_year], coef, rtol=1e-10)
    assert model.n == 6 and model.df_resid == 4 and model.n_censored_excluded == 1
    np.testing.assert_allclose(model.residual_std_days, math.sqrt(ssr[0] / 4), rtol=1e-10)
    assert model.case_ids == tuple(rows["case_id"])

    ages = np.array([20.0, 45.0, 55.5, 90.0])
    lower, upper = model.mean_confidence_band(ages)
    fit = sm.OLS(y, sm.add_constant(x)).fit()
    ci = fit.get_prediction(sm.add_constant(ages)).conf_int(alpha=0.05)
    np.testing.assert_allclose(lower, ci[:, 0], rtol=1e-10)
    np.testing.assert_allclose(upper, ci[:, 1], rtol=1e-10)
    # closed form from the saved x-mean, Sxx, sigma and df
    half = (
        stats.t.ppf(0.975, model.df_resid)
        * model.residual_std_days
        * np.sqrt(1 / model.n + (ages - model.age_mean_years) ** 2 / model.age_sxx_years2)
    )
    np.testing.assert_allclose(upper - model.predict_days(ages), half, rtol=1e-10)


def test_fit_on_all_resections_and_with_censored(tmp_path):
    table = read_survival_csv(write(tmp_path, TABLE_2019))
    assert fit_age_model(table, SurvivalConfig(gtr_only=False)).n == 7
    model = fit_age_model(table, include_censored=True)
    assert model.n == 7 and model.n_censored_excluded == 0 and model.include_censored


def test_no_usable_gtr_row_is_a_clear_error(tmp_path):
    text = "BraTS19ID,Age,Survival,ResectionStatus\nA,40,800,STR\nB,50,NA,GTR\nC,NA,300,GTR\n"
    path = write(tmp_path, text)
    with pytest.raises(ValueError) as err:
        fit_age_model(read_survival_csv(path))
    message = str(err.value)
    assert str(path) in message and "0 usable rows" in message and "--all-resections" in message
    validation = write(tmp_path, "ID,Age,ResectionStatus\nA,40,GTR\n", "val.csv")
    with pytest.raises(ValueError, match="no survival column"):
        fit_age_model(read_survival_csv(validation))


def test_fit_ols_rejects_degenerate_input():
    with pytest.raises(ValueError, match="at least 3"):
        fit_ols([40.0, 50.0], [100.0, 200.0])
    with pytest.raises(ValueError, match="slope is undefined"):
        fit_ols([40.0, 40.0, 40.0], [100.0, 200.0, 300.0])
    with pytest.raises(ValueError, match="finite"):
        fit_ols([40.0, np.nan, 50.0], [100.0, 200.0, 300.0])


def test_model_json_round_trip_and_overwrite(tmp_path):
    table = read_survival_csv(write(tmp_path, TABLE_2019))
    model = fit_age_model(table, SurvivalConfig(short_days=304, long_days=456))
    path = save_model(model, tmp_path / "model.json")
    data = json.loads(path.read_text())
    assert data["n_case_ids"] == 6 and data["source_sha256"] == table.sha256
    assert (data["short_days"], data["long_days"]) == (304, 456)
    assert load_model(path) == model
    with pytest.raises(FileExistsError, match="overwrite"):
        save_model(model, path)
    save_model(model, path, overwrite=True)
    assert not list(tmp_path.glob(".*tmp*"))  # no temp file left
    bad = write(tmp_path, json.dumps({"format": "something else"}), "bad.json")
    with pytest.raises(ValueError, match="not a survival model"):
        load_model(bad)
    data.pop("slope_days_per_year")
    partial = write(tmp_path, json.dumps(data), "partial.json")
    with pytest.raises(ValueError, match=r"partial\.json.*slope_days_per_year"):
        load_model(partial)


def test_predict_gtr_rows_by_default(tmp_path, caplog):
    table = read_survival_csv(write(tmp_path, TABLE_2019))
    model = fit_age_model(table)
    pred = predict_table(model, table)
    assert list(pred["case_id"]) == [f"BraTS19_{c}_1" for c in "ABCDEFG"]
    np.testing.assert_allclose(
        pred["predicted_days"], model.intercept_days + model.slope_days_per_year * pred["age_years"]
    )
    with caplog.at_level("INFO", logger="brats_mtl.survival.model"):
        every = predict_table(model, table, all_rows=True)
    assert len(every) == 9  # I_1 has no age
    assert "BraTS19_I_1" in caplog.text
    no_resection = read_survival_csv(write(tmp_path, "ID,Age\nV_1,50\n", "v.csv"))
    with pytest.raises(ValueError, match="--all-rows"):
        predict_table(model, no_resection)
    assert len(predict_table(model, no_resection, all_rows=True)) == 1


def test_submission_round_trip_with_and_without_header(tmp_path):
    pred = pd.DataFrame({"case_id": ["A_1", "B_1"], "predicted_days": [400.123, 512.0]})
    for header in (False, True):
        path = write_submission(pred, tmp_path / f"p{header}.csv", header=header)
        lines = path.read_text().splitlines()
        assert lines[0] == ("ID,days" if header else "A_1,400.12")
        back = read_predictions(path)
        assert list(back["case_id"]) == ["A_1", "B_1"]
        np.testing.assert_allclose(back["predicted_days"], [400.12, 512.0])
    with pytest.raises(FileExistsError):
        write_submission(pred, tmp_path / "pFalse.csv")
    bad = write(tmp_path, "A_1,400\nB_1,soon\n", "bad.csv")
    with pytest.raises(SurvivalTableError, match=r"line 2: days 'soon'"):
        read_predictions(bad)


# ---------------------------------------------------------------------------------------
# Metrics


def test_class_boundaries():
    days = np.array([0, 299.9, 300, 375, 450, 450.1, 2000])
    np.testing.assert_array_equal(survival_class(days), [0, 0, 1, 1, 1, 2, 2])
    np.testing.assert_array_equal(
        survival_class([99, 100, 150, 200, 201], 100, 200), [0, 1, 1, 1, 2]
    )


def test_metrics_by_hand_with_ties():
    pred = np.array([100.0, 350.0, 350.0, 500.0, 800.0])
    true = np.array([200.0, 300.0, 460.0, 460.0, 1000.0])
    m = survival_metrics(pred, true)
    se = np.array([10000.0, 2500.0, 12100.0, 1600.0, 40000.0])
    # classes: pred S M M L L, true S M L L L -> 4 of 5
    assert m.accuracy == pytest.approx(0.8)
    assert m.mse_days2 == pytest.approx(66200 / 5)
    assert m.median_se_days2 == pytest.approx(10000.0)
    assert m.std_se_days2 == pytest.approx(math.sqrt(((se - 13240.0) ** 2).sum() / 5))  # ddof 0
    # average ranks: pred 1, 2.5, 2.5, 4, 5; true 1, 2, 3.5, 3.5, 5 -> 8.75 / 9.5
    assert m.spearman_r == pytest.approx(8.75 / 9.5)
    assert m.spearman_r == pytest.approx(stats.spearmanr(pred, true).statistic)
    assert m.n == 5
    assert list(m.as_row()) == ["Accuracy", "MSE", "medianSE", "stdSE", "SpearmanR"]


def test_metrics_edge_cases():
    assert math.isnan(survival_metrics([300.0, 300.0], [100.0, 500.0]).spearman_r)
    assert math.isnan(survival_metrics([300.0], [100.0]).spearman_r)
    with pytest.raises(ValueError, match="no patient"):
        survival_metrics([], [])


def test_evaluate_matches_ids_and_skips_unscorable(tmp_path):
    truth = read_survival_csv(write(tmp_path, TABLE_2019))
    pred = pd.DataFrame(
        {
            "case_id": ["braTS19_a_1 ", "BraTS19_B_1", "BraTS19_G_1", "Unknown_1"],
            "predicted_days": [700.0, 650.0, 300.0, 100.0],
        }
    )
    metrics, cases = evaluate_predictions(pred, truth)
    assert metrics.n == 2  # G_1 is censored, Unknown_1 is not in the table
    assert list(cases["true_days"]) == [800.0, 600.0]
    assert metrics.mse_days2 == pytest.approx((100**2 + 50**2) / 2)
    assert list(cases["true_class"]) == ["long", "long"]
    with pytest.raises(ValueError, match="none of the 1 predicted"):
        evaluate_predictions(pred.iloc[3:], truth)


def test_kfold_assignment():
    folds = kfold_assignment(23, 5, seed=3)
    assert sorted(np.bincount(folds)) == [4, 4, 5, 5, 5]
    np.testing.assert_array_equal(folds, kfold_assignment(23, 5, seed=3))
    assert not np.array_equal(folds, kfold_assignment(23, 5, seed=4))
    with pytest.raises(ValueError, match="folds"):
        kfold_assignment(4, 5)


def test_cross_validation_predicts_each_fold_from_the_others(tmp_path):
    rng = np.random.default_rng(0)
    ages = rng.uniform(30, 80, 30)
    days = 1200 - 12 * ages + rng.normal(0, 100, 30)
    text = "BraTS19ID,Age,Survival,ResectionStatus\n" + "".join(
        f"C_{i},{a:.3f},{d:.0f},GTR\n" for i, (a, d) in enumerate(zip(ages, days, strict=True))
    )
    table = read_survival_csv(write(tmp_path, text))
    result = cross_validate(table, SurvivalConfig(cv_folds=3), seed=1)
    cases = result.per_case
    assert [m.n for m in result.per_fold] == [10, 10, 10] and result.pooled.n == 30
    held = cases["fold"] == 0
    rows = table.usable_rows()
    x, y = rows["age_years"].to_numpy(), rows["survival_days"].to_numpy()
    coef = np.linalg.lstsq(np.column_stack([np.ones(20), x[~held]]), y[~held], rcond=None)[0]
    np.testing.assert_allclose(cases.loc[held, "predicted_days"], coef[0] + coef[1] * x[held])
    pooled = survival_metrics(cases["predicted_days"], cases["true_days"])
    assert result.pooled == pooled
    assert list(result.table()["fold"]) == ["0", "1", "2", "all"]


# ---------------------------------------------------------------------------------------
# The real BraTS 2019 table


@pytest.mark.data
def test_real_2019_table_fit_equals_lstsq_and_paper_table4(shared_data):
    path = shared_data / "survival" / "brats2019" / "survival_data.csv"
    table = read_survival_csv(path)
    assert len(table.rows) == 259 and table.warnings == ()
    # the 19 BraTS 2013 rows have NA age, survival and resection: kept, not an error
    assert len(table.missing_age_ids) == 19
    model = fit_age_model(table)
    rows = table.usable_rows()
    assert model.n == 101 == len(model.case_ids)
    assert model.n_censored_excluded == 1  # BraTS19_CBICA_BFB_1, ALIVE (361 days later)
    x, y = rows["age_years"].to_numpy(), rows["survival_days"].to_numpy()
    coef = np.linalg.lstsq(np.column_stack([np.ones_like(x), x]), y, rcond=None)[0]
    np.testing.assert_allclose([model.intercept_days, model.slope_days_per_year], coef, rtol=1e-10)
    # Scored on its own training rows, the fit gives the paper's Table 4 "Train set" row.
    m = survival_metrics(model.predict_days(x), y)
    assert (
        round(m.accuracy, 3),
        round(m.mse_days2),
        round(m.median_se_days2),
        round(m.std_se_days2),
        round(m.spearman_r, 2),
    ) == (0.485, 88822, 21135, 181864, 0.48)


@pytest.mark.data
def test_real_2020_table_reads(shared_data):
    table = read_survival_csv(shared_data / "survival" / "brats2020" / "survival_info.csv")
    assert table.columns["case_id"] == "Brats20ID" and table.warnings == ()
    assert table.missing_age_ids == ()
    assert fit_age_model(table).n == int((table.rows["resection"] == "GTR").sum())


def test_age_column_optional_when_not_required(tmp_path):
    path = write(tmp_path, "BraTS19ID,Survival\nA,800\nB,ALIVE (100 days later)\n")
    with pytest.raises(SurvivalTableError, match="no age column"):
        read_survival_csv(path)
    table = read_survival_csv(path, require=("case_id", "survival"))
    assert not table.has_age and table.has_survival
    assert table.rows["age_years"].isna().all()
    assert table.rows["survival_days"].tolist() == [800.0, 100.0]
    assert table.rows["censored"].tolist() == [False, True]
    # fitting and predicting still need the age, and say so
    with pytest.raises(ValueError, match=r"no age column .*a fit needs"):
        fit_age_model(table)
    model = fit_age_model(read_survival_csv(write(tmp_path, TABLE_2019, "fit.csv")))
    with pytest.raises(ValueError, match=r"no age column .*a prediction needs"):
        predict_table(model, table, all_rows=True)
    with pytest.raises(ValueError, match="unknown column roles"):
        read_survival_csv(path, require=("case_id", "weight"))
