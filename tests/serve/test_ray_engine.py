"""The Ray Serve engine: the same plan and HTTP API on a local Ray instance (skipped without Ray)."""

import socket

import numpy as np
import pytest

pytest.importorskip("ray.serve", reason="the Ray engine needs the optional extra: pip install 'crossrec[ray]'")
httpx = pytest.importorskip("httpx")

from crossrec.artifact import save_artifact  # noqa: E402
from crossrec.data.synthetic import SyntheticConfig, generate  # noqa: E402
from crossrec.errors import ConfigError  # noqa: E402
from crossrec.models import ModelSpec, build  # noqa: E402
from crossrec.runtime import load  # noqa: E402
from crossrec.serve import ray_engine  # noqa: E402
from crossrec.serve.codec import NPZ_TYPE, encode_npz, instances_from_arrays  # noqa: E402
from crossrec.serve.plan import DeploymentSpec, ReplicaSpec, ServePlan  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    data = generate(SyntheticConfig(rows=300, num_sparse=3, max_rows=10, seed=0))
    model = build(ModelSpec.for_schema(data.schema, embedding_dim=4, bottom_mlp=(4,), top_mlp=(8,)), seed=0)
    return save_artifact(tmp_path_factory.mktemp("ray") / "a", model, data.schema), model, data


@pytest.mark.slow
def test_ray_engine_serves_the_plan_like_the_local_runtime(artifact):
    path, model, data = artifact
    # two single-thread replicas on a 2-CPU Ray: the ingress must still be schedulable
    plan = ServePlan.for_artifact(path, port=_free_port(), count=2, threads=1, model="m")
    import os

    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs 2 cores")
    dep = ray_engine.deploy(plan)
    try:
        batch = data.slice(0, 7).to_batch()
        expected = load(model, "eager").predict(batch).numpy()
        inst = instances_from_arrays(data.schema, batch.dense.numpy(), batch.ids.numpy(), batch.offsets.numpy())
        r = httpx.post(f"{dep.url}/v1/predict", json={"model": "m", "instances": inst}, timeout=60)
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["predictions"], expected, rtol=1e-5)
        r = httpx.post(f"{dep.url}/v1/predict?model=m", timeout=60, headers={"content-type": NPZ_TYPE},
                       content=encode_npz(batch.dense.numpy(), batch.ids.numpy(), batch.offsets.numpy()))
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["predictions"], expected, rtol=1e-5)
        assert httpx.post(f"{dep.url}/v1/predict", json={"model": "nope", "instances": inst}).status_code == 404
        bad = httpx.post(f"{dep.url}/v1/predict", content=b"{oops", headers={"content-type": "application/json"})
        assert bad.status_code == 400 and "JSON" in bad.json()["detail"]
        assert httpx.get(f"{dep.url}/v1/models").json()["m"]["engine"] == "ray"
    finally:
        dep.stop()


def test_ray_engine_refuses_what_ray_cannot_scale(artifact):
    path = str(artifact[0])
    mixed = ServePlan(deployments=(DeploymentSpec(name="m", replicas=(
        ReplicaSpec(artifact=path, threads=1), ReplicaSpec(artifact=path, threads=2))),))
    with pytest.raises(ConfigError, match="one replica template"):
        ray_engine._template(mixed.deployments[0])
