"""The :class:`~crossrec.serve.router.Router`'s request side: the records a request and a deployment
are kept in, and admission — request checks, deadlines, the queue bound and the SLO refusal (with its
latency feedback, :mod:`crossrec.serve.admission_feedback`), picking a replica through the routing
policy, queueing on it and waiting for the answer.

Split out of :mod:`crossrec.serve.router` (which re-exports :class:`PredictResult`) to keep modules
small: :class:`AdmissionMixin` holds methods of ``Router`` and works on its attributes
(``_deployments``, ``policy``, ``metrics``, ``_clock``, ...); it is not used on its own.

>>> import numpy as np
>>> r = PredictResult(probabilities=np.zeros(2, dtype=np.float32), replica="m/cpu#0", version="v1",
...                   queue_ms=0.5, compute_ms=1.0)
>>> r.replica, r.probabilities.shape
('m/cpu#0', (2,))
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from crossrec.data.batch import Batch
from crossrec.errors import ConfigError, DataError, DeadlineExceededError, OverloadedError, ServeError
from crossrec.serve.admission_feedback import LatencyFeedback
from crossrec.serve.batcher import QueuedRequest, ReplicaSlot, split_batch
from crossrec.serve.plan import AdmissionConfig
from crossrec.serve.policy import RequestInfo, predict_finish_ms

if TYPE_CHECKING:
    from crossrec.serve.router import Router

RATE_WINDOW_S = 5.0  # completions remembered for the measured drain rate


@dataclass(frozen=True)
class PredictResult:
    """One answered request: probabilities ``(B,)`` float32, the replica and artifact version that
    computed them, time queued (admission to dispatch) and the compute time of its batch; ``unloaded``:
    whether the request found a replica idle on arrival (None when the router did not look: no SLO
    admission), which the admission feedback learns this server's latency without queueing from."""

    probabilities: np.ndarray
    replica: str
    version: str
    queue_ms: float
    compute_ms: float
    unloaded: bool | None = None


class _Deployment:
    def __init__(self, name: str, slots: list[ReplicaSlot]):
        self.name, self.slots = name, slots
        self.retired: list[ReplicaSlot] = []  # old replicas draining after a swap
        self.lock = asyncio.Lock()


class AdmissionMixin:
    """Admission and routing methods of :class:`~crossrec.serve.router.Router` (see the module docstring)."""

    def _check_request(self: Router, dep: _Deployment, batch: Batch, priority: int) -> int:
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

    def _deadline(self: Router, model: str, items: int, now: float, deadline_ms: float | None) -> float | None:
        if deadline_ms is None:
            return None
        if not isinstance(deadline_ms, (int, float)) or isinstance(deadline_ms, bool) or math.isnan(deadline_ms):
            raise ConfigError(f"deadline_ms = {deadline_ms!r} is invalid: a number of milliseconds, or null")
        if deadline_ms <= 0:
            self.metrics.rejections.labels(model=model, reason="deadline").inc()
            self.metrics.answered(model, "deadline", items)
            raise DeadlineExceededError(f"deadline_ms={deadline_ms} has already passed; the request was not computed")
        return now + deadline_ms / 1e3 if math.isfinite(deadline_ms) else None

    def _admit(self: Router, dep: _Deployment, items: int, now: float, deadline: float | None
               ) -> tuple[bool | None, int]:
        """Refuse at once (OverloadedError) when the queue bound or the SLO cannot be kept. Returns whether
        a replica was idle (None without SLO admission: not looked at) and the number of parts the request
        must be split into to be admitted (0: no such condition; :meth:`_split_parts`)."""
        waiting = self._admitted_items + items
        if waiting > self.max_queue_items:
            rate = self._drain_rate()
            retry = (waiting - self.max_queue_items) / rate if rate else 1.0
            self._refuse(dep.name, items, f"{self._admitted_items} items already admitted, max_queue_items="
                                          f"{self.max_queue_items}", retry)
        if self.admission_slo_factor is None:
            return None, 0
        live = [s for s in dep.slots if s.healthy and not s.draining]
        idle = any(s.outstanding == 0 for s in live)
        fb = self.feedback
        if fb is not None:
            fb.note_arrival(busy=not idle)
        if idle:  # an idle replica: refusing would help nobody
            return True, 0
        initial = self.admission_slo_factor * self.slo_p99_ms
        budget = fb.budget_ms() if fb is not None else initial
        finishes = [predict_finish_ms(s.state(), items) for s in live]
        known = [f for f in finishes if f is not None]
        if known and len(known) == len(finishes) and min(known) > budget:
            parts = self._split_parts(live, items, budget)
            if parts:
                return False, parts
            why = f"{self.admission_slo_factor} x slo_p99_ms"
            if fb is not None and budget < initial:
                why = (f"the admission budget, cut from {initial:.1f} ms because admitted requests took p"
                       f"{100 * fb.quantile:g} {fb.decision_quantile_ms or 0.0:.1f} ms, over the "
                       f"{fb.target_in_force_ms():.1f} ms target")
            self._refuse(dep.name, items, f"predicted finish {min(known):.1f} ms on the best replica exceeds "
                                          f"{budget:.1f} ms ({why})", (min(known) - budget) / 1e3)
        return False, 0

    def _split_parts(self: Router, live: list[ReplicaSlot], items: int, budget: float) -> int:
        """Split before refusing: the fewest parts (>= 2, each >= ``split_items`` rows, at most one per
        live replica) whose predicted finishes on the replicas best for them all fit ``budget``; 0 when
        none do (or splitting is off). Only reached when the whole request would be refused, so a busy
        deployment pays the extra messages only for requests it would otherwise turn away."""
        if self.split_items is None:
            return 0
        for k in range(2, min(len(live), items // self.split_items) + 1):
            part = -(-items // k)
            finishes = sorted(f for f in (predict_finish_ms(s.state(), part) for s in live) if f is not None)
            if len(finishes) >= k and finishes[k - 1] <= budget:
                return k
        return 0

    def configure_admission(self: Router, config: AdmissionConfig | None = None, *,
                            external_latency: bool | None = None, clock: Callable[[], float] | None = None) -> None:
        """Set the latency feedback from ``config`` (its ``feedback``, ``target_fraction``, ``window_*``
        and ``min_budget_fraction``; the starting budget stays ``admission_slo_factor x slo_p99_ms``),
        starting it afresh; ``clock`` is the feedback's (default the router's).
        ``external_latency=True``: the latency comes from :meth:`observe_latency` (the HTTP front, which
        sees more of a request than the router does) and the router stops recording its own."""
        if config is not None or clock is not None:
            self._admission_config = config or self._admission_config
            self.feedback = LatencyFeedback.from_config(self._admission_config, slo_factor=self.admission_slo_factor,
                                                        slo_p99_ms=self.slo_p99_ms, clock=clock or self._clock)
        if external_latency is not None:
            self._external_latency = bool(external_latency)

    def observe_latency(self: Router, latency_ms: float, unloaded: bool | None = None) -> None:
        """Record an admitted, answered request's latency (ms) as its caller measured it (e.g. from the
        HTTP handler's entry to the answer sent) for the admission feedback; ``unloaded``: the
        request's :attr:`PredictResult.unloaded`."""
        if self.feedback is not None:
            self.feedback.observe(latency_ms, unloaded)

    def admission_state(self: Router) -> dict[str, Any]:
        """JSON-ready admission state: limits, items admitted now, the budget and the feedback's window."""
        out: dict[str, Any] = {"max_queue_items": self.max_queue_items, "admitted_items": self._admitted_items,
                               "slo_factor": self.admission_slo_factor,
                               "latency_source": "external" if self._external_latency else "router"}
        if self.feedback is not None:
            out["feedback"] = self.feedback.state()
        elif self.admission_slo_factor is not None:
            out["budget_ms"] = self.admission_slo_factor * self.slo_p99_ms
        return out

    def _refuse(self: Router, model: str, items: int, why: str, retry_after_s: float) -> None:
        self.metrics.rejections.labels(model=model, reason="overloaded").inc()
        self.metrics.answered(model, "overloaded", items)
        retry = round(min(max(retry_after_s, 0.01), 60.0), 3)
        raise OverloadedError(f"server overloaded: {why}; retry after {retry} s or reduce the request rate",
                              retry_after_s=retry)

    def _drain_rate(self: Router) -> float | None:
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

    def _candidates(self: Router, dep: _Deployment, req: QueuedRequest) -> list[ReplicaSlot]:
        live = [s for s in dep.slots if s.healthy and not s.draining]
        fresh = [s for s in live if s.replica.name not in req.tried]
        return fresh or live  # a retry prefers replicas it has not failed on, else any healthy one

    def _pick(self: Router, dep: _Deployment, req: QueuedRequest) -> ReplicaSlot | None:
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

    async def _route(self: Router, dep: _Deployment, req: QueuedRequest, *, wait: bool) -> None:
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

    def _split_sizes(self: Router, dep: _Deployment, items: int, parts: int = 0) -> list[int]:
        """Row counts to split a request of ``items`` into: one part per idle replica (nothing queued or
        in flight), each at least ``split_items`` rows; ``[items]`` (no split) when fewer than two idle
        replicas could take a part. A big request then computes in parallel on replicas that would
        otherwise wait, instead of in sequence on one; a busy deployment splits only a request admission
        would otherwise refuse (``parts``, from :meth:`_split_parts`): batches already fill every replica,
        and the parts would only add messages."""
        k = parts
        if k < 2:
            if self.split_items is None or items < 2 * self.split_items:
                return [items]
            idle = sum(1 for s in dep.slots if s.healthy and not s.draining and s.outstanding == 0)
            k = min(idle, items // self.split_items)
            if k < 2:
                return [items]
        base, extra = divmod(items, k)
        return [base + (i < extra) for i in range(k)]

    async def _run_split(self: Router, dep: _Deployment, req: QueuedRequest, sizes: list[int]) -> PredictResult:
        """Route the parts of ``req`` (``sizes`` rows each) as requests of their own, wait for all, and
        join the answers in row order. Each part keeps the request's priority and deadline, and its own
        failover; if one part fails, the others are withdrawn (or their answers dropped)."""
        loop = asyncio.get_running_loop()
        parts = [QueuedRequest(batch=b, priority=req.priority, arrival=req.arrival, deadline=req.deadline,
                               future=loop.create_future(), model=req.model) for b in split_batch(req.batch, sizes)]
        try:
            for part in parts:
                await self._route(dep, part, wait=True)
            results = await asyncio.gather(*(self._wait(part) for part in parts))
        except BaseException:
            for part in parts:
                if not part.future.done():
                    part.future.cancel()
                if part.queued and part.route is not None:
                    part.route.batcher.remove(part)
            raise
        versions = list(dict.fromkeys(r.version for r in results))  # one, unless a hot swap landed in between
        return PredictResult(probabilities=np.concatenate([r.probabilities for r in results]),
                             replica="+".join(r.replica for r in results), version=",".join(versions),
                             queue_ms=max(r.queue_ms for r in results), compute_ms=max(r.compute_ms for r in results),
                             unloaded=req.unloaded)

    async def _wait(self: Router, req: QueuedRequest) -> PredictResult:
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
