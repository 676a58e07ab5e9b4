"""Fixtures for the search suite: a tiny synthetic data set and a tiny search config.

Tiny models train fastest on one thread: on shared cores, idle OpenMP threads spinning cost ~10x.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from crossrec.data.sources import SPLIT, Splits
from crossrec.data.synthetic import SyntheticConfig, generate
from crossrec.search import SearchConfig


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def tiny_splits() -> Splits:
    """1500 rows, 2 dense and 4 sparse features (tables of <= 30 rows)."""
    data = generate(SyntheticConfig(rows=1500, num_dense=2, num_sparse=4, max_rows=30, seed=5))
    return Splits(*data.split(SPLIT, seed=0))


TINY_SPACE = {"embedding_dims": [0, 4, 8], "interaction_dims": [4, 8], "cross_layers": [1, 2],
              "bottom_depths": [0, 1], "bottom_widths": [8, 16], "top_depths": [0, 1, 2], "top_widths": [8, 16],
              "table_precisions": ["fp32", "int8", "int4"], "dense_precisions": ["fp32", "bf16", "int8"]}


def tiny_config(out, **overrides) -> SearchConfig:
    """A search config that runs a trial in well under a second (modeled latency, a few steps)."""
    base = {"name": "tiny", "space": TINY_SPACE, "devices": ["h100-sxm", "alveo-u280"], "n_trials": 4,
            "strategy": {"name": "random", "population_size": 3, "tournament_size": 2},
            "proxy": {"train": {"epochs": 1, "max_steps": 3, "batch_size": 256, "lr": 0.003, "embedding_lr": 0.03}},
            "latency": {"batch_size": 64}, "baseline": {"embedding_dim": 4, "bottom_mlp": [8, 4], "top_mlp": [8]},
            "out": str(out), "seed": 0}
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return SearchConfig.from_dict(base)


@pytest.fixture
def fast_tmp(tmp_path):
    """A temporary folder in RAM where there is one: every Optuna trial commits to SQLite a dozen
    times, and each commit's fsync costs ~10 ms on a busy disk."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(prefix="crossrec-search-", dir=shm))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def make_config(fast_tmp):
    return lambda sub="run", **kw: tiny_config(fast_tmp / sub, **kw)
