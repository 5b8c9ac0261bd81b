"""``predict``: OUTPUT_DIR must not overlap INPUT_DIR, a refused folder is left as it was,
a fold without best.ckpt falls back to last.ckpt, and the counts and error column read
right.

Phantom cases in ``tmp_path``; tiny random ``MultiTaskNet`` fold models saved as the
training code saves them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from brats_mtl.cli.main import cli
from brats_mtl.config import InferenceConfig
from brats_mtl.data import write_phantom_case
from brats_mtl.inference.segmenter import Segmenter
from brats_mtl.predict import predict_cases, predict_cohort
from brats_mtl.workspace.prediction_dir import PredictionDir
from tests.helpers import make_run

SHAPE = (36, 30, 26)
FAST = ["--tta", "0", "--mode", "whole", "--no-progress", "--set", "inference.device=cpu"]


@pytest.fixture
def cohort(tmp_path):
    root = tmp_path / "cohort"
    files = [write_phantom_case(root, f"BraTS2021_0000{i}", shape=SHAPE, seed=i) for i in range(2)]
    return root, files


def fast_config(run):
    from brats_mtl.training import read_run_config

    inference = InferenceConfig(tta=0, mode="whole", device="cpu", precision="32")
    return dataclasses.replace(read_run_config(run), inference=inference)


def listing(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# --- OUTPUT_DIR against INPUT_DIR ---------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "how"),
    [
        (".", "is the input folder"),
        ("BraTS2021_00001", "lies inside the input folder"),
        ("new/sub", "lies inside the input folder"),
        ("..", "contains the input folder"),
    ],
)
def test_output_overlapping_the_input_is_refused(tmp_path, cohort, output, how):
    root, files = cohort
    run = make_run(tmp_path / "runs" / "run", [f.case_id for f in files])
    before = listing(tmp_path)
    out = root / output
    result = CliRunner().invoke(cli, ["predict", str(run), str(root), str(out), *FAST])
    assert result.exit_code == 1, result.output
    assert f"Error: output folder {out} {how} {root}: label maps" in result.output
    assert f"e.g. {root.resolve()}_predictions" in result.output
    assert listing(tmp_path) == before  # nothing written anywhere


def test_overlap_is_judged_on_resolved_paths(tmp_path):
    (tmp_path / "data").mkdir()
    os.symlink(tmp_path / "data", tmp_path / "link")
    with pytest.raises(ValueError, match="is the input folder"):
        PredictionDir(tmp_path / "link").check_outside(tmp_path / "data")
    with pytest.raises(ValueError, match="lies inside"):
        PredictionDir(tmp_path / "x" / ".." / "data" / "p").check_outside(tmp_path / "data")
    PredictionDir(tmp_path / "data_predictions").check_outside(tmp_path / "data")  # siblings


class Toy:
    def __call__(self, x: torch.Tensor):
        return torch.softmax(3.0 * x, 1), torch.full((x.shape[0],), 0.9)


def test_a_refused_folder_is_left_as_it_was(tmp_path, cohort):
    _, files = cohort
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(files[0].images["t1"], out / f"{files[0].case_id}.nii.gz")  # not ours
    before = listing(out)
    config = InferenceConfig(tta=0, et_min_voxels=0, device="cpu", precision="32")
    segmenter = Segmenter({0: Toy()}, config, patch_size=16)
    with pytest.raises(FileExistsError, match=r"already holds predictions \(1 case, e\.g\."):
        predict_cases(files, segmenter, out)
    assert listing(out) == before  # no records/ and no records/.lock


# --- best.ckpt missing: last.ckpt ---------------------------------------------------------


def test_a_fold_without_best_uses_last_with_a_warning(tmp_path, cohort, caplog):
    root, files = cohort
    run = make_run(tmp_path / "run", [f.case_id for f in files], names=("best", "last"))
    last = run / "fold_1" / "checkpoints" / "last.ckpt"
    for folds in (None, [0, 1]):  # default folds, and folds given (as the pipeline does)
        out = tmp_path / f"out_{folds}"
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="brats_mtl"):
            table = predict_cohort(run, root, out, config=fast_config(run), folds=folds)
        assert (table["status"] == "ok").all() and set(table["folds"]) == {"0,1"}
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        # the other warning: these cases are in the folds' training splits
        warnings = [w for w in warnings if "training split" not in w]
        assert warnings == [
            "fold 1 has no best.ckpt (its training stopped before the first validation); "
            f"predicting with {last}"
        ]
        recorded = json.loads((out / "records" / ".settings.json").read_text())
        files_loaded = {k: v["file"] for k, v in recorded["source"]["checkpoints"].items()}
        assert files_loaded == {
            "0": str((run / "fold_0" / "checkpoints" / "best.ckpt").resolve()),
            "1": str(last.resolve()),
        }
    # the weights recorded are those of last.ckpt: loading it directly resumes the folder
    again = predict_cohort(run, root, out, config=fast_config(run), folds=[0, 1])
    assert (again["status"] == "ok").all()


def test_an_untrained_fold_is_named_with_the_trained_ones(tmp_path, cohort):
    root, files = cohort
    run = make_run(tmp_path / "run", [f.case_id for f in files], names=("last", None))
    message = (
        f"fold 1 of {run} was not trained (no fold_1/checkpoints/best.ckpt or last.ckpt); "
        "trained folds: [0]"
    )
    for folds in ([1], [0, 1]):
        with pytest.raises(FileNotFoundError) as error:
            predict_cohort(run, root, tmp_path / "out", config=fast_config(run), folds=folds)
        assert str(error.value) == message
    assert not (tmp_path / "out").exists()  # refused before any case was read
    empty = make_run(tmp_path / "empty", [f.case_id for f in files], names=(None, None))
    with pytest.raises(
        ValueError,
        match=r"no fold of .* has a checkpoint \(fold_K/checkpoints/"
        r"best.ckpt or last.ckpt\); train first",
    ):
        predict_cohort(empty, root, tmp_path / "out", config=fast_config(empty))


# --- wording ------------------------------------------------------------------------------


def test_counts_and_error_column_read_right(tmp_path, cohort, caplog):
    root, files = cohort
    files[1].images["flair"].unlink()
    run = make_run(tmp_path / "run", [f.case_id for f in files])
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO):
        result = CliRunner().invoke(
            cli, ["predict", str(run), str(root), str(out), "--folds", "0", *FAST]
        )
    assert result.exit_code == 1, result.output
    messages = [r.getMessage() for r in caplog.records]
    assert f"found 2 cases under {root}: 1 readable (1 labeled), 1 unreadable" in messages
    assert any(
        m.startswith("predicting 2 cases (1 unreadable, reported as failed)") for m in messages
    )
    assert "1 case predicted, 0 skipped" in "\n".join(messages)
    assert "1 of 2 cases segmented into" in result.output
    assert "Error: 1 case failed; fix it and run the same command again" in result.output
    error = pd.read_csv(out / "predictions.csv").set_index("case_id").loc[files[1].case_id, "error"]
    assert error.startswith(f"case folder {files[1].images['t1'].parent} (case ")
    assert "lacks modality flair" in error
    help_text = CliRunner().invoke(cli, ["predict", "--help"]).output
    assert "sliding windows of the run's model.patch_size" in " ".join(help_text.split())
