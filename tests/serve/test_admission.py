"""Admission feedback (issue #5): the AIMD budget on measured latency, its config, the router and the app.

The controller runs on an injected clock with synthetic latencies; the router test holds its replica
with a gate (so queues, and so predictions, are exactly known) and feeds latencies as the HTTP front
would. Nothing here depends on wall-clock speed.
"""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from crossrec.config import load
from crossrec.errors import ConfigError, OverloadedError
from crossrec.serve.admission_feedback import LatencyFeedback, quantile
from crossrec.serve.app import create_app
from crossrec.serve.codec import NPZ_TYPE, encode_npz
from crossrec.serve.plan import AdmissionConfig, BatchingConfig, ServePlan
from crossrec.serve.policy import get_policy, predict_finish_ms
from crossrec.serve.replica import Replica, synthetic_batch
from crossrec.serve.router import Router


class Clock:
    def __init__(self, t: float = 100.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def controller(**kw) -> tuple[LatencyFeedback, Clock]:
    """A 25 ms budget with a 20 ms target, its clock moved on 1 s (no answer predates the controller)."""
    clock = Clock()
    fb = LatencyFeedback(25.0, 20.0, clock=clock, **kw)
    clock.t += 1.0
    return fb, clock


def feed(fb: LatencyFeedback, clock: Clock, latency_ms: float, n: int, dt: float = 0.01) -> list[float]:
    """``n`` answers of ``latency_ms``, one every ``dt`` s; the budget after each."""
    out = []
    for _ in range(n):
        clock.t += dt
        fb.observe(latency_ms)
        out.append(fb.budget_ms())
    return out


# ---- the controller ---------------------------------------------------------------------------------


def test_budget_shrinks_under_over_target_latency_down_to_the_floor_and_no_further():
    clock = Clock()
    fb = LatencyFeedback(25.0, 20.0, floor_ms=2.5, min_samples=10, clock=clock)
    assert fb.budget_ms() == 25.0
    budgets = feed(fb, clock, 30.0, 400)
    assert budgets[0] == 25.0  # no decision on fewer than min_samples answers
    assert all(b2 <= b1 for b1, b2 in zip(budgets, budgets[1:]))  # only ever shrinks
    assert budgets[-1] == pytest.approx(2.5) and min(budgets) >= 2.5  # the floor holds
    assert fb.decreases >= 5 and fb.increases == 0
    first_cut = next(b for b in budgets if b < 25.0)
    assert first_cut == pytest.approx(25.0 * 20.0 / 30.0)  # x target / p99 (2/3, inside [0.5, 0.9])


def test_budget_recovers_additively_when_latency_falls_and_never_passes_its_start():
    clock = Clock()
    fb = LatencyFeedback(25.0, 20.0, floor_ms=2.5, min_samples=10, increase_ms=1.25, clock=clock)
    feed(fb, clock, 60.0, 300)
    assert fb.budget_ms() == pytest.approx(2.5)
    budgets = feed(fb, clock, 5.0, 600)
    steps = np.diff([2.5, *budgets])
    assert (steps >= -1e-12).all() and steps.max() == pytest.approx(1.25)  # additive, one step at a time
    assert budgets[-1] == 25.0 and max(budgets) == 25.0
    assert fb.increases == 18  # (25 - 2.5) / 1.25


def test_a_cut_is_harder_for_a_larger_excess_but_at_most_half_and_at_least_a_tenth():
    for latency, expected in ((200.0, 12.5), (21.0, 22.5), (30.0, 25.0 * 20 / 30)):
        fb, clock = controller(min_samples=5, interval_s=0.0)
        feed(fb, clock, latency, 5)
        assert fb.budget_ms() == pytest.approx(expected), latency


def test_latency_inside_the_hysteresis_band_holds_the_budget():
    fb, clock = controller(min_samples=5, hysteresis=0.9, interval_s=0.0)
    feed(fb, clock, 40.0, 5)
    assert fb.budget_ms() == 12.5
    feed(fb, clock, 19.0, 100)  # under the target, not comfortably: hold
    assert fb.budget_ms() == 12.5 and fb.decreases == 1 and fb.increases == 0


def test_answers_admitted_before_a_cut_do_not_cut_again():
    fb, clock = controller(min_samples=5, interval_s=0.0)
    feed(fb, clock, 40.0, 5)
    assert fb.budget_ms() == 12.5
    # slow answers keep arriving, but each of these requests arrived before the cut (latency > age)
    feed(fb, clock, 500.0, 20, dt=0.001)
    assert fb.budget_ms() == 12.5 and fb.decreases == 1
    assert fb.window_quantile_ms() > 400  # the gauge still shows what the window holds


def test_an_idle_window_grows_the_budget_back():
    fb, clock = controller(min_samples=5, window_s=2.0, interval_s=0.1)
    feed(fb, clock, 100.0, 5, dt=0.1)
    assert fb.budget_ms() == 12.5
    clock.t += 1.0
    assert fb.budget_ms() == 12.5  # answers still in the window: no evidence yet
    for _ in range(30):
        clock.t += 0.1
        fb.budget_ms()
    assert fb.budget_ms() == 25.0 and fb.window_quantile_ms() is None


def test_too_few_answers_decide_only_once_the_window_has_passed():
    clock = Clock()
    fb = LatencyFeedback(25.0, 20.0, min_samples=20, window_s=2.0, clock=clock)
    feed(fb, clock, 50.0, 3, dt=0.5)
    assert fb.budget_ms() == 25.0
    feed(fb, clock, 50.0, 2, dt=0.5)  # 2.5 s since the start: decide on the (few) fresh answers
    assert fb.budget_ms() == 12.5


def test_nonsense_latencies_are_ignored_and_bad_settings_refused():
    clock = Clock()
    fb = LatencyFeedback(25.0, 20.0, min_samples=1, clock=clock)
    for bad in (float("nan"), -1.0, float("inf")):
        fb.observe(bad)
    assert fb.state()["window_requests"] == 0 and fb.budget_ms() == 25.0
    with pytest.raises(ConfigError, match="floor_ms"):
        LatencyFeedback(25.0, 20.0, floor_ms=30.0)
    with pytest.raises(ConfigError, match="min_samples"):
        LatencyFeedback(25.0, 20.0, window_requests=10, min_samples=11)
    with pytest.raises(ConfigError, match="quantile"):
        LatencyFeedback(25.0, 20.0, quantile=1.5)


def test_slow_answers_without_busy_replicas_do_not_cut_and_let_a_cut_recover():
    fb, clock = controller(min_samples=10)

    def traffic(busy: bool, n: int) -> float:  # each answer comes with one arrival, as in a server
        for _ in range(n):
            fb.note_arrival(busy=busy)
            feed(fb, clock, 40.0, 1)
        return fb.budget_ms()

    # arrivals find an idle replica: the slowness is service time, not queueing
    assert traffic(False, 100) == 25.0 and fb.decreases == 0 and fb.busy_fraction() == 0.0
    assert traffic(True, 200) < 25.0 and fb.decreases >= 1  # every arrival finds them busy: the same latency cuts
    assert traffic(False, 400) == 25.0  # pressure gone, latency still high: it grows back, no further cut
    assert fb.state()["min_busy_fraction"] == 0.5
    with pytest.raises(ConfigError, match="min_busy_fraction"):
        AdmissionConfig(min_busy_fraction=1.5)


def test_quantile_matches_numpy():
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 200):
        values = rng.exponential(10.0, n).tolist()
        for q in (0.5, 0.9, 0.99, 1.0):
            assert quantile(values, q) == pytest.approx(float(np.quantile(values, q)))


def test_a_learnt_unloaded_floor_over_the_target_stops_cuts_that_cannot_help():
    # a slow CPU: 30 ms even without queueing, against a 20 ms target
    fb, clock = controller(min_samples=5, interval_s=0.0, unloaded_margin=1.2, min_unloaded=10)
    for _ in range(20):
        fb.note_arrival(busy=False)  # calm: most arrivals find a replica idle
        clock.t += 0.01
        fb.observe(30.0, unloaded=True)
    assert fb.unloaded_quantile_ms() == pytest.approx(30.0)
    assert fb.target_in_force_ms() == pytest.approx(36.0) and fb.budget_ms() == 25.0 and fb.decreases == 0
    # pressure: arrivals find every replica busy; 34 ms is inside 1.2 x the floor, so no cut
    for _ in range(200):
        fb.note_arrival(busy=True)
        clock.t += 0.01
        fb.observe(34.0, unloaded=False)
    assert fb.budget_ms() == 25.0 and fb.decreases == 0
    # queueing on top of the floor (60 ms) is cut, against the raised target
    feed(fb, clock, 60.0, 5)
    assert fb.decreases == 1 and fb.budget_ms() == pytest.approx(25.0 * 36.0 / 60.0)
    state = fb.state()
    assert state["target_in_force_ms"] == pytest.approx(36.0) and state["unloaded_requests"] == 20


def test_the_floor_is_learnt_only_while_calm_and_never_lowers_the_target():
    fb, clock = controller(min_samples=5, interval_s=0.0, unloaded_margin=1.2, min_unloaded=10)
    for _ in range(50):
        fb.note_arrival(busy=True)  # under pressure, even answers that found a replica idle are not learnt
        clock.t += 0.01
        fb.observe(80.0, unloaded=True)
    assert fb.unloaded_quantile_ms() is None and fb.target_in_force_ms() == 20.0
    assert fb.decreases >= 1  # judged against the fixed target
    fast, clock = controller(min_samples=5, interval_s=0.0, unloaded_margin=1.2, min_unloaded=10)
    for _ in range(20):
        fast.note_arrival(busy=False)
        clock.t += 0.01
        fast.observe(5.0, unloaded=True)  # a fast CPU: 1.2 x 5 ms is under the target, which stays
    assert fast.unloaded_quantile_ms() == pytest.approx(5.0) and fast.target_in_force_ms() == 20.0
    for _ in range(100):  # overload: every arrival finds the replicas busy, answers take 80 ms ...
        fast.note_arrival(busy=True)
        clock.t += 0.01
        fast.observe(80.0, unloaded=False)
    assert fast.budget_ms() < 25.0  # ... so the budget is cut
    for _ in range(200):  # ... and until it has grown back whole, calm moments teach nothing
        fast.note_arrival(busy=False)
        clock.t += 0.01
        fast.observe(60.0, unloaded=True)
        if fast.budget_ms() == 25.0:
            break
    assert fast.unloaded_quantile_ms() == pytest.approx(5.0)  # the 60 ms answers under a cut budget were not learnt
    off, clock = controller(min_samples=5, interval_s=0.0)  # unloaded_margin=None: the fixed target
    for _ in range(20):
        clock.t += 0.01
        off.observe(30.0, unloaded=True)
    assert off.unloaded_quantile_ms() is None and off.decreases >= 1  # cut against the fixed 20 ms
    with pytest.raises(ConfigError, match="unloaded_margin"):
        LatencyFeedback(25.0, 20.0, unloaded_margin=0.5)
    with pytest.raises(ConfigError, match="min_unloaded"):
        LatencyFeedback(25.0, 20.0, unloaded_window=10, min_unloaded=11)


# ---- the config ---------------------------------------------------------------------------------------


def test_admission_config_fields_defaults_and_errors():
    a = AdmissionConfig()
    assert (a.feedback, a.target_fraction, a.window_requests, a.window_s, a.min_budget_fraction) == \
        (True, 0.7, 200, 2.0, 0.1)
    fb = LatencyFeedback.from_config(a, slo_factor=1.0, slo_p99_ms=25.0)
    assert (fb.initial_ms, fb.target_ms, fb.floor_ms) == (25.0, 17.5, 2.5)
    assert a.unloaded_margin is None and fb.unloaded_margin is None  # opt-in
    assert LatencyFeedback.from_config(AdmissionConfig(unloaded_margin=1.2), slo_factor=1.0,
                                       slo_p99_ms=25.0).unloaded_margin == 1.2
    assert LatencyFeedback.from_config(a, slo_factor=None, slo_p99_ms=25.0) is None  # nothing to correct
    for kwargs, field in (({"target_fraction": 0.0}, "target_fraction"), ({"target_fraction": 1.2}, "target_fraction"),
                          ({"window_requests": 5}, "window_requests"), ({"window_s": 0}, "window_s"),
                          ({"min_budget_fraction": 0}, "min_budget_fraction"), ({"feedback": "yes"}, "feedback"),
                          ({"unloaded_margin": 0.9}, "unloaded_margin"), ({"unloaded_margin": "x"}, "unloaded_margin")):
        with pytest.raises(ConfigError, match=f"AdmissionConfig.{field} = .* is invalid"):
            AdmissionConfig(**kwargs)


def test_old_plans_load_with_the_feedback_on(tmp_path):
    (tmp_path / "plan.yaml").write_text(
        "deployments:\n"
        "  - name: dlrm\n"
        "    replicas:\n"
        "      - artifact: artifacts/dlrm\n"
        "admission:\n"
        "  max_queue_items: 4096\n"
        "  slo_factor: 1.0\n")
    plan = load(tmp_path / "plan.yaml", ServePlan)
    assert plan.admission.feedback and plan.admission.target_fraction == 0.7
    tuned = AdmissionConfig(feedback=False, target_fraction=0.6, window_requests=50, window_s=1.0)
    assert AdmissionConfig.from_json(tuned.to_json()) == tuned


# ---- the router ---------------------------------------------------------------------------------------


class GatedReplica(Replica):
    """Answers 0.5 for every row once its gate opens; a preset latency curve makes predictions exact."""

    def __init__(self, name: str, curve: dict[int, float]):
        super().__init__(name, "dlrm", device="epyc-zen5-2vcpu", runtime="fake", version="v1")
        self.latency_curve = dict(curve)
        self.gate = asyncio.Event()
        self._alive = False

    async def start(self) -> None:
        self._alive = True

    async def infer(self, batch):
        await self.gate.wait()
        return np.full(batch.batch_size, 0.5, dtype=np.float32)

    async def restart(self) -> None:
        self._alive = True

    async def stop(self) -> None:
        self._alive = False

    def alive(self) -> bool:
        return self._alive


def rows(n: int):
    return synthetic_batch(2, (5, 7), n)


def test_router_refuses_more_once_admitted_latency_exceeds_the_target():
    # 10 ms per request on the replica: with one request computing, the k-th queued one is predicted to
    # finish in ~10 + 10k ms, so the 25 ms budget admits one queued request; a budget cut admits none
    rep = GatedReplica("dlrm/cpu#0", {1: 10.0, 10: 10.0, 20: 20.0, 30: 30.0, 1000: 1000.0})
    clock = Clock()

    async def offer(router, n: int) -> tuple[int, list[asyncio.Task]]:
        tasks, refused = [], 0
        for _ in range(n):
            task = asyncio.create_task(router.predict("dlrm", rows(10)))
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            if task.done() and isinstance(task.exception(), OverloadedError):
                refused += 1
            else:
                tasks.append(task)
        return refused, tasks

    async def main():
        # the test's clock: the gated batch in flight stays "just started" (predictions count all of it)
        router = Router({"dlrm": [rep]}, get_policy("least-outstanding"), slo_p99_ms=25.0, clock=clock,
                        admission_slo_factor=1.0, batching=BatchingConfig(max_batch_items=10, max_wait_ms=0.0))
        await router.start()
        try:
            router.configure_admission(AdmissionConfig(window_requests=20, target_fraction=0.8), external_latency=True,
                                        clock=clock)
            first = asyncio.create_task(router.predict("dlrm", rows(10)))  # the replica takes it: idle
            await asyncio.sleep(0.01)
            refused_before, admitted = await offer(router, 4)
            # the front reports admitted requests taking 40 ms, twice the 20 ms target
            clock.t += 1.0
            for _ in range(40):
                clock.t += 0.01
                router.observe_latency(40.0)
            state = router.admission_state()
            refused_after, more = await offer(router, 4)
            with pytest.raises(OverloadedError, match=r"cut from 25.0 ms .* over the 20.0 ms target"):
                await router.predict("dlrm", rows(10))
            metrics = router.render_metrics().decode()
            rep.gate.set()
            await asyncio.gather(first, *admitted, *more)
            return refused_before, refused_after, state, metrics
        finally:
            await router.stop()

    before, after, state, metrics = asyncio.run(asyncio.wait_for(main(), 30))
    assert before == 3 and after == 4  # the same offered load: one more refusal, none admitted
    fb = state["feedback"]
    assert fb["budget_ms"] == 12.5 and fb["decreases"] == 1 and fb["window_quantile_ms"] == 40.0
    assert state["latency_source"] == "external"
    assert "crossrec_admission_budget_seconds 0.0125" in metrics
    assert "crossrec_admission_target_seconds 0.02" in metrics
    assert 'crossrec_admission_latency_seconds{quantile="0.99"} 0.04' in metrics


def test_each_answer_says_whether_its_request_found_a_replica_idle():
    rep = GatedReplica("dlrm/cpu#0", {1: 1.0, 100: 1.0})

    async def main():
        async with Router({"dlrm": [rep]}, get_policy("round-robin"), admission_slo_factor=1.0,
                          batching=BatchingConfig(max_batch_items=2, max_wait_ms=0.0)) as router:
            router.configure_admission(AdmissionConfig(unloaded_margin=1.2))
            rep.gate.set()
            alone = await router.predict("dlrm", rows(2))
            rep.gate.clear()
            first = asyncio.create_task(router.predict("dlrm", rows(2)))
            await asyncio.sleep(0.01)  # computing: the replica is busy
            second = asyncio.create_task(router.predict("dlrm", rows(2)))
            await asyncio.sleep(0.01)
            rep.gate.set()
            answers = await asyncio.gather(first, second)
            learnt = router.admission_state()["feedback"]["unloaded_requests"]
        async with Router({"dlrm": [GatedReplica("dlrm/cpu#1", {1: 1.0})]}, get_policy("round-robin"),
                          admission_slo_factor=None) as plain:
            plain._deployments["dlrm"].slots[0].replica.gate.set()
            unlooked = await plain.predict("dlrm", rows(2))
        router.feedback = LatencyFeedback(25.0, 17.5, unloaded_margin=1.2, min_unloaded=1)
        router.observe_latency(30.0, unloaded=True)
        metrics = router.render_metrics().decode()
        assert 'crossrec_admission_unloaded_latency_seconds{quantile="0.99"} 0.03' in metrics
        assert "crossrec_admission_target_seconds 0.036" in metrics  # the target in force: 1.2 x 30 ms
        return [alone, *answers], learnt, unlooked

    (alone, first, second), learnt, unlooked = asyncio.run(asyncio.wait_for(main(), 30))
    assert alone.unloaded is True and first.unloaded is True and second.unloaded is False
    # the router fed its own latency; 1 of 3 arrivals found the replica busy (calm): two answers learnt
    assert learnt == 2
    assert unlooked.unloaded is None  # no SLO admission: the router did not look


def test_predictions_count_only_what_is_left_of_the_batch_in_flight():
    rep = GatedReplica("dlrm/cpu#0", {1: 10.0, 10: 10.0, 20: 20.0, 1000: 1000.0})
    clock = Clock()

    async def main():
        async with Router({"dlrm": [rep]}, get_policy("least-outstanding"), slo_p99_ms=25.0, clock=clock,
                          admission_slo_factor=1.0,
                          batching=BatchingConfig(max_batch_items=10, max_wait_ms=0.0)) as router:
            slot = router._deployments["dlrm"].slots[0]
            first = asyncio.create_task(router.predict("dlrm", rows(10)))
            await asyncio.sleep(0.01)  # dispatched: 10 items computing for (curve) 10 ms
            fresh = slot.state()
            clock.t += 0.008  # 8 ms later
            later = slot.state()
            # a 20-item request now: 2 ms left of the batch in flight, then its own 20 ms = 22 ms <= 25: admitted
            admitted = asyncio.create_task(router.predict("dlrm", rows(20)))
            await asyncio.sleep(0.01)
            refused_now = admitted.done() and isinstance(admitted.exception(), OverloadedError)
            rep.gate.set()
            await asyncio.gather(first, admitted)
            idle = slot.state()
        return fresh, later, refused_now, idle

    fresh, later, refused_now, idle = asyncio.run(asyncio.wait_for(main(), 30))
    assert fresh.in_flight_elapsed_ms == 0.0 and predict_finish_ms(fresh, 20) == 30.0  # all of it still to come
    assert later.in_flight_elapsed_ms == pytest.approx(8.0) and predict_finish_ms(later, 20) == pytest.approx(22.0)
    assert not refused_now
    assert idle.in_flight_items == 0 and idle.in_flight_elapsed_ms == 0.0


def test_a_request_refused_whole_is_split_across_busy_replicas_when_its_parts_fit():
    # 0.1 ms per item; both replicas compute 10 items (1 ms) when a 300-item request arrives: whole it is
    # predicted 1 + 30 = 31 ms > the 25 ms budget; in halves 1 + 15 = 16 ms on each replica
    curve = {1: 0.1, 10: 1.0, 100: 10.0, 1000: 100.0}

    async def main(split_items, items=300):
        clock = Clock()
        reps = [GatedReplica(f"dlrm/cpu#{i}", curve) for i in range(2)]
        async with Router({"dlrm": reps}, get_policy("least-outstanding"), slo_p99_ms=25.0, clock=clock,
                          admission_slo_factor=1.0, split_items=split_items,
                          batching=BatchingConfig(max_batch_items=1000, max_wait_ms=0.0)) as router:
            busy = [asyncio.create_task(router.predict("dlrm", rows(10))) for _ in range(2)]
            await asyncio.sleep(0.01)  # one 10-item batch in flight on each replica
            big = asyncio.create_task(router.predict("dlrm", rows(items)))
            await asyncio.sleep(0.01)
            refused = big.done() and isinstance(big.exception(), OverloadedError)
            for rep in reps:
                rep.gate.set()
            await asyncio.gather(*busy)
            answer = None if refused else await big
            return refused, answer

    refused, answer = asyncio.run(asyncio.wait_for(main(100), 30))
    assert not refused and answer.probabilities.shape == (300,)
    assert sorted(answer.replica.split("+")) == ["dlrm/cpu#0", "dlrm/cpu#1"]  # one half on each replica
    refused, _ = asyncio.run(asyncio.wait_for(main(None), 30))
    assert refused  # no splitting configured: refused whole, as before
    refused, _ = asyncio.run(asyncio.wait_for(main(100, items=600), 30))
    assert refused  # halves of 600 items (1 + 30 ms) do not fit either


def test_router_feeds_its_own_latency_unless_told_otherwise():
    rep = GatedReplica("dlrm/cpu#0", {1: 1.0})
    rep.gate.set()

    async def main():
        async with Router({"dlrm": [rep]}, get_policy("round-robin"), admission_slo_factor=1.0) as router:
            for _ in range(3):
                await router.predict("dlrm", rows(2))
            own = router.admission_state()["feedback"]["window_requests"]
            router.configure_admission(external_latency=True)
            await router.predict("dlrm", rows(2))
            after = router.admission_state()["feedback"]["window_requests"]
        async with Router({"dlrm": [GatedReplica("dlrm/cpu#1", {1: 1.0})]}, get_policy("round-robin"),
                          admission_slo_factor=None) as plain:
            none = plain.admission_state(), plain.render_metrics().decode()
        return own, after, none

    own, after, (state, metrics) = asyncio.run(asyncio.wait_for(main(), 30))
    assert own == 3 and after == 3
    assert "feedback" not in state and "crossrec_admission_budget" not in metrics  # no SLO refusal: no budget


def test_feedback_off_keeps_the_static_budget():
    rep = GatedReplica("dlrm/cpu#0", {1: 1.0})

    async def main():
        router = Router({"dlrm": [rep]}, get_policy("round-robin"), admission_slo_factor=2.0, slo_p99_ms=10.0)
        router.configure_admission(AdmissionConfig(feedback=False))
        return router.feedback, router.admission_state(), router.render_metrics().decode()

    fb, state, metrics = asyncio.run(main())
    assert fb is None and state["budget_ms"] == 20.0
    assert "crossrec_admission_budget_seconds 0.02" in metrics


# ---- the HTTP front -----------------------------------------------------------------------------------


def test_the_app_feeds_the_latency_of_answered_requests_only(tiny_dlrm):
    from crossrec.runtime import load as load_runtime
    from crossrec.serve.replica import InProcessReplica

    model, data = tiny_dlrm
    rep = InProcessReplica("dlrm/cpu#0", "dlrm", load_runtime(model, "eager"), profile_sizes=(1, 8))
    batch = data.slice(0, 5).to_batch()
    body = encode_npz(batch.dense.numpy(), batch.ids.numpy(), batch.offsets.numpy())

    async def main():
        async with Router({"dlrm": [rep]}, get_policy("round-robin"), admission_slo_factor=1.0) as router:
            app = create_app(router, {"dlrm": data.schema},
                             limits=AdmissionConfig(window_requests=50, unloaded_margin=1.2))
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                ok = [await client.post("/v1/predict", content=body, params={"model": "dlrm"},
                                        headers={"content-type": NPZ_TYPE}) for _ in range(3)]
                bad = await client.post("/v1/predict", content=b"not npz", params={"model": "dlrm"},
                                        headers={"content-type": NPZ_TYPE})
                metrics = (await client.get("/metrics")).text
            return [r.status_code for r in ok], bad.status_code, router.admission_state(), metrics

    codes, bad, state, metrics = asyncio.run(asyncio.wait_for(main(), 60))
    assert codes == [200, 200, 200] and bad == 400
    assert state["latency_source"] == "external"
    fb = state["feedback"]
    assert fb["window_requests"] == 3 and fb["window_quantile_ms"] > 0  # the three answers, not the 400
    assert fb["unloaded_requests"] == 3  # one at a time: each found the replica idle, and the front said so
    assert "crossrec_admission_budget_seconds 0.025" in metrics
    assert 'crossrec_admission_latency_seconds{quantile="0.99"}' in metrics
