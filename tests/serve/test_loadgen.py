"""loadgen: size distributions, open vs closed loop behaviour, counting, JSONL, and a run over real sockets."""

from __future__ import annotations

import asyncio
import importlib
import io
import json
import socket

import httpx
import numpy as np
import pytest

from crossrec.artifact import save_artifact
from crossrec.errors import ConfigError, ServeError
from crossrec.runtime import load
from crossrec.serve.app import create_app
from crossrec.serve.codec import JSON_TYPE, NPZ_TYPE, RAW_TYPE, decode_npz, encode_response, parse_json, to_batch
from crossrec.serve.loadgen import LoadResult, SizeDistribution, aloadgen, loadgen, parse_priorities, schema_from_models
from crossrec.serve.plan import ServePlan
from crossrec.serve.policy import get_policy
from crossrec.serve.replica import Replica
from crossrec.serve.router import Router
from crossrec.serve.server import running

loadgen_module = importlib.import_module("crossrec.serve.loadgen")  # crossrec.serve.loadgen is also a function


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


class RecordingTransport(httpx.ASGITransport):
    """An ASGITransport that records each request's Content-Type / Accept and the answer's Content-Type."""

    def __init__(self, app):
        super().__init__(app=app)
        self.seen: list[tuple[str, str, str]] = []

    async def handle_async_request(self, request):
        response = await super().handle_async_request(request)
        if request.url.path == "/v1/predict":
            self.seen.append((request.headers.get("content-type", ""), request.headers.get("accept", ""),
                              response.headers.get("content-type", "")))
        return response


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
            result = await test(RecordingTransport(create_app(router, {"dlrm": data.schema})))
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

    seen = []

    async def recorded(transport):
        result = await test(transport)
        seen.extend(transport.seen)
        return result

    res, reached = with_app(dlrm, recorded, hold_until_items=20 * 5)
    assert reached and res.requests >= 20
    assert res.counts == {"200": res.requests} and res.ok == res.requests
    assert res.client == "httpx" and res.binary  # an injected transport runs on httpx
    # binary mode: npz bodies, raw float32 answers asked for and given
    assert {(c, a.split(",")[0], r) for c, a, r in seen} == {(NPZ_TYPE, RAW_TYPE, RAW_TYPE)}
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

    seen = []

    async def recorded(transport):
        result = await test(transport)
        seen.extend(transport.seen)
        return result

    # held until all 3 users' first requests are in, and then past the end of the run
    res, reached = with_app(dlrm, recorded, hold_until_items=3 * 4, then_s=0.3)
    assert reached and res.requests == 3  # each user sent one request and waited for it
    assert set(seen) == {(JSON_TYPE, JSON_TYPE, JSON_TYPE)}  # JSON mode: JSON both ways
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
        assert r.client == "raw-http"  # http:// URLs: the lean client
    assert res.model == "dlrm" and "items/s" in res.summary()


def test_every_client_drives_a_real_server_and_auto_picks_by_url(tiny_dlrm, tmp_path):
    model, data = tiny_dlrm
    path = save_artifact(tmp_path / "dlrm", model, data.schema)
    plan = ServePlan.for_artifact(path, count=1, catalog_device="epyc-zen5-2vcpu", slo_p99_ms=10_000.0)
    kind = loadgen_module._client_kind
    assert kind(None, "http://127.0.0.1:1") == "raw" and kind(None, "https://example.com") == "aiohttp"
    assert kind(httpx.MockTransport(lambda r: None), "http://x") == "httpx"  # an injected transport: httpx
    with pytest.raises(ConfigError, match="plain http:// only"):
        kind(None, "https://example.com", "raw")
    with pytest.raises(ConfigError, match="loadgen.client = 'curl' is invalid"):
        loadgen("http://127.0.0.1:1", client="curl")
    with running(plan, workers=False) as url:
        runs = {c: loadgen(url, mode="closed", concurrency=2, duration_s=0.3, size_dist="uniform:1:32", seed=4,
                           client=c) for c in ("raw", "aiohttp", "httpx")}
    for c, res in runs.items():
        assert res.client == {"raw": "raw-http"}.get(c, c)
        assert res.requests > 0 and res.counts == {"200": res.requests}, (c, res.errors)


def test_the_pool_is_encoded_in_the_format_in_use_only(dlrm):
    """Binary runs build npz bodies (no JSON: the costliest part of a client's start), JSON runs JSON;
    the same seed gives the same requests either way."""
    _, data = dlrm
    rng = lambda: np.random.default_rng(5)
    sizes = SizeDistribution.parse("uniform:1:9").sample(np.random.default_rng(0), 4)
    npz = loadgen_module._payloads(data.schema, sizes, rng(), binary=True)
    js = loadgen_module._payloads(data.schema, sizes, rng(), binary=False)
    for a, b, n in zip(npz, js, sizes.tolist()):
        assert a.items == b.items == n and a.body[:2] == b"PK" and b.body[:1] == b"["
        x = decode_npz(a.body, data.schema, max_items=100, max_decoded_bytes=2**20)
        y = to_batch(parse_json(b'{"model": "m", "instances": ' + b.body + b"}").instances, data.schema,
                     max_items=100)
        assert x.ids.tolist() == y.ids.tolist() and np.allclose(x.dense.numpy(), y.dense.numpy())


def test_binary_runs_count_json_answers_from_servers_without_binary_ones(dlrm):
    """A server that ignores Accept (the naive and Ray baselines answer JSON) is still measured, and a
    wrong number of predictions is a bad_response whatever the format."""
    _, data = dlrm
    short = {"by": 0}

    async def app(scope, receive, send):  # a JSON-only server: one prediction per npz row (minus `short`)
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        with np.load(io.BytesIO(body)) as z:
            items = z["dense"].shape[0] - short["by"]
        payload = encode_response("dlrm", "v0", "dlrm/naive", np.full(items, 0.5, np.float32), 0.0, 0.0)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": payload})

    def run():
        return asyncio.run(aloadgen("http://fake", mode="closed", concurrency=1, duration_s=0.1, size_dist="fixed:3",
                                    model="dlrm", schema=data.schema, transport=httpx.ASGITransport(app=app),
                                    pool_size=2))

    res = run()
    assert res.requests > 0 and res.counts == {"200": res.requests} and res.binary
    short["by"] = 1
    res = run()
    assert res.requests > 0 and res.counts == {"bad_response": res.requests}
    assert list(res.errors) == ["bad_response: # predictions"]
