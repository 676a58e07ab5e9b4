"""`Batcher`: one replica's request queue — priority classes, whole-request batching, deadlines.

Requests wait in one FIFO queue per priority class (0 = most urgent). A batch is formed from whole
requests, most urgent class first and FIFO within a class, up to the batch cap; a single request
larger than the cap is a batch alone (it is never split: its items must come back together). A
request never overtakes an older one of its class or any request of a more urgent class, so a large
request at the head is not starved by small ones behind it.

A batch goes out when the queued items reach the cap, when the oldest request has waited
``max_wait_ms``, or when waiting longer would make the earliest deadline unreachable (the batch's
predicted latency would cross it). Requests whose deadline has passed are failed with
:class:`~crossrec.errors.DeadlineExceededError` *without being computed*.

``mode="slo"`` sizes the cap from the replica's measured latency curve (batch size -> p50 ms) so a
request's worst path fits the SLO: it may arrive just after a batch left, wait for that batch, wait
``max_wait_ms``, then ride its own batch — ``2 x curve(cap) x slowdown + max_wait_ms <= slo_ms``
(``slowdown`` is the router's EWMA of observed / profiled latency). Devices with different curves
thus get different batch sizes (heterogeneous batching).

The clock is injected. :meth:`Batcher.poll` is the whole decision as a pure function of ``now``
(tests drive it with a fake clock); :meth:`Batcher.next_batch` only sleeps until ``poll`` says so.

>>> import torch
>>> from crossrec.data.batch import Batch
>>> from crossrec.serve.plan import BatchingConfig
>>> now = [0.0]
>>> b = Batcher(BatchingConfig(max_batch_items=8, max_wait_ms=2.0), clock=lambda: now[0])
>>> one = lambda n: Batch.from_one_hot(torch.zeros(n, 1), torch.zeros(n, 2, dtype=torch.long))
>>> for n in (3, 4):
...     b.put(QueuedRequest(batch=one(n), priority=1, arrival=now[0]))
>>> b.poll(0.0)  # 7 items < 8: wait up to 2 ms for more
(None, 0.002)
>>> b.put(QueuedRequest(batch=one(2), priority=0, arrival=0.001))
>>> [r.items for r in b.poll(0.001)[0]]  # 9 >= 8: go; class 0 first, then FIFO; 2+3 fit, +4 would not
[2, 3]
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from crossrec.data.batch import Batch
from crossrec.errors import ConfigError, DataError, DeadlineExceededError, ServeError
from crossrec.serve.plan import BatchingConfig
from crossrec.serve.policy import ReplicaState, curve_ms

EWMA_ALPHA = 0.2  # weight of the newest batch in the latency / slowdown averages
# In SLO mode a request's worst path holds this many batch latencies: the batch in flight when it
# arrived, then its own.
SLO_BATCHES_IN_PATH = 2


@dataclass(eq=False)
class QueuedRequest:
    """One admitted request on its way through a replica's queue (``items`` = rows of ``batch``).

    ``deadline`` and ``arrival`` are on the router's clock (seconds); ``future`` receives the result;
    ``attempts`` counts failed replicas so far and ``tried`` their names (retries go elsewhere);
    ``unloaded`` whether it found a replica idle on arrival (the router's admission; carried to its answer).
    """

    batch: Batch
    priority: int = 1
    arrival: float = 0.0
    deadline: float | None = None
    future: asyncio.Future | None = None
    model: str = ""
    attempts: int = 0
    tried: set[str] = field(default_factory=set)
    unloaded: bool | None = None
    items: int = field(init=False)
    queued: bool = field(default=False, init=False)  # in a Batcher's queue right now
    route: Any = field(default=None, repr=False)  # the owner's handle of the replica it was sent to

    def __post_init__(self) -> None:
        self.items = self.batch.batch_size

    @property
    def done(self) -> bool:
        """True once the request was answered, failed or abandoned by its caller."""
        return self.future is not None and self.future.done()

    def fail(self, exc: BaseException) -> None:
        if self.future is not None and not self.future.done():
            self.future.set_exception(exc)

    def resolve(self, value: Any) -> None:
        if self.future is not None and not self.future.done():
            self.future.set_result(value)


class Batcher:
    """A replica's priority queues and batching decision (see the module docstring).

    ``latency_curve`` (batch size -> p50 ms) and ``slowdown`` may be updated at any time by the owner;
    ``slo_ms`` is needed for ``mode="slo"``.

    >>> b = Batcher(BatchingConfig(max_batch_items=4096, mode="slo"), slo_ms=25.0, latency_curve={1: 0.5, 1024: 8.0})
    >>> b.max_batch_items()  # 2 x latency(cap) + 2 ms wait <= 25 ms
    1501
    """

    def __init__(self, config: BatchingConfig, *, clock: Callable[[], float] = time.monotonic,
                 slo_ms: float | None = None, latency_curve: Mapping[int, float] | None = None):
        if config.mode == "slo" and (slo_ms is None or slo_ms <= 0):
            raise ConfigError(f"Batcher: mode='slo' needs slo_ms > 0, got {slo_ms!r}; pass the plan's slo_p99_ms "
                              "or use mode='fixed'")
        self.config = config
        self.slo_ms = slo_ms
        self._curve: dict[int, float] = dict(latency_curve or {})
        self._slowdown = 1.0
        self._cap: int | None = None  # max_batch_items() cached until the curve or slowdown changes
        self._clock = clock
        self._queues: list[deque[QueuedRequest]] = [deque() for _ in range(config.priority_classes)]
        self._items = 0
        self._deadlines: list[tuple[float, int, QueuedRequest]] = []  # heap: (deadline, seq, request)
        self._seq = itertools.count()
        self._event = asyncio.Event()
        self._closed = False

    @property
    def latency_curve(self) -> Mapping[int, float]:
        return self._curve

    @latency_curve.setter
    def latency_curve(self, curve: Mapping[int, float]) -> None:
        self._curve, self._cap = dict(curve), None

    @property
    def clock(self) -> Callable[[], float]:
        """The clock (seconds) the batcher times waits and deadlines by."""
        return self._clock

    @property
    def slowdown(self) -> float:
        return self._slowdown

    @slowdown.setter
    def slowdown(self, value: float) -> None:
        self._slowdown, self._cap = float(value), None

    # -- queue -------------------------------------------------------------------------------------

    @property
    def queued_items(self) -> int:
        return self._items

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues)

    def put(self, request: QueuedRequest) -> None:
        """Queue ``request`` in its priority class; ConfigError for a class this batcher does not have."""
        if not 0 <= request.priority < len(self._queues):
            raise ConfigError(f"priority {request.priority!r} is invalid: 0 (most urgent) to "
                              f"{len(self._queues) - 1}")
        if self._closed:
            raise ServeError("this replica's queue is closed (the replica is stopping); retry on another")
        self._queues[request.priority].append(request)
        request.queued = True
        self._items += request.items
        if request.deadline is not None:
            heapq.heappush(self._deadlines, (request.deadline, next(self._seq), request))
        self._event.set()

    def remove(self, request: QueuedRequest) -> bool:
        """Take ``request`` out of the queue if it is still there (not yet batched)."""
        queue = self._queues[request.priority] if 0 <= request.priority < len(self._queues) else ()
        try:
            queue.remove(request)  # type: ignore[union-attr]
        except ValueError:
            return False
        request.queued = False
        self._items -= request.items
        return True

    def take_all(self) -> list[QueuedRequest]:
        """Empty the queues, most urgent first, e.g. to re-route them after the replica failed."""
        out = [r for q in self._queues for r in q]
        for q in self._queues:
            q.clear()
        for r in out:
            r.queued = False
        self._deadlines.clear()
        self._items = 0
        return out

    def close(self) -> None:
        """Refuse new requests; :meth:`next_batch` flushes what is queued, then returns ``[]``."""
        self._closed = True
        self._event.set()

    # -- decision ----------------------------------------------------------------------------------

    def max_batch_items(self) -> int:
        """The batch cap now: ``max_batch_items``, or in SLO mode the largest size whose worst path
        (``SLO_BATCHES_IN_PATH`` batch latencies + max wait) fits the SLO (at least 1)."""
        if self._cap is None:
            self._cap = self._size_cap()
        return self._cap

    def _size_cap(self) -> int:
        cap = self.config.max_batch_items
        if self.config.mode != "slo" or not self._curve:
            return cap
        budget = float(self.slo_ms) - self.config.max_wait_ms  # type: ignore[arg-type]
        fits = lambda b: SLO_BATCHES_IN_PATH * self._latency_ms(b) <= budget
        if fits(cap):
            return cap
        lo, hi = 1, cap  # latency grows with size: bisect for the largest size that fits
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
        return lo

    def _latency_ms(self, items: int) -> float:
        return curve_ms(self.latency_curve, items) * self.slowdown if self.latency_curve else 0.0

    def _earliest_deadline(self) -> float | None:
        heap = self._deadlines
        while heap and not heap[0][2].queued:  # lazily drop entries of requests that left the queue
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def _expire(self, now: float) -> None:
        """Fail queued requests whose deadline passed (one pass over the queues per expiry, not per poll)."""
        earliest = self._earliest_deadline()
        if earliest is None or earliest > now:
            return
        while self._deadlines and self._deadlines[0][0] <= now:
            r = heapq.heappop(self._deadlines)[2]
            if r.queued:
                r.fail(DeadlineExceededError(
                    f"request of {r.items} items missed its deadline by {(now - r.deadline) * 1e3:.1f} ms while "
                    f"queued ({(now - r.arrival) * 1e3:.1f} ms in queue); it was not computed. Give it a longer "
                    "deadline_ms, a more urgent priority, or send less load"))
        for queue in self._queues:
            if any(r.done for r in queue):
                keep = [r for r in queue if not r.done]
                for r in queue:
                    if r.done:
                        r.queued = False
                        self._items -= r.items
                queue.clear()
                queue.extend(keep)

    def poll(self, now: float) -> tuple[list[QueuedRequest] | None, float | None]:
        """``(batch, None)`` when a batch should go out at ``now``; else ``(None, seconds to wait)``,
        or ``(None, None)`` when the queue is empty (wait for a request)."""
        self._expire(now)
        heads = [q[0] for q in self._queues if q]
        if not heads:
            return None, None
        cap = self.max_batch_items()
        wait = min(r.arrival for r in heads) + self.config.max_wait_ms / 1e3 - now
        earliest = self._earliest_deadline()
        if earliest is not None:  # last moment at which the queued work can still make the earliest deadline
            wait = min(wait, earliest - now - self._latency_ms(min(self._items, cap)) / 1e3)
        if self._items < cap and wait > 0 and not self._closed:
            return None, wait
        return self._form(cap), None

    def _form(self, cap: int) -> list[QueuedRequest]:
        batch: list[QueuedRequest] = []
        total = 0
        for queue in self._queues:
            while queue and (not batch or total + queue[0].items <= cap):
                r = queue.popleft()
                r.queued = False
                self._items -= r.items
                if not r.done:  # a caller that gave up (disconnected) is not computed
                    batch.append(r)
                    total += r.items
            if queue:  # the head did not fit: nothing behind it or less urgent may overtake it
                break
        return batch

    async def next_batch(self) -> list[QueuedRequest]:
        """Wait for the next batch of requests; ``[]`` once closed and empty."""
        while True:
            batch, wait = self.poll(self._clock())
            if batch:
                return batch
            if self._closed and not len(self):
                return []
            self._event.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._event.wait(), wait)


class ReplicaSlot:
    """A replica as the router sees it: its :class:`Batcher`, dispatch and restart tasks, the items in
    flight and the observed latency (EWMA per batch, and ``slowdown`` = observed / profiled), with
    the device's catalog price and power. :meth:`state` is the snapshot a routing policy ranks."""

    def __init__(self, replica: Any, batcher: Batcher, price: float | None, power: float | None):
        self.replica, self.batcher = replica, batcher
        self.price, self.power = price, power
        self.in_flight = 0
        self.in_flight_since: float | None = None  # when the batch in flight was sent (the batcher's clock)
        self.ewma_ms = 0.0
        self.ewma_items = 0.0
        self.slowdown = 1.0
        self.healthy = False
        self.draining = False
        self.task: asyncio.Task | None = None
        self.restart_task: asyncio.Task | None = None
        self.last_error: str | None = None

    @property
    def outstanding(self) -> int:
        return self.batcher.queued_items + self.in_flight

    def state(self) -> ReplicaState:
        since = self.in_flight_since
        elapsed = (self.batcher.clock() - since) * 1e3 if since is not None and self.in_flight else 0.0
        return ReplicaState(name=self.replica.name, device=self.replica.device, outstanding_items=self.outstanding,
                            queued_items=self.batcher.queued_items, ewma_latency_ms=self.ewma_ms,
                            ewma_batch_items=self.ewma_items, latency_curve=self.batcher.latency_curve,
                            slowdown=self.slowdown, in_flight_elapsed_ms=max(elapsed, 0.0), price_per_hour=self.price,
                            power_w=self.power, healthy=self.healthy and not self.draining)

    def observe(self, items: int, ms: float) -> None:
        first = self.ewma_items == 0
        a = 1.0 if first else EWMA_ALPHA
        self.ewma_ms += a * (ms - self.ewma_ms)
        self.ewma_items += a * (items - self.ewma_items)
        curve = self.batcher.latency_curve
        if curve:  # observed / profiled: a replica slowed by a noisy neighbour gets less traffic
            ratio = min(max(ms / max(curve_ms(curve, items), 1e-6), 0.1), 20.0)
            self.slowdown += EWMA_ALPHA * (ratio - self.slowdown)
            self.batcher.slowdown = self.slowdown



def merge_batches(batches: Sequence[Batch]) -> Batch:
    """One batch holding the rows of ``batches`` in order (offsets shifted, ids concatenated).

    >>> a = Batch.from_one_hot(torch.zeros(2, 1), torch.tensor([[1, 2], [3, 4]]))
    >>> m = merge_batches([a, Batch.from_one_hot(torch.ones(1, 1), torch.tensor([[5, 6]]))])
    >>> m.batch_size, m.ids.tolist(), m.offsets.tolist()
    (3, [1, 2, 3, 4, 5, 6], [0, 1, 2, 3, 4, 5, 6])
    """
    if not batches:
        raise DataError("merge_batches needs at least one batch")
    if len(batches) == 1:
        return batches[0]
    first = batches[0]
    for b in batches[1:]:
        if b.num_sparse != first.num_sparse or b.dense.shape[1:] != first.dense.shape[1:]:
            raise DataError(f"cannot batch requests with different feature counts: {first.num_sparse} sparse / "
                            f"{tuple(first.dense.shape[1:])} dense vs {b.num_sparse} / {tuple(b.dense.shape[1:])}")
    shifts = np.cumsum([0] + [int(b.ids.numel()) for b in batches[:-1]])
    offsets = [first.offsets[:1]] + [b.offsets[1:] + int(s) for b, s in zip(batches, shifts)]
    return Batch(dense=torch.cat([b.dense for b in batches]), ids=torch.cat([b.ids for b in batches]),
                 offsets=torch.cat(offsets), num_sparse=first.num_sparse)


def split_batch(batch: Batch, sizes: Sequence[int]) -> list[Batch]:
    """``batch``'s rows as consecutive batches of ``sizes`` rows (the inverse of :func:`merge_batches`).

    >>> b = Batch(dense=torch.arange(3.0)[:, None], ids=torch.tensor([1, 2, 3]),
    ...           offsets=torch.tensor([0, 1, 1, 3]), num_sparse=1)  # bag sizes 1, 0 | 2
    >>> [(p.batch_size, p.ids.tolist(), p.offsets.tolist()) for p in split_batch(b, [2, 1])]
    [(2, [1], [0, 1, 1]), (1, [2, 3], [0, 2])]
    """
    if sum(sizes) != batch.batch_size or any(n < 1 for n in sizes):
        raise DataError(f"split_batch: sizes {list(sizes)} must be >= 1 and sum to the batch's {batch.batch_size} rows")
    f, parts, start = batch.num_sparse, [], 0
    for n in sizes:
        lo, hi = int(batch.offsets[start * f]), int(batch.offsets[(start + n) * f])
        parts.append(Batch(dense=batch.dense[start:start + n], ids=batch.ids[lo:hi],
                           offsets=batch.offsets[start * f:(start + n) * f + 1] - lo, num_sparse=f))
        start += n
    return parts


def split_rows(values: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
    """Split ``values`` (one entry per row of a merged batch) back into per-request arrays.

    >>> [a.tolist() for a in split_rows(np.arange(5.0), [2, 3])]
    [[0.0, 1.0], [2.0, 3.0, 4.0]]
    """
    values = np.asarray(values)
    total = int(sum(sizes))
    if values.ndim != 1 or values.shape[0] != total:
        raise ServeError(f"replica returned {values.shape} predictions for a batch of {total} rows; expected "
                         f"({total},) — the replica's runtime is broken")
    return np.split(values, np.cumsum(sizes)[:-1]) if len(sizes) > 1 else [values]

