"""Shared fixtures: the real sample data beside the repository, when present."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real BraTS sample cases); skips the test when absent."""
    if not (SHARED_DATA / "brats").is_dir():
        pytest.skip(f"real BraTS sample data not found at {SHARED_DATA}")
    return SHARED_DATA
