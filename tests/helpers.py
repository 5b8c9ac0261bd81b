"""Helpers shared by test modules: run folders made through ``RunDir``.

Import them as ``from tests.helpers import make_run`` (``tests`` is a package, so the
repository root is on ``sys.path`` under pytest).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def make_run(
    run_dir: Path,
    case_ids: Sequence[str],
    n_folds: int = 2,
    *,
    seed: int = 0,
    names: Sequence[str | None] | None = None,
) -> Path:
    """A run folder as training leaves it, with random tiny fold models.

    ``config.yaml`` holds ``tiny_config(patch_size=16)``, ``splits.json`` ``n_folds``
    stratified folds of ``case_ids`` (all of stratum ET), and fold ``k`` a network with
    random weights seeded by ``100 * seed + k``, written by ``RunDir.save_fold_model``.

    Args:
        run_dir: the run folder to write (created).
        case_ids: the labeled cases of the splits; at least ``n_folds`` of them.
        n_folds: number of folds (ignored when ``names`` is given).
        seed: picks the weights: two runs with different seeds hold different models.
        names: fold ``k``'s checkpoint is saved as ``names[k]`` ("best" or "last"; None:
            no checkpoint, a fold never trained); default "best" for every fold.

    Returns:
        ``run_dir``.
    """
    import torch

    from brats_mtl.data.splits import stratified_folds
    from brats_mtl.model import MultiTaskNet
    from brats_mtl.presets import tiny_config
    from brats_mtl.workspace.run_dir import RunDir

    names = ["best"] * n_folds if names is None else list(names)
    config = tiny_config(patch_size=16)
    run = RunDir(run_dir)
    run.save_config(config, has_results=False)
    run.write_splits(stratified_folds({c: "ET" for c in case_ids}, len(names), seed=0))
    for fold, name in enumerate(names):
        if name is None:
            continue
        torch.manual_seed(100 * seed + fold)
        run.save_fold_model(fold, MultiTaskNet(config.model), name)
    return run_dir
