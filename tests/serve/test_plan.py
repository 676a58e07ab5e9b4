"""ServePlan records: defaults, YAML/JSON round trips, validation messages, for_artifact."""

from __future__ import annotations

import pytest

from crossrec.artifact import save_artifact
from crossrec.config import dump, load
from crossrec.data.synthetic import SyntheticConfig, generate
from crossrec.errors import ArtifactError, ConfigError
from crossrec.models import ModelSpec, build
from crossrec.serve.plan import (
    AdmissionConfig,
    BatchingConfig,
    DeploymentSpec,
    ReplicaSpec,
    RoutingConfig,
    ServePlan,
    resolve_catalog_device,
)


def two_device_plan() -> ServePlan:
    cpu = ReplicaSpec(artifact="artifacts/dlrm-int8", runtime="onnx-int8", catalog_device="epyc-zen5-2vcpu",
                      threads=1, count=2, batching=BatchingConfig(max_batch_items=512, mode="slo"))
    gpu = ReplicaSpec(artifact="artifacts/dlrm-bf16", runtime="eager", device="cuda:0", catalog_device="h100-sxm",
                      options={"dtype": "bf16"}, batching=BatchingConfig(max_batch_items=4096, max_wait_ms=1.0))
    split = (ReplicaSpec(artifact="artifacts/dlrm", stage="embedding"),
             ReplicaSpec(artifact="artifacts/dlrm", stage="dense", device="cuda"))
    return ServePlan(name="prod", deployments=(DeploymentSpec(name="dlrm", replicas=(cpu, gpu)),
                                               DeploymentSpec(name="dlrm-split", replicas=split)),
                     routing=RoutingConfig(policy="cost-aware", options={"slo_ms": 20.0}),
                     admission=AdmissionConfig(max_queue_items=4096), slo_p99_ms=20.0, port=9000)


def test_defaults_follow_the_contract():
    b, r, a = BatchingConfig(), ReplicaSpec(artifact="x"), AdmissionConfig()
    assert (b.max_batch_items, b.max_wait_ms, b.mode, b.priority_classes) == (1024, 2.0, "fixed", 3)
    assert (r.runtime, r.device, r.catalog_device, r.threads, r.count, r.options, r.stage) == \
        ("auto", "cpu", None, 1, 1, {}, "full")
    assert r.batching == BatchingConfig()
    assert (a.max_queue_items, a.max_body_bytes, a.max_items_per_request) == (8192, 8 * 2**20, 4096)
    assert a.slo_factor == 1.5  # addition: refuse what cannot meet the SLO when every replica is busy
    p = ServePlan(deployments=(DeploymentSpec(name="m", replicas=(r,)),))
    assert (p.routing.policy, p.slo_p99_ms, p.host, p.port, p.replica_timeout_s, p.max_retries) == \
        ("latency-aware", 25.0, "127.0.0.1", 8000, 5.0, 2)


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_round_trips_through_files(tmp_path, suffix):
    plan = two_device_plan()
    path = dump(plan, tmp_path / f"plan{suffix}")
    assert load(path, ServePlan) == plan
    assert ServePlan.from_json(plan.to_json()) == plan


def test_a_hand_written_yaml_plan_loads(tmp_path):
    (tmp_path / "plan.yaml").write_text(
        "name: demo\n"
        "deployments:\n"
        "  - name: dlrm\n"
        "    replicas:\n"
        "      - {artifact: artifacts/dlrm, count: 2, batching: {mode: slo, max_wait_ms: 1}}\n"
        "routing: {policy: power-aware}\n")
    plan = load(tmp_path / "plan.yaml", ServePlan)
    assert plan.deployments[0].replicas[0].batching.max_wait_ms == 1.0
    assert plan.deployments[0].replica_count == 2 and plan.routing.policy == "power-aware"
    (tmp_path / "typo.yaml").write_text("deployments: []\nslo_ms: 10\n")
    with pytest.raises(ConfigError, match="unknown key 'slo_ms'; valid keys: .*slo_p99_ms"):
        load(tmp_path / "typo.yaml", ServePlan)


@pytest.mark.parametrize("make,message", [
    (lambda: RoutingConfig(policy="random"), "registered policies: cost-aware, latency-aware, least-outstanding"),
    (lambda: RoutingConfig(policy="cost-aware", options={"budget": 1}), "no option\\(s\\) \\['budget'\\]"),
    (lambda: RoutingConfig(policy="cost-aware", options={"slo_ms": -1}), "slo_ms"),
    (lambda: BatchingConfig(mode="adaptive"), "'fixed' or 'slo'"),
    (lambda: BatchingConfig(max_wait_ms=-1), "max_wait_ms"),
    (lambda: BatchingConfig(priority_classes=0), "priority_classes"),
    (lambda: BatchingConfig(max_batch_items=True), "max_batch_items"),
    (lambda: ReplicaSpec(artifact=""), "artifact"),
    (lambda: ReplicaSpec(artifact="a", device="tpu"), "'cpu', 'cuda' or 'cuda:N'"),
    (lambda: ReplicaSpec(artifact="a", catalog_device="a100"), "a device of the hardware catalog"),
    (lambda: ReplicaSpec(artifact="a", runtime="tensorrt"), "one of auto, compiled, cuda, eager"),
    (lambda: ReplicaSpec(artifact="a", options={"dtype": "bf16"}), "options of runtime 'auto'"),
    (lambda: ReplicaSpec(artifact="a", threads=0), "threads"),
    (lambda: ReplicaSpec(artifact="a", count=0), "count"),
    (lambda: ReplicaSpec(artifact="a", stage="top"), "stage"),
    (lambda: DeploymentSpec(name="bad name", replicas=(ReplicaSpec(artifact="a"),)), "letters, digits"),
    (lambda: DeploymentSpec(name="m", replicas=(ReplicaSpec(artifact="a", stage="embedding"),)),
     "both an 'embedding' and a 'dense' stage"),
    (lambda: AdmissionConfig(max_queue_items=100, max_items_per_request=200), "could ever be admitted"),
    (lambda: AdmissionConfig(slo_factor=0.0), "slo_factor"),
    (lambda: ServePlan(deployments=()), "at least one DeploymentSpec"),
    (lambda: ServePlan(deployments=(DeploymentSpec(name="m", replicas=(ReplicaSpec(artifact="a"),)),) * 2),
     "unique deployment names"),
    (lambda: ServePlan(deployments=(DeploymentSpec(name="m", replicas=(ReplicaSpec(artifact="a"),)),), port=70000),
     "port"),
    (lambda: ServePlan(deployments=(DeploymentSpec(name="m", replicas=(ReplicaSpec(artifact="a"),)),),
                       slo_p99_ms=0), "slo_p99_ms"),
    (lambda: ServePlan(deployments=(DeploymentSpec(name="m", replicas=(ReplicaSpec(artifact="a"),)),),
                       max_retries=-1), "max_retries"),
])
def test_invalid_fields_name_field_value_and_what_is_allowed(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_deployment_lookup_lists_names():
    plan = two_device_plan()
    assert plan.deployment("dlrm-split").replica_count == 2
    with pytest.raises(ConfigError, match="deployments: dlrm, dlrm-split"):
        plan.deployment("dcn")


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    data = generate(SyntheticConfig(rows=50, num_sparse=2, max_rows=5, seed=0))
    model = build(ModelSpec.for_schema(data.schema, name="ranker-v2"))
    return save_artifact(tmp_path_factory.mktemp("art") / "a", model, data.schema)


def test_for_artifact_gives_a_servable_default_plan(artifact):
    plan = ServePlan.for_artifact(artifact)
    dep = plan.deployments[0]
    assert dep.name == "ranker-v2" and plan.name == "ranker-v2"
    rep = dep.replicas[0]
    assert rep.artifact == str(artifact) and rep.batching.mode == "slo" and rep.count >= 1
    assert plan.host == "127.0.0.1"  # never binds beyond loopback unless told
    assert ServePlan.from_json(plan.to_json()) == plan


def test_for_artifact_overrides(artifact):
    plan = ServePlan.for_artifact(artifact, model="ctr", count=3, threads=2, port=0, slo_p99_ms=10.0,
                                  routing=RoutingConfig(policy="round-robin"))
    rep = plan.deployments[0].replicas[0]
    assert (plan.deployments[0].name, rep.count, rep.threads, plan.port, plan.slo_p99_ms) == ("ctr", 3, 2, 0, 10.0)
    assert plan.routing.policy == "round-robin"
    with pytest.raises(ConfigError, match="unknown override\\(s\\) \\['replicas'\\]; valid: .*count"):
        ServePlan.for_artifact(artifact, replicas=2)
    with pytest.raises(ArtifactError):
        ServePlan.for_artifact(artifact.parent / "missing")


def test_resolve_catalog_device():
    assert resolve_catalog_device(ReplicaSpec(artifact="a", catalog_device="xeon-8480")) == "xeon-8480"
    detected = resolve_catalog_device(ReplicaSpec(artifact="a"))
    assert detected is None or isinstance(detected, str)
