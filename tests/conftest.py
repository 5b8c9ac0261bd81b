"""Shared fixtures: the real sample data beside the repository, when present."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real BraTS sample cases); skips the test when absent."""
    if not (SHARED_DATA / "brats").is_dir():
        pytest.skip(f"real BraTS sample data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def tiny_run(tmp_path):
    """A run folder made through ``RunDir``: the tiny network, 2 folds of 4 cases.

    ``config.yaml`` holds ``tiny_config(patch_size=16)``, ``splits.json`` 2 stratified
    folds of ``BraTS2021_00000`` .. ``00003``, and each fold a ``best.ckpt`` of a network
    with random weights (seeded by the fold number).
    """
    import torch

    from brats_mtl.data.splits import stratified_folds
    from brats_mtl.model import MultiTaskNet
    from brats_mtl.presets import tiny_config
    from brats_mtl.workspace.run_dir import RunDir

    config = tiny_config(patch_size=16)
    run = RunDir(tmp_path / "run")
    run.save_config(config, has_results=False)
    case_ids = [f"BraTS2021_0000{i}" for i in range(4)]
    run.write_splits(stratified_folds({c: "ET" for c in case_ids}, 2, seed=0))
    for fold in range(2):
        torch.manual_seed(fold)
        run.save_fold_model(fold, MultiTaskNet(config.model), "best")
    return run
