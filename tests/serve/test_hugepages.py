"""Huge pages in serving replicas (issue #5): the plan's ``hugepages`` setting, its resolution, and replicas
(in-process and worker process) loaded with it answering exactly as without it.

advise_tables_ moves only tables of at least 32 MiB; the in-process test lowers that threshold (the
runtime's reference to it is patched) so a tiny model's tables really move, and the worker test uses
one 36 MB table, the smallest that moves with the defaults.
"""

from __future__ import annotations

import asyncio
import functools

import numpy as np
import pytest
import torch

from crossrec.artifact import save_artifact
from crossrec.config import dump, load
from crossrec.data.schema import FeatureSchema, SparseFeature
from crossrec.errors import ConfigError
from crossrec.models import ModelSpec, TableSpec, build
from crossrec.models.hugepages import advise_tables_, thp_mode
from crossrec.serve.plan import HUGEPAGES_AUTO_BYTES, DeploymentSpec, ReplicaSpec, ServePlan, resolve_hugepages
from crossrec.serve.replica import build_replicas, synthetic_batch
from crossrec.serve.worker import runtime_options, table_bytes

CPU = "epyc-zen5-2vcpu"
THP = thp_mode() in ("always", "madvise")


def test_plan_field_defaults_round_trips_and_loads_from_yaml(tmp_path):
    assert ReplicaSpec(artifact="a").hugepages == "auto"
    for value in (True, False, "auto"):
        spec = ReplicaSpec(artifact="a", runtime="script", hugepages=value)
        plan = ServePlan(deployments=(DeploymentSpec(name="m", replicas=(spec,)),))
        assert load(dump(plan, tmp_path / "plan.yaml"), ServePlan) == plan
        assert ServePlan.from_json(plan.to_json()).deployments[0].replicas[0].hugepages == value
    (tmp_path / "old.yaml").write_text("deployments:\n  - name: m\n    replicas:\n      - artifact: a\n")
    assert load(tmp_path / "old.yaml", ServePlan).deployments[0].replicas[0].hugepages == "auto"
    (tmp_path / "on.yaml").write_text("deployments:\n  - name: m\n    replicas:\n"
                                      "      - {artifact: a, runtime: eager, hugepages: true}\n")
    assert load(tmp_path / "on.yaml", ServePlan).deployments[0].replicas[0].hugepages is True


@pytest.mark.parametrize("kwargs,needle", [
    ({"hugepages": "yes"}, r"ReplicaSpec.hugepages = 'yes' is invalid: true, false or 'auto'"),
    ({"hugepages": 1}, r"ReplicaSpec.hugepages = 1 is invalid"),
    ({"hugepages": True, "runtime": "onnx"}, r"hugepages = True is invalid: false or 'auto' for runtime 'onnx'.*eager"),
    ({"hugepages": True, "device": "cuda"}, r"for runtime 'cuda'"),
    ({"hugepages": True, "stage": "embedding"}, r"stage 'embedding'"),
    ({"hugepages": False, "options": {"hugepages": True}}, r"options.hugepages = True is invalid: the same as"),
])
def test_bad_settings_are_clear_config_errors(kwargs, needle):
    with pytest.raises(ConfigError, match=needle):
        ReplicaSpec(artifact="a", **kwargs)


def test_bad_value_in_a_plan_file_names_the_field(tmp_path):
    (tmp_path / "bad.yaml").write_text("deployments:\n  - name: m\n    replicas:\n"
                                       "      - {artifact: a, hugepages: sometimes}\n")
    with pytest.raises(ConfigError, match="hugepages"):
        load(tmp_path / "bad.yaml", ServePlan)


def tiny(rows: int = 50, dim: int = 4):
    spec = ModelSpec(num_dense=2, tables=(TableSpec(name="a", num_embeddings=rows),
                                          TableSpec(name="b", num_embeddings=7)),
                     embedding_dim=dim, bottom_mlp=(8, dim), top_mlp=(8,))
    return spec, build(spec, seed=0)


def test_auto_resolves_by_runtime_and_table_size():
    _, model = tiny()
    assert table_bytes(model) == (50 + 7) * 4 * 4
    assert runtime_options(model, "eager", "cpu", {}, "auto") == {}  # small tables: off
    assert runtime_options(model, "script", "cpu", {}, True) == {"hugepages": True}
    assert runtime_options(model, "eager", "cpu", {"hugepages": False}, True) == {"hugepages": False}  # explicit
    assert runtime_options(model, "compiled", "cpu", {}, True) == {}  # no such option: never passed on
    assert resolve_hugepages("auto", supported=True, table_bytes=HUGEPAGES_AUTO_BYTES)
    assert not resolve_hugepages("auto", supported=True, table_bytes=HUGEPAGES_AUTO_BYTES - 1)
    assert not resolve_hugepages(False, supported=True, table_bytes=2**40)


def make_artifact(tmp_path, rows: int, dim: int):
    spec, model = tiny(rows, dim)
    schema = FeatureSchema(dense=("d0", "d1"), sparse=(SparseFeature(name="a", num_embeddings=rows),
                                                       SparseFeature(name="b", num_embeddings=7)))
    return spec, model, str(save_artifact(tmp_path / f"m{rows}", model, schema))


def serve_once(plan: ServePlan, batch, *, workers: bool) -> tuple[np.ndarray, dict]:
    async def main():
        (replica,) = build_replicas(plan, workers=workers)["m"]
        replica.profile_sizes = (1,)
        await replica.start()
        try:
            return await replica.infer(batch), dict(replica.runtime_info)
        finally:
            await replica.stop()

    return asyncio.run(asyncio.wait_for(main(), 120))


def plan_for(artifact: str, runtime: str, hugepages) -> ServePlan:
    spec = ReplicaSpec(artifact=artifact, runtime=runtime, catalog_device=CPU, hugepages=hugepages)
    return ServePlan(deployments=(DeploymentSpec(name="m", replicas=(spec,)),))


@pytest.mark.parametrize("runtime", ["eager", "script"])
def test_an_in_process_replica_with_huge_pages_predicts_the_same(tmp_path, monkeypatch, runtime):
    import crossrec.runtime.eager
    import crossrec.runtime.script

    spec, model, artifact = make_artifact(tmp_path, 300, 8)
    for module in (crossrec.runtime.eager, crossrec.runtime.script):  # move even these small tables
        monkeypatch.setattr(module, "advise_tables_", functools.partial(advise_tables_, min_bytes=0))
    batch = synthetic_batch(spec.num_dense, [t.num_embeddings for t in spec.tables], 33, seed=1)
    plain, plain_info = serve_once(plan_for(artifact, runtime, False), batch, workers=False)
    huge, huge_info = serve_once(plan_for(artifact, runtime, True), batch, workers=False)
    np.testing.assert_allclose(huge, plain, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(plain, model.predict_proba(batch).numpy(), rtol=1e-5, atol=1e-6)
    assert plain_info["hugepages_bytes"] == 0
    assert huge_info["hugepages_bytes"] == (table_bytes(model) if THP else 0)


@pytest.mark.skipif(not hasattr(torch, "frombuffer"), reason="needs torch.frombuffer")
def test_a_worker_replica_takes_the_setting_from_the_plan(tmp_path):
    rows = 140_000  # x 64 fp32 = 35.8 MB: the smallest table advise_tables_ moves by default (32 MiB)
    spec, model, artifact = make_artifact(tmp_path, rows, 64)
    batch = synthetic_batch(spec.num_dense, [t.num_embeddings for t in spec.tables], 20, seed=2)
    expected = model.predict_proba(batch).numpy()
    huge, info = serve_once(plan_for(artifact, "eager", True), batch, workers=True)
    np.testing.assert_allclose(huge, expected, rtol=1e-5, atol=1e-6)
    assert info["hugepages"] is True
    assert info["hugepages_bytes"] == ((rows + 7) * 64 * 4 if THP else 0)  # the fused group of both tables
    auto, info = serve_once(plan_for(artifact, "eager", "auto"), batch, workers=True)  # 36 MB < 64 MiB
    np.testing.assert_allclose(auto, expected, rtol=1e-5, atol=1e-6)
    assert info["hugepages"] is False and info["hugepages_bytes"] == 0
