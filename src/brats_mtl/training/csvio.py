"""Small CSV helpers of the training run folder (atomic writes)."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from brats_mtl.atomic import atomic_output


def read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV file as dicts; empty when the file does not exist."""
    if not Path(path).is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_csv(path: Path, rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> None:
    """Write rows (dicts; extra keys ignored) atomically, replacing ``path``."""
    with atomic_output(path, overwrite=True) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
