"""Bad input never gets a 5xx and never crashes the server (issue #5, reliability scenario "bad input").

Hypothesis sends malformed and extreme bodies to a real server (uvicorn on loopback, a real trained
model behind the router): arbitrary JSON, near-valid requests shaped like the OpenAPI request schema
with wrong types, unknown or missing features, huge / negative / non-finite numbers, corrupted
``application/x-npz`` archives and junk query parameters. Every answer must be a 2xx or a 4xx whose JSON
``detail`` explains it; afterwards the server must still be healthy and answer a valid request.
"""

from __future__ import annotations

import io
import json
import math

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crossrec.artifact import save_artifact
from crossrec.serve.codec import NPZ_TYPE, encode_npz, instances_from_arrays
from crossrec.serve.plan import ServePlan
from crossrec.serve.server import running

_BASE = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
                 derandomize=True)  # the same examples every run: a failure here is reproducible, never flaky


def fuzz(examples: int) -> settings:
    return settings(_BASE, max_examples=examples)
OK_OR_CLIENT_ERROR = {200, 400, 401, 403, 404, 405, 413, 415, 422}


@pytest.fixture(scope="module")
def server(tiny_dlrm, tmp_path_factory):
    model, data = tiny_dlrm
    path = save_artifact(tmp_path_factory.mktemp("fuzz") / "dlrm", model, data.schema)
    plan = ServePlan.for_artifact(path, count=1, catalog_device="epyc-zen5-2vcpu", slo_p99_ms=10_000.0)
    with running(plan, workers=False) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client, data


def check(resp: httpx.Response, *, items: int | None = None) -> None:
    assert resp.status_code in OK_OR_CLIENT_ERROR, (resp.status_code, resp.text[:300])
    doc = resp.json()
    if resp.status_code == 200:
        if items is not None:
            assert len(doc["predictions"]) == items
        assert all(0.0 <= p <= 1.0 for p in doc["predictions"])
    else:
        assert isinstance(doc["detail"], str) and doc["detail"], doc


def dumps(value) -> bytes:
    return json.dumps(value, allow_nan=True).encode()  # NaN/Infinity literals are fair game for a fuzzer


scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**80), 2**80), st.floats(), st.text(max_size=8))
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(st.text(max_size=6), inner, max_size=4)),
                           max_leaves=20)


@fuzz(80)
@given(value=json_values)
def test_arbitrary_json_bodies(server, value):
    client, _ = server
    check(client.post("/v1/predict", content=dumps(value), headers={"content-type": "application/json"}))


@st.composite
def near_valid_requests(draw, data):
    """Requests shaped like PredictRequest, each field valid or mutated."""
    schema = data.schema
    dense_names, sparse = list(schema.dense), list(schema.sparse)
    numbers = st.one_of(st.floats(-1e3, 1e3), st.floats(), st.integers(-(2**70), 2**70), st.just(1e39),
                        st.text(max_size=3), st.none(), st.booleans())
    ids = lambda card: st.one_of(st.integers(0, card - 1), st.integers(-(2**70), 2**70), st.just(card),
                                 st.floats(), st.text(max_size=3), st.booleans())

    def instance():
        names = draw(st.lists(st.sampled_from([*dense_names, "bogus"]), unique=True)) if draw(st.booleans()) \
            else dense_names
        dense = {n: draw(numbers) for n in names} if draw(st.booleans()) else \
            [draw(numbers) for _ in range(draw(st.integers(0, len(dense_names) + 1)))]
        bag = {}
        for f in sparse:
            if draw(st.integers(0, 9)) == 0:
                continue  # a missing feature
            kind = draw(st.integers(0, 3))
            bag[f.name] = draw(ids(f.num_embeddings)) if kind < 2 else \
                draw(st.lists(ids(f.num_embeddings), max_size=3)) if kind == 2 else draw(scalars)
        if draw(st.integers(0, 9)) == 0:
            bag["unknown_feature"] = 1
        return {"dense": dense, "sparse": bag}

    req = {"model": draw(st.sampled_from(["dlrm", "dlrm", "other", ""])),
           "instances": [instance() for _ in range(draw(st.integers(0, 4)))]}
    if draw(st.booleans()):
        req["priority"] = draw(st.one_of(st.integers(-3, 5), scalars))
    if draw(st.booleans()):
        req["deadline_ms"] = draw(st.one_of(st.floats(), st.integers(-(2**70), 2**70), scalars))
    if draw(st.integers(0, 9)) == 0:
        req[draw(st.text(min_size=1, max_size=5))] = draw(scalars)
    return req


@pytest.fixture(scope="module")
def near_valid(tiny_dlrm):
    return near_valid_requests(tiny_dlrm[1])


@fuzz(150)
@given(case=st.data())
def test_near_valid_json_requests(server, near_valid, case):
    client, _ = server
    req = case.draw(near_valid)
    resp = client.post("/v1/predict", content=dumps(req), headers={"content-type": "application/json"})
    check(resp, items=len(req["instances"]))


def valid_npz(data, n: int = 3) -> bytes:
    b = data.slice(0, n).to_batch()
    return encode_npz(b.dense.numpy(), b.ids.numpy(), b.offsets.numpy())


@fuzz(100)
@given(case=st.data())
def test_corrupted_npz_bodies_and_junk_query_parameters(server, case):
    client, data = server
    raw = bytearray(valid_npz(data))
    mode = case.draw(st.sampled_from(["flip", "truncate", "random", "valid"]))
    if mode == "flip":
        for pos in case.draw(st.lists(st.integers(0, len(raw) - 1), min_size=1, max_size=8)):
            raw[pos] = case.draw(st.integers(0, 255))
    elif mode == "truncate":
        raw = raw[:case.draw(st.integers(0, len(raw) - 1))]
    elif mode == "random":
        raw = bytearray(case.draw(st.binary(max_size=300)))
    params = {"model": case.draw(st.sampled_from(["dlrm", "dlrm", "x", ""]))}
    for key, values in (("priority", st.one_of(st.integers(-2, 4), st.text(max_size=4))),
                        ("deadline_ms", st.one_of(st.floats(), st.text(max_size=4), st.integers(-5, 10**9)))):
        if case.draw(st.booleans()):
            params[key] = str(case.draw(values))
    resp = client.post("/v1/predict", content=bytes(raw), params=params,
                       headers={"content-type": case.draw(st.sampled_from([NPZ_TYPE, NPZ_TYPE, "application/x-npy",
                                                                           "application/json; charset=utf-8"]))})
    check(resp)


@pytest.mark.parametrize("make", [
    lambda d: ("POST", "/v1/predict", dumps({"model": "dlrm", "instances": [{}] * 5000})),  # too many items
    lambda d: ("POST", "/v1/predict", b"[" * 100_000 + b"]" * 100_000),  # deep nesting
    lambda d: ("POST", "/v1/predict", b" " * (8 * 2**20 + 1)),  # over the body limit
    lambda d: ("POST", "/v1/predict", dumps({"model": "dlrm", "instances": [
        {"dense": [1e308] * d.schema.num_dense, "sparse": {f.name: [0] for f in d.schema.sparse}}]})),
    lambda d: ("POST", "/v1/predict", dumps({"model": "dlrm", "instances": [
        {"dense": [3e38] * d.schema.num_dense, "sparse": {f.name: [] for f in d.schema.sparse}}]})),
    lambda d: ("POST", "/v1/predict", dumps({"model": "dlrm" * 1000, "instances": [{}]})),
    lambda d: ("GET", "/v1/predict", b""),
    lambda d: ("POST", "/v1/models/dlrm", b"{}"),
    lambda d: ("DELETE", "/v1/models", b""),
])
def test_extreme_bodies(server, make):
    client, data = server
    method, path, content = make(data)
    check(client.request(method, path, content=content, headers={"content-type": "application/json"}))


def test_still_healthy_and_correct_after_the_fuzzing(server):
    client, data = server
    assert client.get("/healthz").status_code == 200 and client.get("/readyz").json() == {"ready": True}
    b = data.slice(0, 4).to_batch()
    inst = instances_from_arrays(data.schema, b.dense.numpy(), b.ids.numpy(), b.offsets.numpy())
    resp = client.post("/v1/predict", json={"model": "dlrm", "instances": inst})
    check(resp, items=4)
    assert all(math.isfinite(p) for p in resp.json()["predictions"])
    metrics = client.get("/metrics").text
    assert 'code="500"' not in metrics and 'code="503"' not in metrics


def test_npz_and_json_agree_under_the_real_server(server):
    client, data = server
    b = data.slice(0, 3).to_batch()
    inst = instances_from_arrays(data.schema, b.dense.numpy(), b.ids.numpy(), b.offsets.numpy())
    a = client.post("/v1/predict", json={"model": "dlrm", "instances": inst}).json()["predictions"]
    z = client.post("/v1/predict", content=valid_npz(data), params={"model": "dlrm"},
                    headers={"content-type": NPZ_TYPE}).json()["predictions"]
    np.testing.assert_allclose(a, z, rtol=1e-6)
    assert io.BytesIO(valid_npz(data)).read(2) == b"PK"  # the binary body is a real zip (np.savez)
