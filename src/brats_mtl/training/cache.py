"""On-disk cache of preprocessed cases, so training epochs never decode NIfTI again.

Each case is read (``data.load_case``), cropped to its brain and z-scored
(``preprocessing.preprocess_case``) once and stored in the cache folder as

- ``<case_id>.image.npy``: float32 (4, x, y, z), C order, uncompressed, so it can be
  memory-mapped (``np.load(..., mmap_mode="r")``) and a patch read without loading the case;
- ``<case_id>.labels.npy``: uint8 (x, y, z) internal labels (labeled cases only): the
  {0, 1, 2, 4} set of the three-label schemes, the file values of ``gli-post`` and
  ``ped2024`` (``brats_mtl.tasks.NetworkClasses``);
- ``<case_id>.json``: crop box, original shape, ET presence, grade, labeled flag and the
  cache key. It is written last, so a case whose JSON is present is complete.

The key hashes the input files' paths, sizes and modification times, whether labels are
used, and :data:`CACHE_VERSION` (bumped whenever preprocessing changes); a case whose
stored key differs is rebuilt. Every file is written to a temporary name and renamed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from brats_mtl.atomic import atomic_output, write_text_atomic
from brats_mtl.conventions import Box
from brats_mtl.data import CaseFiles, load_case
from brats_mtl.preprocessing import preprocess_case
from brats_mtl.tasks import LabelScheme, get_label_scheme, network_classes

logger = logging.getLogger(__name__)

#: Version of the cached format and of the preprocessing it holds (docs/design.md section 2:
#: crop to the brain box, z-score in the brain mask). Bump to invalidate every cache.
CACHE_VERSION = "1:crop-brain-box+zscore-in-brain"


@dataclass(frozen=True)
class CachedCase:
    """One preprocessed case in the cache.

    Attributes:
        case_id: the case ID.
        image_path: ``.npy`` of the float32 (4, x, y, z) cropped, z-scored image.
        labels_path: ``.npy`` of the uint8 (x, y, z) cropped internal labels; None for an
            unlabeled case.
        shape: (x, y, z), the cropped shape.
        box: the crop box in the original grid (``preprocessing.uncrop`` undoes it).
        original_shape: (X, Y, Z) of the input images.
        has_et: True when the labels contain the scheme's ET (label 4 internally for the
            three-label schemes); False for unlabeled cases.
        grade: "HGG" / "LGG" when the dataset records it, else None.
    """

    case_id: str
    image_path: Path
    labels_path: Path | None
    shape: tuple[int, int, int]
    box: Box
    original_shape: tuple[int, int, int]
    has_et: bool
    grade: str | None

    @property
    def labeled(self) -> bool:
        """True when the case has labels (it trains the segmentation and classifier)."""
        return self.labels_path is not None

    def image(self) -> np.ndarray:
        """The image, memory-mapped read-only: float32 (4, x, y, z)."""
        return np.load(self.image_path, mmap_mode="r")

    def labels(self) -> np.ndarray | None:
        """The labels, memory-mapped read-only: uint8 (x, y, z); None when unlabeled."""
        return None if self.labels_path is None else np.load(self.labels_path, mmap_mode="r")


def cache_key(files: CaseFiles, use_labels: bool, scheme: LabelScheme | str | None = None) -> str:
    """Key of one case's cache entry: changes when an input file or the preprocessing does.

    Args:
        files: the case's files.
        use_labels: whether the segmentation is cached (False for cases used unlabeled).
        scheme: the label scheme the segmentation is read in; a four-label scheme is part
            of the key (the three-label ones all cache {0, 1, 2, 4}).

    Returns:
        A hex SHA-256 digest over :data:`CACHE_VERSION` and the absolute path, size and
        modification time (ns) of every input file.

    Raises:
        FileNotFoundError: if an input file is missing (names it).
    """
    paths = sorted({str(Path(p).resolve()) for p in files.images.values()})
    if use_labels and files.seg is not None:
        paths.append("seg:" + str(Path(files.seg).resolve()))
    parts = [CACHE_VERSION, files.case_id, files.label_convention.name]
    if scheme is not None and get_label_scheme(scheme).convention is None:
        parts.append(f"scheme:{get_label_scheme(scheme).name}")
    for p in paths:
        real = p.removeprefix("seg:")
        try:
            st = os.stat(real)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"input file {real} of case {files.case_id} is missing"
            ) from None
        parts.append(f"{p}|{st.st_size}|{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _meta_path(cache_dir: Path, case_id: str) -> Path:
    return cache_dir / f"{case_id}.json"


def _from_meta(cache_dir: Path, meta: dict) -> CachedCase:
    case_id = meta["case_id"]
    return CachedCase(
        case_id=case_id,
        image_path=cache_dir / f"{case_id}.image.npy",
        labels_path=cache_dir / f"{case_id}.labels.npy" if meta["labeled"] else None,
        shape=tuple(meta["shape"]),
        box=tuple(slice(a, b) for a, b in meta["box"]),
        original_shape=tuple(meta["original_shape"]),
        has_et=bool(meta["has_et"]),
        grade=meta["grade"],
    )


def _load_valid(cache_dir: Path, case_id: str, key: str) -> CachedCase | None:
    """The cached entry when complete and made from the same inputs, else None."""
    path = _meta_path(cache_dir, case_id)
    try:
        meta = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if meta.get("key") != key:
        return None
    cached = _from_meta(cache_dir, meta)
    if not cached.image_path.is_file() or (
        cached.labels_path is not None and not cached.labels_path.is_file()
    ):
        return None
    return cached


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_output(path, overwrite=True) as tmp, open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)


def cache_case(
    files: CaseFiles,
    cache_dir: str | Path,
    *,
    use_labels: bool = True,
    scheme: LabelScheme | str | None = None,
) -> CachedCase:
    """Preprocess one case into the cache, or reuse its entry when still valid.

    Args:
        files: the case's files.
        cache_dir: the cache folder (created).
        use_labels: cache the segmentation; False treats the case as unlabeled even when
            it has one (``--unlabeled`` data).
        scheme: the label scheme of the segmentation (``data.load_case``); None: the
            layout's three-label convention.

    Returns:
        The :class:`CachedCase`.

    Raises:
        FileNotFoundError, ValueError: from reading or preprocessing the case (the message
            names the file).

    Source: docs/design.md section 2 (preprocessing), section 4 (training data).
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    use_labels = use_labels and files.labeled
    key = cache_key(files, use_labels, scheme)
    cached = _load_valid(cache_dir, files.case_id, key)
    if cached is not None:
        return cached
    logger.info("preprocessing %s into the cache %s", files.case_id, cache_dir)
    pre = preprocess_case(load_case(files, load_labels=use_labels, scheme=scheme))
    _save_npy(cache_dir / f"{files.case_id}.image.npy", pre.image.astype(np.float32, copy=False))
    has_et = False
    if pre.labels is not None:
        _save_npy(cache_dir / f"{files.case_id}.labels.npy", pre.labels.astype(np.uint8))
        has_et = bool((pre.labels == network_classes(scheme).et_label).any())
    meta = {
        "case_id": files.case_id,
        "key": key,
        "labeled": pre.labels is not None,
        "shape": [int(s) for s in pre.image.shape[1:]],
        "box": [[int(s.start), int(s.stop)] for s in pre.box],
        "original_shape": [int(s) for s in pre.original_shape],
        "has_et": has_et,
        "grade": files.grade,
        "layout": files.layout,
    }
    write_text_atomic(
        _meta_path(cache_dir, files.case_id), json.dumps(meta, indent=1) + "\n", overwrite=True
    )
    return _from_meta(cache_dir, meta)


#: What a bad case raises while it is read and preprocessed (``CaseDataError`` is a
#: ``ValueError``; ``FileNotFoundError``: a file removed since the cases were found).
_CASE_ERRORS = (ValueError, OSError)  # OSError: FileNotFoundError, PermissionError, ...


class UnusableCasesError(ValueError):
    """Some cases cannot be read or preprocessed; the message lists every one of them.

    Attributes:
        problems: ``(case_id, message)`` per bad case, sorted by case ID; each message is
            the one reading the case raised (it names the file and the problem).
        n_cases: how many cases were given in all.
    """

    def __init__(self, problems: Sequence[tuple[str, str]], n_cases: int) -> None:
        self.problems = sorted(problems)
        self.n_cases = n_cases
        lines = "\n".join(f"  {case_id}: {message}" for case_id, message in self.problems)
        super().__init__(
            f"{len(self.problems)} of {n_cases} cases cannot be used for training:\n{lines}\n"
            "fix or remove them and run again (cases already cached are kept)"
        )


def _cache_one(args: tuple[CaseFiles, str, bool, str | None]) -> CachedCase:
    files, cache_dir, use_labels, scheme = args
    return cache_case(files, cache_dir, use_labels=use_labels, scheme=scheme)


def _is_cached(files: CaseFiles, cache_dir: str, use_labels: bool, scheme: str | None) -> bool:
    """True when the case's cache entry is complete and current.

    False when a file is missing: :func:`cache_case` then reports it.
    """
    try:
        key = cache_key(files, use_labels and files.labeled, scheme)
    except FileNotFoundError:
        return False
    return _load_valid(Path(cache_dir), files.case_id, key) is not None


def _start_method() -> str:
    """The multiprocessing start method of the cache's workers.

    "fork" while torch is not loaded (cheap, and works from any script), else "spawn":
    a fork of a process holding torch's OpenMP thread pool can deadlock in the child.
    """
    if "torch" not in sys.modules and "fork" in multiprocessing.get_all_start_methods():
        return "fork"
    return "spawn"


def build_cache(
    cases: Sequence[CaseFiles],
    cache_dir: str | Path,
    *,
    use_labels: bool | Sequence[bool] = True,
    num_workers: int = 0,
    scheme: LabelScheme | str | None = None,
) -> list[CachedCase]:
    """Make sure every case is in the cache; preprocess the missing or stale ones.

    Every case is tried before anything is raised: the good ones are cached (a retry
    after fixing the bad ones reuses them) and the bad ones are reported together.

    Args:
        cases: the cases' files.
        cache_dir: the cache folder (created).
        use_labels: whether to cache each case's segmentation (one flag, or one per case).
        num_workers: processes that preprocess cases in parallel; 0 or 1 works in this
            process. Each worker holds about one full case in memory (~0.5 GB for a
            240 x 240 x 155 BraTS case). Once torch is imported, workers are spawned, and
            a calling script then needs the ``if __name__ == "__main__":`` guard.
        scheme: the label scheme every segmentation is read in (see :func:`cache_case`).

    Returns:
        The cached cases, in the order of ``cases``.

    Raises:
        UnusableCasesError: (a ``ValueError``) if some cases cannot be read or
            preprocessed (a truncated file, label values outside the convention, NaN
            voxels, shapes that differ, a file gone missing); lists every such case with
            its file and problem.
        ValueError: if two cases share an ID.
    """
    cache_dir = Path(cache_dir)
    flags = [use_labels] * len(cases) if isinstance(use_labels, bool) else list(use_labels)
    if len(flags) != len(cases):
        raise ValueError(f"use_labels has {len(flags)} flags for {len(cases)} cases")
    seen: set[str] = set()
    for files in cases:
        if files.case_id in seen:
            raise ValueError(
                f"case ID {files.case_id} occurs twice among the training data folders; "
                "case IDs must be unique (remove or rename one copy)"
            )
        seen.add(files.case_id)
    name = None if scheme is None else get_label_scheme(scheme).name
    jobs = [(files, str(cache_dir), flag, name) for files, flag in zip(cases, flags, strict=True)]
    todo = [i for i, job in enumerate(jobs) if not _is_cached(*job)]
    if todo:
        logger.info("caching %d of %d cases in %s", len(todo), len(cases), cache_dir)
    # every case is tried, so one attempt reports every bad case; the good ones stay cached
    results: dict[int, CachedCase] = {}
    failed: dict[int, str] = {}
    if num_workers > 1 and len(todo) > 1:
        context = multiprocessing.get_context(_start_method())
        with ProcessPoolExecutor(min(num_workers, len(todo)), mp_context=context) as pool:
            futures = {i: pool.submit(_cache_one, jobs[i]) for i in todo}
            for i, future in futures.items():
                try:
                    results[i] = future.result()
                except _CASE_ERRORS as error:
                    failed[i] = str(error)
    for i, job in enumerate(jobs):
        if i not in results and i not in failed:
            try:
                results[i] = _cache_one(job)
            except _CASE_ERRORS as error:
                failed[i] = str(error)
    problems = [(jobs[i][0].case_id, message) for i, message in failed.items()]
    if problems:
        raise UnusableCasesError(problems, len(cases))
    return [results[i] for i in range(len(jobs))]
