"""The HTTP front over a real Router and real replicas: status mapping, limits, admin swap, the server.

App tests talk to the ASGI app in-process (httpx.ASGITransport, no sockets); server tests start the
real uvicorn server on a free loopback port. Replicas compute with a real trained tiny DLRM; faults
(a gate that holds batches, a crash) are switched on inside the replica, never in the router or app.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import multiprocessing
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest

from crossrec.artifact import save_artifact
from crossrec.config import dump
from crossrec.errors import ArtifactError, ConfigError, ReplicaError, ServeError
from crossrec.models import build
from crossrec.runtime import load
from crossrec.serve.app import create_app, status_of
from crossrec.serve.codec import JSON_TYPE, NPZ_TYPE, RAW_TYPE, decode_predictions, encode_npz, instances_from_arrays
from crossrec.serve.loadgen import loadgen
from crossrec.serve.plan import AdmissionConfig, ServePlan
from crossrec.serve.policy import get_policy
from crossrec.serve.replica import Replica
from crossrec.serve.router import Router
from crossrec.serve.server import ServerHandle, running, serve

TOKEN = "s3cret-token"


class ModelReplica(Replica):
    """Computes with a real runtime in the event loop; ``gate`` holds batches, ``crash`` fails them."""

    def __init__(self, name: str, runtime, *, version: str = "v1"):
        super().__init__(name, "dlrm", device="epyc-zen5-2vcpu", runtime="eager", version=version)
        self.rt = runtime
        self.latency_curve = {1: 0.05, 64: 0.5}  # preset: no warm-up profile in tests
        self.gate: asyncio.Event | None = None
        self.entered = 0
        self.crash = False
        self._alive = False

    async def start(self) -> None:
        self._alive = True

    async def infer(self, batch):
        self.entered += 1
        if self.crash:
            raise ReplicaError(f"{self.name} crashed")
        if self.gate is not None:
            await self.gate.wait()
        return self.rt.predict(batch).numpy()

    async def restart(self) -> None:
        self._alive = True

    async def stop(self) -> None:
        self._alive = False

    def alive(self) -> bool:
        return self._alive


@pytest.fixture(scope="module")
def dlrm(tiny_dlrm):
    model, data = tiny_dlrm
    return load(model, "eager"), data


def arrays(data, n: int, start: int = 0):
    b = data.slice(start, start + n).to_batch()
    return b.dense.numpy(), b.ids.numpy(), b.offsets.numpy(), b


def json_body(data, n: int, **head) -> bytes:
    dense, ids, offsets, _ = arrays(data, n)
    doc = {"model": "dlrm", **head, "instances": instances_from_arrays(data.schema, dense, ids, offsets)}
    return json.dumps(doc).encode()


def run_app(dlrm, test, *, replicas=None, limits=None, router_kw=None, fast_lane=True, **app_kw):
    """Start a Router over ``replicas`` (default: two healthy ones), build the app, run ``test(client, router,
    replicas)`` against it in-process, stop the router. ``fast_lane=False``: /v1/predict through FastAPI."""
    rt, data = dlrm

    async def main():
        reps = replicas if replicas is not None else [ModelReplica(f"dlrm/cpu#{i}", rt) for i in range(2)]
        router = Router({"dlrm": reps}, get_policy("least-outstanding"), admission_slo_factor=None,
                        **(router_kw or {}))
        await router.start()
        try:
            app = create_app(router, {"dlrm": data.schema}, limits=limits, **app_kw)
            if not fast_lane:
                app.fast_predict = None
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return await test(client, router, reps)
        finally:
            await router.stop()

    return asyncio.run(main())


def expect_error(resp: httpx.Response, status: int, needle: str = "") -> dict:
    assert resp.status_code == status, resp.text
    doc = resp.json()
    assert isinstance(doc["detail"], str) and doc["detail"] and needle in doc["detail"], doc
    return doc


def test_json_and_npz_predictions_equal_the_models_own(dlrm):
    rt, data = dlrm
    dense, ids, offsets, batch = arrays(data, 7)
    expected = rt.predict(batch).numpy()

    async def test(client, router, reps):
        r1 = await client.post("/v1/predict", content=json_body(data, 7, priority=0, deadline_ms=5000),
                               headers={"content-type": "application/json"})
        r2 = await client.post("/v1/predict", content=encode_npz(dense, ids, offsets),
                               params={"model": "dlrm", "priority": 2}, headers={"content-type": NPZ_TYPE})
        return r1, r2

    for resp in run_app(dlrm, test):
        assert resp.status_code == 200, resp.text
        doc = resp.json()
        assert set(doc) == {"model", "version", "replica", "predictions", "queue_ms", "compute_ms"}
        assert doc["model"] == "dlrm" and doc["version"] == "v1" and doc["replica"].startswith("dlrm/cpu#")
        np.testing.assert_allclose(doc["predictions"], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fast_lane", [True, False])
def test_refusals_have_the_right_status_and_a_message(dlrm, fast_lane):
    """The same refusals whether /v1/predict takes the fast lane or FastAPI's routing (one handler)."""
    _, data = dlrm
    dense, ids, offsets, _ = arrays(data, 3)
    npz = encode_npz(dense, ids, offsets)

    async def test(client, router, reps):
        post = client.post
        expect_error(await post("/v1/predict", content=b"{nope", headers={"content-type": "application/json"}),
                     400, "not valid JSON")
        expect_error(await post("/v1/predict", content=json_body(data, 2).replace(b'"dlrm"', b'"other"', 1)),
                     404, "unknown model 'other'; served models: dlrm")
        expect_error(await post("/v1/predict", content=npz, params={"model": "nope"},
                                headers={"content-type": NPZ_TYPE}), 404, "unknown model")
        expect_error(await post("/v1/predict", content=npz, headers={"content-type": NPZ_TYPE}), 422, "?model=NAME")
        expect_error(await post("/v1/predict", content=npz, params={"model": "dlrm", "priority": "high"},
                                headers={"content-type": NPZ_TYPE}), 422, "priority")
        expect_error(await post("/v1/predict", content=npz, params={"model": "dlrm", "deadline_ms": "nan"},
                                headers={"content-type": NPZ_TYPE}), 422, "deadline_ms")
        expect_error(await post("/v1/predict", content=b"a,b", headers={"content-type": "text/csv"}), 415,
                     "application/x-npz")
        bad = json.loads(json_body(data, 2))
        bad["instances"][1]["sparse"][data.schema.sparse[0].name] = 10**6
        expect_error(await post("/v1/predict", json=bad), 422, "instances[1].sparse.C1: id 1000000 is outside")
        r = await post("/v1/predict", content=json_body(data, 40))
        expect_error(r, 413, "limit of 32")
        r = await post("/v1/predict", content=b"x" * 70_000, headers={"content-type": "application/json"})
        expect_error(r, 413, "limit of 65536")

        async def chunks():  # no Content-Length: the limit is enforced while the body streams in
            for _ in range(10):
                yield b" " * 10_000

        expect_error(await post("/v1/predict", content=chunks(), headers={"content-type": "application/json"}),
                     413, "exceeds the limit")
        return (await client.get("/metrics")).text

    metrics = run_app(dlrm, test, limits=AdmissionConfig(max_body_bytes=65536, max_items_per_request=32),
                      fast_lane=fast_lane)
    assert 'crossrec_http_responses_total{code="413",route="/v1/predict"} 3.0' in metrics
    assert 'crossrec_http_responses_total{code="422",route="/v1/predict"}' in metrics


@pytest.mark.parametrize("fast_lane", [True, False])
def test_binary_answers_follow_the_accept_header(dlrm, fast_lane):
    """x-npz requests may ask for raw float32 or npz answers (fields in X-Crossrec-* headers); the
    predictions are the JSON answer's; no or unknown Accept gets JSON; refusals stay JSON."""
    rt, data = dlrm
    dense, ids, offsets, batch = arrays(data, 5)
    expected = rt.predict(batch).numpy()
    npz = encode_npz(dense, ids, offsets)
    accepts = {"raw": RAW_TYPE, "npz": NPZ_TYPE, "prefer-raw": f"{JSON_TYPE};q=0.2, {RAW_TYPE}",
               "json": JSON_TYPE, "any": "*/*", "unknown": "text/html", "none": None}

    async def test(client, router, reps):
        out = {}
        for name, accept in accepts.items():
            headers = {"content-type": NPZ_TYPE, **({"accept": accept} if accept else {})}
            out[name] = await client.post("/v1/predict", content=npz, params={"model": "dlrm"}, headers=headers)
        out["refused"] = await client.post("/v1/predict", content=npz, params={"model": "nope"},
                                           headers={"content-type": NPZ_TYPE, "accept": RAW_TYPE})
        out["json-body"] = await client.post("/v1/predict", content=json_body(data, 5),
                                             headers={"content-type": JSON_TYPE, "accept": RAW_TYPE})
        out["metrics"] = (await client.get("/metrics")).text
        return out

    out = run_app(dlrm, test, fast_lane=fast_lane)
    for name, media in (("raw", RAW_TYPE), ("npz", NPZ_TYPE), ("prefer-raw", RAW_TYPE), ("json", JSON_TYPE),
                        ("any", JSON_TYPE), ("unknown", JSON_TYPE), ("none", JSON_TYPE), ("json-body", RAW_TYPE)):
        resp = out[name]
        assert resp.status_code == 200 and resp.headers["content-type"].startswith(media), (name, resp.headers)
        preds, meta = decode_predictions(resp.headers["content-type"], resp.content, resp.headers)
        np.testing.assert_allclose(preds, expected, rtol=1e-5, atol=1e-6)
        assert meta["model"] == "dlrm" and meta["version"] == "v1" and meta["replica"].startswith("dlrm/cpu#")
        assert meta["queue_ms"] >= 0 and meta["compute_ms"] >= 0
    assert len(out["raw"].content) == 4 * 5 and out["raw"].headers["x-crossrec-replica"].startswith("dlrm/cpu#")
    assert "x-crossrec-model" not in out["json"].headers
    expect_error(out["refused"], 404, "unknown model")
    assert 'crossrec_http_responses_total{code="200",route="/v1/predict"} 8.0' in out["metrics"]


@pytest.mark.parametrize("params,status,needle", [
    ({"priority": "+0"}, 200, ""), ({"priority": " 2 "}, 200, ""), ({"deadline_ms": "1e4"}, 200, ""),
    ({"priority": "1.5"}, 422, "query.priority"), ({"priority": ""}, 422, "query.priority"),
    ({"priority": "3"}, 422, "query.priority"), ({"priority": "-1"}, 422, "query.priority"),
    ({"priority": "1" * 40}, 422, "query.priority"), ({"deadline_ms": "inf"}, 422, "query.deadline_ms"),
    ({"deadline_ms": "0"}, 422, "query.deadline_ms"), ({"deadline_ms": "soon"}, 422, "query.deadline_ms"),
    ({"deadline_ms": "1e10"}, 422, "query.deadline_ms"), ({"model": "m" * 201}, 422, "query.model"),
])
def test_query_parameters_are_checked_by_hand(dlrm, params, status, needle):
    """The fast lane parses model / priority / deadline_ms itself (no pydantic): same rules as the schema."""
    _, data = dlrm
    dense, ids, offsets, _ = arrays(data, 2)

    async def test(client, router, reps):
        return await client.post("/v1/predict", content=encode_npz(dense, ids, offsets),
                                 params={"model": "dlrm", **params}, headers={"content-type": NPZ_TYPE})

    resp = run_app(dlrm, test)
    if status == 200:
        assert resp.status_code == 200, resp.text
    else:
        expect_error(resp, status, needle)


def test_overload_is_a_503_with_retry_after_and_a_late_request_a_504(dlrm):
    data = dlrm[1]

    async def test(client, router, reps):
        (rep,) = reps
        rep.gate = asyncio.Event()
        first = asyncio.create_task(client.post("/v1/predict", content=json_body(data, 10)))
        while not rep.entered:  # the first request is being computed (held by the gate)
            await asyncio.sleep(0.001)
        over = await client.post("/v1/predict", content=json_body(data, 10))
        late = await client.post("/v1/predict", content=json_body(data, 3, deadline_ms=30))
        computed_before = rep.entered
        rep.gate.set()
        return over, late, await first, computed_before, rep.entered

    over, late, first, before, after = run_app(dlrm, test, replicas=[ModelReplica("dlrm/cpu#0", dlrm[0])],
                                               router_kw={"max_queue_items": 16})
    expect_error(over, 503, "overloaded")
    assert int(over.headers["retry-after"]) >= 1
    expect_error(late, 504, "deadline")
    assert first.status_code == 200
    assert before == after == 1  # neither the refused nor the late request was ever computed


def test_a_crashing_replica_is_not_a_5xx_while_another_is_healthy(dlrm):
    data = dlrm[1]

    async def test(client, router, reps):
        reps[0].crash = True
        return [await client.post("/v1/predict", content=json_body(data, 4)) for _ in range(4)]

    for resp in run_app(dlrm, test):
        assert resp.status_code == 200 and resp.json()["replica"] == "dlrm/cpu#1"


def test_models_health_readiness_metrics_and_openapi(dlrm):
    _, data = dlrm

    async def test(client, router, reps):
        out = {p: await client.get(p) for p in ("/v1/models", "/healthz", "/readyz", "/metrics", "/openapi.json")}
        for rep in reps:  # every replica down: not ready, but alive
            rep.crash = True
        await router.stop()
        out["readyz-after"] = await client.get("/readyz")
        out["healthz-after"] = await client.get("/healthz")
        out["predict-after"] = await client.post("/v1/predict", content=json_body(data, 2))
        return out

    out = run_app(dlrm, test)
    models = out["/v1/models"].json()["models"]
    assert list(models) == ["dlrm"]
    info = models["dlrm"]
    assert info["versions"] == ["v1"] and len(info["replicas"]) == 2 and info["devices"] == ["epyc-zen5-2vcpu"]
    assert info["features"]["dense"] == list(data.schema.dense)
    assert [f["name"] for f in info["features"]["sparse"]] == [f.name for f in data.schema.sparse]
    assert out["/healthz"].json() == {"status": "ok"} and out["/readyz"].json() == {"ready": True}
    assert out["/metrics"].headers["content-type"].startswith("text/plain")
    assert "crossrec_queue_items" in out["/metrics"].text and "crossrec_http_responses_total" in out["/metrics"].text
    spec = out["/openapi.json"].json()
    predict = spec["paths"]["/v1/predict"]["post"]
    assert set(predict["requestBody"]["content"]) == {"application/json", NPZ_TYPE}
    assert set(predict["responses"]["200"]["content"]) == {"application/json", NPZ_TYPE, RAW_TYPE}
    assert "X-Crossrec-Replica" in predict["responses"]["200"]["headers"]
    assert {p["name"] for p in predict["parameters"]} == {"model", "priority", "deadline_ms"}
    assert {"200", "400", "404", "413", "415", "422", "503", "504"} <= set(predict["responses"])
    assert "/v1/models/{name}" in spec["paths"]
    refs = {r.rsplit("/", 1)[1] for r in re.findall(r'"\$ref": "(#/components/schemas/[^"]+)"', json.dumps(spec))}
    assert {"PredictRequest", "Instance", "PredictResponse", "SwapRequest"} <= refs  # every body is described ...
    assert refs <= set(spec["components"]["schemas"])  # ... and every reference resolves
    assert out["readyz-after"].status_code == 503 and out["healthz-after"].status_code == 200
    expect_error(out["predict-after"], 503, "not running")
    assert "retry-after" in out["predict-after"].headers


def test_admin_swap_auth_validation_and_zero_failed_requests_under_load(dlrm, tiny_dlrm):
    data = dlrm[1]
    model2 = build(tiny_dlrm[0].spec, seed=7)  # other weights: the answers must change with the version
    rt2 = load(model2, "eager")
    _, _, _, batch = arrays(data, 5)
    loads: list[str] = []

    def loader(model: str, artifact: str):
        loads.append(artifact)
        if artifact == "missing":
            raise ArtifactError("missing is not an artifact directory")
        schema = data.schema if artifact != "other-schema" else dataclasses.replace(data.schema, dense=("x",) * 0)
        return [ModelReplica(f"dlrm/cpu#{i}@2", rt2, version="v2") for i in range(2)], schema

    async def test(client, router, reps):
        url, auth = "/v1/models/dlrm", {"authorization": f"Bearer {TOKEN}"}
        expect_error(await client.post(url, json={"artifact": "a"}), 401, "Bearer")
        r = await client.post(url, json={"artifact": "a"}, headers={"authorization": "Bearer wrong"})
        assert expect_error(r, 401)["error"] == "unauthorized" and r.headers["www-authenticate"] == "Bearer"
        expect_error(await client.post("/v1/models/nope", json={"artifact": "a"}, headers=auth), 404)
        expect_error(await client.post(url, content=b"{", headers=auth), 400)
        expect_error(await client.post(url, json={"path": "a"}, headers=auth), 422, "artifact")
        expect_error(await client.post(url, json={"artifact": "missing"}, headers=auth), 422, "not an artifact")
        expect_error(await client.post(url, json={"artifact": "other-schema"}, headers=auth), 422, "other features")
        stop = asyncio.Event()
        answers: list[httpx.Response] = []

        async def user():
            while not stop.is_set():
                answers.append(await client.post("/v1/predict", content=json_body(data, 5)))

        users = [asyncio.create_task(user()) for _ in range(4)]
        await asyncio.sleep(0.05)
        swapped = await client.post(url, json={"artifact": "v2-dir"}, headers=auth)
        await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*users)
        after = await client.post("/v1/predict", content=json_body(data, 5))
        return swapped, answers, after

    swapped, answers, after = run_app(dlrm, test, admin_token=TOKEN, swap_loader=loader)
    assert swapped.status_code == 200, swapped.text
    assert swapped.json()["versions"] == ["v2"] and swapped.json()["artifact"] == "v2-dir"
    assert answers and all(a.status_code == 200 for a in answers), {a.status_code for a in answers}
    assert {a.json()["version"] for a in answers} <= {"v1", "v2"}
    assert after.json()["version"] == "v2"
    np.testing.assert_allclose(after.json()["predictions"], rt2.predict(batch).numpy(), rtol=1e-5, atol=1e-6)
    assert loads == ["missing", "other-schema", "v2-dir"]  # auth and validation refusals never reached the loader


def test_admin_endpoints_are_off_without_a_token(dlrm):
    async def test(client, router, reps):
        return await client.post("/v1/models/dlrm", json={"artifact": "x"},
                                 headers={"authorization": "Bearer anything"})

    expect_error(run_app(dlrm, test), 403, "disabled")


def test_status_mapping_is_total():
    assert status_of(ServeError("no replica"))[0] == 503
    assert status_of(ConfigError("bad"))[0] == 422
    assert status_of(RuntimeError("bug"))[0] == 500
    assert status_of(ValueError("a bug, not bad input"))[0] == 500
    assert status_of(ArtifactError("not an artifact"))[0] == 422


# -- the server: uvicorn on a free loopback port --------------------------------------------------


@pytest.fixture(scope="module")
def artifacts(tiny_dlrm, tmp_path_factory):
    model, data = tiny_dlrm
    root = tmp_path_factory.mktemp("artifacts")
    v1 = save_artifact(root / "v1", model, data.schema)
    v2 = save_artifact(root / "v2", build(model.spec, seed=11), data.schema)
    return v1, v2, data


def plan_for(path, **kw) -> ServePlan:
    return ServePlan.for_artifact(path, count=1, catalog_device="epyc-zen5-2vcpu", slo_p99_ms=10_000.0, **kw)


def test_server_serves_swaps_and_shuts_down_gracefully(artifacts, dlrm):
    v1, v2, data = artifacts
    body = json_body(data, 6)
    with ServerHandle(plan_for(v1), workers=False, admin_token=TOKEN) as handle:
        assert handle.url.startswith("http://127.0.0.1:")
        with httpx.Client(base_url=handle.url, timeout=30) as client:
            first = client.post("/v1/predict", content=body).json()
            np.testing.assert_allclose(first["predictions"], dlrm[0].predict(arrays(data, 6)[3]).numpy(), atol=1e-6)
            swapped = client.post("/v1/models/dlrm", json={"artifact": str(v2)},
                                  headers={"authorization": f"Bearer {TOKEN}"})
            assert swapped.status_code == 200, swapped.text
            second = client.post("/v1/predict", content=body).json()
        assert second["version"] != first["version"] and second["replica"].endswith("@1")
        assert second["predictions"] != first["predictions"]
        router = handle.router
    assert router is not None and not router.ready()  # stopped with the server
    with pytest.raises(httpx.TransportError):
        httpx.get(handle.url + "/healthz", timeout=2)


def test_running_yields_a_url_and_the_port_must_be_free(artifacts):
    v1, _, _ = artifacts
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServeError, match=f"cannot listen on 127.0.0.1:{port}"), \
                running(plan_for(v1), port=port, workers=False):
            pass
    with running(plan_for(v1), workers=False) as url:
        assert httpx.get(url + "/readyz").json() == {"ready": True}


def test_serve_checks_the_engine(artifacts):
    v1, _, _ = artifacts
    with pytest.raises(ConfigError, match="one of local, ray"):
        serve(plan_for(v1), engine="k8s")


def test_killing_a_worker_process_under_load_loses_no_request(artifacts):
    """Issue #5 reliability scenario: SIGKILL one replica's worker process during load. Every request is
    answered (retried on the other replica), and the killed replica comes back with a new process."""
    v1, _, _ = artifacts
    plan = ServePlan.for_artifact(v1, count=2, catalog_device="epyc-zen5-2vcpu", slo_p99_ms=10_000.0)
    with ServerHandle(plan, workers=True) as handle:
        workers = {p.pid for p in multiprocessing.active_children()}
        assert len(workers) >= 2
        victim = min(workers)
        result: dict = {}
        load = threading.Thread(target=lambda: result.update(r=loadgen(
            handle.url, mode="closed", concurrency=4, duration_s=2.5, size_dist="uniform:1:100", seed=5)))
        load.start()
        time.sleep(0.8)
        os.kill(victim, signal.SIGKILL)
        load.join(60)
        res = result["r"]
        assert res.requests > 20 and res.counts == {"200": res.requests}, res.errors
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            replicas = handle.router.models()["dlrm"]["replicas"]
            new = {p.pid for p in multiprocessing.active_children()} - workers
            if new and all(r["healthy"] for r in replicas):
                break
            time.sleep(0.1)
        assert new and all(r["healthy"] for r in replicas), replicas
        assert any(r["last_error"] for r in replicas)  # the router saw the failure and restarted the replica
    left = [p.pid for p in multiprocessing.active_children() if p.pid in workers | new]
    assert not left, f"worker processes {left} outlived the server"


SERVE_SCRIPT = """
import sys
from crossrec.config import load
from crossrec.serve.plan import ServePlan
from crossrec.serve.server import serve
serve(load(sys.argv[1], ServePlan), workers=False, ready_callback=lambda url: print(url, flush=True))
print("stopped cleanly", flush=True)
"""


def test_serve_answers_then_stops_cleanly_on_sigterm(artifacts, tmp_path):
    v1, _, data = artifacts
    plan_file = dump(plan_for(v1, port=0), tmp_path / "plan.yaml")
    proc = subprocess.Popen([sys.executable, "-c", SERVE_SCRIPT, str(plan_file)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()  # printed by ready_callback once requests are accepted
        assert url.startswith("http://127.0.0.1:"), proc.stderr.read() if proc.poll() is not None else url
        assert httpx.post(url + "/v1/predict", content=json_body(data, 3), timeout=30).status_code == 200
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "stopped cleanly" in out


def test_the_fast_lane_takes_post_predict_and_nothing_else(dlrm):
    """Only POST /v1/predict bypasses the middleware stack; other methods and routes take FastAPI's way."""
    _, data = dlrm
    dense, ids, offsets, _ = arrays(data, 2)
    lane = []

    async def test(client, router, reps):
        app = client._transport.app
        inner = app.fast_predict

        async def counted(scope, receive, send):
            lane.append(scope["method"])
            await inner(scope, receive, send)

        app.fast_predict = counted
        ok = await client.post("/v1/predict", content=encode_npz(dense, ids, offsets), params={"model": "dlrm"},
                               headers={"content-type": NPZ_TYPE})
        wrong_method = await client.get("/v1/predict")
        other = await client.get("/healthz")
        return ok, wrong_method, other

    ok, wrong_method, other = run_app(dlrm, test)
    assert ok.status_code == 200 and wrong_method.status_code == 405 and other.status_code == 200
    assert lane == ["POST"]
