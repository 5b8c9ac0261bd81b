"""Matplotlib access (Agg backend, imported on first use) and atomic figure saving."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from brats_mtl.atomic import atomic_output

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Figure, path: str | Path, *, dpi: int = 120, overwrite: bool = False) -> Path:
    """Save ``fig`` atomically (temp file with the same suffix, then rename) and close it.

    The format follows the suffix of ``path`` (``.png``, ``.svg``, ``.pdf``).

    Raises:
        FileExistsError: if ``path`` exists and ``overwrite`` is False.
    """
    plt = pyplot()
    path = Path(path)
    try:
        with atomic_output(path, overwrite=overwrite) as tmp:
            fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
    return path
