"""Folders written by brats-mtl 0.1.0 stay readable: the run resumes, predictions resume.

``tests/fixtures/v0_1_0`` holds a run folder (one fold, two steps, ``best.ckpt`` and
``last.ckpt``), a prediction folder of one case made from it, and their inputs, all
written once by version 0.1.0 (``tests/fixtures/make_v0_1_0.py``) and never rewritten.
Each test works on a copy (``shutil.copytree`` keeps the files' modification times).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from brats_mtl.cli.main import cli
from brats_mtl.data import write_phantom_case

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "v0_1_0"
OLD_CASE = "BraTS2021_00100"  # predicted into prediction/ by 0.1.0
SHAPE = (20, 20, 20)  # the fixture's volume shape
# how prediction/ was made; --precision 32: "auto" would record bf16 on a CPU with AMX
PREDICT_FLAGS = ("--which", "last", "--tta", "0", "--precision", "32", "--no-progress")


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: the network is tiny and the machine may be busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def old(tmp_path) -> Path:
    """A copy of the 0.1.0 folders, modification times kept."""
    return Path(shutil.copytree(FIXTURE, tmp_path / "v0_1_0"))


def _invoke(*args: str):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def _global_step(checkpoint: Path) -> int:
    return int(torch.load(checkpoint, map_location="cpu", weights_only=False)["global_step"])


def test_the_fixture_is_what_0_1_0_wrote():
    """Guards the guard: the folders are the old ones, not ones written again since."""
    marker = (FIXTURE / "run" / ".brats-mtl-output").read_text()
    assert "brats_mtl_version: 0.1.0" in marker
    settings = json.loads((FIXTURE / "prediction" / "records" / ".settings.json").read_text())
    assert settings["brats_mtl_version"] == "0.1.0"
    checkpoints = FIXTURE / "run" / "fold_0" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.ckpt", "last.ckpt"]
    assert _global_step(checkpoints / "last.ckpt") == 2
    assert not (FIXTURE / "run" / "cache").exists()


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """A copy of the old run folder after ``train --resume`` with one step more, and the
    command's output."""
    old = Path(shutil.copytree(FIXTURE, tmp_path_factory.mktemp("resumed") / "v0_1_0"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = _invoke(
            "train", old / "cohort", "--out", old / "run", "--fold", "0", "--resume",
            "--set", "train.max_steps=3", "--no-progress",
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    return old / "run", result.output


def test_old_run_folder_resumes_to_one_more_step(resumed):
    run, output = resumed
    assert "fold 0: 3 steps" in output
    assert _global_step(run / "fold_0" / "checkpoints" / "last.ckpt") == 3
    assert (run / "cache").is_dir()  # rebuilt: the fixture keeps none
    old_rows = pd.read_csv(FIXTURE / "run" / "fold_0" / "validation.csv")
    rows = pd.read_csv(run / "fold_0" / "validation.csv")
    assert list(rows["step"]) == [*old_rows["step"], 3]  # the old rows kept, one added
    pd.testing.assert_frame_equal(rows.iloc[: len(old_rows)], old_rows)


def test_resumed_old_run_keeps_its_best_checkpoint(resumed):
    run, _ = resumed
    rows = pd.read_csv(run / "fold_0" / "validation.csv")
    best_step = int(rows.loc[rows["dice_mean"].idxmax(), "step"])
    if best_step == 3:
        pytest.skip("the resumed step validated best: best.ckpt is rightly replaced")
    assert _global_step(run / "fold_0" / "checkpoints" / "best.ckpt") == best_step


def test_old_run_folder_at_its_max_steps_is_left_as_it_is(old):
    run = old / "run"
    last = run / "fold_0" / "checkpoints" / "last.ckpt"
    before = last.stat().st_mtime_ns
    result = _invoke("train", old / "cohort", "--out", run, "--fold", "0", "--resume")
    assert "already at train.max_steps (2 steps), nothing trained" in result.output
    assert last.stat().st_mtime_ns == before
    assert _global_step(last) == 2


@pytest.mark.parametrize("which", ["best", "last"])
def test_old_checkpoints_load(old, which):
    from brats_mtl.training import load_fold_model, run_checkpoints

    run = old / "run"
    assert [p.relative_to(run).as_posix() for p in run_checkpoints(run)] == [
        "fold_0/checkpoints/best.ckpt",
        "fold_0/checkpoints/last.ckpt",
    ]
    model = load_fold_model(run, 0, which)
    assert not model.training
    state = torch.load(
        run / "fold_0" / "checkpoints" / f"{which}.ckpt", map_location="cpu", weights_only=False
    )["state_dict"]
    weights = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
    loaded = model.state_dict()
    assert weights.keys() == loaded.keys()
    for name, value in weights.items():
        torch.testing.assert_close(loaded[name], value, rtol=0, atol=0)


def test_predict_into_old_prediction_folder_skips_the_old_case_and_adds_a_new_one(old, tmp_path):
    inputs = tmp_path / "inputs"
    shutil.copytree(old / "new_case", inputs)
    write_phantom_case(inputs, "BraTS2021_00101", shape=SHAPE, labeled=False, seed=2)
    prediction = old / "prediction"
    old_map = prediction / f"{OLD_CASE}.nii.gz"
    old_record = prediction / "records" / f"{OLD_CASE}.json"
    stamps = {p: p.stat().st_mtime_ns for p in (old_map, old_record)}
    old_bytes = old_map.read_bytes()

    result = _invoke("predict", old / "run", inputs, prediction, *PREDICT_FLAGS)

    assert "2 of 2 cases segmented" in result.output
    for path, stamp in stamps.items():  # skipped: not written again
        assert path.stat().st_mtime_ns == stamp, path
    assert old_map.read_bytes() == old_bytes
    new_map = nib.load(prediction / "BraTS2021_00101.nii.gz")
    assert new_map.shape == SHAPE
    assert set(np.unique(np.asarray(new_map.dataobj)).tolist()) <= {0, 1, 2, 4}
    table = pd.read_csv(prediction / "predictions.csv")
    assert sorted(table["case_id"]) == [OLD_CASE, "BraTS2021_00101"]


def test_old_run_predicts_the_old_label_map_again(old, tmp_path):
    """The old run's model, predicting the old case into a new folder, gives 0.1.0's map
    (voxel agreement, not bytes: float32 sums may differ in the last bit across CPUs)."""
    out = tmp_path / "again"
    _invoke("predict", old / "run", old / "new_case", out, *PREDICT_FLAGS)
    want = np.asarray(nib.load(old / "prediction" / f"{OLD_CASE}.nii.gz").dataobj)
    got = np.asarray(nib.load(out / f"{OLD_CASE}.nii.gz").dataobj)
    assert got.shape == want.shape
    assert np.mean(got == want) >= 0.99
    assert (want > 0).any()  # the map compared is not all background
