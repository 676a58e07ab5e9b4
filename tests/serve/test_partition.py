"""Partitioned execution: the embedding/dense split equals the whole model; transfer cost is measured."""

from __future__ import annotations

import asyncio
import copy
import itertools
import os
import signal

import numpy as np
import pytest
import torch

from crossrec.artifact import save_artifact
from crossrec.data.batch import Batch
from crossrec.data.synthetic import SyntheticConfig
from crossrec.errors import ConfigError, DataError, ReplicaError
from crossrec.models import ModelSpec, TableSpec, build, quantize_dense_, quantize_embeddings_
from crossrec.serve.partition import (
    BatchTransfer,
    PartitionedReplica,
    TransferStats,
    dense_stage,
    embedding_stage,
    stage_handler,
)
from crossrec.serve.plan import ReplicaSpec

CPU = "epyc-zen5-2vcpu"
TABLES = (TableSpec(name="a", num_embeddings=11), TableSpec(name="b", num_embeddings=7),
          TableSpec(name="c", num_embeddings=5))


def _spec(interaction: str, **kw) -> ModelSpec:
    base = {"num_dense": 3, "tables": TABLES, "embedding_dim": 4, "bottom_mlp": (8, 4), "top_mlp": (8,),
            "interaction": interaction}
    return ModelSpec(**{**base, **kw})


def _jagged_batch(b: int = 9, seed: int = 0) -> Batch:
    """Multi-hot and empty bags, so pooling and offsets are exercised, not just one id per bag."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, 4, (b, len(TABLES)), generator=g)  # (B, F), zeros = missing bags
    cards = torch.tensor([t.num_embeddings for t in TABLES])
    feature = torch.arange(len(TABLES)).repeat(b).repeat_interleave(lengths.reshape(-1))
    ids = (torch.rand(feature.numel(), generator=g) * cards[feature]).long()
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.reshape(-1).cumsum(0)])
    return Batch(dense=torch.rand(b, 3, generator=g), ids=ids, offsets=offsets, num_sparse=len(TABLES))


SPECS = {
    "dot": _spec("dot"),
    "cross": _spec("cross", cross_layers=2),
    "deepfm": _spec("fm"),
    "fm": _spec("fm", top_mlp=()),
    "concat": _spec("concat"),
    "lr": _spec("lr", bottom_mlp=(), top_mlp=()),
    "dot-mixed-dims": _spec("dot", tables=(TABLES[0], TableSpec(name="b", num_embeddings=7, dim=2), TABLES[2])),
    "concat-mixed-dims": _spec("concat", tables=(TABLES[0], TableSpec(name="b", num_embeddings=7, dim=2),
                                                 TABLES[2])),
    "no-dense": _spec("dot", num_dense=0, bottom_mlp=()),
}


@pytest.mark.parametrize("name", list(SPECS))
def test_split_equals_the_whole_model(name):
    model = build(SPECS[name], seed=1).eval()
    batch = _jagged_batch()
    dense = batch.dense[:, : model.spec.num_dense]
    with torch.inference_mode():
        whole = model(dense, batch.ids, batch.offsets)
        mid = embedding_stage(model, batch.ids, batch.offsets, batch.batch_size)
        split = dense_stage(model, dense, **mid)
    torch.testing.assert_close(split, whole, rtol=0, atol=1e-6)
    assert ("first_order" in mid) == (model.spec.interaction in ("fm", "lr"))
    assert ("pooled" in mid) == (model.spec.interaction != "lr")


@pytest.mark.parametrize("dense_mode", ["bf16", "int8"])
def test_split_equals_the_whole_compressed_model(dense_mode):
    model = build(SPECS["dot"], seed=2).eval()
    quantize_embeddings_(model, "int8")
    quantize_dense_(model, dense_mode)
    batch = _jagged_batch(seed=3)
    with torch.inference_mode():
        whole = model(batch.dense, batch.ids, batch.offsets)
        split = dense_stage(model, batch.dense, **embedding_stage(model, batch.ids, batch.offsets, 9))
    torch.testing.assert_close(split, whole, rtol=0, atol=1e-6)


def test_stage_handlers_over_numpy_match_and_a_dense_worker_drops_the_tables():
    model = build(SPECS["deepfm"], seed=4).eval()
    batch = _jagged_batch(seed=5)
    embed = stage_handler(copy.deepcopy(model), "embedding")
    worker_model = copy.deepcopy(model)
    dense = stage_handler(worker_model, "dense")
    assert worker_model.embedding is None and worker_model.first_order is None  # no tables in the dense worker
    mid, copy_ms = embed("embed", {"batch_size": 9}, {"ids": batch.ids.numpy(), "offsets": batch.offsets.numpy()})
    assert mid["pooled"].shape == (9, 3, 4) and mid["first_order"].shape == (9, 1) and copy_ms >= 0
    out, _ = dense("dense", {}, {"dense": batch.dense.numpy(), **mid})
    np.testing.assert_allclose(out["probs"], model.predict_proba(batch).numpy(), atol=1e-6)
    with pytest.raises(ConfigError, match="options"):
        stage_handler(model, "dense", options={"dynamic": True})
    with pytest.raises(DataError, match="dense features"):
        dense("dense", {}, {"dense": np.zeros((9, 2), np.float32), **mid})
    bad = batch.ids.numpy().copy()
    bad[-1] = 10**6
    with pytest.raises(DataError, match="outside"):
        embed("embed", {"batch_size": 9}, {"ids": bad, "offsets": batch.offsets.numpy()})


def test_in_process_partitioned_replica_serves_and_measures_the_transfer():
    model = build(SPECS["deepfm"], seed=6).eval()
    ticks = itertools.count()
    replica = PartitionedReplica.in_process("m/cpu+cpu#0", "m", model, catalog_devices=(CPU, "h100-sxm"),
                                            profile_sizes=(1, 4), profile_repeats=1, clock=lambda: float(next(ticks)))
    batches = [_jagged_batch(9, seed=s) for s in range(3)]

    async def go():
        await replica.start()
        assert replica.transfer_stats().batches == 0  # the warm-up profile is not reported as traffic
        try:
            return [await replica.infer(b) for b in batches]
        finally:
            await replica.stop()

    outs = asyncio.run(go())
    for b, out in zip(batches, outs):
        np.testing.assert_allclose(out, model.predict_proba(b).numpy(), atol=1e-6)
    assert replica.device == "h100-sxm" and replica.devices == (CPU, "h100-sxm") and replica.pid is None
    # a timed profile call reads the clock twice around infer, which reads it twice itself: 3 ticks
    assert replica.latency_curve == {1: 3000.0, 4: 3000.0}
    stats = replica.transfer_stats()
    per_batch = 9 * 3 * 4 * 4 + 9 * 4  # pooled (B, F, D) float32 + first-order (B, 1) float32
    assert (stats.batches, stats.items, stats.transfer_bytes) == (3, 27, 3 * per_batch)
    assert stats.bytes_per_item == per_batch / 9 and stats.total_ms_p50 == 1000.0
    assert stats.transfer_ms_p50 + stats.embedding_ms_p50 + stats.dense_ms_p50 == pytest.approx(1000.0, rel=0.01)
    assert 0.9 < stats.transfer_fraction <= 1.0  # the fake clock makes 1 s batches out of µs of compute
    assert TransferStats.from_json(stats.to_json()) == stats
    assert replica.describe()["transfer"]["transfer_bytes"] == 3 * per_batch


def test_transfer_stats_summarize_batches():
    recs = [BatchTransfer(10, 1000, 1.0, 2.0, float(t), 3.0 + t) for t in (1, 2, 3, 10)]
    s = TransferStats.from_batches("cpu", "gpu", recs)
    assert (s.batches, s.items, s.transfer_bytes, s.window) == (4, 40, 4000, 4)
    assert s.transfer_ms_p50 == 2.5 and s.transfer_ms_mean == 4.0 and s.transfer_fraction == 16 / 28
    assert TransferStats.from_batches("cpu", "gpu", []).batches == 0


def test_partitioned_specs_must_share_an_artifact_and_run_eager(tmp_path):
    schema = SyntheticConfig(num_sparse=3, max_rows=5).schema()
    model = build(ModelSpec.for_schema(schema, embedding_dim=4))
    a = save_artifact(tmp_path / "a", model, schema)
    b = save_artifact(tmp_path / "b", model, schema)
    emb = ReplicaSpec(artifact=str(a), stage="embedding", catalog_device=CPU)
    with pytest.raises(ConfigError, match="one artifact"):
        PartitionedReplica.from_specs("m/p#0", "m", emb, ReplicaSpec(artifact=str(b), stage="dense"))
    with pytest.raises(ConfigError, match="eager"):
        PartitionedReplica.from_specs("m/p#0", "m", emb, ReplicaSpec(artifact=str(a), stage="dense",
                                                                      runtime="compiled", catalog_device=CPU))
    with pytest.raises(ConfigError, match="'embedding' and a 'dense'"):
        PartitionedReplica.from_specs("m/p#0", "m", emb, emb)


def test_partitioned_worker_processes_match_the_model_and_restart_the_dead_stage(tiny_dlrm, tmp_path):
    model, data = tiny_dlrm
    path = str(save_artifact(tmp_path / "dlrm", model, data.schema))
    replica = PartitionedReplica.from_specs(
        "dlrm/cpu+cpu#0", "dlrm", ReplicaSpec(artifact=path, stage="embedding", catalog_device=CPU),
        ReplicaSpec(artifact=path, stage="dense", catalog_device=CPU), timeout_s=2.0, profile_sizes=(1, 64),
        profile_repeats=1)
    batch = next(iter(data.batches(64)))

    async def go():
        await replica.start()
        try:
            emb_pid, dense_pid = replica.pids
            assert None not in (emb_pid, dense_pid) and emb_pid != dense_pid and replica.pid == dense_pid
            np.testing.assert_allclose(await replica.infer(batch), model.predict_proba(batch).numpy(), atol=1e-6)
            stats = replica.transfer_stats()
            assert stats.batches == 1 and stats.transfer_bytes == 64 * 6 * 8 * 4  # (B, F, D) float32, dim 8
            assert stats.transfer_ms_p50 > 0 and stats.embedding_ms_p50 > 0 and stats.dense_ms_p50 > 0

            os.kill(emb_pid, signal.SIGKILL)
            with pytest.raises(ReplicaError):
                await replica.infer(batch)
            assert not replica.alive()
            await replica.restart()  # only the dead stage comes back
            assert replica.alive() and replica.pids[0] != emb_pid and replica.pids[1] == dense_pid
            np.testing.assert_allclose(await replica.infer(batch), model.predict_proba(batch).numpy(), atol=1e-6)
        finally:
            await replica.stop()
        assert not replica.alive() and replica.pids == (None, None)

    asyncio.run(go())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_dense_stage_on_the_gpu_matches_the_cpu_model():
    model = build(SPECS["dot"], seed=7).eval()
    replica = PartitionedReplica.in_process("m/cpu+cuda#0", "m", model, dense_device="cuda", profile_sizes=(1, 64))
    batch = _jagged_batch(64, seed=8)

    async def go():
        await replica.start()
        try:
            return await replica.infer(batch)
        finally:
            await replica.stop()

    np.testing.assert_allclose(asyncio.run(go()), model.predict_proba(batch).numpy(), atol=1e-5)
    assert next(model.parameters()).device.type == "cpu"  # the stage moved a copy, not the caller's model
    assert replica.transfer_stats().transfer_bytes == 64 * 3 * 4 * 4
