"""Semi-supervised multi-task training with stratified k-fold cross-validation.

- :mod:`~brats_mtl.training.cache`: preprocessed cases on disk (memory-mapped).
- :mod:`~brats_mtl.training.datasets`: patch and whole-case datasets, seeded sampler.
- :mod:`~brats_mtl.training.module`: the Lightning module (loss, optimizer, validation).
- :mod:`~brats_mtl.training.runner`: ``prepare_run``, ``train_fold``, ``train_folds``.
- :mod:`~brats_mtl.training.run_folder`: ``load_fold_model``, ``read_run_config``,
  ``trained_folds`` and the other run-folder functions (wrappers over
  :class:`~brats_mtl.workspace.run_dir.RunDir`).

Stratified folds: :mod:`brats_mtl.data.splits`.

Names are imported on first use, so ``import brats_mtl.training`` does not load torch.

Source: paper, Training Procedure; docs/design.md section 4.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CachedCase": "cache",
    "UnusableCasesError": "cache",
    "build_cache": "cache",
    "PatchDataset": "datasets",
    "PatchSampler": "datasets",
    "read_splits": "run_folder",
    "MultiTaskModule": "module",
    "fold_dir": "run_folder",
    "FoldResult": "runner",
    "available_folds": "run_folder",
    "check_fold_trained": "run_folder",
    "checkpoint_path": "run_folder",
    "load_fold_model": "run_folder",
    "prepare_run": "runner",
    "read_run_config": "run_folder",
    "run_checkpoints": "run_folder",
    "train_fold": "runner",
    "train_folds": "runner",
    "trained_folds": "run_folder",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'brats_mtl.training' has no attribute {name!r}")
    module = importlib.import_module(f"brats_mtl.training.{_EXPORTS[name]}")
    return getattr(module, name)
