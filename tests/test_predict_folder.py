"""A prediction folder over several runs: the recorded run folder and settings, refusal of
other models or settings, overwrite, shards, cases removed from the input, Ctrl-C, and
the wording of broken cases at discovery.

Phantom cases are written to ``tmp_path``; models are toy predictors or tiny random
``MultiTaskNet`` fold models saved in a run folder as the training code saves them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shlex
import shutil
import threading

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

import brats_mtl.predict as predict_module
from brats_mtl.cli.main import cli
from brats_mtl.config import InferenceConfig
from brats_mtl.data import discover_cases, write_phantom_case
from brats_mtl.inference.segmenter import Segmenter, model_fingerprint
from brats_mtl.model import MultiTaskNet
from brats_mtl.predict import PredictionInterrupted, predict_cases, predict_cohort, select_shard
from brats_mtl.presets import tiny_config
from brats_mtl.workspace.run_dir import RunDir
from tests.helpers import make_run

SHAPE = (36, 30, 26)
BASE = InferenceConfig(tta=0, et_min_voxels=0, device="cpu", precision="32")


class Toy:
    """Pointwise toy model: class probabilities = softmax(3 * channels); counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x: torch.Tensor):
        self.calls += 1
        return torch.softmax(3.0 * x, 1), torch.full((x.shape[0],), 0.9)


class OtherToy(Toy):
    """Another model: same outputs, another identity."""


@pytest.fixture
def cohort(tmp_path):
    root = tmp_path / "input"
    files = [write_phantom_case(root, f"BraTS2021_0000{i}", shape=SHAPE, seed=i) for i in range(3)]
    return root, files


def segmenter(model=None, **changes) -> Segmenter:
    config = dataclasses.replace(BASE, **changes)
    return Segmenter({0: model or Toy()}, config, patch_size=16)


def mtimes(folder) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("*.nii.gz")}


def fast_config(run):
    """The run's settings with one pass per case (tta=0, whole volume) to stay fast."""
    from brats_mtl.training import read_run_config

    inference = InferenceConfig(tta=0, mode="whole", device="cpu")
    return dataclasses.replace(read_run_config(run), inference=inference)


# --- other settings, other models ---------------------------------------------------------


def test_other_settings_are_refused_the_same_resume(tmp_path, cohort):
    _, files = cohort
    out = tmp_path / "out"
    predict_cases(files[:2], segmenter(), out)
    before = mtimes(out)
    refused = [
        (segmenter(tta=4), "inference.tta: 0 -> 4"),
        (segmenter(ensemble="mean"), "inference.ensemble: vote -> mean"),
        (segmenter(et_probability_threshold=0.3), "inference.et_probability_threshold: 0.5 -> 0.3"),
        (segmenter(et_min_voxels=500), "inference.et_min_voxels: 0 -> 500"),
        (segmenter(mask_outside_brain=False), "inference.mask_outside_brain: True -> False"),
        (segmenter(overlap=0.25), "inference.overlap: 0.5 -> 0.25"),
        (segmenter(precision="bf16"), "inference.precision: 32 -> bf16"),
        (Segmenter({0: Toy(), 1: Toy()}, BASE, patch_size=16), "folds: 0 -> 0,1"),
        (segmenter(OtherToy()), f"fold 0 weights: callable {__name__}.Toy -> callable"),
    ]
    for other, difference in refused:
        with pytest.raises(FileExistsError) as error:
            predict_cases(files, other, out)
        message = str(error.value)
        assert str(out) in message and difference in message, message
        assert "Choose a new output folder, or pass --overwrite" in message
        assert mtimes(out) == before and not (out / f"{files[2].case_id}.nii.gz").exists()
    # device, batch size and channels_last change rounding only: the run resumes
    model, reference = Toy(), Toy()
    table = predict_cases(files, segmenter(model, window_batch_size=3, device="auto"), out)
    assert (table["status"] == "ok").all() and mtimes(out).items() >= before.items()
    predict_cases(files[2:], segmenter(reference, window_batch_size=3), tmp_path / "reference")
    assert model.calls == reference.calls > 0  # only the third case was predicted
    recorded = json.loads((out / "records" / ".settings.json").read_text())
    assert recorded["settings"]["inference.tta"] == 0 and recorded["settings"]["folds"] == [0]
    assert recorded["weights"] == {"0": f"callable {__name__}.Toy"}


def test_overwrite_redoes_every_case_and_an_interrupted_overwrite_resumes(
    tmp_path, cohort, monkeypatch
):
    _, files = cohort
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")  # not written by brats-mtl: left alone
    predict_cases(files, segmenter(), out)
    model = Toy()
    real_load = predict_module.load_case
    loads = []

    def load_then_stop(*args, **kwargs):
        loads.append(1)
        if len(loads) == 2:
            raise KeyboardInterrupt
        return real_load(*args, **kwargs)

    monkeypatch.setattr(predict_module, "load_case", load_then_stop)
    with pytest.raises(PredictionInterrupted) as stop:
        predict_cases(files, segmenter(model, tta=4), out, overwrite=True)
    assert (stop.value.finished, stop.value.failed, stop.value.remaining) == (1, 0, 2)
    monkeypatch.setattr(predict_module, "load_case", real_load)
    first, rest = Toy(), Toy()
    predict_cases(files[:1], segmenter(first, tta=4), tmp_path / "first")
    predict_cases(files[1:], segmenter(rest, tta=4), tmp_path / "rest")
    assert model.calls == first.calls
    # the same settings without --overwrite: the two cases still made with tta=0 are
    # predicted again (the folder now records tta=4), the finished one is skipped
    kept = mtimes(out)[f"{files[0].case_id}.nii.gz"]
    table = predict_cases(files, segmenter(model, tta=4), out)
    assert model.calls == first.calls + rest.calls and (table["status"] == "ok").all()
    assert mtimes(out)[f"{files[0].case_id}.nii.gz"] == kept
    assert (out / "notes.txt").read_text() == "mine"
    with pytest.raises(FileExistsError, match="inference.tta: 4 -> 0"):
        predict_cases(files, segmenter(), out)


def test_predictions_of_unknown_origin_are_refused(tmp_path, cohort):
    _, files = cohort
    out = tmp_path / "out"
    out.mkdir()
    (out / "README.txt").write_text("unrelated files do not matter")
    shutil.copy(files[0].images["t1"], out / f"{files[0].case_id}.nii.gz")  # not ours
    with pytest.raises(FileExistsError) as error:
        predict_cases(files, segmenter(), out)
    message = str(error.value)
    assert f"1 case, e.g. {files[0].case_id}" in message
    assert "no readable record of the run folder and settings" in message
    assert "pass --overwrite" in message and not (out / "records" / ".settings.json").exists()
    table = predict_cases(files, segmenter(), out, overwrite=True)
    assert (table["status"] == "ok").all()
    assert np.asarray(pd.read_csv(out / "predictions.csv")["case_id"]).tolist() == [
        f.case_id for f in files
    ]


def test_run_folder_identity_is_its_weights(tmp_path, cohort):
    root, files = cohort
    ids = [f.case_id for f in files]
    run_a = make_run(tmp_path / "run_a", ids, seed=0)
    run_b = make_run(tmp_path / "run_b", ids, seed=1)
    out = tmp_path / "out"
    predict_cohort(run_a, root, out, config=fast_config(run_a), folds=[0])
    before = mtimes(out)
    with pytest.raises(FileExistsError) as error:
        predict_cohort(run_b, root, out, config=fast_config(run_b), folds=[0])
    message = str(error.value)
    assert f"run folder: {run_a.resolve()} -> {run_b.resolve()}" in message
    checkpoint = RunDir(run_a.resolve()).checkpoint(0, "best")
    assert f"fold 0 weights: {checkpoint} ({checkpoint.stat().st_size} bytes, modified" in message
    assert "sha256:" in message and mtimes(out) == before
    # a copy of the run, and the same weights saved again: same labels, the run resumes
    run_c = tmp_path / "run_c"
    shutil.copytree(run_a, run_c)
    table = predict_cohort(run_c, root, out, config=fast_config(run_c), folds=[0])
    torch.save(torch.load(checkpoint), checkpoint)
    table = predict_cohort(run_a, root, out, config=fast_config(run_a), folds=[0])
    assert (table["status"] == "ok").all() and mtimes(out) == before
    # new weights in fold 0 (training went on): refused
    torch.manual_seed(7)
    RunDir(run_a).save_fold_model(0, MultiTaskNet(tiny_config(patch_size=16).model), "best")
    with pytest.raises(FileExistsError, match="fold 0 weights"):
        predict_cohort(run_a, root, out, config=fast_config(run_a), folds=[0])


def test_out_of_fold_prediction_adds_folds(tmp_path, cohort):
    root, files = cohort
    run = make_run(tmp_path / "run", [f.case_id for f in files])
    out = tmp_path / "oof"
    first = predict_cohort(run, root, out, config=fast_config(run), folds=[0], out_of_fold=True)
    second = predict_cohort(run, root, out, config=fast_config(run), folds=[1], out_of_fold=True)
    assert set(first["case_id"]).isdisjoint(second["case_id"])
    table = pd.read_csv(out / "predictions.csv")
    assert table["case_id"].tolist() == [f.case_id for f in files]
    recorded = json.loads((out / "records" / ".settings.json").read_text())
    assert recorded["settings"]["folds"] == [0, 1] and set(recorded["weights"]) == {"0", "1"}
    with pytest.raises(FileExistsError, match="out_of_fold: True -> False"):
        predict_cohort(run, root, out, config=fast_config(run), folds=[0, 1])


def test_model_fingerprint_is_the_weights():
    config = tiny_config(patch_size=16).model
    torch.manual_seed(0)
    net = MultiTaskNet(config)
    twin = MultiTaskNet(config)
    twin.load_state_dict(net.state_dict())
    assert model_fingerprint(net) == model_fingerprint(twin)
    assert model_fingerprint(net).startswith("sha256:") and len(model_fingerprint(net)) == 71
    with torch.no_grad():
        next(twin.parameters()).view(-1)[0] += 1e-6
    assert model_fingerprint(net) != model_fingerprint(twin)
    assert model_fingerprint(Toy()) == f"callable {__name__}.Toy"


# --- shards and cases removed from the input ----------------------------------------------


def test_shards_started_together_share_the_folder(tmp_path, cohort):
    _, files = cohort
    out = tmp_path / "out"
    ids = [f.case_id for f in files]
    by_id = {f.case_id: f for f in files}
    errors = []

    def shard(index):
        try:
            part = [by_id[c] for c in select_shard(ids, index, 2)]
            predict_cases(part, segmenter(), out, cohort_ids=ids)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=shard, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert pd.read_csv(out / "predictions.csv")["case_id"].tolist() == ids
    # a shard with other settings into the same folder is refused
    with pytest.raises(FileExistsError, match="inference.tta: 0 -> 4"):
        predict_cases([files[0]], segmenter(tta=4), out, cohort_ids=ids)


def test_rows_of_cases_removed_from_the_input_are_left_out(tmp_path, cohort, caplog):
    root, files = cohort
    run = make_run(tmp_path / "run", [f.case_id for f in files])
    out = tmp_path / "out"
    args = ["predict", str(run), str(root), str(out), "--tta", "0", "--mode", "whole"]
    args += ["--folds", "0", "--no-progress", "--set", "inference.device=cpu"]
    runner = CliRunner()
    assert runner.invoke(cli, args).exit_code == 0
    removed = files[1].case_id
    shutil.rmtree(root / removed)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="brats_mtl"):
        for shard in ("0/2", "1/2"):
            result = runner.invoke(cli, [*args, "--shard", shard])
            assert result.exit_code == 0, result.output
            table = pd.read_csv(out / "predictions.csv")
            assert table["case_id"].tolist() == [files[0].case_id, files[2].case_id]
    assert f"left out 1 row(s) of cases no longer in the input: {removed}" in caplog.text
    assert (out / f"{removed}.nii.gz").exists() and (out / "records" / f"{removed}.json").exists()


# --- Ctrl-C -------------------------------------------------------------------------------


def test_ctrl_c_exits_130_leaves_no_partial_file_and_says_how_to_resume(
    tmp_path, cohort, monkeypatch
):
    root, files = cohort
    run = make_run(tmp_path / "run", [f.case_id for f in files])
    out = tmp_path / "out"
    args = ["predict", str(run), str(root), str(out), "--tta", "0", "--mode", "whole"]
    args += ["--folds", "0", "--save-probabilities", "--no-progress"]
    args += ["--set", "inference.device=cpu"]
    real_write = predict_module.write_segmentation
    writes = []

    def write_then_stop(*a, **k):  # Ctrl-C after the probability map of the 2nd case
        writes.append(1)
        if len(writes) == 2:
            raise KeyboardInterrupt
        return real_write(*a, **k)

    monkeypatch.setattr(predict_module, "write_segmentation", write_then_stop)
    result = CliRunner().invoke(cli, [*args, "--overwrite"])
    monkeypatch.setattr(predict_module, "write_segmentation", real_write)
    assert result.exit_code == 130, result.output
    assert "Aborted" not in result.output
    assert "Interrupted: 1 of 3 cases finished, 0 failed, 2 remain" in result.output
    hint = "To resume, run this command (finished cases are skipped):\n  "
    assert hint in result.output
    command = result.output.split(hint)[1].splitlines()[0]
    assert command == shlex.join(
        ["cli", *args[:4], "--folds", "0", "--tta", "0", "--mode", "whole", "--save-probabilities"]
        + ["--set", "inference.device=cpu", "--no-progress"]
    )  # without --overwrite, which would predict the finished case again
    first = files[0].case_id
    assert sorted(os.listdir(out)) == [
        f"{first}.nii.gz",
        "predictions.csv",
        "probabilities",
        "records",
    ]
    assert os.listdir(out / "probabilities") == [f"{first}.nii.gz"]  # none of the 2nd case
    assert sorted(os.listdir(out / "records")) == [".lock", ".settings.json", f"{first}.json"]
    assert pd.read_csv(out / "predictions.csv")["case_id"].tolist() == [first]
    # the printed command resumes: the first case is skipped, the others predicted
    kept = (out / f"{first}.nii.gz").stat().st_mtime_ns
    again = CliRunner().invoke(cli, shlex.split(command)[1:])
    assert again.exit_code == 0, again.output
    assert (out / f"{first}.nii.gz").stat().st_mtime_ns == kept
    assert pd.read_csv(out / "predictions.csv")["status"].tolist() == ["ok"] * 3


def test_ctrl_c_before_the_first_case_exits_130(tmp_path, cohort, monkeypatch):
    root, files = cohort
    run = make_run(tmp_path / "run", [f.case_id for f in files])

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(predict_module, "discover_prediction_cases", stop)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["predict", str(run), str(root), str(out), "--shard", "1/2"])
    assert result.exit_code == 130
    assert f"Interrupted before any case was predicted into {out}." in result.output
    assert f"cli predict {run} {root} {out} --shard 1/2" in result.output


# --- discovery wording ---------------------------------------------------------------------


def test_a_broken_case_is_announced_as_failed_not_skipped(cohort, caplog):
    root, files = cohort
    files[1].images["flair"].unlink()
    invalid = []
    with caplog.at_level(logging.WARNING, logger="brats_mtl.data.discovery"):
        cases = discover_cases(root, invalid=invalid)
    assert [c.case_id for c in cases] == [files[0].case_id, files[2].case_id]
    [message] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert message.startswith(f"{files[1].case_id}: case folder {root / files[1].case_id}")
    assert "lacks modality flair" in message
    assert message.endswith("; it will be reported as failed")
    assert "skipped" not in message
    with pytest.raises(ValueError, match="lacks modality flair"):
        discover_cases(root)


def test_the_broken_case_warning_ends_with_the_callers_consequence(cohort, caplog):
    root, files = cohort
    files[1].images["flair"].unlink()
    with caplog.at_level(logging.WARNING, logger="brats_mtl.data.discovery"):
        discover_cases(root, invalid=[], consequence="it cannot be used for training")
    [message] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "lacks modality flair" in message
    assert message.endswith("; it cannot be used for training")
