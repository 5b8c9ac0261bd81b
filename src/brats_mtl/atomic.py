"""Atomic output: write to a temporary file beside the target, then rename.

Every file the package writes goes through :func:`atomic_output`, so an interrupted run
never leaves a half-written result, and an existing result is kept unless overwriting is
asked for.
"""

from __future__ import annotations

import contextlib
import os
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
