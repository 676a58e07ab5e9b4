"""Admission feedback: the SLO budget a :class:`~crossrec.serve.router.Router` refuses requests against,
kept by an AIMD controller from the latency admitted requests actually see (:class:`LatencyFeedback`),
and the gauges that publish it on ``/metrics`` (:class:`AdmissionCollector`).

The router predicts a request's finish from its own view (queued work, measured replica latency); the
time spent outside it (HTTP parsing, event-loop queueing on a saturated CPU, the answer's way back) it
cannot see. The feedback closes that loop: when the admitted requests' server-measured p99 exceeds a
target below the SLO, the budget shrinks multiplicatively; when it is comfortably under, it grows back
additively. Split out of :mod:`crossrec.serve.router_admission` to keep modules small.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from crossrec.config import check
from crossrec.serve.plan import AdmissionConfig

if TYPE_CHECKING:
    from crossrec.serve.router import Router


def quantile(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (not empty), interpolating linearly between order statistics
    (numpy's default method; numpy itself costs more than the sort for a window of 200).

    >>> quantile([1.0, 2.0, 3.0, 4.0], 0.5), quantile([5.0], 0.99), quantile(list(range(101)), 0.99)
    (2.5, 5.0, 99.0)
    """
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


class LatencyFeedback:
    """The admission budget (ms) an AIMD controller keeps from the latency admitted requests see.

    The router refuses a request when every replica is busy and the best one's predicted finish
    exceeds :meth:`budget_ms`. The prediction sees only the router's queues; this controller corrects
    it with measured latency (issue #5: at 2x capacity admitted requests had p99 34.3 ms for a 25 ms
    SLO), as CoDel and TCP's AIMD do with delay and loss. :meth:`observe` records one answered
    request's latency; the last ``window_requests`` answers no older than ``window_s`` form the window.

    At most every ``interval_s`` the controller steps, deciding on the *fresh* answers only — those of
    requests that arrived after the budget last changed: older ones were admitted under the old
    budget and say nothing about the new one, and counting them would cut the budget again and again
    while the window still holds the slow answers that caused the first cut. With ``min_samples``
    fresh answers (or any, once ``window_s`` has passed since the change), their ``quantile``:

    - above ``target_ms``: the budget is multiplied by ``target / quantile``, clamped to [0.5, 0.9]
      (a large excess cuts harder; each cut is at least 10%), never below ``floor_ms``;
    - below ``hysteresis x target_ms``: it grows by ``increase_ms`` (default initial / 20), never above
      ``initial_ms``; in between it holds (no oscillation around the target);
    - no answer at all within ``window_s`` (idle, or nothing admitted): it grows back one step per
      interval — no evidence of overload is no reason to keep refusing.

    A cut also needs the router to be under pressure: when the router reports arrivals
    (:meth:`note_arrival`), fewer than ``min_busy_fraction`` of those in the window finding every
    replica busy means the slow answers come from service time (a 700-item request), not from
    queueing — refusing others would not make them faster, so the budget grows back instead. (Measured:
    without this gate the controller refused requests at 28 req/s, a third of capacity, where p99 was
    inside the SLO but above the target.) With no arrivals reported the gate is open.

    The target adapts to a CPU that cannot meet it unloaded (``unloaded_margin``): an answer observed
    with ``unloaded=True`` — its request found a replica idle, so it did not queue in the router — while
    the router is *calm* (fewer than ``min_busy_fraction`` of the window's arrivals found every replica
    busy) goes to a second window of the last ``unloaded_window`` such answers. Once it holds
    ``min_unloaded`` of them, the target in force (:meth:`target_in_force_ms`) is the larger of
    ``target_ms`` and ``unloaded_margin x`` their ``quantile``: the latency this server has *without*
    queueing, which refusing requests cannot shorten. Cuts then happen only when queueing adds to it.
    (Measured on a 2-core Zen 3, issue #5: requests that found a replica idle had p99 ~25 ms against a
    17.5 ms target, so from ~35 req/s the budget sat at its floor refusing requests to no effect.) The
    window learns only while calm and while the budget is whole (not cut since it last grew back), so
    overload — when the HTTP front itself saturates and even requests that found a replica idle slow
    down — cannot raise the target it is judged against.

    >>> t = [0.0]
    >>> fb = LatencyFeedback(25.0, 20.0, min_samples=5, interval_s=0.0, unloaded_margin=1.2, min_unloaded=5,
    ...                      clock=lambda: t[0])
    >>> for _ in range(5):
    ...     t[0] += 0.1
    ...     fb.observe(30.0, unloaded=True)  # 30 ms with no queueing: this CPU's floor
    >>> fb.budget_ms(), fb.target_in_force_ms()  # 30 < 1.2 x 30: no cut
    (25.0, 36.0)

    >>> t = [0.0]
    >>> fb = LatencyFeedback(25.0, 20.0, min_samples=5, interval_s=0.0, clock=lambda: t[0])
    >>> for _ in range(5):
    ...     t[0] += 0.1
    ...     fb.observe(40.0)  # twice the target: the budget is halved
    >>> fb.budget_ms(), fb.decision_quantile_ms
    (12.5, 40.0)
    >>> for _ in range(60):
    ...     t[0] += 0.1
    ...     fb.observe(5.0)  # well under the target: it grows back, 1.25 ms per 5 answers, up to the start
    >>> fb.budget_ms()
    25.0
    """

    def __init__(self, initial_ms: float, target_ms: float, *, floor_ms: float | None = None,
                 window_requests: int = 200, window_s: float = 2.0, quantile: float = 0.99, min_samples: int = 20,
                 interval_s: float = 0.05, hysteresis: float = 0.9, increase_ms: float | None = None,
                 min_busy_fraction: float = 0.5, unloaded_margin: float | None = None, unloaded_window: int = 200,
                 min_unloaded: int = 50, clock: Callable[[], float] = time.monotonic):
        own = "LatencyFeedback"
        floor_ms = 0.1 * initial_ms if floor_ms is None else floor_ms
        increase_ms = initial_ms / 20 if increase_ms is None else increase_ms
        check(initial_ms > 0, own, "initial_ms", initial_ms, "> 0 ms")
        check(target_ms > 0, own, "target_ms", target_ms, "> 0 ms")
        check(0 < floor_ms <= initial_ms, own, "floor_ms", floor_ms, f"in (0, initial_ms={initial_ms}]")
        check(window_requests >= 1, own, "window_requests", window_requests, ">= 1")
        check(window_s > 0, own, "window_s", window_s, "> 0 s")
        check(0 < quantile <= 1, own, "quantile", quantile, "in (0, 1]")
        check(1 <= min_samples <= window_requests, own, "min_samples", min_samples,
              f"in [1, window_requests={window_requests}]")
        check(interval_s >= 0, own, "interval_s", interval_s, ">= 0 s")
        check(0 < hysteresis <= 1, own, "hysteresis", hysteresis, "in (0, 1]")
        check(increase_ms > 0, own, "increase_ms", increase_ms, "> 0 ms")
        check(0 <= min_busy_fraction <= 1, own, "min_busy_fraction", min_busy_fraction, "in [0, 1]")
        check(unloaded_margin is None or unloaded_margin >= 1, own, "unloaded_margin", unloaded_margin,
              ">= 1, or None for the fixed target")
        check(unloaded_window >= 1, own, "unloaded_window", unloaded_window, ">= 1")
        check(1 <= min_unloaded <= unloaded_window, own, "min_unloaded", min_unloaded,
              f"in [1, unloaded_window={unloaded_window}]")
        self.initial_ms, self.target_ms, self.floor_ms = float(initial_ms), float(target_ms), float(floor_ms)
        self.window_s, self.quantile, self.min_samples = float(window_s), float(quantile), int(min_samples)
        self.interval_s, self.hysteresis, self.increase_ms = float(interval_s), float(hysteresis), float(increase_ms)
        self._clock = clock
        self._samples: deque[tuple[float, float, float]] = deque(maxlen=int(window_requests))  # (end, start, ms)
        self.min_busy_fraction = float(min_busy_fraction)
        self._arrivals: deque[tuple[float, bool]] = deque(maxlen=int(window_requests))  # (when, all busy)
        self._budget = self.initial_ms
        self._changed_at = clock()  # answers of requests that arrived after this are "fresh"
        self._next_step = -math.inf
        self.decreases = self.increases = 0
        self.decision_quantile_ms: float | None = None  # the fresh answers' quantile at the last decision
        self.unloaded_margin = None if unloaded_margin is None else float(unloaded_margin)
        self.min_unloaded = int(min_unloaded)
        self._unloaded: deque[float] = deque(maxlen=int(unloaded_window))  # ms, answers that did not queue
        self._unloaded_q: float | None = None  # their quantile, computed when the controller steps

    @classmethod
    def from_config(cls, config: AdmissionConfig, *, slo_factor: float | None, slo_p99_ms: float,
                    clock: Callable[[], float] = time.monotonic) -> LatencyFeedback | None:
        """The controller an :class:`~crossrec.serve.plan.AdmissionConfig` asks for, starting at
        ``slo_factor x slo_p99_ms``; None when feedback is off or there is no SLO refusal to correct.

        >>> LatencyFeedback.from_config(AdmissionConfig(), slo_factor=1.0, slo_p99_ms=25.0).target_ms
        17.5
        >>> LatencyFeedback.from_config(AdmissionConfig(feedback=False), slo_factor=1.0, slo_p99_ms=25.0) is None
        True
        """
        if slo_factor is None or not config.feedback:
            return None
        initial = slo_factor * slo_p99_ms
        return cls(initial, config.target_fraction * slo_p99_ms, floor_ms=config.min_budget_fraction * initial,
                   window_requests=config.window_requests, window_s=config.window_s,
                   min_samples=min(20, config.window_requests), min_busy_fraction=config.min_busy_fraction,
                   unloaded_margin=config.unloaded_margin, clock=clock)

    def note_arrival(self, busy: bool) -> None:
        """Record that a request arrived and whether it found every replica busy (the router's view)."""
        self._arrivals.append((self._clock(), bool(busy)))

    def busy_fraction(self) -> float | None:
        """Share of the window's arrivals that found every replica busy; None when none were reported."""
        horizon = self._clock() - self.window_s
        recent = [b for t, b in self._arrivals if t >= horizon]
        return sum(recent) / len(recent) if recent else None

    def observe(self, latency_ms: float, unloaded: bool | None = None) -> None:
        """Record one admitted request's latency (ms, arrival to answer), answered now; ``unloaded``:
        whether it found a replica idle on arrival (None: not known)."""
        if not (isinstance(latency_ms, (int, float)) and 0 <= latency_ms < math.inf):
            return  # a clock that stepped back: no evidence either way
        now = self._clock()
        self._samples.append((now, now - latency_ms / 1e3, float(latency_ms)))
        if unloaded and self.unloaded_margin is not None and self._budget >= self.initial_ms:
            busy = self.busy_fraction()
            if busy is None or busy < self.min_busy_fraction:  # calm: learn the latency without queueing
                self._unloaded.append(float(latency_ms))
        if now >= self._next_step:
            self._step(now)

    def budget_ms(self) -> float:
        """The current admission budget (ms): what a predicted finish may not exceed."""
        now = self._clock()
        if now >= self._next_step:
            self._step(now)
        return self._budget

    def unloaded_quantile_ms(self) -> float | None:
        """The ``quantile`` of the learnt unloaded latencies (ms); None until ``min_unloaded`` are in."""
        if self.unloaded_margin is None or len(self._unloaded) < self.min_unloaded:
            return None
        if self._unloaded_q is None:
            self._unloaded_q = quantile(list(self._unloaded), self.quantile)
        return self._unloaded_q

    def target_in_force_ms(self) -> float:
        """The latency the window's quantile is held under: ``target_ms``, raised to ``unloaded_margin x``
        the unloaded quantile when that is larger."""
        unloaded = self.unloaded_quantile_ms()
        return self.target_ms if unloaded is None else max(self.target_ms, self.unloaded_margin * unloaded)

    def window_quantile_ms(self) -> float | None:
        """The ``quantile`` of the whole window's latencies (ms); None while it is empty."""
        self._prune(self._clock())
        return quantile([s[2] for s in self._samples], self.quantile) if self._samples else None

    def state(self) -> dict[str, Any]:
        """JSON-ready: budget, its bounds, the target, the window and the decisions taken so far."""
        return {"budget_ms": self.budget_ms(), "initial_ms": self.initial_ms, "floor_ms": self.floor_ms,
                "target_ms": self.target_ms, "target_in_force_ms": self.target_in_force_ms(),
                "unloaded_quantile_ms": self.unloaded_quantile_ms(), "unloaded_requests": len(self._unloaded),
                "unloaded_margin": self.unloaded_margin, "quantile": self.quantile,
                "window_quantile_ms": self.window_quantile_ms(),
                "window_requests": len(self._samples), "decision_quantile_ms": self.decision_quantile_ms,
                "busy_fraction": self.busy_fraction(), "min_busy_fraction": self.min_busy_fraction,
                "decreases": self.decreases, "increases": self.increases}

    def _prune(self, now: float) -> None:
        horizon = now - self.window_s
        while self._samples and self._samples[0][0] < horizon:
            self._samples.popleft()

    def _step(self, now: float) -> None:
        self._next_step = now + self.interval_s
        self._unloaded_q = None  # recomputed on demand, at most once a step
        self._prune(now)
        if not self._samples:  # nothing answered within window_s
            if self._budget < self.initial_ms:
                self._set(min(self.initial_ms, self._budget + self.increase_ms), now)
            return
        fresh = [ms for _, start, ms in self._samples if start >= self._changed_at]
        if not fresh or (len(fresh) < self.min_samples and now - self._changed_at < self.window_s):
            return
        q = self.decision_quantile_ms = quantile(fresh, self.quantile)
        busy = self.busy_fraction()
        pressured = busy is None or busy >= self.min_busy_fraction
        target = self.target_in_force_ms()
        if q > target and pressured:
            cut = min(max(target / q, 0.5), 0.9)
            new = max(self.floor_ms, self._budget * cut)
        elif q < self.hysteresis * target or not pressured:
            new = min(self.initial_ms, self._budget + self.increase_ms)
        else:
            return
        if new != self._budget:
            self._set(new, now)

    def _set(self, budget: float, now: float) -> None:
        if budget < self._budget:
            self.decreases += 1
        else:
            self.increases += 1
        self._budget, self._changed_at = budget, now


class AdmissionCollector(Collector):
    """The admission gauges of a router's ``/metrics``, read at scrape time: the budget
    (``crossrec_admission_budget_seconds``), the feedback's target and its window's latency quantile
    (``crossrec_admission_target_seconds``, ``crossrec_admission_latency_seconds{quantile}``)."""

    def __init__(self, router: Router):
        self._router = router

    def collect(self) -> Iterator[GaugeMetricFamily]:
        router = self._router
        if router.admission_slo_factor is None:
            return
        budget = GaugeMetricFamily("crossrec_admission_budget_seconds", "Admission budget: a request is refused "
                                   "when every replica is busy and its predicted finish exceeds it")
        fb = router.feedback
        budget.add_metric([], (fb.budget_ms() if fb is not None else router.admission_slo_factor * router.slo_p99_ms)
                          / 1e3)
        yield budget
        if fb is None:
            return
        target = GaugeMetricFamily("crossrec_admission_target_seconds", "Latency the admission feedback holds "
                                   "the window's quantile under")
        target.add_metric([], fb.target_in_force_ms() / 1e3)
        yield target
        unloaded = fb.unloaded_quantile_ms()
        if unloaded is not None:
            floor = GaugeMetricFamily("crossrec_admission_unloaded_latency_seconds", "Quantile of the latency of "
                                      "requests that found a replica idle while the router was calm (learnt floor)",
                                      labels=["quantile"])
            floor.add_metric([f"{fb.quantile:g}"], unloaded / 1e3)
            yield floor
        q = fb.window_quantile_ms()
        if q is not None:
            window = GaugeMetricFamily("crossrec_admission_latency_seconds", "Quantile of the admitted requests' "
                                       "server-measured latency over the feedback window", labels=["quantile"])
            window.add_metric([f"{fb.quantile:g}"], q / 1e3)
            yield window
