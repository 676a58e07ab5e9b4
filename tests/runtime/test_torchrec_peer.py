"""benchmarks/torchrec_peer.py: TorchRec's (int8) EmbeddingBagCollection + crossrec's dense half, the issue #3 peer.

TorchRec is an optional extra (not installed in CI): the module skips without it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from crossrec.data.batch import Batch
from crossrec.errors import ConfigError
from crossrec.models import ModelSpec, TableSpec, build
from crossrec.runtime.script import one_hot_probe, probe_batch

pytest.importorskip("torchrec", reason="TorchRec is an optional extra (make torchrec); the TorchRec peer is untested "
                                       "without it")

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "torchrec_peer.py"
_spec = importlib.util.spec_from_file_location("torchrec_peer", _PATH)
tp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tp)

if not tp.torchrec_available():
    pytest.skip("torchrec imports but FBGEMM's CPU ops do not load (built for another torch?)", allow_module_level=True)


def _batches(model) -> list[Batch]:
    spec = model.spec
    rows = tuple(t.num_embeddings for t in spec.tables)
    return [one_hot_probe(spec.num_dense, rows, 16, seed=1), probe_batch(spec.num_dense, rows, 9, seed=2),
            probe_batch(spec.num_dense, rows, 1, seed=3)]


@torch.no_grad()
def _logits(m, b: Batch) -> torch.Tensor:
    return m(b.dense, b.ids, b.offsets)


@pytest.fixture(scope="module")
def peers(tiny_dlrm):
    model, _ = tiny_dlrm
    model.eval()
    return model, tp.torchrec_peer(model, weights="fp32"), tp.torchrec_int8_peer(model)


def test_kjt_is_feature_major():
    model = build(ModelSpec(num_dense=1, tables=(TableSpec(name="a", num_embeddings=9),
                                                 TableSpec(name="b", num_embeddings=9)), embedding_dim=4,
                            bottom_mlp=(4,), top_mlp=(4,)), seed=0)
    peer = tp.torchrec_peer(model, weights="fp32")
    # sample-major bags: s0 a={1}, s0 b={}, s1 a={2, 3}, s1 b={4}
    kjt = peer.kjt(torch.tensor([1, 2, 3, 4]), torch.tensor([0, 1, 1, 3, 4]), batch_size=2)
    assert kjt.keys() == ["f0", "f1"]
    assert kjt.values().tolist() == [1, 2, 3, 4]
    assert kjt.lengths().tolist() == [1, 2, 0, 1]  # a: s0, s1; b: s0, s1


def test_fp32_peer_reproduces_the_model(peers):
    model, fp32, _ = peers
    for b in _batches(model):
        torch.testing.assert_close(_logits(fp32, b), _logits(model, b), atol=1e-5, rtol=1e-5)


def test_fp32_peer_copies_the_tables(peers):
    model, fp32, _ = peers
    w = fp32.ebc.embedding_bags["t0"].weight
    assert torch.equal(w, model.embedding.table_weight(0))
    assert w.untyped_storage().data_ptr() != model.embedding.table_weight(0).untyped_storage().data_ptr()


def test_int8_peer_is_close_to_the_model(peers):
    model, _, int8 = peers
    for b in _batches(model):
        p, q = torch.sigmoid(_logits(model, b)), torch.sigmoid(_logits(int8, b))
        torch.testing.assert_close(q, p, atol=0.05, rtol=0)
        assert not torch.equal(q, p)  # the tables really were quantized


def _dequantized_tables(int8) -> list[torch.Tensor]:
    (tbe,) = int8.ebc._emb_modules  # one TBE: every table has sum pooling
    return [w.float() * s.float() + bias.float()  # row-wise: one fp16 scale and bias per row
            for w, s, bias in tbe.split_embedding_weights_with_scale_bias(split_scale_bias_mode=2)]


def test_int8_peer_looks_up_its_own_int8_rows(peers):
    # the int8 path's conversion is exact: the pooled output equals sums of its dequantized rows
    model, _, int8 = peers
    tables = _dequantized_tables(int8)
    b = probe_batch(model.spec.num_dense, tuple(t.num_embeddings for t in model.spec.tables), 7, seed=4)
    f = len(tables)
    with torch.no_grad():
        pooled = int8.ebc(int8.kjt(b.ids, b.offsets, 7)).values().view(7, f, -1)
    bag = torch.repeat_interleave(torch.arange(7 * f), b.offsets.diff())  # sample-major bag of each id
    expected = torch.zeros(7 * f, pooled.shape[-1])
    for i in range(b.ids.numel()):  # a plain reference: one id at a time
        expected[bag[i]] += tables[int(bag[i]) % f][b.ids[i]]
    torch.testing.assert_close(pooled.reshape(7 * f, -1), expected, atol=1e-5, rtol=1e-5)
    for t, table in enumerate(tables):  # rounding to 8 bits: within half a step of the fp32 rows
        w = model.embedding.table_weight(t)
        step = (w.amax(1) - w.amin(1)) / 255
        assert bool(((table - w).abs() <= step[:, None] * 0.5 + 2e-3).all())


def test_int8_peer_stores_int8_tables(peers):
    model, fp32, int8 = peers
    state = int8.ebc.state_dict()
    dims = model.embedding.dims
    assert len(state) == len(dims)
    for f, d in enumerate(dims):
        w = state[f"embedding_bags.t{f}.weight"]
        assert w.dtype == torch.uint8
        # d int8 codes + fp16 scale and bias, rows padded to 16 bytes by FBGEMM
        assert w.shape == (model.embedding.num_embeddings[f], -(-(d + 4) // 16) * 16)
    table_bytes = sum(n * d * 4 for n, d in zip(model.embedding.num_embeddings, dims))
    dense_bytes = tp.state_bytes(int8.dense)
    assert dense_bytes == tp.state_bytes(fp32.dense) > 0
    assert tp.state_bytes(fp32) == table_bytes + dense_bytes
    int8_tables = tp.state_bytes(int8) - dense_bytes
    assert sum(n for n in model.embedding.num_embeddings) * 16 <= int8_tables < table_bytes * 0.6


def test_peer_does_not_change_the_model(tiny_dlrm):
    model, _ = tiny_dlrm
    before = {k: v.clone() for k, v in model.state_dict().items()}
    peer = tp.torchrec_int8_peer(model)
    assert peer.dense.embedding is None  # the dense half holds no table
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_mixed_dims_with_projection():
    spec = ModelSpec(num_dense=2, tables=(TableSpec(name="a", num_embeddings=20, dim=4),
                                          TableSpec(name="b", num_embeddings=30),
                                          TableSpec(name="c", num_embeddings=10, dim=4)),
                     embedding_dim=8, bottom_mlp=(8,), top_mlp=(8,))
    model = build(spec, seed=1).eval()
    peer = tp.torchrec_peer(model, weights="fp32")
    for b in _batches(model):
        torch.testing.assert_close(_logits(peer, b), _logits(model, b), atol=1e-5, rtol=1e-5)


def test_rejects_models_it_cannot_mirror(tiny_dlrm):
    model, _ = tiny_dlrm
    with pytest.raises(ConfigError, match="weights"):
        tp.torchrec_peer(model, weights="int3")
    fm = build(ModelSpec(num_dense=2, tables=(TableSpec(name="a", num_embeddings=5),), interaction="fm",
                         embedding_dim=4, bottom_mlp=(4,), top_mlp=(4,)))
    with pytest.raises(ConfigError, match="first-order"):
        tp.torchrec_peer(fm)
    with pytest.raises(ConfigError, match="CTRModel"):
        tp.torchrec_peer(torch.nn.Linear(2, 2))
