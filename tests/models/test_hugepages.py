"""Tables moved into huge pages predict exactly as before; small tables and other platforms stay put."""

import copy

import pytest
import torch

from crossrec.compress import EmbeddingQuantConfig, compress_
from crossrec.data.batch import Batch
from crossrec.models import ModelSpec, TableSpec, build
from crossrec.models.hugepages import advise_tables_, hugepage_copy, thp_mode

needs_thp = pytest.mark.skipif(thp_mode() not in ("always", "madvise"),
                               reason=f"transparent huge pages are {thp_mode()!r} here")
SPEC = ModelSpec(num_dense=2, tables=(TableSpec(name="big", num_embeddings=200_000), TableSpec(name="small",
                 num_embeddings=10)), embedding_dim=16, bottom_mlp=(8, 16), top_mlp=(8,))


def _batch():
    g = torch.Generator().manual_seed(0)
    return Batch.from_one_hot(torch.randn(64, 2, generator=g),
                              torch.stack([torch.randint(0, 200_000, (64,), generator=g),
                                           torch.randint(0, 10, (64,), generator=g)], 1))


@needs_thp
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_tables_move_and_predictions_do_not_change(precision):
    model = build(SPEC, seed=0).eval()
    if precision != "fp32":
        model = compress_(model, EmbeddingQuantConfig(precision=precision))
    b = _batch()
    before = model.predict_proba(b)
    table = model.embedding.bags[0].weight
    old_ptr, nbytes = table.data_ptr(), table.numel() * table.element_size()
    moved = advise_tables_(model, min_bytes=1 << 20)
    assert moved == nbytes  # one fused table, over the threshold
    assert model.embedding.bags[0].weight.data_ptr() != old_ptr
    assert torch.equal(model.predict_proba(b), before)
    assert torch.equal(copy.deepcopy(model).predict_proba(b), before)  # deepcopy is ordinary memory
    assert isinstance(model.embedding.bags[0].weight, torch.Tensor) and "weight" in dict(
        model.embedding.bags[0].named_buffers() if precision != "fp32" else model.embedding.bags[0].named_parameters())


def test_nothing_under_the_threshold_moves():
    model = build(SPEC, seed=0)
    assert advise_tables_(model, min_bytes=1 << 40) == 0


def test_off_linux_or_without_thp_nothing_moves(monkeypatch):
    import crossrec.models.hugepages as hp

    monkeypatch.setattr(hp, "thp_mode", lambda: "never")
    assert hugepage_copy(torch.ones(4)) is None
    assert advise_tables_(build(SPEC, seed=0), min_bytes=1) == 0


@needs_thp
@pytest.mark.parametrize("runtime", ["eager", "script"])
def test_runtimes_take_the_tables_into_huge_pages_on_request(runtime):
    from crossrec.runtime import load

    big = ModelSpec(num_dense=2, tables=(TableSpec(name="big", num_embeddings=600_000),  # 38 MB: over 32 MiB
                                         TableSpec(name="small", num_embeddings=10)),
                    embedding_dim=16, bottom_mlp=(8, 16), top_mlp=(8,))
    model = build(big, seed=0).eval()
    b = _batch()
    before = model.predict_proba(b)
    rt = load(model, runtime, hugepages=True)
    table = model.embedding.bags[0].weight
    assert rt.info["hugepages_bytes"] == table.numel() * table.element_size()
    torch.testing.assert_close(rt.predict(b), before, atol=1e-6, rtol=0)
    assert load(build(SPEC, seed=0), runtime).info["hugepages_bytes"] == 0
