"""`Router`: owns the serving loop — admission, routing, batching, retries, restarts, hot swap, metrics.

Per replica the router keeps a :class:`~crossrec.serve.batcher.Batcher` and one dispatch task that
pulls batches from it, calls ``await replica.infer(merged)`` and splits the probabilities back to the
requests. A :class:`~crossrec.serve.policy.RoutingPolicy` only ranks replicas (DESIGN.md §3).

- **Admission** (fast refusal instead of queueing, :class:`~crossrec.errors.OverloadedError` with
  ``retry_after_s``): items admitted and not yet answered may not exceed ``max_queue_items``; and,
  with ``admission_slo_factor`` set (``AdmissionConfig.slo_factor`` in a plan), a request is refused
  when every replica is busy and even the best one's predicted finish time exceeds
  ``factor x slo_p99_ms`` — a bounded queue alone lets queueing delay grow far past the SLO under
  overload (8192 queued items are ~100 ms of work on a 2-core CPU). That budget then follows the
  latency admitted requests actually see (``feedback``, on by default with the SLO refusal:
  :class:`~crossrec.serve.admission_feedback.LatencyFeedback`, an AIMD controller on the p99 of the last
  answers): the prediction misses what happens outside the router. The latency is the router's own
  (admission to answer) unless the HTTP front feeds its own through :meth:`Router.observe_latency`
  (:func:`crossrec.serve.app.create_app` does); :meth:`Router.configure_admission` applies a plan's
  :class:`~crossrec.serve.plan.AdmissionConfig`; ``/metrics`` shows the budget, the target and the
  window's p99 (``crossrec_admission_*``), :meth:`Router.admission_state` the same as JSON.
- **Splitting**: with ``split_items`` set (``RoutingConfig.split_items`` in a plan), a request of at
  least twice that many items arriving while two or more replicas are idle is split into one part per
  idle replica (each >= ``split_items`` rows), computed in parallel and joined in row order: on
  single-thread workers a 700-item request is ~2x faster that way, and an idle replica does nothing
  for it otherwise. A busy deployment splits only a request that admission would otherwise refuse,
  into the fewest parts whose predicted finishes fit the budget ("split before refusing").
- **Deadlines**: a request whose deadline passes while queued is answered with
  :class:`~crossrec.errors.DeadlineExceededError` at once and never computed.
- **Failover**: a :class:`~crossrec.errors.ReplicaError` (or no answer within ``replica_timeout_s``)
  marks the replica unhealthy, re-queues its batch (counting one attempt, at most ``max_retries``)
  and its queue (no attempt) on other replicas, and restarts it in the background (backoff); a
  health check every ``health_interval_s`` catches replicas that died while idle. A batch that fails
  with a :class:`~crossrec.errors.DataError` is re-run one request at a time so one bad request
  cannot fail its batch-mates.
- **Hot swap**: :meth:`Router.swap` starts the new replicas, routes new requests to them, lets the
  old ones drain, then stops them: no request fails.

Additions to the serve contract (no deviation; all keyword, defaulted): ``batching=None`` (each
replica's own ``batching`` as ``build_replicas`` sets it from the plan, else ``BatchingConfig()``; a
mapping may be keyed by model or replica name, a replica name winning), ``health_interval_s=1.0``,
``admission_slo_factor=None`` (None: admit by queue size only), ``split_items=None`` (never split),
``stop(drain_timeout_s=5.0)`` and
``swap(..., drain_timeout_s=None)``; ``configure_admission``, ``observe_latency``, ``admission_state``
and the ``feedback`` attribute (the :class:`~crossrec.serve.admission_feedback.LatencyFeedback` or None).

The methods live in three modules: this one (construction, lifecycle, ``predict``, hot swap,
introspection), :mod:`crossrec.serve.router_admission` (request records, admission, routing; it
defines :class:`PredictResult`, re-exported here) and :mod:`crossrec.serve.router_dispatch` (dispatch
loops, failover, restarts, health checks), joined as mixins of :class:`Router`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from crossrec.config import check
from crossrec.data.batch import Batch
from crossrec.errors import (
    ConfigError,
    CrossrecError,
    DataError,
    DeadlineExceededError,
    OverloadedError,
    ReplicaError,
    ServeError,
)
from crossrec.serve.admission_feedback import AdmissionCollector, LatencyFeedback
from crossrec.serve.batcher import Batcher, QueuedRequest, ReplicaSlot
from crossrec.serve.metrics import ReplicaGauges, ServeMetrics
from crossrec.serve.plan import AdmissionConfig, BatchingConfig
from crossrec.serve.policy import RoutingPolicy, monotone_curve
from crossrec.serve.router_admission import (
    RATE_WINDOW_S,
    AdmissionMixin,
    PredictResult,
    _Deployment,
)
from crossrec.serve.router_dispatch import DispatchMixin

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from crossrec.serve.replica import Replica

__all__ = ["RATE_WINDOW_S", "LatencyFeedback", "PredictResult", "Router"]


class Router(AdmissionMixin, DispatchMixin):
    """Serves deployments of replicas; see the module docstring. Use ``await start()`` before
    :meth:`predict` and ``await stop()`` at the end (or ``async with router:``).

    >>> import asyncio, torch
    >>> from crossrec.data.batch import Batch
    >>> from crossrec.models import ModelSpec, TableSpec, build
    >>> from crossrec.serve.policy import get_policy
    >>> from crossrec.serve.replica import InProcessReplica
    >>> spec = ModelSpec(num_dense=2, tables=(TableSpec(name="a", num_embeddings=5),), embedding_dim=4,
    ...                  bottom_mlp=(4,), top_mlp=(8,))
    >>> model = build(spec, seed=0)
    >>> replicas = [InProcessReplica(f"demo/cpu#{i}", "demo", model, profile_sizes=(1, 8)) for i in (0, 1)]
    >>> async def demo():
    ...     router = Router({"demo": replicas}, get_policy("least-outstanding"))
    ...     await router.start()
    ...     try:
    ...         batch = Batch.from_one_hot(torch.zeros(3, 2), torch.tensor([[0], [1], [4]]))
    ...         return await router.predict("demo", batch, priority=0, deadline_ms=1000)
    ...     finally:
    ...         await router.stop()
    >>> result = asyncio.run(demo())
    >>> result.probabilities.shape, result.replica.startswith("demo/cpu#")
    ((3,), True)
    """

    def __init__(self, deployments: Mapping[str, Sequence[Replica]], policy: RoutingPolicy, *,
                 batching: BatchingConfig | Mapping[str, BatchingConfig] | None = None, slo_p99_ms: float = 25.0,
                 max_queue_items: int = 8192, max_retries: int = 2, replica_timeout_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic, registry: CollectorRegistry | None = None,
                 health_interval_s: float = 1.0, admission_slo_factor: float | None = None,
                 split_items: int | None = None):
        own = "Router"
        check(bool(deployments), own, "deployments", dict(deployments), "at least one model with replicas")
        check(isinstance(policy, RoutingPolicy), own, "policy", policy, "a RoutingPolicy (crossrec.serve.policy)")
        check(slo_p99_ms > 0, own, "slo_p99_ms", slo_p99_ms, "> 0 ms")
        check(max_queue_items >= 1, own, "max_queue_items", max_queue_items, ">= 1")
        check(max_retries >= 0, own, "max_retries", max_retries, ">= 0")
        check(replica_timeout_s > 0, own, "replica_timeout_s", replica_timeout_s, "> 0 s")
        check(health_interval_s > 0, own, "health_interval_s", health_interval_s, "> 0 s")
        check(admission_slo_factor is None or admission_slo_factor > 0, own, "admission_slo_factor",
               admission_slo_factor, "> 0, or None to admit by queue size only")
        self.policy, self.slo_p99_ms = policy, float(slo_p99_ms)
        self.max_queue_items, self.max_retries = int(max_queue_items), int(max_retries)
        self.replica_timeout_s, self.health_interval_s = float(replica_timeout_s), float(health_interval_s)
        self.admission_slo_factor = admission_slo_factor
        check(split_items is None or (isinstance(split_items, int) and split_items >= 1), own, "split_items",
              split_items, "an integer >= 1 (smallest part of a request split across idle replicas), or None")
        self.split_items = split_items
        self._batching, self._clock = batching, clock
        self._catalog: dict[str, Any] | None = None
        self._deployments: dict[str, _Deployment] = {}
        for model, replicas in deployments.items():
            check(len(replicas) >= 1, own, f"deployments[{model!r}]", list(replicas), "at least one replica")
            self._deployments[model] = _Deployment(model, [self._make_slot(model, r) for r in replicas])
        names = [s.replica.name for d in self._deployments.values() for s in d.slots]
        dup = sorted({n for n in names if names.count(n) > 1})
        check(not dup, own, "deployments", dup, "unique replica names (they label metrics and routing)")
        if batching is not None and not isinstance(batching, BatchingConfig):
            stray = sorted(set(batching) - set(names) - set(self._deployments))
            check(not stray, own, "batching", stray, "keys that are model or replica names")
        self.metrics = ServeMetrics(registry, replicas=self._gauges)
        self.registry = self.metrics.registry
        self._admission_config = AdmissionConfig()  # the feedback's settings (configure_admission changes them)
        self._external_latency = False  # True once the HTTP front feeds the latency (configure_admission)
        self.feedback: LatencyFeedback | None = LatencyFeedback.from_config(
            self._admission_config, slo_factor=admission_slo_factor, slo_p99_ms=self.slo_p99_ms, clock=clock)
        self.registry.register(AdmissionCollector(self))
        self._admitted_items = 0  # admitted, not yet answered (router-wide)
        self._completions: deque[tuple[float, int]] = deque()
        self._started = self._accepting = self._stopped = False
        self._health_task: asyncio.Task | None = None
        self._healthy_event: asyncio.Event | None = None
        self._background: set[asyncio.Task] = set()

    # -- construction helpers ----------------------------------------------------------------------

    def _batching_for(self, model: str, replica: Replica) -> BatchingConfig:
        b = self._batching
        if isinstance(b, BatchingConfig):
            return b
        if b is not None and replica.name in b:
            return b[replica.name]
        if b is not None and model in b:
            return b[model]
        own = getattr(replica, "batching", None)  # the plan's setting, set by build_replicas
        if isinstance(own, BatchingConfig):
            return own
        spec = getattr(replica, "spec", None)
        return getattr(spec, "batching", None) or BatchingConfig()

    def _make_slot(self, model: str, replica: Replica) -> ReplicaSlot:
        if self._catalog is None:
            from crossrec.hardware.spec import load_catalog

            self._catalog = load_catalog()
        device = self._catalog.get(replica.device)
        batcher = Batcher(self._batching_for(model, replica), clock=self._clock, slo_ms=self.slo_p99_ms)
        price, power = getattr(device, "price_per_hour_usd", None), getattr(device, "power_w", None)
        return ReplicaSlot(replica, batcher, price, power)

    def _gauges(self) -> list[ReplicaGauges]:
        return [ReplicaGauges(s.replica.name, s.replica.device, s.batcher.queued_items, s.outstanding,
                              s.healthy and not s.draining)
                for d in self._deployments.values() for s in (*d.slots, *d.retired)]

    # -- lifecycle ---------------------------------------------------------------------------------

    async def __aenter__(self) -> Router:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start every replica (concurrently) and the dispatch loops; re-raises a replica's start error
        after stopping the ones that did start. A stopped router cannot be started again."""
        if self._started:
            return
        if self._stopped:
            raise ServeError("this router was stopped; build a new Router (its queues are closed)")
        self._healthy_event = asyncio.Event()
        slots = [s for d in self._deployments.values() for s in d.slots]
        await self._start_slots(slots)
        for dep in self._deployments.values():
            for slot in dep.slots:
                self._activate(dep, slot)
        self._health_task = asyncio.create_task(self._health_loop(), name="crossrec-router-health")
        self._started = self._accepting = True

    async def _start_slots(self, slots: Sequence[ReplicaSlot]) -> None:
        results = await asyncio.gather(*(s.replica.start() for s in slots), return_exceptions=True)
        failed = [(s, r) for s, r in zip(slots, results) if isinstance(r, BaseException)]
        if failed:
            started = [s for s, r in zip(slots, results) if not isinstance(r, BaseException)]
            await asyncio.gather(*(s.replica.stop() for s in started), return_exceptions=True)
            slot, exc = failed[0]
            if isinstance(exc, CrossrecError):
                raise exc
            raise ServeError(f"replica {slot.replica.name} failed to start: {type(exc).__name__}: {exc}") from exc

    def _activate(self, dep: _Deployment, slot: ReplicaSlot) -> None:
        slot.batcher.latency_curve = monotone_curve(slot.replica.latency_curve)
        slot.healthy = True
        slot.task = asyncio.create_task(self._dispatch_loop(dep, slot), name=f"crossrec-dispatch {slot.replica.name}")

    async def stop(self, drain_timeout_s: float = 5.0) -> None:
        """Stop admitting, let admitted requests finish (up to ``drain_timeout_s``), fail the rest with
        ServeError, stop the dispatch loops and every replica. Idempotent."""
        if not self._started:
            return
        self._accepting = False
        end = time.monotonic() + drain_timeout_s
        while self._admitted_items and time.monotonic() < end:
            await asyncio.sleep(0.005)
        slots = [s for d in self._deployments.values() for s in (*d.slots, *d.retired)]
        for s in slots:
            for r in s.batcher.take_all():
                r.fail(ServeError("the server is shutting down; the request was not computed — retry later"))
            s.batcher.close()
        tasks = [t for s in slots for t in (s.task, s.restart_task) if t is not None]
        tasks += [t for t in (self._health_task, *self._background) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(s.replica.stop() for s in slots), return_exceptions=True)
        for s in slots:
            s.healthy = False
        self._started, self._stopped = False, True

    # -- requests ----------------------------------------------------------------------------------

    def _deployment(self, model: str) -> _Deployment:
        dep = self._deployments.get(model)
        if dep is None:
            raise ConfigError(f"unknown model {model!r}; served models: {', '.join(sorted(self._deployments))}")
        return dep

    async def predict(self, model: str, batch: Batch, *, priority: int = 1,
                      deadline_ms: float | None = None) -> PredictResult:
        """Score ``batch`` with deployment ``model``; see the module docstring for what may be raised
        (ConfigError: unknown model or bad priority; DataError: empty or oversized batch;
        OverloadedError; DeadlineExceededError; ServeError: no healthy replica / not running)."""
        if not self._accepting:
            raise ServeError("the router is not running (not started yet, or shutting down); retry later")
        dep = self._deployment(model)
        try:
            items = self._check_request(dep, batch, priority)
        except (ConfigError, DataError):  # counted under a known model only: user strings never become labels
            self.metrics.answered(model, "bad_request", batch.batch_size)
            raise
        now = self._clock()
        deadline = self._deadline(model, items, now, deadline_ms)
        unloaded, parts = self._admit(dep, items, now, deadline)
        loop = asyncio.get_running_loop()
        req = QueuedRequest(batch=batch, priority=priority, arrival=now, deadline=deadline,
                            future=loop.create_future(), model=model, unloaded=unloaded)
        self._admitted_items += items
        status = "error"
        try:
            sizes = self._split_sizes(dep, items, parts)
            if len(sizes) > 1:
                result = await self._run_split(dep, req, sizes)
            else:
                await self._route(dep, req, wait=True)
                result = await self._wait(req)
            status = "ok"
            took = max(self._clock() - now, 0.0)
            self.metrics.request_seconds.labels(model=model).observe(took)
            if self.feedback is not None and not self._external_latency:
                self.feedback.observe(took * 1e3, unloaded)
            self.metrics.queue_seconds.labels(model=model).observe(result.queue_ms / 1e3)
            return result
        except OverloadedError:
            status = "overloaded"
            raise
        except DeadlineExceededError:
            status = "deadline"
            self.metrics.rejections.labels(model=model, reason="deadline").inc()
            raise
        except (DataError, ConfigError):
            status = "bad_request"
            raise
        except ReplicaError:
            status = "error"
            raise
        except ServeError:
            status = "unavailable"
            raise
        except asyncio.CancelledError:
            status = "cancelled"
            req.future.cancel()  # the batcher skips it; an in-flight result is dropped
            if req.queued and req.route is not None:
                req.route.batcher.remove(req)
            raise
        finally:
            self._admitted_items -= items
            self.metrics.answered(model, status, items)

    # -- hot swap ----------------------------------------------------------------------------------

    async def swap(self, model: str, new_replicas: Sequence[Replica], *, drain_timeout_s: float | None = None) -> None:
        """Replace ``model``'s replicas with ``new_replicas`` without failing a request: start them,
        route new requests to them, let the old ones finish their queues (up to ``drain_timeout_s``,
        default ``3 x replica_timeout_s``; whatever is left is re-routed to the new ones), stop the old.
        If a new replica fails to start, the old ones keep serving and the start error is raised."""
        if not self._started:
            raise ServeError("swap needs a running router: await router.start() first")
        dep = self._deployment(model)
        names = [r.name for r in new_replicas]
        others = {s.replica.name for d in self._deployments.values() if d is not dep for s in d.slots}
        dup = sorted({n for n in names if names.count(n) > 1 or n in others})
        check(bool(new_replicas) and not dup, "Router.swap", "new_replicas", dup or names,
               "at least one replica, names unique and not used by another model")
        async with dep.lock:
            new = [self._make_slot(model, r) for r in new_replicas]
            await self._start_slots(new)
            old, dep.slots = dep.slots, new
            for slot in new:
                self._activate(dep, slot)
            for slot in old:
                slot.draining = True
            dep.retired.extend(old)
            self._notify_healthy()
            end = time.monotonic() + (3 * self.replica_timeout_s if drain_timeout_s is None else drain_timeout_s)
            while any(s.outstanding for s in old) and time.monotonic() < end:
                await asyncio.sleep(0.005)
            for slot in old:
                for r in slot.batcher.take_all():  # drain timed out: hand the rest to the new replicas
                    self._reroute(dep, r, "its replica was swapped out")
                slot.batcher.close()
            await asyncio.gather(*(s.task for s in old if s.task is not None), return_exceptions=True)
            for slot in old:
                if slot.restart_task is not None:
                    slot.restart_task.cancel()
            await asyncio.gather(*(s.replica.stop() for s in old), return_exceptions=True)
            dep.retired = [s for s in dep.retired if s not in old]

    # -- introspection -----------------------------------------------------------------------------

    def models(self) -> dict[str, dict[str, Any]]:
        """Per served model: artifact ``versions`` (several while a swap drains), ``replicas`` (name,
        device, runtime, version, health, queued/outstanding items, current batch cap — per device in
        SLO mode — and last error) and the distinct ``devices``.

        JSON-ready: ``GET /v1/models`` returns it as is."""
        out = {}
        for name, dep in sorted(self._deployments.items()):
            slots = [*dep.slots, *dep.retired]
            out[name] = {
                "versions": sorted({s.replica.version for s in slots}),
                "replicas": [{"name": s.replica.name, "device": s.replica.device, "runtime": s.replica.runtime,
                              "version": s.replica.version, "healthy": s.healthy and not s.draining,
                              "draining": s.draining, "queued_items": s.batcher.queued_items,
                              "outstanding_items": s.outstanding, "max_batch_items": s.batcher.max_batch_items(),
                              "last_error": s.last_error} for s in slots],
                "devices": sorted({s.replica.device for s in slots}),
            }
        return out

    def ready(self) -> bool:
        """True while running and every model has a healthy replica."""
        return self._accepting and all(any(s.healthy for s in d.slots) for d in self._deployments.values())

    def render_metrics(self) -> bytes:
        """The router's metrics in the Prometheus text format (``GET /metrics``)."""
        return self.metrics.render()

