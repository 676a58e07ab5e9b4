"""Synthetic planted-teacher data: deterministic, skewed, streamable, with a meaningful ceiling."""

import numpy as np
import pytest

from crossrec.data import load_cache
from crossrec.data.synthetic import CRITEO_KAGGLE_CARDINALITIES, SyntheticConfig, Teacher, chunks, generate, write_cache
from crossrec.errors import ConfigError
from crossrec.train import auc


def test_deterministic_by_seed_and_different_across_seeds():
    cfg = SyntheticConfig(rows=2000, num_sparse=5, max_rows=500, chunk_rows=700, seed=4)
    a, b = generate(cfg), generate(cfg)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.labels, b.labels)
    c = generate(SyntheticConfig(rows=2000, num_sparse=5, max_rows=500, chunk_rows=700, seed=5))
    assert not np.array_equal(a.ids, c.ids)


def test_criteo_shape_and_cap():
    cfg = SyntheticConfig(rows=10, max_rows=1000)
    assert cfg.schema().num_dense == 13 and cfg.schema().num_sparse == 26
    assert cfg.table_sizes() == tuple(min(n, 1000) for n in CRITEO_KAGGLE_CARDINALITIES)
    assert SyntheticConfig(rows=10, max_rows=None).table_sizes()[2] == 10131227


def test_ids_in_range_and_zipf_skewed():
    data = generate(SyntheticConfig(rows=20000, num_sparse=3, cardinalities=(1000, 1000, 50), max_rows=None))
    ids = data.ids.reshape(-1, 3)
    assert ids.min() >= 0 and ids[:, 0].max() < 1000 and ids[:, 2].max() < 50
    counts = np.sort(np.bincount(ids[:, 0], minlength=1000))[::-1]
    assert counts[:10].sum() > 0.2 * len(ids)  # a few hot rows carry much of the traffic
    uniform = generate(SyntheticConfig(rows=20000, num_sparse=1, cardinalities=(1000,), zipf_exponent=0.0))
    assert np.sort(np.bincount(uniform.ids, minlength=1000))[::-1][:10].sum() < 0.05 * 20000


def test_teacher_is_the_label_source():
    cfg = SyntheticConfig(rows=20000, num_sparse=6, max_rows=50, ctr=0.3, seed=1)
    data = generate(cfg)
    assert abs(data.ctr - 0.3) < 0.03
    ceiling = auc(data.labels, Teacher(cfg).logits(data))
    assert 0.75 < ceiling < 0.95
    shuffled = auc(data.labels, np.random.default_rng(0).permutation(Teacher(cfg).logits(data)))
    assert abs(shuffled - 0.5) < 0.03


def test_streaming_cache_equals_in_memory(tmp_path):
    cfg = SyntheticConfig(rows=1500, num_sparse=4, max_rows=40, chunk_rows=400)
    assert [len(c) for c in chunks(cfg)] == [400, 400, 400, 300]
    cached = write_cache(cfg, tmp_path / "cache")
    again = load_cache(tmp_path / "cache")
    mem = generate(cfg)
    for a in (cached, again):
        np.testing.assert_array_equal(np.asarray(a.ids), mem.ids)
        np.testing.assert_array_equal(np.asarray(a.dense), mem.dense)


def test_invalid_config():
    with pytest.raises(ConfigError, match="ctr"):
        SyntheticConfig(ctr=1.5)
    with pytest.raises(ConfigError, match="cardinalities"):
        SyntheticConfig(num_sparse=2, cardinalities=(3,))
