"""Torch datasets of patches and whole cases from the preprocessed-case cache.

Training draws patches of P^3 voxels (P = ``model.patch_size``, 128 in the paper) from
each cropped case, either the paper's sequential tiles (``train.patch_sampling="grid"``,
``preprocessing.patch_grid``) or random crops (``"random"``,
``train.random_patches_per_case`` per case and epoch). Labeled and unlabeled patches sit
in one dataset and are shuffled together (paper, Training Procedure: "supervised and
unsupervised examples are selected in random order").

Randomness lives in :class:`PatchSampler`: for epoch ``e`` it draws the order of the
patches and one crop seed per patch from a generator seeded by ``(seed, e)``, and yields
``(index, crop_seed)`` pairs. The dataset is then a pure function of its key, so the same
seed gives the same batches with any number of DataLoader workers, on any number of
processes, and after resuming in the middle of an epoch (:class:`ResumableLoader`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from brats_mtl.config import check_choice, choices
from brats_mtl.conventions import Box
from brats_mtl.preprocessing import patch_grid
from brats_mtl.tasks import NetworkClasses, network_classes
from brats_mtl.training.cache import CachedCase

#: Values of ``train.patch_sampling``.
PATCH_SAMPLING: tuple[str, ...] = choices("train.patch_sampling")


class _ArrayCache:
    """Memory maps of cached arrays, opened lazily in each process (never pickled)."""

    def __init__(self) -> None:
        self._maps: dict[str, np.ndarray] = {}

    def get(self, path) -> np.ndarray:
        key = str(path)
        array = self._maps.get(key)
        if array is None:
            array = self._maps[key] = np.load(key, mmap_mode="r")
        return array

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self._maps = {}


def _read_patch(array: np.ndarray, box: Box, patch_size: int) -> np.ndarray:
    """Copy ``array[..., box]`` into a zero array of (..., P, P, P) (pads past the border)."""
    out = np.zeros((*array.shape[:-3], patch_size, patch_size, patch_size), dtype=array.dtype)
    src = tuple(slice(s.start, min(s.stop, n)) for s, n in zip(box, array.shape[-3:], strict=True))
    extent = tuple(slice(0, s.stop - s.start) for s in src)
    out[(..., *extent)] = array[(..., *src)]
    return out


class PatchDataset(Dataset):
    """Patches of P^3 voxels of cached cases, with their training targets.

    Args:
        cases: cached cases, labeled and unlabeled mixed.
        patch_size: P (``model.patch_size``).
        sampling: "grid" (the paper's sequential tiles of each cropped case) or "random"
            (``patches_per_case`` uniformly placed crops per case; positions change every
            epoch with the sampler's crop seeds).
        patches_per_case: crops per case and epoch with ``sampling="random"``.
        classes: the network classes of the run's label scheme
            (``tasks.network_classes``); default: the paper's (brats2017).

    Items are looked up by ``(index, crop_seed)`` (from :class:`PatchSampler`) or by a
    plain ``index`` (crop seed = index). Each item is a dict:

    - ``image``: float32 (4, P, P, P), z-scored, zero-padded past the cropped brain;
    - ``class_targets``: int64 (P, P, P), class indices 0..n_classes-1
      (``NetworkClasses.to_classes``); zeros for an unlabeled case;
    - ``et_target``: int64 scalar, 1 when the patch contains the scheme's ET (internal
      label 4 for brats2017, 3 for gli-post, 1 for ped2024), else 0;
    - ``labeled``: bool scalar;
    - ``case_index``: int64 scalar, index of the case in ``cases``.

    Raises:
        ValueError: on an unknown ``sampling``, ``patch_size < 1`` or
            ``patches_per_case < 1``.

    Source: paper section 4.1 (sequential 128^3 patches), Training Procedure; docs/design.md
    sections 2.3 and 4.
    """

    def __init__(
        self,
        cases: Sequence[CachedCase],
        patch_size: int,
        *,
        sampling: str = "grid",
        patches_per_case: int = 2,
        classes: NetworkClasses | None = None,
    ) -> None:
        self.classes = network_classes() if classes is None else classes
        check_choice("train.patch_sampling", sampling)
        if patch_size < 1:
            raise ValueError(f"model.patch_size must be positive, got {patch_size}")
        if sampling == "random" and patches_per_case < 1:
            raise ValueError(
                f"train.random_patches_per_case must be at least 1, got {patches_per_case}"
            )
        self.cases = list(cases)
        self.patch_size = int(patch_size)
        self.sampling = sampling
        self.patches_per_case = int(patches_per_case)
        # (case index, tile) for the grid; (case index, None) for random crops
        self.items: list[tuple[int, Box | None]] = []
        for i, case in enumerate(self.cases):
            if sampling == "grid":
                self.items += [(i, box) for box in patch_grid(case.shape, self.patch_size)]
            else:
                self.items += [(i, None)] * self.patches_per_case
        self._arrays = _ArrayCache()

    def __len__(self) -> int:
        return len(self.items)

    @property
    def labeled_flags(self) -> list[bool]:
        """Whether each item comes from a labeled case."""
        return [self.cases[i].labeled for i, _ in self.items]

    def random_box(self, shape: tuple[int, int, int], crop_seed: int) -> Box:
        """A P^3 box placed uniformly inside ``shape`` (at 0 on axes shorter than P)."""
        rng = np.random.default_rng(crop_seed)
        p = self.patch_size
        starts = [int(rng.integers(0, max(n - p, 0) + 1)) for n in shape]
        return tuple(slice(s, s + p) for s in starts)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, crop_seed = (key, key) if isinstance(key, int | np.integer) else key
        case_index, box = self.items[int(index)]
        case = self.cases[case_index]
        if box is None:
            box = self.random_box(case.shape, int(crop_seed))
        image = _read_patch(self._arrays.get(case.image_path), box, self.patch_size)
        p = self.patch_size
        if case.labels_path is not None:
            labels = _read_patch(self._arrays.get(case.labels_path), box, p)
            classes = self.classes.to_classes(labels)
            has_et = bool((labels == self.classes.et_label).any())
        else:
            classes = np.zeros((p, p, p), dtype=np.int64)
            has_et = False
        return {
            "image": torch.from_numpy(image),
            "class_targets": torch.from_numpy(classes),
            "et_target": torch.tensor(int(has_et), dtype=torch.long),
            "labeled": torch.tensor(case.labeled),
            "case_index": torch.tensor(case_index, dtype=torch.long),
        }


class CaseDataset(Dataset):
    """Whole cropped cases, for validation by sliding windows.

    Items are dicts with ``image`` float32 (4, x, y, z), ``labels`` uint8 (x, y, z)
    internal labels, and ``case_index`` (int). Cases must be labeled.

    Raises:
        ValueError: if a case has no labels (names it).
    """

    def __init__(self, cases: Sequence[CachedCase]) -> None:
        unlabeled = [c.case_id for c in cases if not c.labeled]
        if unlabeled:
            raise ValueError(f"validation cases need labels; unlabeled: {unlabeled}")
        self.cases = list(cases)

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> dict[str, Any]:
        case = self.cases[index]
        return {
            "image": torch.from_numpy(np.array(case.image())),
            "labels": torch.from_numpy(np.array(case.labels())),
            "case_index": index,
        }


class PatchSampler(Sampler):
    """Seeded order and crop seeds of the patches, per epoch and per process.

    Epoch ``e`` uses ``np.random.default_rng([seed, e])``: a permutation of the items
    (when ``shuffle``) and one crop seed per item. With ``world_size`` processes the
    ordered list is padded by repeating its start to a multiple of ``world_size`` (as
    ``torch.utils.data.DistributedSampler``) and process ``rank`` takes every
    ``world_size``-th entry from position ``rank``.

    Args:
        n_items: dataset length.
        seed: run seed (``train.seed``).
        shuffle: shuffle every epoch.
        rank: this process's rank.
        world_size: number of processes.

    Yields:
        ``(index, crop_seed)`` pairs of ints.
    """

    def __init__(
        self, n_items: int, *, seed: int, shuffle: bool = True, rank: int = 0, world_size: int = 1
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        self.n_items = n_items
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.skip = 0  # entries of this epoch already consumed (resume mid-epoch)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (called by Lightning before each epoch)."""
        if epoch != self.epoch:
            self.skip = 0
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.n_items / self.world_size) if self.n_items else 0

    def entries(self, epoch: int) -> list[tuple[int, int]]:
        """This process's ``(index, crop_seed)`` entries of ``epoch``, in order."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(self.n_items) if self.shuffle else np.arange(self.n_items)
        crop_seeds = rng.integers(0, 2**62, size=self.n_items)
        pairs = [(int(i), int(crop_seeds[i])) for i in order]
        if pairs and len(pairs) % self.world_size:
            pad = self.world_size - len(pairs) % self.world_size
            pairs += (pairs * pad)[:pad]
        return pairs[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        skip, self.skip = self.skip, 0
        return iter(self.entries(self.epoch)[skip:])


class RankSlice(Sampler):
    """Indices ``rank, rank + world_size, ...`` of ``n_items`` (validation cases per process).

    The index list is padded by repeating its start to a multiple of ``world_size``, so
    every process gets the same number of items (a process without items would stall the
    others at the end of validation); results of repeated items are merged by case ID.
    """

    def __init__(self, n_items: int, rank: int = 0, world_size: int = 1) -> None:
        indices = list(range(n_items))
        if indices and n_items % world_size:
            pad = world_size - n_items % world_size
            indices += (indices * pad)[:pad]
        self.indices = indices[rank::world_size]

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)


class ResumableLoader(DataLoader):
    """A DataLoader over a :class:`PatchSampler` whose position survives a checkpoint.

    Lightning stores ``state_dict()`` in every checkpoint and calls ``load_state_dict``
    when resuming, before the first batch; the sampler then skips the batches the
    interrupted run had already trained on, so a resumed run sees the same batches as an
    uninterrupted one.

    Args:
        dataset: the :class:`PatchDataset`.
        sampler: its :class:`PatchSampler`.
        batches_done: callable giving the number of batches of the current epoch that
            training has finished (set by the Lightning module; counting in the loader
            would include batches prefetched but not yet trained on).
        **kwargs: passed to ``DataLoader`` (``batch_size``, ``num_workers``, ...).
    """

    def __init__(
        self,
        dataset: PatchDataset,
        sampler: PatchSampler,
        batches_done: Callable[[], int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(dataset, sampler=sampler, **kwargs)
        self.batches_done = batches_done

    def state_dict(self) -> dict[str, int]:
        """``{"epoch", "batches_done"}`` of the sampler's current epoch."""
        done = int(self.batches_done()) if self.batches_done is not None else 0
        return {"epoch": int(self.sampler.epoch), "batches_done": done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Position the sampler after the batches an interrupted run finished."""
        epoch, done = int(state["epoch"]), int(state["batches_done"])
        if done >= len(self):
            epoch, done = epoch + 1, 0
        self.sampler.epoch = epoch
        self.sampler.skip = done * int(self.batch_size or 1)


def worker_init(worker_id: int) -> None:
    """Keep each DataLoader worker to one thread (workers only copy and convert arrays)."""
    torch.set_num_threads(1)
