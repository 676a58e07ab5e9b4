"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

# The real data samples live beside the project (../shared/data), never inside it: they may not be
# redistributed (see ../shared/data/README.md).
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ``../shared/data`` (relative to the project root), or skip the test if it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} absent: the real data samples live in ../shared/data beside the project "
                    "(see ../shared/data/README.md); tests that read them are skipped without it")
    return SHARED_DATA


@pytest.fixture(scope="session")
def ml100k_dir(shared_data: Path) -> Path:
    """``../shared/data/ml-100k``, or skip if its files are absent."""
    path = shared_data / "ml-100k"
    if not (path / "u.data").is_file():
        pytest.skip(f"../shared/data/ml-100k absent: {path} holds no u.data (see ../shared/data/README.md)")
    return path
