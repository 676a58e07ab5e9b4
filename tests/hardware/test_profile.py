"""profile()/profile_many(): statistics checked exactly with a fake clock; nothing is timed."""

import pytest
import torch
from torch import nn

from crossrec.data import Batch
from crossrec.errors import ConfigError
from crossrec.hardware import BatchProfile, Profile, percentile, profile, profile_many


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class Scripted(nn.Module):
    """A model whose every call advances the fake clock by the next scripted duration (seconds)."""

    def __init__(self, clock, durations, log=None, name="m"):
        super().__init__()
        self.clock, self.durations, self.log, self.name = clock, list(durations), log, name
        self.lin = nn.Linear(1, 1)
        self.seen_grad = []

    def forward(self, dense, ids, offsets):
        self.seen_grad.append(torch.is_grad_enabled())
        self.clock.now += self.durations.pop(0) if self.durations else 0.0
        if self.log is not None:
            self.log.append(self.name)
        return dense.sum(1)


def make_batch(b):
    return Batch.from_one_hot(torch.zeros(b, 3), torch.zeros(b, 2, dtype=torch.long))


def test_statistics_exact_with_fake_clock():
    clock = FakeClock()
    # 1 warm-up call (untimed, 1 s), then 5 timed calls of 1, 2, 3, 4, 10 ms
    model = Scripted(clock, [1.0, 0.001, 0.002, 0.003, 0.004, 0.010])
    p = profile(model, make_batch, batch_sizes=(4,), warmup=1, repeats=5, clock=clock)
    bp = p.at(4)
    assert bp.latencies_ms == pytest.approx((1.0, 2.0, 3.0, 4.0, 10.0))
    assert bp.p50_ms == pytest.approx(3.0) and bp.mean_ms == pytest.approx(4.0) and bp.min_ms == pytest.approx(1.0)
    assert bp.p99_ms == pytest.approx(4.0 + 0.96 * 6.0)  # linear between the 4th and 5th order statistics
    assert bp.samples_per_s == pytest.approx(4 * 5 / 0.020)
    assert p.source == "measured" and p.device == "cpu" and p.warmup == 1
    assert p.threads == torch.get_num_threads() and p.torch_version == torch.__version__
    assert not any(model.seen_grad), "calls must run under inference_mode"


def test_round_robin_rotates_the_first_model():
    clock, log = FakeClock(), []
    a, b = Scripted(clock, [], log, "a"), Scripted(clock, [], log, "b")
    out = profile_many({"a": a, "b": b}, make_batch, batch_sizes=(1, 2), warmup=2, repeats=3, clock=clock)
    warmups, rounds = ["a", "a", "b", "b"], ["a", "b", "b", "a", "a", "b"]  # rounds a-b, b-a, a-b
    per_size = [*warmups, *rounds]
    assert log == per_size * 2
    assert out["a"].interleaved_with == ("b",) and out["b"].interleaved_with == ("a",)
    assert [bp.batch_size for bp in out["b"].batches] == [1, 2]


def test_blocks_of_calls_cycle_through_distinct_batches():
    clock, log = FakeClock(), []

    class Seen(Scripted):
        def forward(self, dense, ids, offsets):
            log.append((self.name, float(dense[0, 0])))
            return dense.sum(1)

    a, b = Seen(clock, [], name="a"), Seen(clock, [], name="b")
    three = lambda n: [Batch.from_one_hot(torch.full((n, 3), float(k)), torch.zeros(n, 2, dtype=torch.long))
                       for k in range(3)]
    profile_many({"a": a, "b": b}, three, batch_sizes=(2,), warmup=0, repeats=4, block=2, clock=clock)
    # round 0: a a, b b on batches 0,1; round 1 (b first): b b, a a on batches 2,0
    assert log == [("a", 0.0), ("a", 1.0), ("b", 0.0), ("b", 1.0), ("b", 2.0), ("b", 0.0), ("a", 2.0), ("a", 0.0)]
    with pytest.raises(ConfigError, match="block"):
        profile_many({"a": a}, make_batch, batch_sizes=(1,), block=0)
    with pytest.raises(ConfigError, match="make_batch"):
        profile_many({"a": a}, lambda n: [make_batch(n), make_batch(n + 1)], batch_sizes=(1,))


def test_min_time_extends_and_max_repeats_caps():
    clock = FakeClock()
    model = Scripted(clock, [0.01] * 100)
    p = profile(model, make_batch, batch_sizes=(1,), warmup=0, repeats=2, min_time_s=0.05, clock=clock)
    assert len(p.at(1).latencies_ms) == 5
    stuck = Scripted(FakeClock(), [])  # the clock never moves: min_time_s is never reached
    p = profile(stuck, make_batch, batch_sizes=(1,), warmup=0, repeats=2, min_time_s=1.0, max_repeats=7,
                clock=stuck.clock)
    assert len(p.at(1).latencies_ms) == 7 and p.at(1).samples_per_s == float("inf")


def test_json_round_trip():
    clock = FakeClock()
    p = profile(Scripted(clock, [0.001, 0.002, 0.003]), make_batch, batch_sizes=(2,), warmup=0, repeats=3,
                clock=clock, name="fp32")
    again = Profile.from_json(p.to_json())
    assert again == p and again.name == "fp32" and isinstance(again.batches[0], BatchProfile)


def test_threads_and_training_mode_are_restored():
    before = torch.get_num_threads()
    clock = FakeClock()
    model = Scripted(clock, [])
    model.train()
    p = profile(model, make_batch, batch_sizes=(1,), warmup=0, repeats=1, threads=1, clock=clock)
    assert p.threads == 1 and torch.get_num_threads() == before and model.training


def test_errors():
    clock = FakeClock()
    model = Scripted(clock, [])
    with pytest.raises(ConfigError, match="batch_sizes"):
        profile(model, make_batch, batch_sizes=(), clock=clock)
    with pytest.raises(ConfigError, match="repeats"):
        profile(model, make_batch, batch_sizes=(1,), repeats=0, clock=clock)
    with pytest.raises(ConfigError, match=r"exactly 3 rows"):
        profile(model, lambda b: make_batch(b + 1), batch_sizes=(3,), clock=clock)
    with pytest.raises(ConfigError, match=r"lives on cpu.*model.to\('meta'\)"):
        profile(model, make_batch, batch_sizes=(1,), device="meta", clock=clock)
    with pytest.raises(ConfigError, match="no batch size 9; measured: \\[1\\]"):
        profile(model, make_batch, batch_sizes=(1,), repeats=1, clock=clock).at(9)
    with pytest.raises(ConfigError, match="source"):
        Profile(name="x", device="cpu", batches=(), threads=1, interop_threads=1, torch_version="", warmup=0,
                source="modeled")


def test_percentile_matches_numpy():
    np = pytest.importorskip("numpy")
    values = [5.0, 1.0, 9.0, 3.0, 7.0, 2.0]
    for q in (0, 10, 50, 90, 99, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_real_model_smoke():
    from crossrec.models import ModelSpec, TableSpec, build

    spec = ModelSpec(num_dense=3, tables=(TableSpec(name="a", num_embeddings=7), TableSpec(name="b", num_embeddings=7)),
                     embedding_dim=4, bottom_mlp=(4,), top_mlp=(8,))
    p = profile(build(spec, seed=0), make_batch, batch_sizes=(1, 16), warmup=1, repeats=2)
    assert all(bp.p50_ms > 0 and bp.samples_per_s > 0 for bp in p.batches)
