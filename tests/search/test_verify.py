"""CPU timing on a crossrec runtime, eager fallback, both baseline figures, and the re-timed dominance (issue #4).

A fake profiler (``profile_many``'s signature) answers with fixed latencies per model name and records what it
was asked to time, so these tests are deterministic and never time anything for real.
"""

from __future__ import annotations

import json

import pytest
import torch

from crossrec.config import dump
from crossrec.errors import ConfigError
from crossrec.hardware import load_catalog
from crossrec.hardware.profile import BatchProfile, Profile
from crossrec.search import (
    BaselineDominance,
    Evaluation,
    Evaluator,
    LatencyConfig,
    ParetoFront,
    Retimed,
    SearchConfig,
    VerifyConfig,
    front_member,
    retimed_dominance,
    run_search,
    search,
)
from crossrec.search.timing import time_models
from crossrec.train import TrainConfig

from .conftest import TINY_SPACE

CPU = "epyc-zen5-2vcpu"


class FakeProfiler:
    """Answers ``latency(names, name)`` ms for every timed call; calls each model once (on its own batches)."""

    def __init__(self, latency):
        self.latency, self.calls = latency, []

    def __call__(self, models, make_batch, *, batch_sizes, warmup, repeats, block, threads, clock):
        (size,) = batch_sizes
        batches = make_batch(size)
        outputs = {n: m(batches[0].dense, batches[0].ids, batches[0].offsets) for n, m in models.items()}
        shapes = {n: tuple(o.shape) for n, o in outputs.items()}
        self.calls.append({"names": tuple(models), "size": size, "batches": len(batches), "warmup": warmup,
                           "repeats": repeats, "block": block, "shapes": shapes})
        names = tuple(models)
        return {n: Profile(name=n, device="cpu", threads=1, interop_threads=1, torch_version="fake", warmup=warmup,
                           batches=(BatchProfile.from_latencies(size, [self.latency(names, n)] * repeats),),
                           interleaved_with=tuple(o for o in names if o != n)) for n in names}


def _search_latency(names, name):
    """Baseline: eager 8 ms, script 4 ms; candidates 1 ms in the search; re-timed, a member takes 5 ms."""
    if name.startswith("member@"):
        return 5.0
    if names == ("script",):  # a candidate, during the search
        return 1.0
    return {"eager": 8.0, "script": 4.0, "baseline": 8.0, "baseline@script": 4.0}[name]


# -- configuration ---------------------------------------------------------------------------------------------

def test_cpu_runtime_is_validated_against_crossrecs_registered_cpu_runtimes(monkeypatch):
    assert LatencyConfig().cpu_runtime == "script" and LatencyConfig(cpu_runtime="eager").cpu_runtime == "eager"
    with pytest.raises(ConfigError, match=r"cpu_runtime = 'tensorrt' is invalid: .*'eager'.*'script'"):
        LatencyConfig(cpu_runtime="tensorrt")
    with pytest.raises(ConfigError, match="cpu_runtime = 'cuda'"):  # registered, but a GPU runtime
        LatencyConfig(cpu_runtime="cuda")
    with pytest.raises(ConfigError, match=r"runtime_options .* options of runtime 'script': \[.*'hugepages'"):
        LatencyConfig(runtime_options={"hugepage": True})
    with pytest.raises(ConfigError, match="batches"):
        LatencyConfig(batches=0)
    with pytest.raises(ConfigError, match="rounds"):
        VerifyConfig(rounds=0)
    from crossrec.runtime import RUNTIMES, EagerRuntime

    class Mine(EagerRuntime):
        name = "mine"

    monkeypatch.setitem(RUNTIMES, "mine", Mine)  # a runtime registered later is accepted too
    assert LatencyConfig(cpu_runtime="mine").cpu_runtime == "mine"


def test_configs_and_records_written_before_runtimes_still_load():
    cfg = SearchConfig.from_dict({"latency": {"batch_size": 64, "repeats": 3}, "auc_tolerance": 0.01})
    assert (cfg.latency.cpu_runtime, cfg.latency.batches, cfg.latency.block) == ("script", 4, 5)
    assert cfg.verify == VerifyConfig() and SearchConfig.from_json(cfg.to_json()) == cfg
    old = Evaluation(auc=0.7, auc_uncompressed=0.7, model_bytes=1, latency_ms={"cpu": 1.0},
                     latency_source={"cpu": "measured"}, energy_per_1k_j={}, train_steps=1, train_s=0.0).to_dict()
    del old["latency_runtime"], old["latency_by_runtime"]
    assert Evaluation.from_dict(old).latency_runtime == {}
    verdict = BaselineDominance(device="cpu", baseline_auc=0.8, baseline_latency_ms=2.0, strict=(1,)).to_dict()
    for key in ("baseline_runtime", "baseline_latency_by_runtime_ms", "speedup_same_runtime_strict",
                "speedup_same_runtime_tolerant", "timing", "retimed", "search_time"):
        del verdict[key]
    assert BaselineDominance.from_dict(verdict).timing == "search"


# -- the evaluator: candidates on the runtime (eager if it cannot), the baseline on both -----------------------

def _measuring_evaluator(splits, profiler, **kw) -> Evaluator:
    return Evaluator(splits.train, splits.val, train_config=TrainConfig(epochs=1, max_steps=2, batch_size=256),
                     devices={CPU: load_catalog()[CPU]}, sources={CPU: "measured"}, latency_fn=None, batch_size=32,
                     repeats=4, warmup=0, profiler=profiler, **kw)


def _arch(schema):
    from crossrec.search import SearchSpace

    choices = {"dim:C1": 4, "dim:C2": 4, "dim:C3": 0, "dim:C4": 4, "interaction": "dot", "embedding_dim": 4,
               "bottom_depth": 1, "bottom_width": 8, "top_depth": 1, "top_width": 8, "table_precision": "int8",
               "dense_precision": "int8"}
    return SearchSpace.from_dict(TINY_SPACE).build(choices, schema)


def test_candidates_run_on_the_runtime_and_the_baseline_on_eager_and_on_it(tiny_splits):
    fake = FakeProfiler(lambda names, n: {"eager": 8.0, "script": 4.0}[n] if len(names) > 1 else 1.0)
    ev = _measuring_evaluator(tiny_splits, fake, timing_batches=3, block=2)
    arch = _arch(tiny_splits.train.schema)
    cand, _ = ev(arch)
    assert (cand.latency_ms, cand.latency_runtime, cand.latency_by_runtime) == (
        {CPU: 1.0}, {CPU: "script"}, {CPU: {"script": 1.0}})
    assert cand.notes == {}
    base, _ = ev(arch, baseline=True)
    assert base.latency_ms == {CPU: 8.0} and base.latency_runtime == {CPU: "eager"}  # FP32 eager: as users run it
    assert base.latency_by_runtime == {CPU: {"eager": 8.0, "script": 4.0}}
    first, second = fake.calls
    assert first["names"] == ("script",) and second["names"] == ("eager", "script")  # one round-robin run
    assert (second["batches"], second["block"], second["size"]) == (3, 2, 32)  # distinct batches, in blocks
    assert second["shapes"] == {"eager": (32,), "script": (32,)}
    ev(arch)  # a format already warmed up: the configured warmup (0), but TorchScript gets at least 3 calls
    assert first["warmup"] == 20 and fake.calls[-1]["warmup"] == 3  # its profiling executor specializes then


def test_a_candidate_the_runtime_cannot_trace_is_timed_on_eager_and_says_so(tiny_splits, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("tracer cannot follow this graph")

    monkeypatch.setattr(torch.jit, "trace", broken)
    fake = FakeProfiler(lambda names, n: 3.0)
    ev = _measuring_evaluator(tiny_splits, fake)
    cand, _ = ev(_arch(tiny_splits.train.schema))
    assert cand.latency_ms == {CPU: 3.0} and cand.latency_source == {CPU: "measured"}
    assert cand.latency_runtime == {CPU: "eager"} and fake.calls[-1]["names"] == ("eager",)
    assert "script could not run it" in cand.notes[CPU] and "tracer cannot follow" in cand.notes[CPU]
    base, _ = ev(_arch(tiny_splits.train.schema), baseline=True)
    assert base.latency_by_runtime == {CPU: {"eager": 3.0}}  # timed once on eager, not twice


def test_time_models_needs_one_batch_size(tiny_splits):
    b32, b16 = tiny_splits.val.distinct_batches(32, 1), tiny_splits.val.distinct_batches(16, 1)
    with pytest.raises(ConfigError, match="sizes \\[16, 32\\]"):
        time_models({"a": (None, b32), "b": (None, b16)}, warmup=0, repeats=1, block=1, threads=None)


# -- verification: re-timed pairwise with the baseline ----------------------------------------------------------

def _measured_search(make_config, tiny_splits, fake, sub="verify", **verify):
    cfg = make_config(sub, devices=[CPU, "alveo-u280"], n_trials=4, auc_tolerance=0.5,
                      latency={"repeats": 2, "warmup": 0, "block": 2, "batches": 2},
                      verify={"rounds": 3, "top": 2, **verify})
    return cfg, search(cfg, splits=tiny_splits, local_device=CPU, profiler=fake)


def test_verification_retimes_claimed_winners_with_the_baseline_and_reports_that_ratio(make_config, tiny_splits):
    fake = FakeProfiler(_search_latency)
    cfg, result = _measured_search(make_config, tiny_splits, fake)
    front = result.front
    base = front.baseline[CPU].evaluation
    assert base.latency_ms[CPU] == 8.0 and base.latency_by_runtime[CPU] == {"eager": 8.0, "script": 4.0}
    d = front.dominance[CPU]
    # the search's own timing: every member 8x faster than the eager baseline, 4x on the same runtime
    assert d.search_time.timing == "search" and d.search_time.tolerant
    assert (d.search_time.speedup_tolerant, d.search_time.speedup_same_runtime_tolerant) == (8.0, 4.0)
    assert d.search_time.baseline_runtime == "eager" and d.baseline_latency_by_runtime_ms == {"eager": 8.0,
                                                                                                "script": 4.0}
    # re-timed round-robin with the baseline: 1.6x, below 2x, so the reported verdict is no dominance
    retimes = [c for c in fake.calls if any(n.startswith("member@") for n in c["names"])]
    assert retimes and all(c["names"] == ("baseline", "baseline@script", "member@script") for c in retimes)
    assert all(c["repeats"] == 3 * 2 and c["block"] == 2 and c["batches"] == 2 for c in retimes)
    assert all(set(c["shapes"].values()) == {(cfg.latency.batch_size,)} for c in retimes)
    assert d.timing == "retimed" and len(d.retimed) == len(retimes) <= 2 + len(d.search_time.tolerant)
    assert {r.index for r in d.retimed} >= set(d.search_time.tolerant)  # every claim was checked
    r = d.retimed[0]
    assert (r.member_ms, r.baseline_ms, r.baseline_same_runtime_ms, r.runtime) == (5.0, 8.0, 4.0, "script")
    assert (r.speedup_vs_eager_baseline, r.speedup_same_runtime, r.search_speedup) == (1.6, 0.8, 8.0)
    assert r.round_speedups == (1.6, 1.6, 1.6) and r.calls == 6
    assert not d.dominates_tolerant and not d.dominates_strict and d.speedup_tolerant == 1.6
    assert d.speedup_same_runtime_tolerant == 0.8
    assert front.info["verification"]["rounds"] == 3 and front.info["cpu_runtime"] == "script"
    assert "alveo-u280" not in front.info["verification"]["devices"]  # modeled: nothing to re-time
    assert front.dominance["alveo-u280"].timing == "search"
    # the written front is the verified one, and crossrec compress can still take a member from it
    assert ParetoFront.load(result.front_path) == front
    path, _ = front_member(result.front_path, CPU, "most-accurate")
    assert (path / "manifest.json").is_file()


def test_verification_can_confirm_a_claim_and_can_be_switched_off(make_config, tiny_splits):
    fake = FakeProfiler(lambda names, n: 3.0 if n.startswith("member@") else _search_latency(names, n))
    _, result = _measured_search(make_config, tiny_splits, fake, sub="confirm")
    d = result.front.dominance[CPU]
    assert d.timing == "retimed" and d.dominates_tolerant and d.speedup_tolerant == pytest.approx(8 / 3)
    assert set(d.tolerant) <= {r.index for r in d.retimed}
    off = FakeProfiler(_search_latency)
    _, plain = _measured_search(make_config, tiny_splits, off, sub="off", enabled=False)
    assert plain.front.dominance[CPU].timing == "search" and plain.front.dominance[CPU].search_time is None
    assert not any("baseline" in c["names"] for c in off.calls)


def test_verification_times_a_fallen_back_member_against_the_eager_baseline(make_config, tiny_splits, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no trace today")

    monkeypatch.setattr(torch.jit, "trace", broken)
    fake = FakeProfiler(lambda names, n: 2.0 if n.startswith("member@") else 8.0)
    _, result = _measured_search(make_config, tiny_splits, fake, sub="fallback")
    lines = [json.loads(line) for line in result.history_path.read_text().splitlines()]
    ev = lines[0]["evaluation"]  # recorded in the trial
    assert ev["latency_runtime"] == {CPU: "eager"} and "script could not run it" in ev["notes"][CPU]
    d = result.front.dominance[CPU]
    assert d.retimed and all(r.runtime == "eager" and r.baseline_same_runtime_ms == r.baseline_ms for r in d.retimed)
    retimes = [c for c in fake.calls if "baseline" in c["names"]]
    assert all(c["names"] == ("baseline", "member@eager") for c in retimes)


def test_retimed_dominance_picks_the_best_retimed_ratio_at_each_floor():
    search_time = BaselineDominance(device="cpu", baseline_auc=0.80, baseline_latency_ms=10.0, auc_tolerance=0.01,
                                    strict=(0,), tolerant=(1, 0), speedup_strict=3.0, speedup_tolerant=6.0)

    def row(i, auc, speedup):
        return Retimed(index=i, key=str(i), auc=auc, runtime="script", member_ms=10 / speedup, baseline_ms=10.0,
                       baseline_same_runtime_ms=5.0, speedup_vs_eager_baseline=speedup,
                       speedup_same_runtime=speedup / 2, search_speedup=None)

    d = retimed_dominance(search_time, [row(1, 0.795, 2.5), row(0, 0.80, 1.9), row(2, 0.81, 2.1)])
    assert d.strict == (2,) and d.speedup_strict == 2.1 and d.speedup_same_runtime_strict == 1.05
    assert d.tolerant == (1, 2) and d.speedup_tolerant == 2.5  # highest re-timed speed-up first
    assert d.search_time == search_time and d.search_time.retimed == ()
    assert BaselineDominance.from_json(d.to_json()) == d
    none = retimed_dominance(search_time, [])
    assert (none.strict, none.tolerant, none.speedup_tolerant, none.timing) == ((), (), None, "retimed")


def test_run_search_overrides_the_runtime_and_verification_and_resumes_only_the_latter(make_config, fast_tmp):
    cfg = make_config("yaml", data={"synthetic": {"rows": 800, "num_dense": 1, "num_sparse": 3, "max_rows": 20}},
                      devices=["a100-sxm-80gb"], baseline=None, n_trials=1)
    path = dump(cfg, fast_tmp / "search.yaml")
    run_search(path, verify=False, cpu_runtime="eager")
    written = json.loads((fast_tmp / "yaml" / "config.json").read_text())
    assert written["latency"]["cpu_runtime"] == "eager" and written["verify"]["enabled"] is False
    run_search(path, cpu_runtime="eager", verify=True)  # verification does not change what trials measured
    with pytest.raises(ConfigError, match=r"differs in \['latency'\]"):  # the runtime does
        run_search(path, cpu_runtime="script")
