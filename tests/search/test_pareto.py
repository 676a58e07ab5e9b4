"""Pareto machinery: sorting against brute force, hypervolume, fronts, picks, JSON round trip, front_member."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from crossrec.errors import ArtifactError, ConfigError
from crossrec.hardware.features import CompressionChoice
from crossrec.models.spec import ModelSpec, TableSpec
from crossrec.search import (
    Architecture,
    Candidate,
    Evaluation,
    ParetoFront,
    SeedSpread,
    baseline_dominance,
    build_front,
    choose,
    dominates,
    front_member,
    hypervolume_2d,
    non_dominated_sort,
)
from crossrec.search.pareto import AUTO_TOLERANCE_STDS, resolve_tolerance

SPEC = ModelSpec(num_dense=1, tables=(TableSpec(name="a", num_embeddings=5),), embedding_dim=4, bottom_mlp=(4,),
                 top_mlp=(8,))


def cand(key, auc, latency: dict, nbytes=100, artifact=None, arch="", dense="int8") -> Candidate:
    """A candidate whose architecture is its own (``arch`` names a shared one)."""
    ev = Evaluation(auc=auc, auc_uncompressed=auc, model_bytes=nbytes, latency_ms=latency,
                    latency_source={d: "modeled" if v is not None else "unsupported" for d, v in latency.items()},
                    energy_per_1k_j=latency, train_steps=1, train_s=0.0)
    spec = dataclasses.replace(SPEC, name=arch or key)
    arch = Architecture(spec=spec, features=("a",), compression=CompressionChoice(dense_precision=dense))
    return Candidate(key=key, arch=arch, evaluation=ev, artifact=artifact)


def test_non_dominated_sort_matches_brute_force():
    rng = np.random.default_rng(0)
    values = rng.integers(0, 5, size=(40, 3)).astype(float)  # many ties on purpose
    maximize = [True, False, False]
    fronts = non_dominated_sort(values.tolist(), maximize)
    assert sorted(itertools.chain(*fronts)) == list(range(40))
    rank = {i: r for r, f in enumerate(fronts) for i in f}
    for i, j in itertools.permutations(range(40), 2):
        if dominates(values[i], values[j], maximize):
            assert rank[i] < rank[j]
    first = {i for i in range(40) if not any(dominates(values[j], values[i], maximize) for j in range(40))}
    assert set(fronts[0]) == first


def test_hypervolume_grows_with_a_dominating_point_and_ignores_points_beyond_the_reference():
    ref = (0.6, 10.0)
    base = [(0.7, 5.0), (0.75, 8.0)]
    hv = hypervolume_2d(base, ref)
    assert hv == pytest.approx(np.log10(2) * 0.1 + np.log10(10 / 8) * 0.05)
    assert hypervolume_2d([*base, (0.8, 1.0)], ref) > hv
    assert hypervolume_2d([*base, (0.65, 20.0), (0.5, 1.0)], ref) == hv  # slower than ref / worse than ref
    assert hypervolume_2d([*base, (0.7, 6.0)], ref) == hv  # a dominated point adds nothing


def test_fronts_per_device_and_infeasible_devices():
    cands = [cand("a", 0.80, {"cpu": 4.0, "fpga": None}),
             cand("b", 0.78, {"cpu": 2.0, "fpga": 1.0}),
             cand("c", 0.70, {"cpu": 3.0, "fpga": 0.5}),
             cand("d", 0.79, {"cpu": 5.0, "fpga": 2.0})]
    front = build_front(cands, devices=("cpu", "fpga"))
    assert [c.key for c in front.members("cpu")] == ["b", "a"]  # fastest first; c and d dominated on cpu
    assert [c.key for c in front.members("fpga")] == ["c", "b", "d"]  # a cannot run there
    assert front.sources("fpga") == ["modeled"]
    with pytest.raises(ConfigError, match="one of"):
        front.members("tpu")


def test_bytes_objective_keeps_smaller_models_on_the_front():
    cands = [cand("fast", 0.8, {"cpu": 1.0}, nbytes=1000), cand("small", 0.8, {"cpu": 2.0}, nbytes=10)]
    assert [c.key for c in build_front(cands, devices=("cpu",)).members("cpu")] == ["fast"]
    both = build_front(cands, devices=("cpu",), objectives=("auc", "latency", "bytes"))
    assert [c.key for c in both.members("cpu")] == ["fast", "small"]


def test_cross_hardware_picks():
    cands = [cand("cpu-star", 0.80, {"cpu": 1.0, "gpu": 4.0}),
             cand("gpu-star", 0.80, {"cpu": 4.0, "gpu": 1.0}),
             cand("balanced", 0.80, {"cpu": 1.5, "gpu": 1.5}),
             cand("inaccurate", 0.60, {"cpu": 0.1, "gpu": 0.1})]
    front = build_front(cands, devices=("cpu", "gpu"), auc_floor=0.75, weights={"cpu": 9.0, "gpu": 1.0})
    assert front.picks["minmax"].members == {"cpu": 2, "gpu": 2}  # balanced: worst slowdown 1.5x vs 4x
    assert front.picks["minmax"].score == pytest.approx(1.5)
    assert choose(front, "gpu", "minmax").key == "balanced"
    assert front.picks["weighted"].members == {"cpu": 0, "gpu": 0}  # cpu-star: (9*1 + 4) / 10 = 1.3 ms < 1.5
    assert front.picks["weighted"].score == pytest.approx(1.3)
    none = build_front(cands, devices=("cpu", "gpu"), auc_floor=0.9)
    assert none.picks["minmax"].members == {} and "no architecture" in none.picks["minmax"].detail
    with pytest.raises(ConfigError, match="no variant for cpu"):
        choose(none, "cpu", "minmax")


def test_picks_deploy_each_device_in_its_own_precision():
    cands = [cand("fp32", 0.80, {"cpu": 2.0, "fpga": None}, arch="m", dense="fp32"),  # no fp32 on the FPGA
             cand("int8", 0.79, {"cpu": 3.0, "fpga": 0.5}, arch="m"),
             cand("other", 0.80, {"cpu": 9.0, "fpga": 0.4})]
    front = build_front(cands, devices=("cpu", "fpga"), auc_floor=0.75)
    # one architecture "m", fp32 on the CPU and int8 on the FPGA: worst slowdown 1.25x (vs 4.5x for "other")
    assert front.picks["minmax"].members == {"cpu": 0, "fpga": 1}
    assert front.picks["minmax"].score == pytest.approx(1.25)


def test_auc_floor_defaults_to_the_baseline_and_json_round_trip(tmp_path):
    cands = [cand("a", 0.80, {"cpu": 2.0}), cand("b", 0.76, {"cpu": 1.0}), cand("c", 0.79, {"cpu": 1.5})]
    base = cand("base", 0.78, {"cpu": 6.0})
    front = build_front(cands, devices=("cpu",), baseline={"cpu": base})
    assert front.picks["minmax"].auc_floor == 0.78
    assert choose(front, "cpu").key == "c"  # fastest at AUC >= the baseline's
    assert choose(front, "cpu", auc_floor=0.0).key == "b"
    assert choose(front, "cpu", "most-accurate").key == "a"
    assert choose(front, "cpu", 0).key == "b" and choose(front, "cpu", -1).key == "a"
    assert front.reference["cpu"] == (0.76, 2.0)
    path = front.save(tmp_path / "front.json")
    assert ParetoFront.load(path) == front
    with pytest.raises(ConfigError, match="does not exist"):
        ParetoFront.load(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="reaches AUC"):
        choose(front, "cpu", auc_floor=0.9)
    with pytest.raises(ConfigError, match="fastest-within"):
        choose(front, "cpu", "slowest")


def test_front_member_needs_a_saved_artifact(tmp_path):
    cands = [cand("a", 0.80, {"cpu": 2.0}, artifact="candidates/a"), cand("b", 0.7, {"cpu": 1.0})]
    path = build_front(cands, devices=("cpu",)).save(tmp_path / "front.json")
    with pytest.raises(ArtifactError, match="no saved artifact"):
        front_member(path, "cpu", 0)
    with pytest.raises(ArtifactError, match="missing"):
        front_member(path, "cpu", "most-accurate")


# -- dominance of the baseline: strict and within an AUC tolerance (issue #4) ----------------------------------

BASE = cand("base", 0.800, {"cpu": 6.0, "fpga": None})
FRONT = [cand("fast-lossy", 0.7945, {"cpu": 1.0}),  # 6x faster, loses 0.0055
         cand("at-2x", 0.800, {"cpu": 3.0}),  # exactly 2x faster, same AUC: no worse counts
         cand("better-slow", 0.805, {"cpu": 4.0}),  # better AUC, only 1.5x
         cand("lossy-2x", 0.790, {"cpu": 2.5}),  # 2.4x faster, loses 0.010
         cand("gpu-only", 0.900, {"cpu": None})]


def test_strict_dominance_needs_no_worse_auc_and_the_speedup():
    d = baseline_dominance(FRONT, BASE, "cpu")
    assert d.strict == d.tolerant == (1,) and d.dominates_strict and d.dominates_tolerant
    assert (d.auc_tolerance, d.tolerance_from, d.speedup_strict, d.baseline_latency_ms) == (None, "none", 2.0, 6.0)
    assert not baseline_dominance(FRONT, BASE, "cpu", min_speedup=2.5).strict
    assert baseline_dominance(FRONT, BASE, "cpu", min_speedup=2.5).speedup_strict == 2.0  # fastest at the AUC
    assert not baseline_dominance(FRONT[2:], BASE, "cpu").dominates_strict  # 1.5x at best


def test_a_tolerance_admits_members_that_lose_at_most_that_much_auc():
    d = baseline_dominance(FRONT, BASE, "cpu", auc_tolerance=0.006)
    assert d.strict == (1,) and d.tolerant == (0, 1)  # fastest first; lossy-2x loses 0.010 > 0.006
    assert (d.speedup_strict, d.speedup_tolerant, d.tolerance_from) == (2.0, 6.0, "given")
    assert baseline_dominance(FRONT, BASE, "cpu", auc_tolerance=0.0105).tolerant == (0, 3, 1)
    only_lossy = baseline_dominance(FRONT[:1], BASE, "cpu", auc_tolerance=0.01)
    assert not only_lossy.dominates_strict and only_lossy.dominates_tolerant and only_lossy.speedup_strict is None
    assert baseline_dominance(FRONT, BASE, "cpu", among=[2, 3], auc_tolerance=0.02).tolerant == (3,)
    with pytest.raises(ConfigError, match="auc_tolerance"):
        baseline_dominance(FRONT, BASE, "cpu", auc_tolerance=-0.01)


def test_no_verdict_where_the_baseline_cannot_run():
    d = baseline_dominance([cand("x", 0.9, {"fpga": 0.1})], BASE, "fpga", auc_tolerance=0.1)
    assert (d.strict, d.tolerant, d.speedup_tolerant, d.baseline_latency_ms) == ((), (), None, None)


def test_auto_tolerance_is_one_std_of_the_baseline_seeds():
    spread = SeedSpread.of([0, 1, 2], [0.796, 0.800, 0.804])
    assert spread.std == pytest.approx(0.004) and spread.mean == pytest.approx(0.800) and AUTO_TOLERANCE_STDS == 1
    assert resolve_tolerance("auto", spread) == (pytest.approx(0.004), "1 std of the baseline AUC over 3 seeds")
    assert resolve_tolerance(0.01, None) == (0.01, "given") and resolve_tolerance(None, spread) == (None, "none")
    with pytest.raises(ConfigError, match="baseline_seeds >= 2"):
        resolve_tolerance("auto", SeedSpread.of([0], [0.8]))
    with pytest.raises(ConfigError, match="baseline_seeds >= 2"):
        resolve_tolerance("auto", None)


def test_build_front_reports_both_verdicts_on_each_devices_front(tmp_path):
    spread = {"cpu": SeedSpread.of([0, 1], [0.800, 0.800 - 0.006 * np.sqrt(2)])}  # std 0.006
    front = build_front(FRONT, devices=("cpu",), baseline={"cpu": BASE}, auc_tolerance="auto", baseline_spread=spread)
    d = front.dominance["cpu"]
    assert d.auc_tolerance == pytest.approx(0.006) and d.tolerance_from == "1 std of the baseline AUC over 2 seeds"
    assert [front.candidates[i].key for i in d.strict] == ["at-2x"]
    assert [front.candidates[i].key for i in d.tolerant] == ["fast-lossy", "at-2x"]
    assert set(d.tolerant) <= set(front.fronts["cpu"])
    assert ParetoFront.load(front.save(tmp_path / "front.json")) == front
    strict = build_front(FRONT, devices=("cpu",), baseline={"cpu": BASE})
    assert strict.dominance["cpu"].tolerant == strict.dominance["cpu"].strict and strict.baseline_spread == {}
    assert build_front(FRONT, devices=("cpu",)).dominance == {}  # no baseline, no verdict
    old = front.to_dict()  # a front.json written before dominance existed still loads
    del old["dominance"], old["baseline_spread"]
    assert ParetoFront.from_dict(old).dominance == {}
