"""`ServePlan`: what to serve, where and how — a frozen record that round-trips through YAML/JSON.

A plan lists deployments (one per model name); each deployment lists replicas (an artifact variant
on a runtime, device and thread count, with its batching settings), and the plan adds the routing
policy, admission limits and the latency SLO. ``crossrec serve PLAN`` starts a plan file;
:meth:`ServePlan.for_artifact` builds a one-model plan with sensible defaults for
``crossrec serve ARTIFACT``. Read and write plans with :func:`crossrec.config.load` /
:func:`crossrec.config.dump`. Every invalid field raises :class:`~crossrec.errors.ConfigError`
naming the field, the value and what is allowed.

Importing this module stays light (no torch): runtime names are checked against the runtime
registry only when a :class:`ReplicaSpec` is built, and catalog devices against the YAML catalog.

>>> plan = ServePlan(name="demo", deployments=(DeploymentSpec(name="dlrm", replicas=(
...     ReplicaSpec(artifact="artifacts/dlrm", catalog_device="epyc-zen5-2vcpu", count=2),)),))
>>> ServePlan.from_json(plan.to_json()) == plan
True
>>> plan.routing.policy, plan.deployments[0].replicas[0].batching.max_batch_items
('latency-aware', 1024)
>>> RoutingConfig(policy="fastest")
Traceback (most recent call last):
...
crossrec.errors.ConfigError: unknown routing policy 'fastest'; registered policies: cost-aware, latency-aware, \
least-outstanding, power-aware, round-robin
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from crossrec.config import Config, check
from crossrec.errors import ConfigError
from crossrec.serve.policy import get_policy

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# hugepages="auto" turns huge pages on from this much table memory: below it the tables' TLB reach is
# small anyway, and each moved table is copied once at load (BENCHMARKS.md §5 measured 1.3-1.7x faster
# random lookups from 2 MiB pages on tables of 100s of MB).
HUGEPAGES_AUTO_BYTES = 64 * 2**20
_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")
STAGES: tuple[str, ...] = ("full", "embedding", "dense")
SCHEDULING: tuple[str, ...] = ("batch", "normal")  # ReplicaSpec.scheduling: the worker's Linux scheduling policy


@dataclass(frozen=True, kw_only=True)
class BatchingConfig(Config):
    """How a replica's batcher merges requests.

    ``mode="fixed"``: a batch goes out at ``max_batch_items`` items or when its oldest request has
    waited ``max_wait_ms``. ``mode="slo"``: the max batch is the largest size whose latency (from the
    replica's measured curve) plus ``max_wait_ms`` fits the SLO, capped at ``max_batch_items``.
    ``priority_classes`` separate FIFO queues; class 0 is served first.

    >>> BatchingConfig(max_batch_items=0)
    Traceback (most recent call last):
    ...
    crossrec.errors.ConfigError: BatchingConfig.max_batch_items = 0 is invalid: an integer >= 1
    """

    max_batch_items: int = 1024
    max_wait_ms: float = 2.0
    mode: Literal["fixed", "slo"] = "fixed"
    priority_classes: int = 3

    def __post_init__(self) -> None:
        own = "BatchingConfig"
        check(_is_int(self.max_batch_items) and self.max_batch_items >= 1, own, "max_batch_items",
              self.max_batch_items, "an integer >= 1")
        check(_is_num(self.max_wait_ms) and 0 <= self.max_wait_ms <= 10_000, own, "max_wait_ms", self.max_wait_ms,
              "a number of ms in [0, 10000]")
        check(self.mode in ("fixed", "slo"), own, "mode", self.mode, "'fixed' or 'slo'")
        check(_is_int(self.priority_classes) and 1 <= self.priority_classes <= 16, own, "priority_classes",
              self.priority_classes, "an integer in [1, 16]")


@dataclass(frozen=True, kw_only=True)
class ReplicaSpec(Config):
    """``count`` identical replicas of one artifact variant on a runtime and device.

    ``catalog_device`` names the hardware-catalog entry the device is (for cost/power routing and
    metrics); None means the detected CPU class (or GPU for ``device="cuda"``), see
    :func:`resolve_catalog_device`. ``options`` are the runtime's options
    (:func:`crossrec.runtime.options_of`). ``stage`` splits a model for partitioned execution:
    ``"embedding"`` replicas compute pooled embeddings, ``"dense"`` ones the interaction and MLPs.
    ``runtime`` defaults to ``"auto"`` (:class:`crossrec.runtime.AutoRuntime`): TorchScript on a CPU (25-35%
    faster than eager at 100-700 rows, ~4x at one row, for the compressed DLRM measured here), eager where
    the model does not trace (the replica's ``runtime_info`` says why), the cuda runtime on a GPU.
    Partitioned stages always run eager.

    ``hugepages`` moves the model's large embedding tables into transparent huge pages when the
    replica loads (:func:`crossrec.models.hugepages.advise_tables_`, through the runtime's own
    ``hugepages`` option: fewer TLB misses on random row gathers). ``"auto"`` (the default) turns it on
    when the runtime has that option (``auto``, ``eager``, ``script``) and the tables total at least
    :data:`HUGEPAGES_AUTO_BYTES` (64 MiB), off otherwise (other runtimes, partitioned stages, small
    models); ``true`` asks for it (a ConfigError where the runtime cannot); ``false`` never. Where the
    kernel has no huge pages (THP ``never``, not Linux) nothing moves and the replica runs as before.
    ``options={"hugepages": ...}`` still works and wins over ``"auto"``.

    ``scheduling`` is the worker process's Linux scheduling policy. ``"batch"`` (the default) runs it as
    ``SCHED_BATCH``: same CPU share, but a worker woken by a request does not preempt the HTTP front in
    the middle of sending it, so the front finishes handing the request over (to the second replica of
    a split, too) and answers other clients meanwhile. Measured on a 2-core VM (BENCHMARKS.md §9,
    session 9): one user's 300- and 700-item requests 12.3-13.4 -> 10.5-12.1 ms and 17.4-17.9 ->
    14.7-16.0 ms (median). ``"normal"`` keeps the default policy; where the OS has no ``SCHED_BATCH``
    the worker runs as normal and its info says so. The local engine's workers only: Ray Serve replicas
    run under Ray's own processes and policy.

    >>> ReplicaSpec(artifact="a", runtime="onnx", hugepages=True)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    crossrec.errors.ConfigError: ReplicaSpec.hugepages = True is invalid: false or 'auto' for runtime 'onnx' ...
    >>> ReplicaSpec(artifact="a", runtime="tensorrt")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    crossrec.errors.ConfigError: ReplicaSpec.runtime = 'tensorrt' is invalid: one of auto, compiled, cuda, ...
    """

    artifact: str
    runtime: str = "auto"
    device: str = "cpu"
    catalog_device: str | None = None
    threads: int = 1
    count: int = 1
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    options: dict[str, Any] = field(default_factory=dict)
    stage: Literal["full", "embedding", "dense"] = "full"
    hugepages: bool | Literal["auto"] = "auto"
    scheduling: Literal["batch", "normal"] = "batch"

    def __post_init__(self) -> None:
        own = "ReplicaSpec"
        check(isinstance(self.artifact, str) and bool(self.artifact), own, "artifact", self.artifact,
              "the path of an artifact directory")
        check(isinstance(self.device, str) and bool(_DEVICE.match(self.device)), own, "device", self.device,
              "'cpu', 'cuda' or 'cuda:N'")
        check(_is_int(self.threads) and 1 <= self.threads <= 256, own, "threads", self.threads,
              "an integer in [1, 256]")
        check(_is_int(self.count) and 1 <= self.count <= 64, own, "count", self.count, "an integer in [1, 64]")
        check(self.stage in STAGES, own, "stage", self.stage, f"one of {', '.join(STAGES)}")
        check(isinstance(self.options, dict), own, "options", self.options, "a mapping of runtime options")
        check(isinstance(self.hugepages, bool) or self.hugepages == "auto", own, "hugepages", self.hugepages,
              "true, false or 'auto' (on for the eager and script runtimes when the tables total >= 64 MiB)")
        check(self.scheduling in SCHEDULING, own, "scheduling", self.scheduling,
              "'batch' (the worker yields to the HTTP front on wake-up; the default) or 'normal'")
        if self.catalog_device is not None:
            known = _catalog_names()
            check(self.catalog_device in known, own, "catalog_device", self.catalog_device,
                  f"a device of the hardware catalog ({', '.join(sorted(known))}) or null for the detected one")
        self._check_runtime()

    def _check_runtime(self) -> None:
        # Lazy: the runtime registry imports torch, which a plan file's syntax check should not need
        # until a replica is actually described.
        from crossrec.runtime import RUNTIMES, options_of

        check(self.runtime in RUNTIMES, "ReplicaSpec", "runtime", self.runtime, f"one of {', '.join(sorted(RUNTIMES))}")
        # crossrec.runtime.load runs runtime="eager" on a CUDA device as its "cuda" runtime
        effective = "cuda" if self.device.startswith("cuda") and self.runtime in ("eager", "auto") else self.runtime
        allowed = options_of(RUNTIMES[effective])
        unknown = sorted(set(self.options) - set(allowed))
        check(not unknown, "ReplicaSpec", "options", unknown, f"options of runtime {effective!r}: {list(allowed)}")
        self._check_hugepages(effective, "hugepages" in allowed)

    def _check_hugepages(self, effective: str, supported: bool) -> None:
        from crossrec.runtime import RUNTIMES, options_of

        if self.hugepages is True:
            able = sorted(n for n, c in RUNTIMES.items() if "hugepages" in options_of(c))
            check(supported and self.stage == "full", "ReplicaSpec", "hugepages", True,
                  f"false or 'auto' for runtime {effective!r} and stage {self.stage!r}: huge pages need a "
                  f"stage='full' replica on a runtime with a hugepages option ({', '.join(able)})")
        if "hugepages" in self.options and self.hugepages != "auto":
            check(self.options["hugepages"] == self.hugepages, "ReplicaSpec", "options.hugepages",
                  self.options["hugepages"], f"the same as hugepages={self.hugepages!r}, or set only one of them")


@dataclass(frozen=True, kw_only=True)
class DeploymentSpec(Config):
    """One served model (``name`` is what requests ask for) and its replicas.

    >>> DeploymentSpec(name="dlrm", replicas=())
    Traceback (most recent call last):
    ...
    crossrec.errors.ConfigError: DeploymentSpec(dlrm).replicas = () is invalid: at least one ReplicaSpec
    """

    name: str
    replicas: tuple[ReplicaSpec, ...]

    def __post_init__(self) -> None:
        check(isinstance(self.name, str) and bool(_NAME.match(self.name)), "DeploymentSpec", "name", self.name,
              "letters, digits, '.', '_' or '-', starting with a letter or digit")
        own = f"DeploymentSpec({self.name})"
        check(len(self.replicas) >= 1, own, "replicas", self.replicas, "at least one ReplicaSpec")
        stages = {r.stage for r in self.replicas}
        # A partitioned model needs both halves; one without the other could never answer.
        check(("embedding" in stages) == ("dense" in stages), own, "replicas", sorted(stages),
              "both an 'embedding' and a 'dense' stage replica for partitioned execution, or neither")

    @property
    def replica_count(self) -> int:
        return sum(r.count for r in self.replicas)


@dataclass(frozen=True, kw_only=True)
class RoutingConfig(Config):
    """Which :mod:`~crossrec.serve.policy` ranks replicas, with its options (checked on construction).

    ``split_items``: a request of at least twice this many items that arrives while two or more of its
    model's replicas are idle is split across them (parts of at least ``split_items`` rows, computed in
    parallel, joined in order; the Router's ``split_items``); null never splits. The default 128 halves
    the compute time of a 300-700-item ranking request on two single-thread workers at low load.

    >>> RoutingConfig(policy="cost-aware", options={"slo_ms": 20.0}).options
    {'slo_ms': 20.0}
    >>> RoutingConfig(split_items=None).split_items is None
    True
    """

    policy: str = "latency-aware"
    options: dict[str, Any] = field(default_factory=dict)
    split_items: int | None = 128

    def __post_init__(self) -> None:
        check(isinstance(self.options, dict), "RoutingConfig", "options", self.options, "a mapping")
        check(self.split_items is None or (_is_int(self.split_items) and self.split_items >= 1), "RoutingConfig",
              "split_items", self.split_items, "an integer >= 1 (smallest part of a split request), or null to "
              "never split")
        get_policy(self.policy, **self.options)  # raises ConfigError listing the policies / options


@dataclass(frozen=True, kw_only=True)
class AdmissionConfig(Config):
    """Admission limits: items admitted and not yet answered (router-wide), request body bytes, items
    per request. Past them a request is refused at once (HTTP 503/413/422) instead of queueing.

    ``slo_factor`` (an addition to the serve contract): when every replica is busy and the best one's
    predicted finish time exceeds the admission budget — ``slo_factor x slo_p99_ms`` to begin with —
    refuse the request (the Router's ``admission_slo_factor``); None admits by queue size only. The
    default, 1.5, leaves the final word to the feedback below: the prediction (the latency curve measured
    at start times the observed slowdown) is pessimistic under load — at 166 req/s with 1.0 it refused
    requests while the server-side p99 was 17 ms — and the feedback cuts the budget once answers are
    really slow (BENCHMARKS.md §9, session 6: 46.7k instead of 38.6k items/s held at p99 <= 25 ms).

    ``feedback`` (issue #5: at 2x capacity the admitted requests' client-measured p99 was 34.3 ms
    against a 25 ms SLO) corrects that prediction with what requests actually took. The prediction
    sees only the router's queues; it misses the HTTP front's parsing, event-loop queueing on a
    saturated CPU and the answer's way back. So the server measures each admitted request from its
    handler's entry to its answer over a sliding window (the last ``window_requests`` answers, none
    older than ``window_s``), and an AIMD controller (:class:`crossrec.serve.admission_feedback.
    LatencyFeedback`) shrinks the budget multiplicatively while the window's p99 exceeds
    ``target_fraction x slo_p99_ms`` and grows it back additively — never above its starting value,
    never below ``min_budget_fraction`` of it — once the p99 is comfortably under the target.
    ``target_fraction`` is below 1 because the client's latency also holds time the server cannot
    measure (connection and HTTP parsing before the handler runs, the trip back, the client's own
    parsing — on a 2-core machine shared with the load generator, several ms under overload); 0.7
    keeps 30% of the SLO for it (with 0.8, the admitted requests' client-measured p99 at 2x capacity
    was 25.2-27.7 ms over five runs; with 0.7, 24.6-24.9 ms — BENCHMARKS.md §9, session 6). A cut also
    needs ``min_busy_fraction`` of the window's arrivals to
    have found every replica busy: slow answers at low load come from service time, which refusing
    others cannot shorten. ``unloaded_margin`` (opt-in; None by default): the target in force is at
    least this many times the p99 of answers to requests that found a replica idle while the router was
    calm — the latency this server has without queueing, learnt as it runs — for a CPU too slow for the
    fixed target. Measured on a 2-core Zen 3 whose learnt floor was 21-25 ms (BENCHMARKS.md §9, session
    10), 1.2 trades latency for goodput under 2x overload: admitted p99 52.9 instead of 40.0 ms, 196
    instead of 447 of 2204 requests refused; at 45-75 req/s it did not refuse consistently fewer.
    ``feedback`` does nothing without ``slo_factor``.

    >>> AdmissionConfig(max_queue_items=4096, slo_factor=None).max_items_per_request
    4096
    >>> a = AdmissionConfig()
    >>> a.feedback, a.target_fraction, a.window_requests, a.window_s, a.min_budget_fraction
    (True, 0.7, 200, 2.0, 0.1)
    >>> AdmissionConfig(target_fraction=1.5)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    crossrec.errors.ConfigError: AdmissionConfig.target_fraction = 1.5 is invalid: a fraction of slo_p99_ms ...
    """

    max_queue_items: int = 8192
    max_body_bytes: int = 8 * 2**20
    max_items_per_request: int = 4096
    slo_factor: float | None = 1.5
    feedback: bool = True
    target_fraction: float = 0.7
    window_requests: int = 200
    window_s: float = 2.0
    min_budget_fraction: float = 0.1
    min_busy_fraction: float = 0.5
    unloaded_margin: float | None = None

    def __post_init__(self) -> None:
        own = "AdmissionConfig"
        for name in ("max_queue_items", "max_body_bytes", "max_items_per_request"):
            value = getattr(self, name)
            check(_is_int(value) and value >= 1, own, name, value, "an integer >= 1")
        check(self.slo_factor is None or (_is_num(self.slo_factor) and self.slo_factor > 0), own, "slo_factor",
              self.slo_factor, "> 0, or null to admit by queue size only")
        check(self.max_items_per_request <= self.max_queue_items, own, "max_items_per_request",
              self.max_items_per_request, f"<= max_queue_items={self.max_queue_items}, or no request of that size "
              "could ever be admitted")
        check(isinstance(self.feedback, bool), own, "feedback", self.feedback, "true or false")
        check(_is_num(self.target_fraction) and 0 < self.target_fraction <= 1, own, "target_fraction",
              self.target_fraction, "a fraction of slo_p99_ms in (0, 1] (the server-measured p99 to hold; the "
              "rest of the SLO is left for time only the client sees)")
        check(_is_int(self.window_requests) and 10 <= self.window_requests <= 100_000, own, "window_requests",
              self.window_requests, "an integer in [10, 100000] (fewer answers make a p99 of noise)")
        check(_is_num(self.window_s) and 0 < self.window_s <= 600, own, "window_s", self.window_s,
              "a number of seconds in (0, 600]")
        check(_is_num(self.min_budget_fraction) and 0 < self.min_budget_fraction <= 1, own, "min_budget_fraction",
              self.min_budget_fraction, "a fraction in (0, 1] of the starting budget (slo_factor x slo_p99_ms)")
        check(_is_num(self.min_busy_fraction) and 0 <= self.min_busy_fraction <= 1, own, "min_busy_fraction",
              self.min_busy_fraction, "a fraction in [0, 1] of arrivals that found every replica busy (0: cut "
              "whenever the p99 is over the target)")
        check(self.unloaded_margin is None or (_is_num(self.unloaded_margin) and 1 <= self.unloaded_margin <= 10),
              own, "unloaded_margin", self.unloaded_margin, "a factor in [1, 10] over the learnt unloaded p99, or "
              "null for the fixed target")


@dataclass(frozen=True, kw_only=True)
class ServePlan(Config):
    """A whole serving setup (see the module docstring). ``replica_timeout_s`` is how long one batch
    may compute before its replica counts as hung; ``max_retries`` how often a request is retried on
    another replica after a replica failure. ``event_loop`` is the HTTP front's asyncio loop
    (:mod:`crossrec.serve.eventloop`: ``"auto"`` = uvloop when installed).

    >>> cpu = ReplicaSpec(artifact="artifacts/dlrm-int8", runtime="onnx-int8", catalog_device="epyc-zen5-2vcpu")
    >>> gpu = ReplicaSpec(artifact="artifacts/dlrm", device="cuda", catalog_device="h100-sxm",
    ...                   batching=BatchingConfig(max_batch_items=4096, mode="slo"))
    >>> plan = ServePlan(deployments=(DeploymentSpec(name="dlrm", replicas=(cpu, gpu)),),
    ...                  routing=RoutingConfig(policy="cost-aware"), slo_p99_ms=20.0)
    >>> [r.device for r in plan.deployment("dlrm").replicas], plan.host
    (['cpu', 'cuda'], '127.0.0.1')
    """

    name: str = "crossrec"
    deployments: tuple[DeploymentSpec, ...]
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)
    slo_p99_ms: float = 25.0
    host: str = "127.0.0.1"
    port: int = 8000
    replica_timeout_s: float = 5.0
    max_retries: int = 2
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"

    def __post_init__(self) -> None:
        own = "ServePlan"
        check(isinstance(self.name, str) and bool(self.name), own, "name", self.name, "a non-empty string")
        check(len(self.deployments) >= 1, own, "deployments", self.deployments, "at least one DeploymentSpec")
        names = [d.name for d in self.deployments]
        dup = sorted({n for n in names if names.count(n) > 1})
        check(not dup, own, "deployments", dup, "unique deployment names")
        check(_is_num(self.slo_p99_ms) and self.slo_p99_ms > 0, own, "slo_p99_ms", self.slo_p99_ms, "> 0 ms")
        check(isinstance(self.host, str) and bool(self.host), own, "host", self.host, "a host name or IP address")
        check(_is_int(self.port) and 0 <= self.port <= 65535, own, "port", self.port, "an integer in [0, 65535]")
        check(_is_num(self.replica_timeout_s) and self.replica_timeout_s > 0, own, "replica_timeout_s",
              self.replica_timeout_s, "> 0 s")
        check(_is_int(self.max_retries) and 0 <= self.max_retries <= 10, own, "max_retries", self.max_retries,
              "an integer in [0, 10]")
        check(self.event_loop in ("auto", "uvloop", "asyncio"), own, "event_loop", self.event_loop,
              "'auto' (uvloop when installed), 'uvloop' or 'asyncio'")

    def deployment(self, name: str) -> DeploymentSpec:
        """The deployment called ``name``; ConfigError listing the deployments otherwise."""
        for d in self.deployments:
            if d.name == name:
                return d
        raise ConfigError(f"plan {self.name!r} has no deployment {name!r}; deployments: "
                          f"{', '.join(d.name for d in self.deployments)}")

    @staticmethod
    def for_artifact(path: str | Path, **overrides: Any) -> ServePlan:
        """A one-deployment plan serving the artifact at ``path``.

        Defaults: the deployment is named after the model in the artifact's manifest; two single-thread
        replicas on a machine with >= 2 cores (one computes while the other receives, and each is the
        other's failover target), else one; SLO-mode batching up to 1024 items. ``overrides`` may set
        any :class:`ServePlan` field, any :class:`ReplicaSpec` field but ``artifact``, and ``model`` (the
        deployment name).

        >>> import tempfile
        >>> from crossrec.artifact import save_artifact
        >>> from crossrec.data.synthetic import SyntheticConfig, generate
        >>> from crossrec.models import ModelSpec, build
        >>> data = generate(SyntheticConfig(rows=50, num_sparse=2, max_rows=5, seed=0))
        >>> path = save_artifact(tempfile.mkdtemp() + "/a", build(ModelSpec.for_schema(data.schema)), data.schema)
        >>> plan = ServePlan.for_artifact(path, port=0, count=1, catalog_device="epyc-zen5-2vcpu")
        >>> plan.deployments[0].name, plan.deployments[0].replicas[0].count, plan.port
        ('dlrm', 1, 0)
        """
        from crossrec.artifact import read_manifest

        manifest = read_manifest(path)
        plan_keys = {f.name for f in dataclasses.fields(ServePlan)} - {"deployments"}
        replica_keys = {f.name for f in dataclasses.fields(ReplicaSpec)} - {"artifact"}
        unknown = sorted(set(overrides) - plan_keys - replica_keys - {"model"})
        if unknown:
            raise ConfigError(f"ServePlan.for_artifact: unknown override(s) {unknown}; valid: "
                              f"{', '.join(sorted(plan_keys | replica_keys | {'model'}))}")
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        replica_kw: dict[str, Any] = {"count": 2 if cores >= 2 else 1, "threads": 1,
                                      "batching": BatchingConfig(mode="slo")}
        replica_kw.update({k: v for k, v in overrides.items() if k in replica_keys})
        model = overrides.get("model") or _model_name(manifest, Path(path))
        deployment = DeploymentSpec(name=model, replicas=(ReplicaSpec(artifact=str(path), **replica_kw),))
        plan_kw = {k: v for k, v in overrides.items() if k in plan_keys}
        plan_kw.setdefault("name", model)
        return ServePlan(deployments=(deployment,), **plan_kw)


def _model_name(manifest: dict[str, Any], path: Path) -> str:
    name = str((manifest.get("model_spec") or {}).get("name") or path.name)
    name = re.sub(r"[^A-Za-z0-9._-]", "-", name).lstrip("._-")
    return name or "model"


def resolve_catalog_device(spec: ReplicaSpec) -> str | None:
    """The catalog device a replica runs on: ``spec.catalog_device``, else the detected CPU's (or first
    CUDA GPU's) catalog match; None when the local device has no catalog entry.

    >>> resolve_catalog_device(ReplicaSpec(artifact="a", catalog_device="epyc-9654"))
    'epyc-9654'
    """
    if spec.catalog_device is not None:
        return spec.catalog_device
    from crossrec.hardware import detect_cpu, detect_cuda

    if spec.device.startswith("cuda"):
        gpus = detect_cuda()
        index = int(spec.device.split(":")[1]) if ":" in spec.device else 0
        return gpus[index].catalog_match if index < len(gpus) else None
    return detect_cpu().catalog_match


def resolve_hugepages(setting: bool | str, *, supported: bool, table_bytes: int) -> bool:
    """Whether a replica's runtime gets ``hugepages=True``: ``setting`` is :attr:`ReplicaSpec.hugepages`,
    ``supported`` whether the runtime has the option, ``table_bytes`` the model's embedding-table bytes.

    >>> cases = ((True, 2**30), (False, 2**30), (True, 2**20))  # (runtime supports it, table bytes)
    >>> [resolve_hugepages("auto", supported=s, table_bytes=b) for s, b in cases]
    [True, False, False]
    >>> resolve_hugepages(True, supported=True, table_bytes=0)  # asked for: the runtime moves what is large enough
    True
    """
    if setting == "auto":
        return supported and table_bytes >= HUGEPAGES_AUTO_BYTES
    return bool(setting) and supported


@functools.lru_cache(maxsize=1)
def _catalog_names() -> tuple[str, ...]:
    """Device names of the packaged catalog (parsed once: plans build many ReplicaSpecs)."""
    from crossrec.hardware.spec import load_catalog

    return tuple(load_catalog())


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value  # not NaN
