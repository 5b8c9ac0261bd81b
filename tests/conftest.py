"""Shared fixtures: the package's tiny preset, a small phantom cohort, the real sample data."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

#: Volume shape (X, Y, Z) and seed of the ``phantom_cohort`` cases.
PHANTOM_SHAPE = (40, 36, 32)
PHANTOM_SEED = 5


class PhantomCohort(NamedTuple):
    """A phantom cohort on disk: its folder and its cases, sorted by case ID."""

    root: Path
    cases: list  # list[brats_mtl.data.CaseFiles]


@pytest.fixture
def tiny_config():
    """The package's tiny preset (widths 4-64, patch 32): a network that trains in seconds."""
    from brats_mtl.presets import tiny_config

    return tiny_config()


@pytest.fixture(scope="session")
def phantom_cohort(tmp_path_factory) -> PhantomCohort:
    """Three labeled phantom cases (brats2021 layout, every one with ET), written once.

    Shared by every test of the session: read it, never write into ``root``.
    """
    from brats_mtl.data import write_phantom_cohort

    root = tmp_path_factory.mktemp("phantom_cohort")
    cases = write_phantom_cohort(
        root, n_labeled=3, n_unlabeled=0, shape=PHANTOM_SHAPE, seed=PHANTOM_SEED
    )
    return PhantomCohort(root, cases)


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
    from brats_mtl.workspace.run_dir import RunDir
    from tests.helpers import make_run

    return RunDir(make_run(tmp_path / "run", [f"BraTS2021_0000{i}" for i in range(4)]))
