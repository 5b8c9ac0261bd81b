"""Atomic output: write to a temporary file beside the target, then rename.

Every file the package writes goes through :func:`atomic_output` (a file) or
:func:`atomic_folder` (a whole folder), so an interrupted run never leaves a half-written
result, and an existing result is kept unless overwriting is asked for. :func:`locked`
serialises the writers of one folder that run in several processes at once.

Source: the POSIX ``rename`` guarantee (the target is replaced in one step, on one file
system), which is why every temporary file or folder lies beside its target.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_output(path: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` when the block succeeds.

    The temporary file keeps ``path``'s suffix (``.nii.gz``, ``.png``: writers pick the
    format from it) and is removed when the block fails. Parent folders are created.

    Raises:
        FileExistsError: if ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite (--overwrite) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.name[-7:] if path.name.lower().endswith(".nii.gz") else path.suffix
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    fd, tmp_name = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | Path, text: str, *, overwrite: bool = False) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_output`); returns ``path``."""
    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.write_text(text)
    return Path(path)


@contextlib.contextmanager
def atomic_folder(path: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a new temporary folder beside ``path``; rename it to ``path`` when the block succeeds.

    The block fills the folder; a block that fails (or is interrupted) leaves ``path`` as
    it was and the temporary folder removed. With ``overwrite``, an existing ``path`` is
    first renamed aside and deleted once the new folder is in place, so ``path`` is only
    ever missing between two renames, never half-written. Parent folders are created.

    Raises:
        FileExistsError: if ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite (--overwrite) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give the usual permissions
    try:
        yield tmp
        if not path.exists():
            os.replace(tmp, path)
            return
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
        os.replace(path, old / path.name)
        try:
            os.replace(tmp, path)
        except BaseException:
            os.replace(old / path.name, path)  # put the old folder back
            old.rmdir()
            raise
        shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


@contextlib.contextmanager
def locked(path: str | Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on the file ``path`` during the block.

    POSIX ``flock``; where there is none (Windows) the block runs unlocked. The file is
    created empty if needed (parent folders too) and kept: removing a lock file while
    another process waits on it would let a third process lock a new file at the same
    path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
