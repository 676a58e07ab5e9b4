"""The :class:`~crossrec.serve.router.Router`'s replica side: one dispatch loop per replica that pulls
batches from its :class:`~crossrec.serve.batcher.Batcher`, runs them and splits the answers back; and
failover — a failed batch re-routed (one attempt per request, at most ``max_retries``), the replica's
queue handed to the others, restarts with backoff, and a health check for replicas that die idle.
A batch that fails with a :class:`~crossrec.errors.DataError` is re-run one request at a time.

Split out of :mod:`crossrec.serve.router` to keep modules small: :class:`DispatchMixin` holds methods
of ``Router`` and works on its attributes; it is not used on its own.

>>> sorted(m for m in vars(DispatchMixin) if not m.startswith("__"))[:3]
['_alive', '_dispatch_loop', '_health_loop']
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from crossrec.errors import ConfigError, DataError, DeadlineExceededError, OverloadedError, ReplicaError, ServeError
from crossrec.serve.batcher import QueuedRequest, ReplicaSlot, merge_batches, split_rows
from crossrec.serve.policy import monotone_curve
from crossrec.serve.router_admission import PredictResult, _Deployment

if TYPE_CHECKING:
    from crossrec.serve.router import Router


class DispatchMixin:
    """Dispatch, failover and restart methods of :class:`~crossrec.serve.router.Router` (see the module docstring)."""

    async def _dispatch_loop(self: Router, dep: _Deployment, slot: ReplicaSlot) -> None:
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

    async def _run_batch(self: Router, dep: _Deployment, slot: ReplicaSlot, reqs: list[QueuedRequest]) -> None:
        reqs = [r for r in reqs if not r.done]
        if not reqs:
            return
        items = sum(r.items for r in reqs)
        slot.in_flight += items
        start = slot.in_flight_since = self._clock()
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
                                    queue_ms=(start - r.arrival) * 1e3, compute_ms=compute_s * 1e3,
                                    unloaded=r.unloaded))
        slot.observe(items, compute_s * 1e3)
        self._completions.append((self._clock(), items))
        self.metrics.batch_items.labels(replica=slot.replica.name).observe(items)
        self.metrics.compute_seconds.labels(replica=slot.replica.name, device=slot.replica.device).observe(compute_s)
        if slot.replica.last_model_ms is not None:  # a worker process's own timing of this batch
            self.metrics.model_seconds.labels(replica=slot.replica.name, device=slot.replica.device).observe(
                slot.replica.last_model_ms / 1e3)
        if slot.replica.last_ipc_ms is not None:  # the two legs across the process boundary
            request_ms, answer_ms = slot.replica.last_ipc_ms
            self.metrics.ipc_seconds.labels(replica=slot.replica.name, device=slot.replica.device,
                                            leg="request").observe(request_ms / 1e3)
            self.metrics.ipc_seconds.labels(replica=slot.replica.name, device=slot.replica.device,
                                            leg="answer").observe(answer_ms / 1e3)

    def _replica_failed(self: Router, dep: _Deployment, slot: ReplicaSlot, in_flight: list[QueuedRequest],
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

    def _reroute(self: Router, dep: _Deployment, req: QueuedRequest, why: str) -> None:
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

    async def _restart(self: Router, slot: ReplicaSlot) -> None:
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

    def _notify_healthy(self: Router) -> None:
        if self._healthy_event is not None:
            self._healthy_event.set()
            self._healthy_event = asyncio.Event()

    async def _health_loop(self: Router) -> None:
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
