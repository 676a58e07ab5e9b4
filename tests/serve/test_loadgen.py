"""loadgen: size distributions, open vs closed loop behaviour, counting, JSONL, and a run over real sockets."""

from __future__ import annotations

import asyncio
import json
import socket

import httpx
import numpy as np
import pytest

from crossrec.artifact import save_artifact
from crossrec.errors import ConfigError, ServeError
from crossrec.runtime import load
from crossrec.serve.app import create_app
from crossrec.serve.loadgen import LoadResult, SizeDistribution, aloadgen, loadgen, parse_priorities, schema_from_models
from crossrec.serve.plan import ServePlan
from crossrec.serve.policy import get_policy
from crossrec.serve.replica import Replica
from crossrec.serve.router import Router
from crossrec.serve.server import running


class GatedReplica(Replica):
    """A real model behind an optional gate (batches wait until it opens); counts priorities it served."""

    def __init__(self, name, runtime):
        super().__init__(name, "dlrm", device="epyc-zen5-2vcpu", runtime="eager", version="v1")
        self.rt, self.gate, self.batches = runtime, None, 0
        self.latency_curve = {1: 0.05, 64: 0.5}
        self._alive = False

    async def start(self):
        self._alive = True

    async def infer(self, batch):
        if self.gate is not None:
            await self.gate.wait()
        self.batches += 1
        return self.rt.predict(batch).numpy()

    async def restart(self):
        self._alive = True

    async def stop(self):
        self._alive = False

    def alive(self):
        return self._alive


@pytest.fixture(scope="module")
def dlrm(tiny_dlrm):
    model, data = tiny_dlrm
    return load(model, "eager"), data


def with_app(dlrm, test, *, hold_until_items=None, then_s=0.0, replicas=2):
    """Run ``test(transport)`` against the real app + router in-process. With ``hold_until_items``, every
    batch waits at a gate until that many items are outstanding at the router (+ ``then_s``); returns
    (result, whether that many items were ever outstanding)."""
    rt, data = dlrm

    async def main():
        reps = [GatedReplica(f"dlrm/cpu#{i}", rt) for i in range(replicas)]
        router = Router({"dlrm": reps}, get_policy("least-outstanding"), admission_slo_factor=None,
                        replica_timeout_s=30.0)
        await router.start()
        try:
            opener = None
            if hold_until_items is not None:
                gate = asyncio.Event()
                for r in reps:
                    r.gate = gate
                opener = asyncio.create_task(open_when(router, gate, hold_until_items, then_s))
            result = await test(httpx.ASGITransport(app=create_app(router, {"dlrm": data.schema})))
            return result, (await opener if opener is not None else None)
        finally:
            await router.stop()

    return asyncio.run(main())


async def open_when(router, gate, items, then_s, limit_s=20.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + limit_s
    outstanding = lambda: sum(r["outstanding_items"] for r in router.models()["dlrm"]["replicas"])
    while outstanding() < items and loop.time() < end:
        await asyncio.sleep(0.005)
    reached = outstanding() >= items
    await asyncio.sleep(then_s)
    gate.set()
    return reached


def test_size_distributions():
    rng = np.random.default_rng(0)
    mlperf = SizeDistribution.parse("mlperf").sample(rng, 20_000)
    assert mlperf.min() >= 1 and mlperf.max() <= 700 and abs(mlperf.mean() - 300) < 10
    assert 250 < np.median(mlperf) < 330 and np.percentile(mlperf, 99) > 550  # a real tail of big queries
    assert set(SizeDistribution.parse("fixed:7").sample(rng, 50).tolist()) == {7}
    uniform = SizeDistribution.parse("uniform:3:5").sample(rng, 500)
    assert set(uniform.tolist()) == {3, 4, 5}
    for bad in ("fixed", "fixed:0", "fixed:x", "uniform:5:3", "uniform:1", "zipf", "mlperf:3", "fixed:1:2"):
        with pytest.raises(ConfigError, match="size_dist"):
            SizeDistribution.parse(bad)


def test_priorities_and_argument_checks():
    assert parse_priorities(None) == {1: 1.0}
    assert parse_priorities({0: 1, 2: 1}) == {0: 0.5, 2: 0.5}
    for bad in ("0:x", "3:1", "0:0", "", "0:-1"):
        with pytest.raises(ConfigError, match="priorities"):
            parse_priorities(bad)
    for kwargs, field in (({"mode": "burst"}, "mode"), ({"rate_qps": 0}, "rate_qps"),
                          ({"duration_s": 0}, "duration_s"), ({"mode": "closed", "concurrency": 0}, "concurrency")):
        with pytest.raises(ConfigError, match=field):
            loadgen("http://127.0.0.1:1", **kwargs)


def test_schema_from_models():
    doc = {"models": {"a": {"features": {"dense": ["x"], "sparse": [{"name": "c", "num_embeddings": 3,
                                                                       "multi_hot": False}]}}, "b": {}}}
    name, schema = schema_from_models(doc, "a")
    assert name == "a" and schema.dense == ("x",) and schema.cardinalities == (3,)
    with pytest.raises(ConfigError, match="serves 2 models"):
        schema_from_models(doc, None)
    with pytest.raises(ConfigError, match="no model 'z'"):
        schema_from_models(doc, "z")
    with pytest.raises(ConfigError, match="no usable features"):
        schema_from_models(doc, "b")
    with pytest.raises(ConfigError, match="crossrec server"):
        schema_from_models(["not", "a", "mapping"], None)


def test_open_loop_keeps_sending_while_answers_are_held_and_writes_jsonl(dlrm, tmp_path):
    """Open loop: Poisson arrivals do not wait for answers. Every batch is held until 20 requests are
    outstanding — a client that waited for its answers would never get there — then all are answered."""
    out = tmp_path / "requests.jsonl"

    async def test(transport):
        return await aloadgen("http://test", mode="open", rate_qps=200, duration_s=0.3, size_dist="fixed:5",
                              priorities="0:1", seed=1, jsonl=out, transport=transport, pool_size=8)

    res, reached = with_app(dlrm, test, hold_until_items=20 * 5)
    assert reached and res.requests >= 20
    assert res.counts == {"200": res.requests} and res.ok == res.requests
    assert res.items_ok == 5 * res.ok and res.throughput_items_s > 0
    assert res.p50_ms <= res.p95_ms <= res.p99_ms <= res.max_ms
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == res.requests + 1 and lines[-1]["kind"] == "summary"
    assert LoadResult.from_dict({k: v for k, v in lines[-1].items() if k != "kind"}) == res
    reqs = lines[:-1]
    assert all(r["status"] == "200" and r["items"] == 5 and r["priority"] == 0 for r in reqs)
    assert [r["t_s"] for r in reqs] == sorted(r["t_s"] for r in reqs)
    # latency counts from the scheduled send: the first request was held until the 20th had arrived
    assert reqs[0]["latency_ms"] >= (reqs[19]["t_s"] - reqs[0]["t_s"]) * 1e3


def test_closed_loop_users_wait_for_their_answers(dlrm):
    async def test(transport):
        return await aloadgen("http://test", mode="closed", concurrency=3, duration_s=0.2, size_dist="fixed:4",
                              binary=False, transport=transport, pool_size=4)

    # held until all 3 users' first requests are in, and then past the end of the run
    res, reached = with_app(dlrm, test, hold_until_items=3 * 4, then_s=0.3)
    assert reached and res.requests == 3  # each user sent one request and waited for it
    assert res.counts == {"200": 3} and res.concurrency == 3 and res.offered_qps is None


def test_refusals_are_counted_not_hidden(dlrm):
    async def test(transport):
        return await aloadgen("http://test", mode="closed", concurrency=2, duration_s=0.15, size_dist="fixed:3",
                              deadline_ms=1e-6, transport=transport, pool_size=2)

    res, _ = with_app(dlrm, test)
    assert res.requests > 0 and res.counts == {"504": res.requests} and res.ok == 0
    assert res.p99_ms is None and res.throughput_items_s == 0.0
    (error,) = res.errors
    assert error.startswith("504: the deadline passed")


def test_an_unreachable_server_is_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(ServeError, match="is the server up"):
            loadgen(f"http://127.0.0.1:{port}", duration_s=0.1, timeout_s=2)


def test_loadgen_against_the_real_server(tiny_dlrm, tmp_path):
    model, data = tiny_dlrm
    path = save_artifact(tmp_path / "dlrm", model, data.schema)
    plan = ServePlan.for_artifact(path, count=1, catalog_device="epyc-zen5-2vcpu", slo_p99_ms=10_000.0)
    with running(plan, workers=False) as url:
        res = loadgen(url, mode="closed", concurrency=4, duration_s=0.5, size_dist="uniform:1:64", seed=3,
                      priorities="0:1,1:2,2:1")
        json_res = loadgen(url, mode="open", rate_qps=50, duration_s=0.3, size_dist="fixed:2", binary=False)
    for r in (res, json_res):
        assert r.requests > 0 and r.counts == {"200": r.requests}, r.errors
        assert LoadResult.from_json(r.to_json()) == r
    assert res.model == "dlrm" and "items/s" in res.summary()
