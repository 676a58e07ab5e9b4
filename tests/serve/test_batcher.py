"""Batcher: priority classes, whole-request batching, max wait, SLO sizing, deadlines (fake clock)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from crossrec.data.batch import Batch
from crossrec.errors import ConfigError, DataError, DeadlineExceededError, ServeError
from crossrec.models import ModelSpec, TableSpec, build
from crossrec.runtime import load
from crossrec.serve.batcher import Batcher, QueuedRequest, merge_batches, split_rows
from crossrec.serve.plan import BatchingConfig


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def batch(n: int, *, num_sparse: int = 2, start: int = 0) -> Batch:
    ids = (torch.arange(n * num_sparse).reshape(n, num_sparse) + start) % 5
    return Batch.from_one_hot(torch.arange(n, dtype=torch.float32).reshape(n, 1) + start, ids)


def req(n: int, *, priority: int = 1, at: float = 0.0, deadline: float | None = None, loop=None) -> QueuedRequest:
    fut = loop.create_future() if loop is not None else None
    return QueuedRequest(batch=batch(n), priority=priority, arrival=at, deadline=deadline, future=fut)


def sizes(reqs) -> list[int]:
    return [r.items for r in reqs]


def test_waits_max_wait_then_sends_what_is_queued():
    clock = Clock()
    b = Batcher(BatchingConfig(max_batch_items=100, max_wait_ms=5.0), clock=clock)
    assert b.poll(0.0) == (None, None)  # empty: wait for a request
    b.put(req(10, at=0.0))
    clock.now = 0.001
    b.put(req(20, at=0.001))
    out, wait = b.poll(0.002)
    assert out is None and wait == pytest.approx(0.003)  # measured from the OLDEST request
    out, _ = b.poll(0.005)
    assert sizes(out) == [10, 20] and b.queued_items == 0 and len(b) == 0


def test_full_batch_goes_at_once_and_a_large_request_is_a_batch_alone():
    b = Batcher(BatchingConfig(max_batch_items=16, max_wait_ms=50.0), clock=Clock())
    b.put(req(40))
    b.put(req(6))
    out, _ = b.poll(0.0)
    assert sizes(out) == [40]  # never split: larger than the cap, it goes alone
    assert b.queued_items == 6 and b.poll(0.0)[0] is None


def test_cap_reached_exactly_dispatches():
    b = Batcher(BatchingConfig(max_batch_items=16, max_wait_ms=50.0), clock=Clock())
    b.put(req(6))
    assert b.poll(0.0)[0] is None
    b.put(req(10))
    assert sizes(b.poll(0.0)[0]) == [6, 10]


def test_priority_classes_and_fifo_without_overtaking():
    b = Batcher(BatchingConfig(max_batch_items=10, max_wait_ms=0.0, priority_classes=3), clock=Clock())
    for n, p in [(3, 2), (4, 1), (8, 1), (1, 1), (2, 0), (5, 0)]:
        b.put(req(n, priority=p))
    # class 0 first (2, 5); then class 1's head (4) would make 11 > 10: nothing may overtake it
    assert sizes(b.poll(0.0)[0]) == [2, 5]
    assert sizes(b.poll(0.0)[0]) == [4]  # 4 + 8 > 10; the 1 behind the 8 does not jump ahead
    assert sizes(b.poll(0.0)[0]) == [8, 1]
    assert sizes(b.poll(0.0)[0]) == [3]
    assert b.poll(0.0) == (None, None)


def test_invalid_priority_is_a_config_error():
    b = Batcher(BatchingConfig(priority_classes=2), clock=Clock())
    with pytest.raises(ConfigError, match="0 \\(most urgent\\) to 1"):
        b.put(req(1, priority=2))


def test_expired_requests_fail_without_being_batched():
    async def run():
        loop = asyncio.get_running_loop()
        b = Batcher(BatchingConfig(max_batch_items=100, max_wait_ms=10.0), clock=Clock())
        late, ok = req(5, deadline=0.004, loop=loop), req(7, loop=loop)
        b.put(late)
        b.put(ok)
        out, _ = b.poll(0.010)
        assert sizes(out) == [7] and b.queued_items == 0
        with pytest.raises(DeadlineExceededError, match="not computed"):
            late.future.result()

    asyncio.run(run())


def test_a_near_deadline_sends_the_batch_early():
    b = Batcher(BatchingConfig(max_batch_items=100, max_wait_ms=10.0), clock=Clock(),
                latency_curve={1: 1.0, 100: 2.0})
    b.put(req(4, at=0.0, deadline=0.005))
    out, wait = b.poll(0.0)
    # waiting longer than deadline - predicted latency (5 ms - ~1 ms) would miss the deadline
    assert out is None and wait == pytest.approx(0.005 - 0.00103, abs=1e-5)
    assert sizes(b.poll(0.0040)[0]) == [4]


def test_abandoned_requests_are_not_computed():
    async def run():
        loop = asyncio.get_running_loop()
        b = Batcher(BatchingConfig(max_batch_items=100, max_wait_ms=0.0), clock=Clock())
        gone, kept = req(3, loop=loop), req(4, loop=loop)
        b.put(gone)
        b.put(kept)
        gone.future.cancel()  # the caller disconnected
        assert sizes(b.poll(0.0)[0]) == [4] and b.queued_items == 0

    asyncio.run(run())


def test_slo_mode_sizes_the_batch_from_the_latency_curve():
    config = BatchingConfig(max_batch_items=4096, max_wait_ms=3.0, mode="slo")
    b = Batcher(config, clock=Clock(), slo_ms=25.0, latency_curve={1: 1.0, 1001: 11.0})
    # 2 x latency(cap) + 3 ms <= 25 ms  ->  latency(cap) <= 11 ms  ->  cap = 1001
    assert b.max_batch_items() == 1001
    b.slowdown = 2.0  # the replica runs twice as slow as profiled: half the batch
    assert b.max_batch_items() == 451
    b.latency_curve = {1: 30.0}  # cannot meet the SLO even at batch 1: still serve one at a time
    assert b.max_batch_items() == 1
    b.latency_curve = {}
    assert b.max_batch_items() == 4096  # no curve yet: the configured cap
    assert Batcher(BatchingConfig(max_batch_items=64, mode="slo"), slo_ms=25.0,
                   latency_curve={1: 0.1, 64: 0.5}).max_batch_items() == 64
    with pytest.raises(ConfigError, match="slo_ms"):
        Batcher(config)


def test_heterogeneous_curves_give_different_batch_sizes():
    config = BatchingConfig(max_batch_items=2048, max_wait_ms=1.0, mode="slo")
    cpu = Batcher(config, slo_ms=25.0, latency_curve={1: 0.2, 1024: 16.0})
    gpu = Batcher(config, slo_ms=25.0, latency_curve={1: 1.0, 1024: 2.0})
    assert cpu.max_batch_items() < 1024 < gpu.max_batch_items() == 2048


def test_remove_take_all_and_close():
    async def run():
        b = Batcher(BatchingConfig(max_batch_items=100, max_wait_ms=1000.0))
        r1, r2, r3 = req(1), req(2, priority=0), req(3)
        for r in (r1, r2, r3):
            b.put(r)
        assert b.remove(r1) and not b.remove(r1) and b.queued_items == 5
        assert sizes(b.take_all()) == [2, 3] and b.queued_items == 0
        b.put(r1)
        b.close()
        with pytest.raises(ServeError, match="closed"):
            b.put(req(1))
        assert sizes(await asyncio.wait_for(b.next_batch(), 1.0)) == [1]  # closed: flush without waiting
        assert await asyncio.wait_for(b.next_batch(), 1.0) == []

    asyncio.run(run())


def test_next_batch_wakes_on_put_and_honours_max_wait():
    async def run():
        b = Batcher(BatchingConfig(max_batch_items=8, max_wait_ms=20.0))
        task = asyncio.create_task(b.next_batch())
        await asyncio.sleep(0)
        loop = asyncio.get_running_loop()
        b.put(req(3, at=loop.time()))
        b.put(req(5, at=loop.time()))  # reaches the cap: no need to wait 20 ms
        assert sizes(await asyncio.wait_for(task, 1.0)) == [3, 5]

    asyncio.run(run())


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 40), st.integers(0, 2)), min_size=1, max_size=30), st.integers(1, 64))
def test_batches_keep_every_request_once_in_priority_fifo_order(requests, cap):
    b = Batcher(BatchingConfig(max_batch_items=cap, max_wait_ms=0.0), clock=Clock())
    queued = [req(n, priority=p) for n, p in requests]
    for r in queued:
        b.put(r)
    seen = []
    while (out := b.poll(0.0)[0]) is not None:
        assert sum(sizes(out)) <= cap or len(out) == 1
        seen += out
    assert sorted(map(id, seen)) == sorted(map(id, queued))  # each exactly once
    expected = sorted(queued, key=lambda r: r.priority)  # stable: FIFO within a class
    assert [id(r) for r in seen] == [id(r) for r in expected]


def test_merge_then_split_matches_per_request_predictions():
    spec = ModelSpec(num_dense=1, tables=(TableSpec(name="a", num_embeddings=5), TableSpec(name="b", num_embeddings=5)),
                     embedding_dim=4, bottom_mlp=(4,), top_mlp=(8,))
    rt = load(build(spec, seed=1), "eager")
    parts = [batch(3, start=0), batch(1, start=7), batch(4, start=2)]
    multi = Batch(dense=torch.ones(2, 1), ids=torch.tensor([0, 1, 2, 3, 4]), offsets=torch.tensor([0, 2, 2, 5, 5]),
                  num_sparse=2)  # multi-hot and empty bags shift correctly too
    parts.append(multi)
    merged = merge_batches(parts)
    got = split_rows(rt.predict(merged).numpy(), [p.batch_size for p in parts])
    for p, g in zip(parts, got):
        np.testing.assert_allclose(g, rt.predict(p).numpy(), rtol=1e-5, atol=1e-6)


def test_merge_and_split_reject_inconsistent_input():
    with pytest.raises(DataError, match="different feature counts"):
        merge_batches([batch(2, num_sparse=2), batch(2, num_sparse=3)])
    with pytest.raises(DataError):
        merge_batches([])
    with pytest.raises(ServeError, match="expected \\(5,\\)"):
        split_rows(np.zeros(4), [2, 3])
