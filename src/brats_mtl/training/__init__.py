"""Semi-supervised multi-task training with stratified k-fold cross-validation.

- :mod:`~brats_mtl.training.cache`: preprocessed cases on disk (memory-mapped).
- :mod:`~brats_mtl.training.datasets`: patch and whole-case datasets, seeded sampler.
- :mod:`~brats_mtl.training.splits`: stratified folds, saved once per run.
- :mod:`~brats_mtl.training.module`: the Lightning module (loss, optimizer, validation).
- :mod:`~brats_mtl.training.runner`: run folder, ``train_fold``, ``train_folds``,
  ``load_fold_model``.

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
    "Splits": "splits",
    "read_splits": "splits",
    "stratified_folds": "splits",
    "MultiTaskModule": "module",
    "FoldResult": "runner",
    "available_folds": "runner",
    "check_fold_trained": "runner",
    "checkpoint_path": "runner",
    "load_fold_model": "runner",
    "prepare_run": "runner",
    "read_run_config": "runner",
    "run_checkpoints": "runner",
    "train_fold": "runner",
    "train_folds": "runner",
    "trained_folds": "runner",
    "with_train_settings": "runner",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'brats_mtl.training' has no attribute {name!r}")
    module = importlib.import_module(f"brats_mtl.training.{_EXPORTS[name]}")
    return getattr(module, name)
