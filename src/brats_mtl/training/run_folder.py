"""Functions over a run folder, for callers that hold a path (the README's API).

Each is a thin wrapper over :class:`~brats_mtl.workspace.run_dir.RunDir`, where the
layout and the rules live; new code should use ``RunDir`` itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from brats_mtl.workspace.run_dir import RunDir

if TYPE_CHECKING:
    from brats_mtl.config import Config
    from brats_mtl.data.splits import Splits
    from brats_mtl.model import MultiTaskNet


def fold_dir(run_dir: str | Path, fold: int) -> Path:
    """``RUN_DIR/fold_K`` (:meth:`RunDir.fold_dir`)."""
    return RunDir(run_dir).fold_dir(fold)


def checkpoint_path(run_dir: str | Path, fold: int, which: str = "best") -> Path:
    """A fold's ``best`` or ``last`` checkpoint (:meth:`RunDir.checkpoint`; may not exist).

    Raises:
        ValueError: if ``which`` is not "best" or "last".
    """
    return RunDir(run_dir).checkpoint(fold, which)


def available_folds(run_dir: str | Path, which: str = "best") -> list[int]:
    """Folds of a run that have the ``which`` checkpoint (:meth:`RunDir.available_folds`).

    Raises:
        FileNotFoundError: if ``run_dir`` is not a run folder (no splits file).
    """
    return RunDir(run_dir).available_folds(which)


def read_run_config(run_dir: str | Path) -> Config:
    """The run's saved configuration (:meth:`RunDir.read_config`).

    Raises:
        FileNotFoundError: if the run folder has no saved configuration.
    """
    return RunDir(run_dir).read_config()


def read_splits(run_dir: str | Path) -> Splits:
    """The run's folds (:meth:`RunDir.read_splits`).

    Raises:
        FileNotFoundError: if the run folder has no splits file (train first).
        ValueError: if the file is not a valid splits file.
    """
    return RunDir(run_dir).read_splits()


def trained_folds(run_dir: str | Path) -> list[int]:
    """The folds of a run holding any checkpoint, sorted (:meth:`RunDir.trained_folds`)."""
    return RunDir(run_dir).trained_folds()


def check_fold_trained(run_dir: str | Path, fold: int) -> None:
    """Raise when a fold has no checkpoint (:meth:`RunDir.check_fold_trained`).

    Raises:
        FileNotFoundError: names the fold and lists the trained ones.
    """
    RunDir(run_dir).check_fold_trained(fold)


def run_checkpoints(run_dir: str | Path) -> list[Path]:
    """Every fold checkpoint of a run, sorted (:meth:`RunDir.checkpoints`)."""
    return RunDir(run_dir).checkpoints()


def load_fold_model(run_dir: str | Path, fold: int, which: str = "best") -> MultiTaskNet:
    """The trained network of one fold, on the CPU, in eval mode.

    Args:
        run_dir: the training run folder.
        fold: fold number.
        which: "best" (highest validation Dice) or "last" checkpoint.

    Returns:
        ``brats_mtl.model.MultiTaskNet`` built from the run's saved configuration.

    Raises:
        FileNotFoundError: if the run has no configuration or the fold no such
            checkpoint (:meth:`RunDir.load_fold_model` says which and what exists).
        ValueError: if ``which`` is unknown.
    """
    return RunDir(run_dir).load_fold_model(fold, which)
