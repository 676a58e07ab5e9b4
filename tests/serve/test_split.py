"""Splitting a big request across idle replicas: exact answers in row order, only when replicas are idle,
and a failing part fails the request without leaking the other part."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
import torch

from crossrec.errors import ConfigError, DataError
from crossrec.models import ModelSpec, TableSpec, build
from crossrec.runtime import load
from crossrec.runtime.script import probe_batch
from crossrec.serve.batcher import merge_batches, split_batch
from crossrec.serve.plan import BatchingConfig, RoutingConfig
from crossrec.serve.policy import get_policy
from crossrec.serve.replica import InProcessReplica
from crossrec.serve.router import Router

SPEC = ModelSpec(num_dense=3, tables=(TableSpec(name="a", num_embeddings=20), TableSpec(name="b", num_embeddings=9)),
                 embedding_dim=4, bottom_mlp=(8, 4), top_mlp=(8,))
CARDS = [t.num_embeddings for t in SPEC.tables]


@pytest.fixture(scope="module")
def runtime():
    return load(build(SPEC, seed=0), "eager")


class Recording:
    """A runtime that records the batch sizes it computed and can be held (``hold.clear()``)."""

    def __init__(self, rt):
        self.rt, self.spec, self.seen = rt, rt.spec, []
        self.hold = threading.Event()
        self.hold.set()

    def predict(self, batch):
        self.hold.wait(10)
        self.seen.append(batch.batch_size)
        return self.rt.predict(batch)


def replicas(runtime, n=2):
    recs = [Recording(runtime) for _ in range(n)]
    return [InProcessReplica(f"dlrm/cpu#{i}", "dlrm", r, profile_sizes=()) for i, r in enumerate(recs)], recs


def jagged(n: int, seed: int = 0):
    return probe_batch(SPEC.num_dense, tuple(CARDS), n, seed=seed)  # empty and multi-hot bags


def make(replicas, split_items):
    return Router({"dlrm": replicas}, get_policy("least-outstanding"), split_items=split_items,
                  batching=BatchingConfig(max_batch_items=512, max_wait_ms=0.0))


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_split_batch_inverts_merge_batches():
    b = jagged(11, seed=3)
    parts = split_batch(b, [4, 7])
    assert [p.batch_size for p in parts] == [4, 7]
    back = merge_batches(parts)
    for name in ("dense", "ids", "offsets"):
        assert torch.equal(getattr(back, name), getattr(b, name))
    with pytest.raises(DataError, match="sum to the batch's 11 rows"):
        split_batch(b, [4, 4])


def test_a_big_request_is_split_across_idle_replicas_and_joined_in_order(runtime):
    reps, recs = replicas(runtime)
    batch = jagged(41, seed=1)

    async def main():
        async with make(reps, 16) as router:
            return await router.predict("dlrm", batch)

    res = run(main())
    np.testing.assert_allclose(res.probabilities, runtime.predict(batch).numpy(), rtol=1e-5, atol=1e-6)
    assert sorted(recs[0].seen + recs[1].seen) == [20, 21] and res.replica.count("+") == 1
    assert res.version == "local"


def test_no_split_for_small_requests_busy_replicas_or_when_off(runtime):
    async def one(split_items, n, busy=False):
        reps, recs = replicas(runtime)
        async with make(reps, split_items) as router:
            blocker = None
            if busy:  # one replica holds a request: only one idle replica is left
                for r in recs:
                    r.hold.clear()
                blocker = asyncio.create_task(router.predict("dlrm", jagged(3, seed=9)))
                slots = router._deployments["dlrm"].slots
                while not any(s.in_flight for s in slots):
                    await asyncio.sleep(0.001)
                busy_i = next(i for i, s in enumerate(slots) if s.in_flight)
                recs[1 - busy_i].hold.set()
            res = await router.predict("dlrm", jagged(n, seed=2))
            for r in recs:
                r.hold.set()
            if blocker is not None:
                await blocker
        return res, recs

    res, recs = run(one(16, 31))  # 31 < 2 x 16
    assert "+" not in res.replica and sorted(recs[0].seen + recs[1].seen) == [31]
    res, recs = run(one(None, 200))
    assert "+" not in res.replica
    res, recs = run(one(16, 64, busy=True))
    assert "+" not in res.replica and sorted(recs[0].seen + recs[1].seen) == [3, 64]


def test_a_failing_part_fails_the_request_and_the_router_stays_usable(runtime):
    reps, _ = replicas(runtime)
    batch = jagged(40, seed=4)
    batch.ids[-1] = 25  # out of range for table a or b: the second part's replica raises DataError

    async def main():
        async with make(reps, 16) as router:
            with pytest.raises(DataError):
                await router.predict("dlrm", batch)
            good = jagged(40, seed=5)
            res = await router.predict("dlrm", good)
            np.testing.assert_allclose(res.probabilities, runtime.predict(good).numpy(), rtol=1e-5, atol=1e-6)
            assert router._admitted_items == 0

    run(main())


def test_routing_config_split_items_is_checked():
    with pytest.raises(ConfigError, match="split_items"):
        RoutingConfig(split_items=0)
    with pytest.raises(ConfigError, match="split_items"):
        Router({"dlrm": replicas(load(build(SPEC, seed=0), "eager"), 1)[0]}, get_policy("round-robin"),
               split_items=-3)
