"""Routing policies: one small method, ``rank(request, replicas)``; the Router owns the loop (DESIGN.md §3).

A :class:`RoutingPolicy` sees a :class:`RequestInfo` (how many items, priority, deadline) and a
read-only :class:`ReplicaState` per candidate replica, and returns the replicas best first; it may
drop replicas it refuses. The router sends the request to the first one and, after a replica
failure, retries down the ranking. Registered policies (:data:`POLICIES`):

- ``"round-robin"``: rotate over the healthy replicas;
- ``"least-outstanding"``: fewest items routed but not yet answered (join-shortest-queue);
- ``"latency-aware"``: smallest *predicted finish time* — the in-flight batch's latency plus the
  latency of the queued items and this request batched together, read off the replica's measured
  latency curve (batch size -> p50 ms) at that size and scaled by the replica's observed slowdown.
  Because the curve is per device, a large query goes to the device that is fastest *for large
  batches* and a small one to the device fastest at small batches (DeepRecSys, Gupta et al.,
  ISCA 2020; Hercules, Ke et al., HPCA 2022). Without a curve it falls back to EWMA batch latency x
  queue length;
- ``"cost-aware"`` / ``"power-aware"``: among replicas whose predicted finish time meets the
  budget (the SLO, or the request's deadline if sooner), the lowest price (USD) / energy (J) *per
  item* (device price or power from the hardware catalog x per-item compute time at this request's
  size); when none meets it, the fastest first.

Additions to the serve contract (no deviation; all defaulted): ``RequestInfo.budget_ms`` (the router
fills it with min(SLO, time left to the deadline)), ``ReplicaState.slowdown`` (EWMA of observed /
curve-predicted latency) and ``ReplicaState.ewma_batch_items``; :func:`predict_finish_ms` and
:func:`curve_ms` are public so the simulator and the batcher use the same model.

>>> fast_big = ReplicaState(name="gpu#0", device="h100-sxm", latency_curve={1: 2.0, 1024: 3.0})
>>> fast_small = ReplicaState(name="cpu#0", device="epyc-zen5-2vcpu", latency_curve={1: 0.2, 1024: 9.0})
>>> policy = get_policy("latency-aware")
>>> [r.name for r in policy.rank(RequestInfo(items=700, priority=1, deadline=None), [fast_small, fast_big])]
['gpu#0', 'cpu#0']
>>> [r.name for r in policy.rank(RequestInfo(items=1, priority=1, deadline=None), [fast_small, fast_big])]
['cpu#0', 'gpu#0']
"""

from __future__ import annotations

import bisect
import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from crossrec.errors import ConfigError

POLICIES: dict[str, type[RoutingPolicy]] = {}


@dataclass(frozen=True)
class RequestInfo:
    """What a policy knows about a request: its size, priority class (0 = most urgent), absolute
    deadline on the router's clock (seconds, or None) and ``budget_ms``, the time it may take from now
    (min of the SLO and the time left to its deadline; None = unconstrained).

    >>> RequestInfo(items=300, priority=0, deadline=None).budget_ms is None
    True
    """

    items: int
    priority: int = 1
    deadline: float | None = None
    budget_ms: float | None = None


@dataclass(frozen=True, kw_only=True)
class ReplicaState:
    """Read-only snapshot of one replica, taken by the router for each routing decision.

    ``outstanding_items`` counts items routed to the replica and not yet answered (queued + in
    flight); ``queued_items`` those still waiting in its batcher. ``latency_curve`` maps batch size to
    measured p50 ms (may be empty); ``slowdown`` is the EWMA ratio of observed to curve-predicted batch
    latency (1.0 = as profiled). ``in_flight_elapsed_ms``: how long the batch in flight has been
    computing (0 when none). ``price_per_hour`` (USD) and ``power_w`` come from the device's catalog
    entry (None when the device is not in the catalog).

    >>> s = ReplicaState(name="dlrm/cpu#0", device="epyc-zen5-2vcpu", outstanding_items=10, queued_items=4)
    >>> s.in_flight_items
    6
    """

    name: str
    device: str = "unknown"
    outstanding_items: int = 0
    queued_items: int = 0
    ewma_latency_ms: float = 0.0
    ewma_batch_items: float = 0.0
    latency_curve: Mapping[int, float] = field(default_factory=dict)
    slowdown: float = 1.0
    in_flight_elapsed_ms: float = 0.0
    price_per_hour: float | None = None
    power_w: float | None = None
    healthy: bool = True

    @property
    def in_flight_items(self) -> int:
        return max(0, self.outstanding_items - self.queued_items)


def curve_ms(curve: Mapping[int, float], items: int) -> float:
    """Latency (ms) of a batch of ``items`` read off a latency curve: linear between measured sizes,
    the smallest size's latency below it, and linear extrapolation (last segment's slope) above it.

    >>> curve_ms({1: 1.0, 101: 3.0}, 51), curve_ms({1: 1.0, 101: 3.0}, 201), curve_ms({8: 2.0}, 16)
    (2.0, 5.0, 4.0)
    """
    if not curve:
        raise ConfigError("curve_ms needs a non-empty latency curve (batch size -> ms)")
    sizes = sorted(curve)
    if items <= sizes[0]:
        return float(curve[sizes[0]])
    if len(sizes) == 1:  # one point: assume time proportional to size above it
        return float(curve[sizes[0]]) * items / sizes[0]
    i = bisect.bisect_left(sizes, items)
    lo, hi = (sizes[i - 1], sizes[i]) if i < len(sizes) else (sizes[-2], sizes[-1])
    slope = (curve[hi] - curve[lo]) / (hi - lo)
    return float(curve[lo] + slope * (items - lo))


def monotone_curve(curve: Mapping[int, float]) -> dict[int, float]:
    """``curve`` made non-decreasing in batch size (running max): a measured point where a larger batch
    is faster than a smaller one is timing noise, and the batcher's bisection needs a monotone curve.

    >>> monotone_curve({1: 2.0, 64: 1.5, 256: 2.6})
    {1: 2.0, 64: 2.0, 256: 2.6}
    """
    out: dict[int, float] = {}
    top = 0.0
    for size in sorted(curve):
        top = max(top, float(curve[size]))
        out[int(size)] = top
    return out


def predict_finish_ms(state: ReplicaState, items: int) -> float | None:
    """Predicted time (ms) until a request of ``items`` sent to ``state`` now is answered, or None if the
    replica has neither a curve nor an observed latency yet.

    The in-flight batch finishes first — what is left of it: ``curve(in_flight) x slowdown`` less the
    time it has already computed, never below 0 — then the queued items and this request go out together
    (the batcher merges them): ``curve(queued + items) x slowdown``. (Counting the in-flight batch whole
    made the router refuse requests that would have met the SLO: on average half of it is done.)

    >>> predict_finish_ms(ReplicaState(name="r", latency_curve={1: 1.0, 101: 3.0}, outstanding_items=101), 1)
    4.0
    >>> predict_finish_ms(ReplicaState(name="r", latency_curve={1: 1.0, 101: 3.0}, outstanding_items=101,
    ...                                in_flight_elapsed_ms=2.0), 1)  # 1 ms of the 3 ms batch is left
    2.0
    >>> predict_finish_ms(ReplicaState(name="r", ewma_latency_ms=2.0, ewma_batch_items=100), 100)
    2.0
    """
    if state.latency_curve:
        busy = 0.0
        if state.in_flight_items:
            busy = max(curve_ms(state.latency_curve, state.in_flight_items) * state.slowdown
                       - state.in_flight_elapsed_ms, 0.0)
        return busy + curve_ms(state.latency_curve, state.queued_items + items) * state.slowdown
    if state.ewma_latency_ms > 0 and state.ewma_batch_items > 0:
        per_item = state.ewma_latency_ms / state.ewma_batch_items
        return per_item * (state.outstanding_items + items)
    return None


def _per_item_ms(state: ReplicaState, items: int) -> float | None:
    """Compute time per item at this request's size (what a request occupies the device for)."""
    if state.latency_curve:
        return curve_ms(state.latency_curve, items) * state.slowdown / max(items, 1)
    if state.ewma_latency_ms > 0 and state.ewma_batch_items > 0:
        return state.ewma_latency_ms / state.ewma_batch_items
    return None


class RoutingPolicy(ABC):
    """Ranks replicas for a request, best first (see the module docstring). Subclasses set ``name``,
    take their options as keyword-only constructor arguments and implement :meth:`rank`; register
    them with :func:`register_policy`.

    >>> class First(RoutingPolicy):
    ...     name = "first"
    ...     def rank(self, request, replicas):
    ...         return [r for r in replicas if r.healthy][:1]
    >>> [r.name for r in First().rank(RequestInfo(items=1), [ReplicaState(name="a"), ReplicaState(name="b")])]
    ['a']
    """

    name: ClassVar[str]

    @abstractmethod
    def rank(self, request: RequestInfo, replicas: Sequence[ReplicaState]) -> list[ReplicaState]:
        """The replicas to try for ``request``, best first; unhealthy or refused ones left out."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def register_policy(cls: type[RoutingPolicy]) -> type[RoutingPolicy]:
    """Class decorator: make ``cls`` available as ``get_policy(cls.name)`` (and in plan files).

    >>> @register_policy
    ... class Fewest(RoutingPolicy):
    ...     name = "doc-fewest"
    ...     def rank(self, request, replicas):
    ...         return sorted((r for r in replicas if r.healthy), key=lambda r: r.queued_items)
    >>> get_policy("doc-fewest").rank(RequestInfo(items=1), [ReplicaState(name="a", queued_items=3),
    ...                                                      ReplicaState(name="b")])[0].name
    'b'
    >>> del POLICIES["doc-fewest"]
    """
    if not (isinstance(cls, type) and issubclass(cls, RoutingPolicy)) or not isinstance(
            getattr(cls, "name", None), str):
        raise ConfigError(f"register_policy expects a RoutingPolicy subclass with a string `name`, got {cls!r}")
    POLICIES[cls.name] = cls
    return cls


def policy_options(name: str) -> tuple[str, ...]:
    """The keyword options policy ``name`` accepts.

    >>> policy_options("cost-aware")
    ('slo_ms',)
    """
    cls = _policy_class(name)
    params = inspect.signature(cls.__init__).parameters.values()
    return tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)


def _policy_class(name: str) -> type[RoutingPolicy]:
    if name not in POLICIES:
        raise ConfigError(f"unknown routing policy {name!r}; registered policies: {', '.join(sorted(POLICIES))}")
    return POLICIES[name]


def get_policy(name: str, **options: Any) -> RoutingPolicy:
    """A new policy instance; unknown names or options raise ConfigError listing what is allowed.

    >>> get_policy("least-outstanding").name
    'least-outstanding'
    >>> get_policy("fastest")
    Traceback (most recent call last):
    ...
    crossrec.errors.ConfigError: unknown routing policy 'fastest'; registered policies: cost-aware, \
latency-aware, least-outstanding, power-aware, round-robin
    """
    cls = _policy_class(name)
    allowed = policy_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"routing policy {name!r} has no option(s) {unknown}; its options: {list(allowed)}")
    try:
        return cls(**options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"routing policy {name!r}: invalid options {options}: {exc}") from None


def _healthy(replicas: Sequence[ReplicaState]) -> list[ReplicaState]:
    return [r for r in replicas if r.healthy]


class _Rotating(RoutingPolicy, ABC):
    """Keeps a rotating offset so ties are broken differently each call (no herding on replica 0)."""

    def __init__(self) -> None:
        self._turn = 0

    def _rotation(self, replicas: list[ReplicaState]) -> dict[str, int]:
        n = max(len(replicas), 1)
        turn, self._turn = self._turn, self._turn + 1
        return {r.name: (i - turn) % n for i, r in enumerate(replicas)}


@register_policy
class RoundRobin(_Rotating):
    """Each call starts one replica further along; the rest follow in order (retry targets).

    >>> rr, reps = RoundRobin(), [ReplicaState(name="a"), ReplicaState(name="b")]
    >>> [rr.rank(RequestInfo(items=1), reps)[0].name for _ in range(3)]
    ['a', 'b', 'a']
    """

    name = "round-robin"

    def rank(self, request: RequestInfo, replicas: Sequence[ReplicaState]) -> list[ReplicaState]:
        live = _healthy(replicas)
        order = self._rotation(live)
        return sorted(live, key=lambda r: order[r.name])


@register_policy
class LeastOutstanding(_Rotating):
    """Fewest outstanding items first (join-the-shortest-queue, counted in items, not requests).

    >>> reps = [ReplicaState(name="a", outstanding_items=500), ReplicaState(name="b", outstanding_items=20)]
    >>> [r.name for r in LeastOutstanding().rank(RequestInfo(items=1), reps)]
    ['b', 'a']
    """

    name = "least-outstanding"

    def rank(self, request: RequestInfo, replicas: Sequence[ReplicaState]) -> list[ReplicaState]:
        live = _healthy(replicas)
        order = self._rotation(live)
        return sorted(live, key=lambda r: (r.outstanding_items, order[r.name]))


@register_policy
class LatencyAware(_Rotating):
    """Smallest predicted finish time first (:func:`predict_finish_ms`); replicas without any latency
    information yet rank as if idle-fast (0 ms) so they get probed and learn an EWMA.

    >>> busy = ReplicaState(name="a", latency_curve={1: 1.0, 1000: 10.0}, outstanding_items=2000, queued_items=1000)
    >>> idle = ReplicaState(name="b", latency_curve={1: 2.0, 1000: 20.0})
    >>> [r.name for r in LatencyAware().rank(RequestInfo(items=100), [busy, idle])]
    ['b', 'a']
    """

    name = "latency-aware"

    def rank(self, request: RequestInfo, replicas: Sequence[ReplicaState]) -> list[ReplicaState]:
        live = _healthy(replicas)
        order = self._rotation(live)

        def key(r: ReplicaState) -> tuple[float, int, int]:
            ms = predict_finish_ms(r, request.items)
            return (0.0 if ms is None else ms, r.outstanding_items, order[r.name])

        return sorted(live, key=key)


class _BudgetedCheapest(_Rotating, ABC):
    """Cheapest per item (by :meth:`_unit_cost`) among replicas predicted to meet the budget, then the
    rest fastest first. Replicas with unknown cost rank after known ones among the feasible."""

    def __init__(self, *, slo_ms: float | None = None) -> None:
        super().__init__()
        if slo_ms is not None and not (isinstance(slo_ms, (int, float)) and slo_ms > 0):
            raise ConfigError(f"{self.name}.slo_ms = {slo_ms!r} is invalid: > 0 ms, or None to use the router's SLO")
        self.slo_ms = slo_ms

    def _unit_cost(self, r: ReplicaState, items: int) -> float | None:
        raise NotImplementedError

    def rank(self, request: RequestInfo, replicas: Sequence[ReplicaState]) -> list[ReplicaState]:
        live = _healthy(replicas)
        order = self._rotation(live)
        budget = request.budget_ms if request.budget_ms is not None else self.slo_ms
        finish = {r.name: predict_finish_ms(r, request.items) for r in live}
        fits = lambda r: budget is None or (finish[r.name] or 0.0) <= budget
        feasible = [r for r in live if fits(r)]
        late = [r for r in live if not fits(r)]

        def cost_key(r: ReplicaState) -> tuple[float, float, int]:
            cost = self._unit_cost(r, request.items)
            return (math.inf if cost is None else cost, finish[r.name] or 0.0, order[r.name])

        feasible.sort(key=cost_key)
        late.sort(key=lambda r: (finish[r.name] or 0.0, order[r.name]))
        return feasible + late

    def __repr__(self) -> str:
        return f"{type(self).__name__}(slo_ms={self.slo_ms!r})"


def _unit(r: ReplicaState, items: int, rate: float | None, scale: float) -> float | None:
    per_item_ms = _per_item_ms(r, items)
    if rate is None or per_item_ms is None:
        return None
    return rate * per_item_ms / 1e3 * scale


@register_policy
class CostAware(_BudgetedCheapest):
    """Lowest USD per item (price_per_hour x per-item seconds / 3600) among replicas meeting the budget.

    >>> cheap = ReplicaState(name="cpu", latency_curve={1: 5.0, 512: 20.0}, price_per_hour=0.1)
    >>> pricey = ReplicaState(name="gpu", latency_curve={1: 1.0, 512: 2.0}, price_per_hour=4.0)
    >>> [r.name for r in CostAware(slo_ms=25).rank(RequestInfo(items=300), [pricey, cheap])]
    ['cpu', 'gpu']
    >>> [r.name for r in CostAware(slo_ms=5).rank(RequestInfo(items=300), [pricey, cheap])]
    ['gpu', 'cpu']
    """

    name = "cost-aware"

    def _unit_cost(self, r: ReplicaState, items: int) -> float | None:
        return _unit(r, items, r.price_per_hour, 1 / 3600)


@register_policy
class PowerAware(_BudgetedCheapest):
    """Lowest energy per item (power_w x per-item seconds, joules) among replicas meeting the budget.

    >>> low = ReplicaState(name="cpu", latency_curve={1: 5.0, 512: 20.0}, power_w=8)
    >>> high = ReplicaState(name="gpu", latency_curve={1: 1.0, 512: 2.0}, power_w=700)
    >>> [r.name for r in PowerAware(slo_ms=25).rank(RequestInfo(items=300), [high, low])]
    ['cpu', 'gpu']
    """

    name = "power-aware"

    def _unit_cost(self, r: ReplicaState, items: int) -> float | None:
        return _unit(r, items, r.power_w, 1.0)

