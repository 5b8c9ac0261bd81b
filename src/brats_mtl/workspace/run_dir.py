"""The training run folder: its layout, its configuration, its fold models.

Run folder::

    RUN_DIR/config.yaml           resolved configuration (model and loss fixed per run)
    RUN_DIR/splits.json           stratified folds (saved once, reused)
    RUN_DIR/cache/                preprocessed cases (unless another cache folder is given)
    RUN_DIR/fold_K/checkpoints/last.ckpt, best.ckpt   (best: highest val/dice_mean)
    RUN_DIR/fold_K/metrics.csv    every logged value (all attempts of the fold merged)
    RUN_DIR/fold_K/validation.csv per-case Dice of every validation
    RUN_DIR/fold_K/training_curves.png
    RUN_DIR/fold_K/logs/version_N/ raw Lightning CSV logs, one folder per attempt

This module is the one place that spells that layout: everything else asks a
:class:`RunDir` (or a :class:`FoldDir`) for a path. Who may claim, resume or clear a run
folder is :mod:`brats_mtl.workspace.ownership`.

Source: paper, Training Procedure (five fold models, one ensemble); nnU-Net's results
folders (one folder per fold, checkpoints inside) and Lightning's checkpoint names.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from brats_mtl.config import Config, load_config, save_config, to_dict
from brats_mtl.data.splits import Splits, read_splits, write_splits
from brats_mtl.presets import PRESET_NAMES, preset_config

if TYPE_CHECKING:  # torch is imported where a model is loaded or saved
    from brats_mtl.model import MultiTaskNet

logger = logging.getLogger(__name__)

#: The run's resolved configuration, ``RUN_DIR/config.yaml``.
CONFIG_FILE = "config.yaml"
#: The run's folds, ``RUN_DIR/splits.json``.
SPLITS_FILE = "splits.json"
#: Preprocessed cases, ``RUN_DIR/cache``.
CACHE_DIR = "cache"
#: Fold folders are ``RUN_DIR/fold_K``.
FOLD_PREFIX = "fold_"
#: The checkpoints of a fold, ``fold_K/checkpoints``.
CHECKPOINT_DIR = "checkpoints"
#: Checkpoint names: ``best`` (highest validation Dice) and ``last``.
CHECKPOINTS = ("best", "last")
#: Checkpoint file suffix (Lightning's).
CHECKPOINT_SUFFIX = ".ckpt"
#: Merged metrics of all attempts of a fold.
METRICS_FILE = "metrics.csv"
#: Per-case Dice of every validation of a fold.
VALIDATION_FILE = "validation.csv"
#: The fold's training curves.
CURVES_FILE = "training_curves.png"
#: Lightning's CSV logs, ``fold_K/logs/version_N``.
LOGS_DIR = "logs"
#: What ``brats-mtl train`` writes in a fold folder (all that ``train --overwrite``
#: removes there).
FOLD_OUTPUTS = (CHECKPOINT_DIR, LOGS_DIR, METRICS_FILE, VALIDATION_FILE, CURVES_FILE)
#: What ``brats-mtl train`` writes in a run folder (named in the folder's marker).
RUN_ENTRIES = (CONFIG_FILE, SPLITS_FILE, CACHE_DIR, f"{FOLD_PREFIX}K")
#: The files that show a run folder written before the ownership marker existed.
RUN_LEGACY_FILES = (Path(CONFIG_FILE), Path(SPLITS_FILE))


def is_launch_rank_zero() -> bool:
    """False in processes that a distributed launcher started for ranks other than 0.

    Source: the environment variables of torchrun (``RANK``, ``LOCAL_RANK``), SLURM
    (``SLURM_PROCID``) and Lightning (``NODE_RANK``).
    """
    for name in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "NODE_RANK"):
        value = os.environ.get(name)
        if value not in (None, "", "0"):
            return False
    return True


def _check_which(which: str) -> None:
    if which not in CHECKPOINTS:
        raise ValueError(f"which={which!r}: choose 'best' (highest val Dice) or 'last'")


@dataclasses.dataclass(frozen=True)
class FoldDir:
    """The folder of one fold, ``RUN_DIR/fold_K`` (or any folder a fold trains into).

    Attributes:
        path: the fold folder.
    """

    path: Path

    def checkpoint(self, which: str = "best") -> Path:
        """``checkpoints/{best,last}.ckpt`` (may not exist).

        Raises:
            ValueError: if ``which`` is not "best" or "last".
        """
        _check_which(which)
        return self.checkpoint_dir / f"{which}{CHECKPOINT_SUFFIX}"

    @property
    def checkpoint_dir(self) -> Path:
        """``checkpoints/``."""
        return self.path / CHECKPOINT_DIR

    def checkpoints(self) -> list[Path]:
        """The checkpoint files present, sorted."""
        return sorted(self.checkpoint_dir.glob(f"*{CHECKPOINT_SUFFIX}"))

    @property
    def metrics_csv(self) -> Path:
        """``metrics.csv``: every logged value, all attempts merged."""
        return self.path / METRICS_FILE

    @property
    def validation_csv(self) -> Path:
        """``validation.csv``: per-case Dice of every validation."""
        return self.path / VALIDATION_FILE

    @property
    def curves_png(self) -> Path:
        """``training_curves.png``."""
        return self.path / CURVES_FILE

    @property
    def logs_dir(self) -> Path:
        """``logs/``: Lightning's CSV logs, one ``version_N`` folder per attempt."""
        return self.path / LOGS_DIR

    def attempt_logs(self) -> list[Path]:
        """``logs/version_N/metrics.csv`` of every attempt, in attempt order."""
        return sorted(
            self.logs_dir.glob(f"version_*/{METRICS_FILE}"),
            key=lambda p: int(p.parent.name.removeprefix("version_")),
        )


class RunDir:
    """A training run folder (layout in the module docstring).

    Nothing is created or read on construction; every method says what it touches.

    Args:
        path: the run folder.
    """

    def __init__(self, path: str | Path) -> None:
        """Name the run folder ``path`` (a ``RunDir`` is also accepted)."""
        self.path = Path(path.path if isinstance(path, RunDir) else path)

    def __repr__(self) -> str:
        """``RunDir('PATH')``."""
        return f"RunDir({str(self.path)!r})"

    def __eq__(self, other: object) -> bool:
        """Same folder path."""
        return isinstance(other, RunDir) and other.path == self.path

    def __hash__(self) -> int:
        """Hash of the folder path."""
        return hash(self.path)

    # --- layout ------------------------------------------------------------------

    @property
    def config_file(self) -> Path:
        """``RUN_DIR/config.yaml``."""
        return self.path / CONFIG_FILE

    @property
    def splits_file(self) -> Path:
        """``RUN_DIR/splits.json``."""
        return self.path / SPLITS_FILE

    @property
    def cache(self) -> Path:
        """``RUN_DIR/cache``: the default folder of preprocessed cases."""
        return self.path / CACHE_DIR

    def fold_dir(self, fold: int) -> Path:
        """``RUN_DIR/fold_K``."""
        return self.path / f"{FOLD_PREFIX}{fold}"

    def fold(self, fold: int) -> FoldDir:
        """The :class:`FoldDir` of ``RUN_DIR/fold_K``."""
        return FoldDir(self.fold_dir(fold))

    def checkpoint(self, fold: int, which: str = "best") -> Path:
        """``RUN_DIR/fold_K/checkpoints/{best,last}.ckpt`` (may not exist).

        Raises:
            ValueError: if ``which`` is not "best" or "last".
        """
        return self.fold(fold).checkpoint(which)

    def checkpoints(self) -> list[Path]:
        """Every fold checkpoint of the run, ``RUN_DIR/fold_*/checkpoints/*.ckpt``, sorted.

        A run "has results" when this is not empty: its folds were trained with the
        saved configuration.
        """
        pattern = f"{FOLD_PREFIX}*/{CHECKPOINT_DIR}/*{CHECKPOINT_SUFFIX}"
        return sorted(self.path.glob(pattern))

    def training_curves(self) -> list[Path]:
        """``RUN_DIR/fold_*/training_curves.png`` that exist, sorted by path."""
        return sorted(self.path.glob(f"{FOLD_PREFIX}*/{CURVES_FILE}"))

    # --- folds -------------------------------------------------------------------

    def available_folds(self, which: str = "best") -> list[int]:
        """Folds of the run that have the ``which`` checkpoint, sorted.

        Raises:
            FileNotFoundError: if the folder is not a run folder (no splits.json).
        """
        splits = self.read_splits()
        return [k for k in range(splits.n_folds) if self.checkpoint(k, which).is_file()]

    def trained_folds(self) -> list[int]:
        """The folds holding any checkpoint (``fold_K/checkpoints/*.ckpt``), sorted."""
        folds = set()
        for path in self.checkpoints():
            name = path.parent.parent.name.removeprefix(FOLD_PREFIX)
            if name.isdigit():
                folds.add(int(name))
        return sorted(folds)

    def check_fold_trained(self, fold: int) -> None:
        """Raise when a fold has neither ``best.ckpt`` nor ``last.ckpt``.

        Raises:
            FileNotFoundError: "fold K of RUN was not trained (no
                fold_K/checkpoints/best.ckpt or last.ckpt); trained folds: [...]" (the
                folds holding any checkpoint).
        """
        if any(self.checkpoint(fold, w).is_file() for w in CHECKPOINTS):
            return
        folds = self.trained_folds()
        where = f"{FOLD_PREFIX}{fold}/{CHECKPOINT_DIR}"
        best, last = (f"{w}{CHECKPOINT_SUFFIX}" for w in CHECKPOINTS)
        raise FileNotFoundError(
            f"fold {fold} of {self.path} was not trained (no {where}/{best} or {last}); "
            + (f"trained folds: {folds}" if folds else "no fold has a checkpoint yet: train first")
        )

    # --- configuration and splits ------------------------------------------------

    def has_config(self) -> bool:
        """True when ``config.yaml`` exists."""
        return self.config_file.is_file()

    def read_config(self) -> Config:
        """The configuration saved in ``RUN_DIR/config.yaml``.

        Raises:
            FileNotFoundError: if the run folder has no config.yaml (not a training run).
            ValueError: if the file is not a brats-mtl configuration.
        """
        path = self.config_file
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} does not exist: {self.path} is not a training run folder "
                "(run `brats-mtl train DATA_DIR --out RUN_DIR` first)"
            )
        return load_config(path)

    def config_or(self, default: Config) -> Config:
        """The saved configuration when there is one, else ``default``."""
        return self.read_config() if self.has_config() else default

    def read_splits(self) -> Splits:
        """The run's folds (``splits.json``).

        Raises:
            FileNotFoundError: if the run folder has no splits file (train first).
            ValueError: if the file is not a valid splits file.
        """
        return read_splits(self.splits_file)

    def write_splits(self, splits: Splits, unlabeled_ids: Iterable[str] = ()) -> Path:
        """Write ``splits.json`` atomically; returns its path."""
        return write_splits(splits, self.splits_file, tuple(unlabeled_ids))

    def check_config(self, config: Config) -> bool:
        """Check ``config`` against the saved one: a run with results keeps its network.

        Returns:
            True when the run already has results (some fold holds a checkpoint).

        Raises:
            ValueError: if the run has results and ``config`` changes its model or loss
                (the message says how to resume: the preset the run was made with, or
                no ``--preset``/``--config``/``--set`` at all).

        Source: the rule of ``training.runner.prepare_run`` (nnU-Net's and Lightning's
        resume conventions: the checkpoints are what a run produced).
        """
        path = self.config_file
        checkpoints = self.checkpoints()
        if path.is_file():
            saved = load_config(path)
            if saved == config or not checkpoints:
                return bool(checkpoints)
            for section in ("model", "loss"):
                changed = _changed_keys(saved, config, [section])
                if changed:
                    raise ValueError(
                        f"{path} was written for another {section} configuration (changed: "
                        f"{', '.join(changed)}) and {len(checkpoints)} checkpoint(s) of this "
                        f"run were trained with it (e.g. {checkpoints[0]}); the folds of one "
                        f"run must share it: {_config_advice(saved, config)}"
                    )
        return bool(checkpoints)

    def save_config(self, config: Config, has_results: bool) -> None:
        """Write ``config.yaml`` (rank 0 only), logging what changed.

        Args:
            config: the run's resolved configuration.
            has_results: some fold holds a checkpoint (:meth:`check_config`); a replaced
                file is then an INFO, else a WARNING (it recorded an attempt that ended
                early).
        """
        path = self.config_file
        if path.is_file():
            saved = load_config(path)
            if saved == config:
                return
            sections = [f.name for f in dataclasses.fields(Config)]
            changed = ", ".join(_changed_keys(saved, config, sections))
            if has_results:
                logger.info("updating %s (changed: %s)", path, changed)
            else:
                logger.warning(
                    "replacing %s: no fold of %s has a checkpoint yet, so it recorded only an "
                    "attempt that ended early (changed: %s)",
                    path,
                    self.path,
                    changed,
                )
        self.path.mkdir(parents=True, exist_ok=True)
        if is_launch_rank_zero():
            save_config(config, path)

    # --- fold models -------------------------------------------------------------

    def load_fold_model(self, fold: int, which: str = "best") -> MultiTaskNet:
        """The trained network of one fold, on the CPU, in eval mode.

        Args:
            fold: fold number.
            which: "best" (highest validation Dice) or "last" checkpoint.

        Returns:
            ``brats_mtl.model.MultiTaskNet`` built from the run's ``config.yaml``.

        Raises:
            FileNotFoundError: if the run has no config.yaml; if the fold has no
                checkpoint at all (:meth:`check_fold_trained`); if only the other
                checkpoint exists (names the file and lists the folds that have the one
                asked for).
            ValueError: if ``which`` is unknown.
        """
        import torch

        from brats_mtl.model import MultiTaskNet

        path = self.checkpoint(fold, which)
        config = self.read_config()
        if not path.is_file():
            self.check_fold_trained(fold)
            try:
                folds = self.available_folds(which)
            except (FileNotFoundError, ValueError):
                folds = []
            hint = (
                f"folds with a {which} checkpoint: {folds}"
                if folds
                else f"no fold of {self.path} has a {which} checkpoint yet"
            )
            if which == "best":
                best, last = (f"{w}{CHECKPOINT_SUFFIX}" for w in CHECKPOINTS)
                hint += f" ({best} is written at the first validation; use 'last')"
            raise FileNotFoundError(f"checkpoint {path} does not exist; {hint}")
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        state = {
            key.removeprefix("net."): value
            for key, value in checkpoint["state_dict"].items()
            if key.startswith("net.")
        }
        net = MultiTaskNet(config.model)
        net.load_state_dict(state)
        return net.eval()

    def save_fold_model(
        self, fold: int, net: MultiTaskNet, which: str = "last", *, global_step: int = 0
    ) -> Path:
        """Write a network as fold ``fold``'s ``which`` checkpoint, atomically.

        The file holds what :meth:`load_fold_model` reads from a Lightning checkpoint of
        ``MultiTaskModule`` (``state_dict`` with the ``net.`` prefix, ``global_step``);
        it is not a resumable training state (no optimizer). For run folders made
        without training: tests, converted weights.

        Args:
            fold: fold number.
            net: the network; it must match the run's ``config.yaml`` to be loaded.
            which: "best" or "last".
            global_step: recorded as the checkpoint's step.

        Returns:
            The checkpoint's path.

        Raises:
            ValueError: if ``which`` is unknown.
        """
        import torch

        from brats_mtl.atomic import atomic_output

        path = self.checkpoint(fold, which)
        state = {f"net.{key}": value for key, value in net.state_dict().items()}
        with atomic_output(path, overwrite=True) as tmp:
            torch.save({"state_dict": state, "global_step": int(global_step)}, tmp)
        return path


def _changed_keys(old: Config, new: Config, sections: Iterable[str]) -> list[str]:
    """``section.key`` of every value that differs between two configurations."""
    changed = []
    for section in sections:
        before, after = to_dict(getattr(old, section)), to_dict(getattr(new, section))
        changed += [f"{section}.{k}" for k, v in after.items() if before.get(k) != v]
    return sorted(changed)


def _preset_of(config: Config) -> str | None:
    """The ``--preset`` whose network and loss ``config`` has, or None."""
    for name in PRESET_NAMES:
        preset = preset_config(name)
        if preset.model == config.model and preset.loss == config.loss:
            return name
    return None


def _config_advice(saved: Config, config: Config) -> str:
    """How to resume a run whose saved network or loss differs from ``config``.

    Names the preset the run was made with when the difference comes from the preset.
    """
    use_saved = (
        "give none of --preset, --config and --set (with --resume for `brats-mtl run`) so "
        f"that the run's {CONFIG_FILE} is used"
    )
    made_with, given = _preset_of(saved), _preset_of(config)
    if given is not None and made_with != given:
        if made_with is not None:
            return (
                f"the run was made with --preset {made_with} and this configuration is "
                f"--preset {given}: pass --preset {made_with}, or {use_saved}"
            )
        return (
            f"this configuration is --preset {given} but the run was not made with it: pass "
            f"the same --preset (and --config/--set) as the first run, or {use_saved}"
        )
    return (
        f"{use_saved}, drop the changed settings, train into a new run folder (--out), or "
        "delete the fold folders to start over"
    )
