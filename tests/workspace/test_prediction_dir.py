"""The prediction folder: layout, records, merged table, recorded settings, resume rule.

``prediction_dir_v0_1/`` is a folder written by brats-mtl 0.1.0 before the prediction
code was split (two phantom cases, a toy predictor, ``tta=0``): it must still resume.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from brats_mtl.config import InferenceConfig
from brats_mtl.data import load_case, write_phantom_case
from brats_mtl.inference.segmenter import Segmenter
from brats_mtl.predict import predict_cases
from brats_mtl.workspace.prediction_dir import (
    CSV_COLUMNS,
    PredictionDir,
    case_record,
    case_settings_key,
    csv_columns,
    prediction_settings,
    settings_differences,
)

FIXTURE = Path(__file__).parent / "prediction_dir_v0_1"
CONFIG = InferenceConfig(tta=0, et_min_voxels=0, device="cpu", precision="32")


class Toy:
    """The fixture's predictor: softmax(3 * channels), ET probability 0.9; counts calls."""

    def __init__(self) -> None:
        """No call yet."""
        self.calls = 0

    def __call__(self, x: torch.Tensor):
        """Class probabilities and ET probability of a batch of windows."""
        self.calls += 1
        return torch.softmax(3.0 * x, 1), torch.full((x.shape[0],), 0.9)


# the fixture recorded its predictor as "callable prediction_fixture.Toy"
Toy.__module__ = "prediction_fixture"


def toy_segmenter(model: Toy | None = None, **changes) -> Segmenter:
    """The fixture's segmenter, with ``inference`` fields changed."""
    config = dataclasses.replace(CONFIG, **changes)
    return Segmenter({0: model or Toy()}, config, patch_size=16)


def test_layout_of_a_prediction_folder(tmp_path):
    """Every path of the layout, and nothing written by naming them."""
    out = PredictionDir(tmp_path / "out")
    assert out.label_map("C1") == tmp_path / "out" / "C1.nii.gz"
    assert out.probabilities("C1") == tmp_path / "out" / "probabilities" / "C1.nii.gz"
    assert out.uncertainty_maps("C1") == [
        tmp_path / "out" / f"C1_unc_{word}.nii.gz" for word in ("whole", "core", "enhance")
    ]
    assert out.table == tmp_path / "out" / "predictions.csv"
    assert out.record_path("C1") == tmp_path / "out" / "records" / "C1.json"
    assert out.settings_path == tmp_path / "out" / "records" / ".settings.json"
    assert not (tmp_path / "out").exists()  # naming a folder writes nothing


def test_records_round_trip_and_merge_into_one_sorted_table(tmp_path, caplog):
    """Records read back as written; the table is sorted, filtered, rounded."""
    out = PredictionDir(tmp_path)
    first = case_record(
        "B", (0, 1), volumes_ml={"WT": 62.431000000000004, "TC": 2.0, "ET": 1.0, "RC": 0.5}
    )
    second = case_record("A", (1,), status="error", error="bad\n  file")
    for record in (first, second):
        out.write_record(record)
    back = out.read_record("B")
    assert back["folds"] == "0,1" and back["volume_RC_ml"] == 0.5
    assert back["et_probability"] is None  # NaN is written as null
    assert out.read_record("A")["error"] == "bad file"  # one line per CSV cell
    assert out.read_record("missing") is None
    (out.records_dir / "broken.json").write_text("{")
    with caplog.at_level(logging.WARNING):
        assert out.read_record("broken") is None
    table = out.merge_records(["A", "B"])
    assert table["case_id"].tolist() == ["A", "B"]
    assert (
        list(table.columns)
        == csv_columns([first])
        == [
            *CSV_COLUMNS[:8],
            "volume_RC_ml",
            *CSV_COLUMNS[8:],
        ]
    )
    text = out.table.read_text()
    assert "62.431," in text and "62.431000000000004" not in text  # 6 significant digits
    assert pd.read_csv(out.table)["case_id"].tolist() == ["A", "B"]
    # a case no longer in the input is left out of the table, its record kept
    assert out.merge_records(["B"])["case_id"].tolist() == ["B"]
    assert out.record_path("A").exists()
    # only records, the lock and the table: no temporary file is left behind
    assert sorted(os.listdir(out.records_dir)) == [".lock", "A.json", "B.json", "broken.json"]


def test_claim_records_settings_resumes_them_and_refuses_others(tmp_path):
    """The same settings resume; others are refused unless overwrite."""
    out = PredictionDir(tmp_path / "out")
    settings = prediction_settings(toy_segmenter())
    assert out.claim(settings) == settings == out.read_settings()
    assert out.claim(settings) == settings  # the same settings: resume
    other = prediction_settings(toy_segmenter(tta=4))
    assert settings_differences(settings, other) == ["inference.tta: 0 -> 4"]
    before = out.settings_path.read_text()
    with pytest.raises(FileExistsError, match=r"inference\.tta: 0 -> 4") as error:
        out.claim(other)
    assert "pass --overwrite" in str(error.value)
    assert out.settings_path.read_text() == before
    assert out.claim(other, overwrite=True) == other == out.read_settings()


def test_out_of_fold_runs_with_other_folds_add_their_folds(tmp_path):
    """Out-of-fold runs of other folds share one folder."""
    out = PredictionDir(tmp_path)
    config = dataclasses.replace(CONFIG, tta=0)
    fold0 = Segmenter({0: Toy()}, config, patch_size=16)
    fold1 = Segmenter({1: Toy()}, config, patch_size=16)
    out.claim(prediction_settings(fold0, out_of_fold=True))
    recorded = out.claim(prediction_settings(fold1, out_of_fold=True))
    assert recorded["settings"]["folds"] == [0, 1] and set(recorded["weights"]) == {"0", "1"}
    with pytest.raises(FileExistsError, match="out_of_fold: True -> False"):
        out.claim(prediction_settings(fold1))


def test_predictions_without_recorded_settings_are_refused(tmp_path):
    """Label maps of unknown origin are refused, the folder left as it was."""
    out = PredictionDir(tmp_path)
    out.label_map("C1").write_bytes(b"someone else's label map")
    settings = prediction_settings(toy_segmenter())
    with pytest.raises(FileExistsError, match=r"already holds predictions \(1 case, e\.g\. C1\)"):
        out.claim(settings, case_ids=["C1", "C2"])
    assert not out.records_dir.exists()  # a refused folder is left as it was
    assert out.claim(settings, case_ids=["C2"]) == settings  # other cases' files: not ours


def test_a_case_is_finished_when_its_map_and_keyed_record_exist(tmp_path):
    """The resume rule of one case."""
    out = PredictionDir(tmp_path)
    settings = out.claim(prediction_settings(toy_segmenter()))
    key = case_settings_key(settings, (0,))
    assert key == case_settings_key(settings, [0]) and len(key) == 16
    assert key != case_settings_key(settings, (1,))
    assert out.finished_record("C1", key) is None  # nothing written
    out.label_map("C1").write_bytes(b"map")
    assert out.finished_record("C1", key) is None  # a map without its record
    out.write_record(case_record("C1", (0,), settings_key=key))
    assert out.finished_record("C1", key)["case_id"] == "C1"
    assert out.finished_record("C1", "another key") is None
    assert out.finished_record("C1", key, uncertainty=True) is None  # maps missing
    for path in out.uncertainty_maps("C1"):
        path.write_bytes(b"map")
    assert out.finished_record("C1", key, uncertainty=True) is not None
    out.write_record(case_record("C1", (0,), settings_key=key, status="error"))
    assert out.finished_record("C1", key) is None  # failed: predicted again


def test_output_is_refused_inside_or_around_the_input(tmp_path):
    """The output folder may not overlap the input folder."""
    data = tmp_path / "data"
    data.mkdir()
    for output, how in [
        (data, "is the input folder"),
        (data / "preds", "lies inside the input folder"),
        (tmp_path, "contains the input folder"),
    ]:
        with pytest.raises(ValueError, match=how):
            PredictionDir(output).check_outside(data)
    PredictionDir(tmp_path / "data_predictions").check_outside(data)


def test_probability_maps_are_scaled_uint8_on_the_input_grid(tmp_path):
    """Probability maps: (X, Y, Z, 4) uint8 scaled by 1/255, summing to 1."""
    files = write_phantom_case(tmp_path / "in", "BraTS2021_00000", shape=(24, 20, 18), seed=0)
    case = load_case(files, load_labels=False)
    prediction = toy_segmenter().predict_case(case)
    out = PredictionDir(tmp_path / "out")
    path = out.write_probabilities(prediction, case)
    assert path == out.probabilities(case.case_id)
    with pytest.raises(FileExistsError):
        out.write_probabilities(prediction, case)
    img = nib.load(path)
    assert img.shape == (24, 20, 18, 4) and img.get_data_dtype() == np.uint8
    assert img.dataobj.slope == pytest.approx(1 / 255) and img.dataobj.inter == 0
    np.testing.assert_allclose(img.get_fdata().sum(-1), 1.0, atol=4 / 255)


def test_a_folder_written_by_brats_mtl_0_1_still_resumes(tmp_path):
    """A 0.1 folder resumes without predicting, and still refuses other settings."""
    out = tmp_path / "out"
    shutil.copytree(FIXTURE, out)
    before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    files = [
        write_phantom_case(tmp_path / "in", f"BraTS2021_0000{i}", shape=(24, 20, 18), seed=i)
        for i in range(2)
    ]
    model = Toy()
    table = predict_cases(files, toy_segmenter(model), out)
    assert model.calls == 0  # both cases finished with these settings and weights
    assert table["status"].tolist() == ["ok", "ok"]
    recorded = json.loads((FIXTURE / "records" / "BraTS2021_00000.json").read_text())
    assert table.loc[0, "seconds"] == recorded["seconds"]  # the 0.1 record, as written
    after = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    changed = sorted(name for name in before if after[name] != before[name])
    assert changed == []  # label maps, records, settings and table as 0.1 wrote them
    # and other settings are still refused against the 0.1 record
    with pytest.raises(FileExistsError, match=r"inference\.tta: 0 -> 4"):
        predict_cases(files, toy_segmenter(tta=4), out)


def test_a_table_of_unknown_origin_is_refused_unless_overwrite(tmp_path):
    """A folder that holds someone else's predictions.csv and no brats-mtl record is not
    written into: predict would replace that table."""
    from brats_mtl.workspace.prediction_dir import PredictionDir

    out = tmp_path / "out"
    out.mkdir()
    (out / "predictions.csv").write_text("my own table\n")
    folder = PredictionDir(out)
    with pytest.raises(FileExistsError, match="predictions.csv but no record"):
        folder.claim({"source": {}}, case_ids=["BraTS2021_00000"])
    assert (out / "predictions.csv").read_text() == "my own table\n"
    assert not folder.records_dir.exists()  # the refused folder is left as it was
    folder.claim({"source": {}}, case_ids=["BraTS2021_00000"], overwrite=True)
    assert folder.read_settings() == {"source": {}}
