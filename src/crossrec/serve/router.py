"""`Router`: owns the serving loop — admission, routing, batching, retries, restarts, hot swap, metrics.

Per replica the router keeps a :class:`~crossrec.serve.batcher.Batcher` and one dispatch task that
pulls batches from it, calls ``await replica.infer(merged)`` and splits the probabilities back to the
requests. A :class:`~crossrec.serve.policy.RoutingPolicy` only ranks replicas (DESIGN.md §3).

- **Admission** (fast refusal instead of queueing, :class:`~crossrec.errors.OverloadedError` with
  ``retry_after_s``): items admitted and not yet answered may not exceed ``max_queue_items``; and,
  with ``admission_slo_factor`` set (``AdmissionConfig.slo_factor`` in a plan), a request is refused
  when every replica is busy and even the best one's predicted finish time exceeds
  ``factor x slo_p99_ms`` — a bounded queue alone lets queueing delay grow far past the SLO under
  overload (8192 queued items are ~100 ms of work on a 2-core CPU).
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
``admission_slo_factor=None`` (None: admit by queue size only), ``stop(drain_timeout_s=5.0)`` and
``swap(..., drain_timeout_s=None)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

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
from crossrec.serve.batcher import Batcher, QueuedRequest, ReplicaSlot, merge_batches, split_rows
from crossrec.serve.metrics import ReplicaGauges, ServeMetrics
from crossrec.serve.plan import BatchingConfig
from crossrec.serve.policy import RequestInfo, RoutingPolicy, monotone_curve, predict_finish_ms

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from crossrec.serve.replica import Replica

RATE_WINDOW_S = 5.0  # completions remembered for the measured drain rate


@dataclass(frozen=True)
class PredictResult:
    """One answered request: probabilities ``(B,)`` float32, the replica and artifact version that
    computed them, time queued (admission to dispatch) and the compute time of its batch."""

    probabilities: np.ndarray
    replica: str
    version: str
    queue_ms: float
    compute_ms: float


class _Deployment:
    def __init__(self, name: str, slots: list[ReplicaSlot]):
        self.name, self.slots = name, slots
        self.retired: list[ReplicaSlot] = []  # old replicas draining after a swap
        self.lock = asyncio.Lock()


class Router:
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
                 health_interval_s: float = 1.0, admission_slo_factor: float | None = None):
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
        self._admit(dep, items, now, deadline)
        loop = asyncio.get_running_loop()
        req = QueuedRequest(batch=batch, priority=priority, arrival=now, deadline=deadline,
                            future=loop.create_future(), model=model)
        self._admitted_items += items
        status = "error"
        try:
            await self._route(dep, req, wait=True)
            result = await self._wait(req)
            status = "ok"
            self.metrics.request_seconds.labels(model=model).observe(max(self._clock() - now, 0.0))
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

    def _check_request(self, dep: _Deployment, batch: Batch, priority: int) -> int:
        classes = min(s.batcher.config.priority_classes for s in dep.slots)
        if not (isinstance(priority, int) and not isinstance(priority, bool) and 0 <= priority < classes):
            raise ConfigError(f"priority {priority!r} is invalid: an integer from 0 (most urgent) to {classes - 1}")
        items = batch.batch_size
        if items == 0:
            raise DataError("the request holds no instances; send at least one")
        if items > self.max_queue_items:
            raise DataError(f"the request holds {items} instances, more than the server admits at once "
                            f"(max_queue_items={self.max_queue_items}); split it")
        return items

    def _deadline(self, model: str, items: int, now: float, deadline_ms: float | None) -> float | None:
        if deadline_ms is None:
            return None
        if not isinstance(deadline_ms, (int, float)) or isinstance(deadline_ms, bool) or math.isnan(deadline_ms):
            raise ConfigError(f"deadline_ms = {deadline_ms!r} is invalid: a number of milliseconds, or null")
        if deadline_ms <= 0:
            self.metrics.rejections.labels(model=model, reason="deadline").inc()
            self.metrics.answered(model, "deadline", items)
            raise DeadlineExceededError(f"deadline_ms={deadline_ms} has already passed; the request was not computed")
        return now + deadline_ms / 1e3 if math.isfinite(deadline_ms) else None

    def _admit(self, dep: _Deployment, items: int, now: float, deadline: float | None) -> None:
        """Refuse at once (OverloadedError) when the queue bound or the SLO cannot be kept."""
        waiting = self._admitted_items + items
        if waiting > self.max_queue_items:
            rate = self._drain_rate()
            retry = (waiting - self.max_queue_items) / rate if rate else 1.0
            self._refuse(dep.name, items, f"{self._admitted_items} items already admitted, max_queue_items="
                                          f"{self.max_queue_items}", retry)
        if self.admission_slo_factor is None:
            return
        budget = self.admission_slo_factor * self.slo_p99_ms
        live = [s for s in dep.slots if s.healthy and not s.draining]
        if any(s.outstanding == 0 for s in live):  # an idle replica: refusing would help nobody
            return
        finishes = [predict_finish_ms(s.state(), items) for s in live]
        known = [f for f in finishes if f is not None]
        if known and len(known) == len(finishes) and min(known) > budget:
            self._refuse(dep.name, items, f"predicted finish {min(known):.1f} ms on the best replica exceeds "
                                          f"{budget:.1f} ms ({self.admission_slo_factor} x slo_p99_ms)",
                         (min(known) - budget) / 1e3)

    def _refuse(self, model: str, items: int, why: str, retry_after_s: float) -> None:
        self.metrics.rejections.labels(model=model, reason="overloaded").inc()
        self.metrics.answered(model, "overloaded", items)
        retry = round(min(max(retry_after_s, 0.01), 60.0), 3)
        raise OverloadedError(f"server overloaded: {why}; retry after {retry} s or reduce the request rate",
                              retry_after_s=retry)

    def _drain_rate(self) -> float | None:
        """Items per second the replicas are answering: measured over the last few seconds, else from
        the healthy replicas' latency curves (best items/ms of each), else None."""
        now = self._clock()
        while self._completions and self._completions[0][0] < now - RATE_WINDOW_S:
            self._completions.popleft()
        if len(self._completions) >= 2:
            span = now - self._completions[0][0]
            if span >= 0.25:
                return sum(n for _, n in self._completions) / span
        rate = 0.0
        for dep in self._deployments.values():
            for s in dep.slots:
                curve = s.batcher.latency_curve
                if s.healthy and curve:
                    rate += max(b / max(ms, 1e-6) for b, ms in curve.items()) * 1e3 / s.slowdown
        return rate or None

    def _candidates(self, dep: _Deployment, req: QueuedRequest) -> list[ReplicaSlot]:
        live = [s for s in dep.slots if s.healthy and not s.draining]
        fresh = [s for s in live if s.replica.name not in req.tried]
        return fresh or live  # a retry prefers replicas it has not failed on, else any healthy one

    def _pick(self, dep: _Deployment, req: QueuedRequest) -> ReplicaSlot | None:
        slots = self._candidates(dep, req)
        if not slots:
            return None
        now = self._clock()
        budget = self.slo_p99_ms if req.deadline is None else min(self.slo_p99_ms, (req.deadline - now) * 1e3)
        by_name = {s.replica.name: s for s in slots}
        info = RequestInfo(items=req.items, priority=req.priority, deadline=req.deadline, budget_ms=budget)
        try:
            ranked = self.policy.rank(info, [s.state() for s in slots])
        except Exception as exc:  # a broken plugin is a server error, not the client's
            raise ServeError(f"routing policy {self.policy.name!r} failed: {type(exc).__name__}: {exc}") from exc
        for state in ranked:
            if state.name in by_name:
                return by_name[state.name]
        rate = self._drain_rate()
        raise OverloadedError(f"routing policy {self.policy.name!r} refused every replica of {dep.name!r}; retry "
                              "later", retry_after_s=round(min(self._admitted_items / rate, 60.0), 3) if rate else 1.0)

    async def _route(self, dep: _Deployment, req: QueuedRequest, *, wait: bool) -> None:
        """Queue ``req`` on the best replica; with no healthy replica, wait for a restart (bounded)."""
        end = self._clock() + 3 * self.replica_timeout_s
        while True:
            slot = self._pick(dep, req)
            if slot is not None:
                req.route = slot
                slot.batcher.put(req)
                return
            now = self._clock()
            remaining = end - now
            if req.deadline is not None:
                if req.deadline <= now:
                    raise DeadlineExceededError(f"the deadline passed while no replica of {dep.name!r} was healthy; "
                                                "the request was not computed")
                remaining = min(remaining, req.deadline - now)
            if not wait or remaining <= 0 or not self._started:
                raise ServeError(f"no healthy replica of model {dep.name!r} "
                                 f"({', '.join(s.replica.name for s in dep.slots)} are failed or restarting); "
                                 "retry later")
            event = self._healthy_event
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(event.wait(), remaining)  # type: ignore[union-attr]

    async def _wait(self, req: QueuedRequest) -> PredictResult:
        fut = req.future
        if req.deadline is None:
            return await fut
        try:
            return await asyncio.wait_for(asyncio.shield(fut), max(req.deadline - self._clock(), 0.0))
        except asyncio.TimeoutError:
            if req.queued and req.route is not None and req.route.batcher.remove(req):
                req.fail(DeadlineExceededError(
                    f"request of {req.items} items missed its deadline while queued on {req.route.replica.name}; "
                    "it was not computed. Give it a longer deadline_ms, a more urgent priority, or send less load"))
            return await fut  # in flight: its answer is coming; otherwise the failure just set

    # -- dispatch ----------------------------------------------------------------------------------

    async def _dispatch_loop(self, dep: _Deployment, slot: ReplicaSlot) -> None:
        while True:
            batch = await slot.batcher.next_batch()
            if not batch:  # closed and empty
                return
            try:
                await self._run_batch(dep, slot, batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must not kill the loop and strand this replica's queue
                for r in batch:
                    r.fail(ServeError(f"internal error while serving the batch: {type(exc).__name__}: {exc}"))

    async def _run_batch(self, dep: _Deployment, slot: ReplicaSlot, reqs: list[QueuedRequest]) -> None:
        reqs = [r for r in reqs if not r.done]
        if not reqs:
            return
        items = sum(r.items for r in reqs)
        slot.in_flight += items
        start = self._clock()
        try:
            merged = merge_batches([r.batch for r in reqs])
            # The replica enforces its own timeout; this guard (a little longer) catches replicas that don't.
            probs = await asyncio.wait_for(slot.replica.infer(merged), self.replica_timeout_s * 1.1 + 0.05)
            parts = split_rows(probs, [r.items for r in reqs])
        except (DataError, ConfigError) as exc:
            slot.in_flight -= items
            if len(reqs) == 1:
                reqs[0].fail(exc)
            else:  # find the bad request(s) instead of failing their batch-mates
                for r in reqs:
                    await self._run_batch(dep, slot, [r])
            return
        except asyncio.CancelledError:  # stop(): nobody will answer these otherwise
            slot.in_flight -= items
            for r in reqs:
                r.fail(ServeError("the server is shutting down; the request was not completed — retry"))
            raise
        except (asyncio.TimeoutError, Exception) as exc:  # a dead, hung or broken replica
            slot.in_flight -= items
            self._replica_failed(dep, slot, reqs, exc)
            return
        slot.in_flight -= items
        compute_s = max(self._clock() - start, 0.0)
        for r, p in zip(reqs, parts):
            r.resolve(PredictResult(probabilities=p, replica=slot.replica.name, version=slot.replica.version,
                                    queue_ms=(start - r.arrival) * 1e3, compute_ms=compute_s * 1e3))
        slot.observe(items, compute_s * 1e3)
        self._completions.append((self._clock(), items))
        self.metrics.batch_items.labels(replica=slot.replica.name).observe(items)
        self.metrics.compute_seconds.labels(replica=slot.replica.name, device=slot.replica.device).observe(compute_s)

    def _replica_failed(self, dep: _Deployment, slot: ReplicaSlot, in_flight: list[QueuedRequest],
                        exc: BaseException) -> None:
        """Mark ``slot`` unhealthy, re-route its batch (one attempt each) and its queue, restart it."""
        why = "no answer within replica_timeout_s" if isinstance(exc, asyncio.TimeoutError) else \
            f"{type(exc).__name__}: {exc}"
        self.metrics.replica_failures.labels(replica=slot.replica.name).inc()
        slot.healthy = False
        slot.last_error = why
        for r in in_flight:
            r.attempts += 1
            r.tried.add(slot.replica.name)
        for r in [*in_flight, *slot.batcher.take_all()]:
            if r.done:
                continue
            if r.attempts > self.max_retries:
                r.fail(ReplicaError(f"request failed on replica(s) {sorted(r.tried)} ({r.attempts} attempts, "
                                    f"max_retries={self.max_retries}); last error: {why}"))
                continue
            self.metrics.retries.labels(model=dep.name).inc()
            self._reroute(dep, r, why)
        if not slot.draining and self._started and (slot.restart_task is None or slot.restart_task.done()):
            slot.restart_task = asyncio.create_task(self._restart(slot), name=f"crossrec-restart {slot.replica.name}")

    def _reroute(self, dep: _Deployment, req: QueuedRequest, why: str) -> None:
        try:
            slot = self._pick(dep, req)
        except OverloadedError as exc:
            req.fail(exc)
            return
        if slot is not None:
            req.route = slot
            slot.batcher.put(req)
            return

        async def later() -> None:  # no healthy replica now: wait for a restart in the background
            try:
                await self._route(dep, req, wait=True)
            except DeadlineExceededError as exc:
                req.fail(exc)
            except ServeError as exc:
                req.fail(ServeError(f"{exc} (after a replica failure: {why})"))

        task = asyncio.create_task(later())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _restart(self, slot: ReplicaSlot) -> None:
        """Restart a failed replica until it is alive again (exponential backoff up to 5 s)."""
        delay = 0.1
        while self._started and not slot.draining:
            try:
                await slot.replica.restart()
                if slot.replica.alive():
                    if slot.replica.latency_curve:
                        slot.batcher.latency_curve = monotone_curve(slot.replica.latency_curve)
                    slot.slowdown = slot.batcher.slowdown = 1.0
                    slot.healthy = True
                    self.metrics.replica_restarts.labels(replica=slot.replica.name).inc()
                    self._notify_healthy()
                    return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # counted, kept for models(), and retried with backoff
                slot.last_error = f"restart failed: {type(exc).__name__}: {exc}"
                self.metrics.replica_failures.labels(replica=slot.replica.name).inc()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _notify_healthy(self) -> None:
        if self._healthy_event is not None:
            self._healthy_event.set()
            self._healthy_event = asyncio.Event()

    async def _health_loop(self) -> None:
        """Catch replicas that died while idle (a busy one fails its batch first)."""
        while True:
            await asyncio.sleep(self.health_interval_s)
            for dep in self._deployments.values():
                for slot in dep.slots:
                    if slot.healthy and not slot.in_flight and not self._alive(slot):
                        self._replica_failed(dep, slot, [], ReplicaError(f"{slot.replica.name} is not alive"))

    @staticmethod
    def _alive(slot: ReplicaSlot) -> bool:
        try:
            return bool(slot.replica.alive())
        except Exception:  # a replica that cannot even say whether it lives is not alive
            return False

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

