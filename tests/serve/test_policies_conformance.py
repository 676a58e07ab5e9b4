"""Conformance suite: every registered RoutingPolicy obeys the plugin contract; then each policy's semantics.

A new policy registered with ``register_policy`` is picked up by the parametrized tests automatically.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crossrec.errors import ConfigError
from crossrec.models import ModelSpec, TableSpec, build
from crossrec.runtime import load
from crossrec.serve.plan import BatchingConfig, RoutingConfig
from crossrec.serve.policy import (
    POLICIES,
    ReplicaState,
    RequestInfo,
    RoutingPolicy,
    get_policy,
    policy_options,
    predict_finish_ms,
    register_policy,
)
from crossrec.serve.replica import InProcessReplica, synthetic_batch
from crossrec.serve.router import Router

BUILT_IN = ("round-robin", "least-outstanding", "latency-aware", "cost-aware", "power-aware")
ALL = sorted(POLICIES)

curves = st.one_of(st.just({}), st.dictionaries(st.sampled_from([1, 8, 64, 256, 1024]),
                                                st.floats(0.01, 100.0), min_size=1, max_size=4))
states = st.builds(
    ReplicaState, name=st.text("abcdef", min_size=1, max_size=4), device=st.sampled_from(["epyc-9654", "h100-sxm"]),
    outstanding_items=st.integers(0, 5000), queued_items=st.integers(0, 5000), ewma_latency_ms=st.floats(0, 50),
    ewma_batch_items=st.floats(0, 1000), latency_curve=curves, slowdown=st.floats(0.1, 20),
    price_per_hour=st.one_of(st.none(), st.floats(0, 10)), power_w=st.one_of(st.none(), st.floats(1, 1000)),
    healthy=st.booleans())
requests = st.builds(RequestInfo, items=st.integers(1, 4096), priority=st.integers(0, 2),
                     deadline=st.one_of(st.none(), st.floats(0, 1e6)),
                     budget_ms=st.one_of(st.none(), st.floats(0.1, 100)))


def unique(replicas: list[ReplicaState]) -> list[ReplicaState]:
    seen: dict[str, ReplicaState] = {}
    for r in replicas:
        seen.setdefault(r.name, r)
    return list(seen.values())


def test_the_built_in_policies_are_registered():
    assert set(BUILT_IN) <= set(POLICIES)


@pytest.mark.parametrize("name", ALL)
@settings(max_examples=80, deadline=None)
@given(request=requests, replicas=st.lists(states, max_size=6).map(unique))
def test_rank_returns_a_subset_of_the_healthy_replicas_without_duplicates(name, request, replicas):
    policy = get_policy(name)
    before = list(replicas)
    ranked = policy.rank(request, replicas)
    assert isinstance(ranked, list)
    assert all(any(r is s for s in replicas) for r in ranked)  # the caller's objects, not copies
    assert len({id(r) for r in ranked}) == len(ranked)
    assert all(r.healthy for r in ranked)
    assert replicas == before  # input untouched
    if name in BUILT_IN:  # built-ins never drop a healthy replica: the rest are retry targets
        assert len(ranked) == sum(r.healthy for r in replicas)


@pytest.mark.parametrize("name", ALL)
def test_edge_cases(name):
    policy = get_policy(name)
    assert policy.rank(RequestInfo(items=1), []) == []
    one = ReplicaState(name="a")  # no curve, no EWMA, no price or power
    assert policy.rank(RequestInfo(items=10, deadline=1.0, budget_ms=5.0), [one]) == [one]
    assert policy.rank(RequestInfo(items=10), [ReplicaState(name="b", healthy=False)]) == []
    assert isinstance(repr(policy), str)


@pytest.mark.parametrize("name", ALL)
def test_options_are_introspectable_and_checked(name):
    for option in policy_options(name):
        assert option.isidentifier()
    with pytest.raises(ConfigError, match="has no option"):
        get_policy(name, no_such_option=1)


@pytest.mark.parametrize("name", ALL)
def test_every_policy_serves_through_a_router(name):
    """The router is the framework: any policy plugged into it answers every request correctly."""
    spec = ModelSpec(num_dense=2, tables=(TableSpec(name="a", num_embeddings=7),), embedding_dim=4,
                     bottom_mlp=(4,), top_mlp=(4,))
    rt = load(build(spec, seed=2), "eager")
    replicas = [InProcessReplica(f"m/cpu#{i}", "m", rt, profile_sizes=(1, 32)) for i in range(2)]
    batches = [synthetic_batch(2, [7], 1 + (5 * i) % 40, seed=i) for i in range(12)]

    async def main():
        router = Router({"m": replicas}, get_policy(name), batching=BatchingConfig(max_batch_items=64),
                        admission_slo_factor=None)
        async with router:
            return await asyncio.gather(*(router.predict("m", b) for b in batches))

    results = asyncio.run(asyncio.wait_for(main(), 30))
    for b, r in zip(batches, results):
        np.testing.assert_allclose(r.probabilities, rt.predict(b).numpy(), rtol=1e-5, atol=1e-6)


# -- semantics of each built-in policy ---------------------------------------------------------------


def names(ranked: list[ReplicaState]) -> list[str]:
    return [r.name for r in ranked]


def test_round_robin_cycles_over_healthy_replicas():
    reps = [ReplicaState(name=n) for n in "abc"] + [ReplicaState(name="d", healthy=False)]
    rr = get_policy("round-robin")
    firsts = [rr.rank(RequestInfo(items=1), reps)[0].name for _ in range(6)]
    assert firsts == ["a", "b", "c", "a", "b", "c"]


def test_least_outstanding_counts_items_and_breaks_ties_by_rotation():
    lo = get_policy("least-outstanding")
    reps = [ReplicaState(name="a", outstanding_items=700), ReplicaState(name="b", outstanding_items=3)]
    assert names(lo.rank(RequestInfo(items=5), reps)) == ["b", "a"]
    tied = [ReplicaState(name="a"), ReplicaState(name="b")]
    assert {lo.rank(RequestInfo(items=1), tied)[0].name for _ in range(2)} == {"a", "b"}


def test_latency_aware_is_query_size_aware_and_queue_aware():
    cpu = ReplicaState(name="cpu", latency_curve={1: 0.1, 256: 3.0, 1024: 12.0})
    gpu = ReplicaState(name="gpu", latency_curve={1: 1.0, 256: 1.2, 1024: 1.8})
    la = get_policy("latency-aware")
    assert names(la.rank(RequestInfo(items=1), [gpu, cpu])) == ["cpu", "gpu"]  # small query: lowest fixed cost
    assert names(la.rank(RequestInfo(items=700), [cpu, gpu])) == ["gpu", "cpu"]  # big query: best at large batch
    busy_gpu = ReplicaState(name="gpu", latency_curve=gpu.latency_curve, outstanding_items=40_000,
                            queued_items=30_000)
    assert names(la.rank(RequestInfo(items=700), [cpu, busy_gpu])) == ["cpu", "gpu"]  # ... unless it is backed up
    slowed = ReplicaState(name="gpu", latency_curve=gpu.latency_curve, slowdown=10.0)
    assert names(la.rank(RequestInfo(items=700), [cpu, slowed])) == ["cpu", "gpu"]  # observed slowdown counts


def test_latency_aware_without_curves_uses_ewma_times_queue():
    a = ReplicaState(name="a", ewma_latency_ms=4.0, ewma_batch_items=100, outstanding_items=500)
    b = ReplicaState(name="b", ewma_latency_ms=4.0, ewma_batch_items=100, outstanding_items=50)
    assert predict_finish_ms(a, 100) == pytest.approx(24.0)
    assert names(get_policy("latency-aware").rank(RequestInfo(items=100), [a, b])) == ["b", "a"]


@pytest.mark.parametrize("name,attr,cheap,dear", [("cost-aware", "price_per_hour", 0.1, 4.0),
                                                   ("power-aware", "power_w", 8.0, 700.0)])
def test_cost_and_power_aware_pick_cheapest_within_the_budget_else_fastest(name, attr, cheap, dear):
    slow_cheap = ReplicaState(name="cheap", latency_curve={1: 2.0, 1024: 20.0}, **{attr: cheap})
    fast_dear = ReplicaState(name="dear", latency_curve={1: 1.0, 1024: 2.0}, **{attr: dear})
    unknown = ReplicaState(name="unknown", latency_curve={1: 1.0, 1024: 2.0})
    policy = get_policy(name)
    assert names(policy.rank(RequestInfo(items=300, budget_ms=25), [fast_dear, unknown, slow_cheap])) == \
        ["cheap", "dear", "unknown"]  # unknown cost ranks after known costs
    # the cheap replica cannot make a 4 ms budget: the feasible ones first, the late one last
    assert names(policy.rank(RequestInfo(items=300, budget_ms=4), [slow_cheap, fast_dear])) == ["dear", "cheap"]
    # nobody can make 0.5 ms: fastest first
    assert names(policy.rank(RequestInfo(items=300, budget_ms=0.5), [slow_cheap, fast_dear])) == ["dear", "cheap"]
    # the policy's own slo_ms applies when the router gives no budget
    assert names(get_policy(name, slo_ms=4).rank(RequestInfo(items=300), [slow_cheap, fast_dear]))[0] == "dear"
    # a backed-up cheap replica no longer meets the budget
    queued = ReplicaState(name="cheap", latency_curve=slow_cheap.latency_curve, outstanding_items=2000,
                          queued_items=2000, **{attr: cheap})
    assert names(policy.rank(RequestInfo(items=300, budget_ms=25), [queued, fast_dear]))[0] == "dear"


def test_registering_a_custom_policy():
    @register_policy
    class Last(RoutingPolicy):
        """Prefers the last replica (a test plugin)."""

        name = "test-last"

        def __init__(self, *, skip: int = 0):
            self.skip = skip

        def rank(self, request, replicas):
            return [r for r in replicas if r.healthy][::-1][self.skip:]

    try:
        assert policy_options("test-last") == ("skip",)
        assert RoutingConfig(policy="test-last", options={"skip": 1}).policy == "test-last"
        reps = [ReplicaState(name="a"), ReplicaState(name="b")]
        assert names(get_policy("test-last").rank(RequestInfo(items=1), reps)) == ["b", "a"]
    finally:
        POLICIES.pop("test-last")
    with pytest.raises(ConfigError, match="RoutingPolicy subclass"):
        register_policy(object)
