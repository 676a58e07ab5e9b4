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


@pytest.fixture(scope="module")
def tiny_dlrm():
    """(model, test data): a small DLRM trained a few steps on synthetic data, one per test module."""
    from crossrec.data.synthetic import SyntheticConfig, generate
    from crossrec.models import ModelSpec, build
    from crossrec.train import TrainConfig, train

    data = generate(SyntheticConfig(rows=5000, num_sparse=6, max_rows=40, seed=3))
    tr, te = data.split((0.8, 0.2))
    model = build(ModelSpec.for_schema(data.schema, interaction="dot", embedding_dim=8, bottom_mlp=(16, 8),
                                       top_mlp=(32,)), seed=0)
    train(model, tr, None, TrainConfig(epochs=1, batch_size=256, max_steps=12, lr=3e-3, embedding_lr=3e-2))
    return model, te
