"""Router: batching through real models, admission, deadlines, failover, restarts, hot swap, metrics.

The replicas are real subclasses of the Replica ABC computing with a real tiny model; "faults" are
injected into them (a crash on the next batch, a hang, a gate that holds batches), never into the router.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch

from crossrec.data.batch import Batch
from crossrec.errors import ConfigError, DataError, DeadlineExceededError, OverloadedError, ReplicaError, ServeError
from crossrec.models import ModelSpec, TableSpec, build
from crossrec.runtime import load
from crossrec.serve.plan import BatchingConfig
from crossrec.serve.policy import get_policy
from crossrec.serve.replica import InProcessReplica, Replica, synthetic_batch
from crossrec.serve.router import PredictResult, Router

SPEC = ModelSpec(num_dense=3, tables=(TableSpec(name="a", num_embeddings=20), TableSpec(name="b", num_embeddings=9)),
                 embedding_dim=4, bottom_mlp=(8, 4), top_mlp=(8,))
CARDS = [t.num_embeddings for t in SPEC.tables]


@pytest.fixture(scope="module")
def runtime():
    return load(build(SPEC, seed=0), "eager")


def rows(n: int, seed: int = 0) -> Batch:
    return synthetic_batch(SPEC.num_dense, CARDS, n, seed=seed)


class ModelReplica(Replica):
    """Computes with a real model in the event loop; faults are switched on by the test."""

    def __init__(self, name: str, runtime, *, version: str = "v1", device: str = "epyc-zen5-2vcpu",
                 curve: dict[int, float] | None = None):
        super().__init__(name, "dlrm", device=device, runtime="eager", version=version)
        self.rt = runtime
        self.latency_curve = dict(curve or {})
        self.gate: asyncio.Event | None = None  # batches wait for it
        self.crash_next = 0  # the next N batches crash the replica
        self.hang = False
        self.fail_start = False
        self.seen: list[int] = []  # sizes of the batches it computed
        self.ids_seen: list[Batch] = []
        self.restarts = 0
        self._alive = False

    async def start(self) -> None:
        if self.fail_start:
            raise ReplicaError(f"{self.name}: could not load")
        self._alive = True

    async def infer(self, batch: Batch) -> np.ndarray:
        if not self._alive:
            raise ReplicaError(f"{self.name} is dead")
        if self.crash_next:
            self.crash_next -= 1
            self._alive = False
            raise ReplicaError(f"{self.name} crashed")
        if self.hang:
            await asyncio.sleep(3600)
        if self.gate is not None:
            await self.gate.wait()
        if bool((batch.ids >= 20).any()):
            raise DataError("sparse id out of range")
        self.seen.append(batch.batch_size)
        self.ids_seen.append(batch)
        return self.rt.predict(batch).numpy()

    async def restart(self) -> None:
        self.restarts += 1
        self.hang = False
        self._alive = True

    async def stop(self) -> None:
        self._alive = False

    def alive(self) -> bool:
        return self._alive


def make_router(replicas, *, policy="least-outstanding", **kw) -> Router:
    kw.setdefault("batching", BatchingConfig(max_batch_items=256, max_wait_ms=2.0))
    return Router({"dlrm": replicas}, get_policy(policy), **kw)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def check_result(res: PredictResult, batch: Batch, runtime) -> None:
    assert isinstance(res, PredictResult) and res.probabilities.dtype == np.float32
    np.testing.assert_allclose(res.probabilities, runtime.predict(batch).numpy(), rtol=1e-5, atol=1e-6)


def test_concurrent_requests_are_batched_and_answered_exactly(runtime):
    reps = [ModelReplica(f"dlrm/cpu#{i}", runtime) for i in range(2)]

    async def main():
        async with make_router(reps, batching=BatchingConfig(max_batch_items=200, max_wait_ms=5.0)) as router:
            batches = [rows(1 + (7 * i) % 60, seed=i) for i in range(40)]
            results = await asyncio.gather(*(router.predict("dlrm", b) for b in batches))
            for b, r in zip(batches, results):
                check_result(r, b, runtime)
                assert r.replica in {"dlrm/cpu#0", "dlrm/cpu#1"} and r.version == "v1"
                assert r.queue_ms >= 0 and r.compute_ms >= 0
            return results

    run(main())
    computed = reps[0].seen + reps[1].seen
    assert sum(computed) == sum(1 + (7 * i) % 60 for i in range(40))
    assert len(computed) < 40 and max(computed) <= 200  # requests were merged, within the cap
    assert reps[0].seen and reps[1].seen  # both replicas served


def test_in_process_replicas_from_the_replica_module(runtime):
    reps = [InProcessReplica(f"dlrm/cpu#{i}", "dlrm", runtime, profile_sizes=(1, 16)) for i in range(2)]

    async def main():
        async with make_router(reps, policy="latency-aware") as router:
            b = rows(33, seed=5)
            check_result(await router.predict("dlrm", b), b, runtime)
            assert router.ready()
            info = router.models()["dlrm"]
            assert {r["name"] for r in info["replicas"]} == {"dlrm/cpu#0", "dlrm/cpu#1"}
        assert not router.ready()

    run(main())


def test_bad_calls(runtime):
    async def main():
        router = make_router([ModelReplica("dlrm/cpu#0", runtime)])
        with pytest.raises(ServeError, match="not running"):
            await router.predict("dlrm", rows(1))
        async with router:
            with pytest.raises(ConfigError, match="unknown model 'dcn'; served models: dlrm"):
                await router.predict("dcn", rows(1))
            with pytest.raises(ConfigError, match="priority 3 is invalid"):
                await router.predict("dlrm", rows(1), priority=3)
            with pytest.raises(DataError, match="no instances"):
                await router.predict("dlrm", rows(0))
            with pytest.raises(DeadlineExceededError, match="already passed"):
                await router.predict("dlrm", rows(1), deadline_ms=0)

    run(main())
    with pytest.raises(ConfigError, match="unique replica names"):
        make_router([ModelReplica("x", runtime), ModelReplica("x", runtime)])


def test_overload_is_refused_fast_with_retry_after(runtime):
    rep = ModelReplica("dlrm/cpu#0", runtime)

    async def main():
        async with make_router([rep], max_queue_items=100, admission_slo_factor=None) as router:
            rep.gate = asyncio.Event()
            admitted = [asyncio.create_task(router.predict("dlrm", rows(30, seed=i))) for i in range(3)]
            await asyncio.sleep(0.02)
            with pytest.raises(OverloadedError, match="max_queue_items=100") as err:
                await router.predict("dlrm", rows(30))
            assert 0 < err.value.retry_after_s <= 60
            rep.gate.set()
            assert len(await asyncio.gather(*admitted)) == 3  # admitted requests are still answered
            text = router.render_metrics().decode()
            assert 'crossrec_rejections_total{model="dlrm",reason="overloaded"} 1.0' in text
            assert 'crossrec_requests_total{model="dlrm",status="ok"} 3.0' in text

    run(main())


def test_slo_admission_refuses_what_cannot_meet_the_slo(runtime):
    slow = ModelReplica("dlrm/cpu#0", runtime, curve={1: 40.0, 1000: 400.0})

    async def main():
        async with make_router([slow], slo_p99_ms=25.0, admission_slo_factor=1.0) as router:
            slow.gate = asyncio.Event()
            # an idle replica always takes the request: refusing it would help nobody
            first = asyncio.create_task(router.predict("dlrm", rows(10)))
            await asyncio.sleep(0.01)
            with pytest.raises(OverloadedError, match="exceeds 25.0 ms") as err:
                await router.predict("dlrm", rows(10))  # busy, and 40 + 40 ms > 25 ms
            assert err.value.retry_after_s > 0
            slow.gate.set()
            await first
        async with make_router([ModelReplica("dlrm/cpu#1", runtime, curve={1: 40.0})], slo_p99_ms=25.0) as router:
            both = [router.predict("dlrm", rows(10)) for _ in range(2)]  # SLO admission is off by default
            assert len(await asyncio.gather(*both)) == 2

    run(main())


def test_deadline_passed_in_queue_is_answered_without_computing(runtime):
    rep = ModelReplica("dlrm/cpu#0", runtime)

    async def main():
        async with make_router([rep], batching=BatchingConfig(max_batch_items=8, max_wait_ms=0.0)) as router:
            rep.gate = asyncio.Event()
            first = asyncio.create_task(router.predict("dlrm", rows(8, seed=1)))
            await asyncio.sleep(0.01)  # the first batch is in flight, held by the gate
            with pytest.raises(DeadlineExceededError, match="not computed"):
                await router.predict("dlrm", rows(5, seed=2), deadline_ms=30)
            rep.gate.set()
            await first
            later = await router.predict("dlrm", rows(3, seed=3), deadline_ms=5000)
            assert later.probabilities.shape == (3,)
            assert 'reason="deadline"} 1.0' in router.render_metrics().decode()

    run(main())
    assert rep.seen == [8, 3]  # the 5-row request never reached the model


def test_priority_classes_are_served_most_urgent_first(runtime):
    rep = ModelReplica("dlrm/cpu#0", runtime)

    async def main():
        async with make_router([rep], batching=BatchingConfig(max_batch_items=10, max_wait_ms=0.0)) as router:
            rep.gate = asyncio.Event()
            blocker = asyncio.create_task(router.predict("dlrm", rows(10)))
            await asyncio.sleep(0.01)
            low = asyncio.create_task(router.predict("dlrm", rows(9), priority=2))
            await asyncio.sleep(0.005)
            high = asyncio.create_task(router.predict("dlrm", rows(7), priority=0))
            await asyncio.sleep(0.005)
            rep.gate.set()
            await asyncio.gather(blocker, low, high)

    run(main())
    assert rep.seen == [10, 7, 9]  # queued later, but class 0 went first


def test_a_crashed_replica_is_retried_elsewhere_and_restarted(runtime):
    a, b = ModelReplica("dlrm/cpu#0", runtime), ModelReplica("dlrm/cpu#1", runtime)

    async def main():
        async with make_router([a, b], policy="round-robin") as router:
            a.crash_next = 1
            batches = [rows(5 + i, seed=i) for i in range(12)]
            results = await asyncio.gather(*(router.predict("dlrm", x) for x in batches))
            for x, r in zip(batches, results):
                check_result(r, x, runtime)  # zero lost
            for _ in range(100):  # restarted in the background
                if router.models()["dlrm"]["replicas"][0]["healthy"]:
                    break
                await asyncio.sleep(0.01)
            assert a.restarts == 1 and a.alive() and router.ready()
            text = router.render_metrics().decode()
            assert 'crossrec_replica_restarts_total{replica="dlrm/cpu#0"} 1.0' in text
            assert 'crossrec_replica_failures_total{replica="dlrm/cpu#0"} 1.0' in text
            assert "crossrec_retries_total" in text
            res = [await router.predict("dlrm", rows(2, seed=s)) for s in range(4)]
            assert {r.replica for r in res} == {"dlrm/cpu#0", "dlrm/cpu#1"}  # back in rotation

    run(main())


def test_a_hung_replica_times_out_and_its_requests_are_retried(runtime):
    a, b = ModelReplica("dlrm/cpu#0", runtime), ModelReplica("dlrm/cpu#1", runtime)

    async def main():
        async with make_router([a, b], policy="round-robin", replica_timeout_s=0.2) as router:
            a.hang = True
            batches = [rows(4, seed=i) for i in range(6)]
            results = await asyncio.gather(*(router.predict("dlrm", x) for x in batches))
            for x, r in zip(batches, results):
                check_result(r, x, runtime)
            assert a.restarts >= 1 and "dlrm/cpu#1" in {r.replica for r in results}
            assert 'crossrec_replica_failures_total{replica="dlrm/cpu#0"} 1.0' in router.render_metrics().decode()

    run(main())


def test_retries_are_bounded(runtime):
    rep = ModelReplica("dlrm/cpu#0", runtime)

    async def main():
        async with make_router([rep], max_retries=1) as router:
            rep.crash_next = 5  # crashes again after every restart
            with pytest.raises(ReplicaError, match="2 attempts, max_retries=1"):
                await router.predict("dlrm", rows(3))

    run(main())


def test_a_bad_request_does_not_fail_its_batch_mates(runtime):
    rep = ModelReplica("dlrm/cpu#0", runtime)
    bad = Batch.from_one_hot(torch.zeros(2, 3), torch.tensor([[25, 1], [0, 1]]))  # id 25 >= 20 rows

    async def main():
        async with make_router([rep], batching=BatchingConfig(max_batch_items=64, max_wait_ms=30.0)) as router:
            good = [rows(4, seed=i) for i in range(3)]
            out = await asyncio.gather(router.predict("dlrm", good[0]), router.predict("dlrm", bad),
                                       *(router.predict("dlrm", g) for g in good[1:]), return_exceptions=True)
            assert isinstance(out[1], DataError)
            for g, r in zip(good, [out[0], *out[2:]]):
                check_result(r, g, runtime)
            assert router.ready()  # bad input does not mark the replica unhealthy

    run(main())


def test_a_replica_that_dies_while_idle_is_found_by_the_health_check(runtime):
    a, b = ModelReplica("dlrm/cpu#0", runtime), ModelReplica("dlrm/cpu#1", runtime)

    async def main():
        async with make_router([a, b], health_interval_s=0.02):
            a._alive = False  # the worker process vanished
            for _ in range(200):
                if a.restarts:
                    break
                await asyncio.sleep(0.01)
            assert a.restarts == 1 and a.alive()

    run(main())


def test_no_healthy_replica_waits_for_a_restart(runtime):
    rep = ModelReplica("dlrm/cpu#0", runtime)

    async def main():
        async with make_router([rep]) as router:
            rep.crash_next = 1
            # the only replica crashes: the request waits for its restart instead of failing
            check_result(await router.predict("dlrm", rows(6)), rows(6), runtime)
            assert rep.restarts == 1

    run(main())


def test_a_deadline_passing_while_no_replica_is_healthy(runtime):
    rep = ModelReplica("dlrm/cpu#0", runtime)

    async def never() -> None:
        await asyncio.sleep(3600)

    async def main():
        async with make_router([rep]) as router:
            rep.restart = never  # the restart never completes
            rep.crash_next = 1
            with pytest.raises(DeadlineExceededError, match="no replica of 'dlrm' was healthy"):
                await router.predict("dlrm", rows(2), deadline_ms=100)
            assert not router.ready()

    run(main())


def test_a_broken_policy_is_a_server_error(runtime):
    from crossrec.serve.policy import RoutingPolicy

    class Broken(RoutingPolicy):
        name = "broken"

        def rank(self, request, replicas):
            raise KeyError("oops")

    async def main():
        async with Router({"dlrm": [ModelReplica("dlrm/cpu#0", runtime)]}, Broken()) as router:
            with pytest.raises(ServeError, match="routing policy 'broken' failed: KeyError"):
                await router.predict("dlrm", rows(2))

    run(main())


def test_hot_swap_under_load_fails_no_request(runtime):
    old = [ModelReplica(f"dlrm/cpu#{i}", runtime, version="v1") for i in range(2)]
    new = [ModelReplica(f"dlrm/cpu#{i}", runtime, version="v2") for i in range(2)]

    async def main():
        async with make_router(old) as router:
            stop = asyncio.Event()
            outcomes: list = []

            async def user(seed: int) -> None:
                while not stop.is_set():
                    b = rows(1 + seed % 20, seed=seed)
                    try:
                        outcomes.append(await router.predict("dlrm", b))
                    except Exception as exc:
                        outcomes.append(exc)
                    await asyncio.sleep(0)

            users = [asyncio.create_task(user(i)) for i in range(6)]
            await asyncio.sleep(0.05)
            old[0].gate = asyncio.Event()  # an old replica is mid-batch during the swap
            loop = asyncio.get_running_loop()
            loop.call_later(0.05, old[0].gate.set)
            await router.swap("dlrm", new)
            await asyncio.sleep(0.05)
            stop.set()
            await asyncio.gather(*users)
            assert outcomes and not [o for o in outcomes if isinstance(o, Exception)]
            assert {o.version for o in outcomes} == {"v1", "v2"}
            assert outcomes[-1].version == "v2"
            info = router.models()["dlrm"]
            assert info["versions"] == ["v2"] and len(info["replicas"]) == 2
            assert not any(r.alive() for r in old)  # old replicas stopped

    run(main())


def test_a_swap_whose_replicas_fail_to_start_keeps_the_old_ones(runtime):
    old = ModelReplica("dlrm/cpu#0", runtime, version="v1")
    broken = ModelReplica("dlrm/cpu#9", runtime, version="v2")
    broken.fail_start = True

    async def main():
        async with make_router([old]) as router:
            with pytest.raises(ReplicaError, match="could not load"):
                await router.swap("dlrm", [broken])
            assert (await router.predict("dlrm", rows(2))).version == "v1"
            with pytest.raises(ConfigError, match="unknown model"):
                await router.swap("dcn", [broken])

    run(main())


def test_stop_fails_what_cannot_finish(runtime):
    rep = ModelReplica("dlrm/cpu#0", runtime)

    async def main():
        router = make_router([rep])
        await router.start()
        rep.gate = asyncio.Event()  # never opens
        pending = [asyncio.create_task(router.predict("dlrm", rows(3))) for _ in range(3)]
        await asyncio.sleep(0.01)
        await router.stop(drain_timeout_s=0.05)
        out = await asyncio.gather(*pending, return_exceptions=True)
        assert all(isinstance(o, ServeError) and "shutting down" in str(o) for o in out)
        assert not rep.alive()
        await router.stop()  # idempotent
        with pytest.raises(ServeError, match="build a new Router"):
            await router.start()

    run(main())


def test_metrics_and_models_describe_the_deployment(runtime):
    reps = [ModelReplica("dlrm/cpu#0", runtime), ModelReplica("dlrm/gpu#0", runtime, device="h100-sxm")]

    async def main():
        async with make_router(reps) as router:
            for i in range(4):
                await router.predict("dlrm", rows(3, seed=i))
            text = router.render_metrics().decode()
            info = router.models()
        return text, info

    text, info = run(main())
    assert 'crossrec_items_total{model="dlrm",status="ok"} 12.0' in text
    assert 'crossrec_batch_items_count{replica="dlrm/cpu#0"}' in text
    assert 'crossrec_compute_seconds_count{device="h100-sxm",replica="dlrm/gpu#0"}' in text
    assert "crossrec_model_seconds_count" not in text  # in-process replicas: no worker timing to report
    assert 'crossrec_queue_items{replica="dlrm/cpu#0"} 0.0' in text
    assert 'crossrec_replica_healthy{device="epyc-zen5-2vcpu",replica="dlrm/cpu#0"}' in text
    assert info["dlrm"]["devices"] == ["epyc-zen5-2vcpu", "h100-sxm"] and info["dlrm"]["versions"] == ["v1"]


def test_batching_per_model_or_per_replica(runtime):
    reps = [ModelReplica("dlrm/cpu#0", runtime), ModelReplica("dlrm/cpu#1", runtime, curve={1: 1.0, 101: 6.0})]
    batching = {"dlrm/cpu#0": BatchingConfig(max_batch_items=4),
                "dlrm": BatchingConfig(max_batch_items=512, max_wait_ms=1.0, mode="slo")}

    async def main():
        async with Router({"dlrm": reps}, get_policy("round-robin"), batching=batching, slo_p99_ms=25.0) as router:
            caps = {r["name"]: r["max_batch_items"] for r in router.models()["dlrm"]["replicas"]}
            # replica key wins; the model's SLO config sizes cpu#1 from its curve: 2 x (1 + 0.05 (b - 1)) + 1 <= 25
            assert caps == {"dlrm/cpu#0": 4, "dlrm/cpu#1": 221}
            with pytest.raises(ConfigError, match="priority"):
                await router.predict("dlrm", rows(2), priority=-1)
            assert 'status="bad_request"} 1.0' in router.render_metrics().decode()

    run(main())
    own = ModelReplica("dlrm/cpu#0", runtime)
    own.batching = BatchingConfig(max_batch_items=7)  # what build_replicas sets from the plan
    assert Router({"dlrm": [own]}, get_policy("round-robin")).models()["dlrm"]["replicas"][0]["max_batch_items"] == 7
    with pytest.raises(ConfigError, match="keys that are model or replica names"):
        Router({"dlrm": [ModelReplica("dlrm/cpu#0", runtime)]}, get_policy("round-robin"),
               batching={"dlrm/gpu#0": BatchingConfig()})


def test_each_router_has_its_own_registry(runtime):
    r1 = make_router([ModelReplica("dlrm/cpu#0", runtime)])
    r2 = make_router([ModelReplica("dlrm/cpu#0", runtime)])
    assert r1.registry is not r2.registry


def test_killing_a_worker_process_under_load_loses_no_request(tmp_path):
    """The reliability scenario with real worker processes (crossrec.serve.replica.ProcessReplica)."""
    import os
    import signal

    from crossrec.artifact import save_artifact
    from crossrec.data.synthetic import SyntheticConfig, generate
    from crossrec.serve.plan import ServePlan
    from crossrec.serve.replica import build_replicas

    data = generate(SyntheticConfig(rows=100, num_sparse=3, max_rows=20, seed=0))
    spec = ModelSpec.for_schema(data.schema, embedding_dim=4, bottom_mlp=(4,), top_mlp=(4,))
    path = save_artifact(tmp_path / "a", build(spec, seed=0), data.schema)
    plan = ServePlan.for_artifact(path, count=2, catalog_device="epyc-zen5-2vcpu", replica_timeout_s=5.0)
    cards = [f.num_embeddings for f in data.schema.sparse]
    reps = build_replicas(plan)["dlrm"]

    async def main():
        async with Router({"dlrm": reps}, get_policy("latency-aware"), health_interval_s=0.1) as router:
            stop, out = asyncio.Event(), []

            async def user(i: int) -> None:
                k = 0
                while not stop.is_set():
                    b = synthetic_batch(len(data.schema.dense), cards, 1 + (37 * k + i) % 200, seed=k)
                    try:
                        out.append(await router.predict("dlrm", b))
                    except Exception as exc:
                        out.append(exc)
                    k += 1

            users = [asyncio.create_task(user(i)) for i in range(3)]
            await asyncio.sleep(0.3)
            killed = reps[0].pid
            os.kill(killed, signal.SIGKILL)
            for _ in range(600):  # recovers: a new worker process, healthy again
                if reps[0].pid not in (None, killed) and router.models()["dlrm"]["replicas"][0]["healthy"]:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)
            stop.set()
            await asyncio.gather(*users)
            assert reps[0].alive() and reps[0].pid != killed
            assert len(out) > 10 and not [o for o in out if isinstance(o, Exception)]
            assert 'crossrec_replica_restarts_total{replica="dlrm/cpu#0"} 1.0' in router.render_metrics().decode()

    asyncio.run(asyncio.wait_for(main(), 120))
