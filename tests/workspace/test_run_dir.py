"""RunDir: the run folder's layout, its folds, its configuration and its fold models."""

from __future__ import annotations

import pytest
import torch

from brats_mtl.config import Config, apply_overrides
from brats_mtl.data.splits import stratified_folds
from brats_mtl.model import MultiTaskNet
from brats_mtl.presets import tiny_config
from brats_mtl.workspace.run_dir import FOLD_OUTPUTS, FoldDir, RunDir


def test_layout_is_the_documented_one(tmp_path):
    run = RunDir(tmp_path)
    assert run.config_file == tmp_path / "config.yaml"
    assert run.splits_file == tmp_path / "splits.json"
    assert run.cache == tmp_path / "cache"
    assert run.fold_dir(3) == tmp_path / "fold_3"
    assert run.checkpoint(3, "last") == tmp_path / "fold_3" / "checkpoints" / "last.ckpt"
    assert run.checkpoint(0) == tmp_path / "fold_0" / "checkpoints" / "best.ckpt"
    fold = run.fold(2)
    assert fold == FoldDir(tmp_path / "fold_2")
    assert fold.metrics_csv.name == "metrics.csv" and fold.validation_csv.name == "validation.csv"
    assert fold.curves_png.name == "training_curves.png" and fold.logs_dir.name == "logs"
    assert FOLD_OUTPUTS == (
        "checkpoints",
        "logs",
        "metrics.csv",
        "validation.csv",
        "training_curves.png",
    )
    assert RunDir(run) == run and RunDir(str(tmp_path)) == run
    with pytest.raises(ValueError, match="choose 'best'"):
        run.checkpoint(0, "final")


def test_trained_and_available_folds(tmp_path):
    run = RunDir(tmp_path)
    run.write_splits(stratified_folds({f"c{i}": "ET" for i in range(6)}, 3, seed=0))
    assert run.trained_folds() == [] and run.available_folds() == []
    for fold, which in ((0, "best"), (0, "last"), (2, "last")):
        run.checkpoint(fold, which).parent.mkdir(parents=True, exist_ok=True)
        run.checkpoint(fold, which).write_bytes(b"")
    (tmp_path / "fold_x" / "checkpoints").mkdir(parents=True)  # not a fold number
    (tmp_path / "fold_x" / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert run.trained_folds() == [0, 2]
    assert run.available_folds("best") == [0] and run.available_folds("last") == [0, 2]
    assert len(run.checkpoints()) == 4
    run.check_fold_trained(2)
    with pytest.raises(FileNotFoundError, match=r"fold 1 of .* was not trained .*\[0, 2\]"):
        run.check_fold_trained(1)


def test_not_a_run_folder(tmp_path):
    run = RunDir(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="is not a training run folder"):
        run.read_config()
    with pytest.raises(FileNotFoundError, match="is not a training run folder"):
        run.available_folds()
    assert run.config_or(Config()) == Config()
    with pytest.raises(FileNotFoundError, match="no fold has a checkpoint yet"):
        run.check_fold_trained(0)


def test_fold_model_round_trip(tiny_run):
    torch.manual_seed(7)
    config = tiny_run.read_config()
    net = MultiTaskNet(config.model)
    path = tiny_run.save_fold_model(1, net, "last", global_step=12)
    assert path == tiny_run.checkpoint(1, "last")
    assert torch.load(path, weights_only=True)["global_step"] == 12
    loaded = tiny_run.load_fold_model(1, "last")
    assert not loaded.training
    for (name, a), (_, b) in zip(
        net.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    # the fixture's fold 0 has best.ckpt only: asking for last names what exists
    with pytest.raises(FileNotFoundError, match=r"last.ckpt does not exist; folds with a last"):
        tiny_run.load_fold_model(0, "last")


def test_the_training_functions_are_wrappers_over_rundir(tiny_run):
    from brats_mtl import training

    assert training.checkpoint_path(tiny_run.path, 1) == tiny_run.checkpoint(1)
    assert training.fold_dir(tiny_run.path, 1) == tiny_run.fold_dir(1)
    assert training.trained_folds(tiny_run.path) == [0, 1]
    assert training.available_folds(tiny_run.path) == [0, 1]
    assert training.read_run_config(tiny_run.path) == tiny_config(patch_size=16)
    assert training.read_splits(tiny_run.path) == tiny_run.read_splits()
    net = training.load_fold_model(tiny_run.path, 0)
    expected = tiny_run.load_fold_model(0)
    assert all(
        torch.equal(a, b)
        for a, b in zip(net.state_dict().values(), expected.state_dict().values(), strict=True)
    )


def test_config_rules_of_a_run_with_results(tiny_run, caplog):
    config = tiny_run.read_config()
    assert tiny_run.check_config(config) is True  # checkpoints: the run has results
    longer = apply_overrides(config, ["train.max_steps=999"])
    assert tiny_run.check_config(longer) is True  # a train setting may change
    with caplog.at_level("INFO", logger="brats_mtl.workspace.run_dir"):
        tiny_run.save_config(longer, has_results=True)
    assert tiny_run.read_config() == longer and "train.max_steps" in caplog.text
    with pytest.raises(
        ValueError, match=r"another model configuration \(changed: .*model.widths\)"
    ):
        tiny_run.check_config(Config())
