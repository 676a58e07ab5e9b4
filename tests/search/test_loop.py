"""search(): outputs on disk, artifacts a front member can be compressed from, cache, failures, sources, resume."""

from __future__ import annotations

import itertools
import json
import threading

import optuna
import pytest

from crossrec.artifact import load_artifact
from crossrec.compress import compress_
from crossrec.config import dump
from crossrec.errors import ConfigError, DataError
from crossrec.search import (
    ParetoFront,
    compress_candidate,
    compression_configs,
    front_member,
    project_data,
    run_search,
    search,
)
from crossrec.search.pareto import non_dominated_sort
from crossrec.train import evaluate

from .conftest import TINY_SPACE

ONE_POINT = {"embedding_dims": [4], "interaction_dims": [4], "interactions": ["dot"], "bottom_depths": [0],
             "top_depths": [1], "top_widths": [8], "table_precisions": ["int8"], "dense_precisions": ["int8"]}


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_splits):
    """One random search of 8 trials over two modeled devices (shared by the tests that only read it)."""
    import torch

    from .conftest import tiny_config

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = tiny_config(tmp_path_factory.mktemp("search") / "out", n_trials=8)
    try:
        return cfg, search(cfg, splits=tiny_splits, local_device=None)
    finally:
        torch.set_num_threads(old)


def test_outputs_on_disk(finished):
    result = finished[1]
    out = result.front_path.parent
    assert {p.name for p in out.iterdir()} >= {"front.json", "history.jsonl", "config.json", "search.db",
                                                "candidates", "baseline"}
    assert ParetoFront.load(result.front_path) == result.front
    lines = [json.loads(line) for line in result.history_path.read_text().splitlines()]
    assert [r["trial"] for r in lines] == list(range(8)) and all(r["state"] == "complete" for r in lines)
    assert set(lines[0]["objectives"]) == {"auc", "latency:h100-sxm", "latency:alveo-u280"}
    front = result.front
    assert set(front.baseline) == {"h100-sxm", "alveo-u280"}
    assert front.baseline["alveo-u280"].arch.compression.label == "fp32/int8"  # the FPGA has no fp32 compute
    assert front.baseline["h100-sxm"].arch.compression.label == "fp32/fp32"
    assert front.info["latency_config"] == {"h100-sxm": "latency_fn", "alveo-u280": "latency_fn"}
    assert front.sources("h100-sxm") == ["modeled"] and set(front.hypervolume) == {"h100-sxm", "alveo-u280"}


def test_only_candidates_on_some_front_keep_their_artifacts(finished):
    _, result = finished
    cands, devices = result.front.candidates, ("h100-sxm", "alveo-u280")
    rows = [[c.evaluation.auc, *(c.latency(d) if c.latency(d) is not None else float("inf") for d in devices),
             c.evaluation.model_bytes] for c in cands]
    keep = {cands[i].key for i in non_dominated_sort(rows, [True, False, False, False])[0]}
    keep |= {c.key for d in devices for c in result.front.members(d)}
    out = result.front_path.parent
    assert len(keep) < len(cands)  # some candidates were dominated and lost their artifact
    assert {p.name for p in (out / "candidates").iterdir()} == keep
    for c in cands:
        assert (c.artifact is not None) == (c.key in keep)
    assert all((out / b.artifact / "manifest.json").is_file() for b in result.front.baseline.values())


def test_front_member_gives_an_artifact_compress_can_use(finished, tiny_splits):
    _, result = finished
    for device in ("h100-sxm", "alveo-u280"):
        path, choice = front_member(result.front_path, device, "most-accurate")
        member = max(result.front.members(device), key=lambda c: c.evaluation.auc)
        art = load_artifact(path)
        assert art.spec == member.arch.spec
        val = project_data(tiny_splits.val, art.schema)  # full-width data cut to the member's kept features
        assert evaluate(art.model, val).auc == pytest.approx(member.evaluation.auc_uncompressed, abs=1e-9)
        for cfg in compression_configs(choice):
            compress_(art.model, cfg)
        assert evaluate(art.model, val).auc == pytest.approx(member.evaluation.auc, abs=1e-9)


def test_same_architecture_is_evaluated_once(make_config, tiny_splits):
    cfg = make_config(space=ONE_POINT, n_trials=3, baseline=None)
    result = search(cfg, splits=tiny_splits, local_device=None)
    assert (result.evaluated, result.cached) == (1, 2)
    lines = [json.loads(line) for line in result.history_path.read_text().splitlines()]
    assert [r["cached"] for r in lines] == [False, True, True]
    assert len({r["key"] for r in lines}) == 1 and len(result.front.candidates) == 1


def test_a_failing_trial_is_recorded_and_counts_against_the_budget(make_config, tiny_splits):
    calls = itertools.count()

    def flaky(spec, choice, device, batch_size):
        if next(calls) % 2 == 0:
            raise DataError("the latency service is down")
        return 1.0, "predicted"

    cfg = make_config(n_trials=4, baseline=None, devices=["h100-sxm"])
    result = search(cfg, splits=tiny_splits, local_device=None, latency_fn=flaky)
    assert result.finished_trials == 4 and result.failed == 2
    study = optuna.load_study(study_name="tiny", storage=result.storage)
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    assert len(failed) == 2 and "latency service is down" in failed[0].user_attrs["error"]
    assert result.front.sources("h100-sxm") == ["predicted"]


def test_local_cpu_is_measured_and_labelled(make_config, tiny_splits):
    ticks = itertools.count()
    cfg = make_config(devices=["epyc-zen5-2vcpu", "tpu-v4"], n_trials=2, latency={"repeats": 2, "warmup": 0})
    result = search(cfg, splits=tiny_splits, local_device="epyc-zen5-2vcpu",
                    profile_clock=lambda: next(ticks) * 0.001)
    assert result.front.sources("epyc-zen5-2vcpu") == ["measured"]
    assert set(result.front.sources("tpu-v4")) <= {"modeled"}
    base = result.front.baseline
    assert base["epyc-zen5-2vcpu"].evaluation.latency_ms["epyc-zen5-2vcpu"] == pytest.approx(1.0)
    assert base["tpu-v4"].arch.compression.label == "fp32/bf16"  # TPU v4 lists no fp32 compute
    with pytest.raises(ConfigError, match="only the local CPU can be measured"):
        search(make_config("m", devices=["h100-sxm"], latency={"sources": {"h100-sxm": "measured"}}),
               splits=tiny_splits, local_device="epyc-zen5-2vcpu")
    with pytest.raises(ConfigError, match="needs latency.predictor"):
        search(make_config("p", devices=["h100-sxm"], latency={"sources": {"h100-sxm": "predicted"}}),
               splits=tiny_splits, local_device=None)


def test_local_cpu_alias_measures_whichever_cpu_runs_the_search(make_config, tiny_splits):
    ticks = itertools.count()
    cfg = make_config(devices=["local-cpu", "tpu-v4"], n_trials=1, latency={"repeats": 2, "warmup": 0,
                                                                            "batch_sizes": {"local-cpu": 32}})
    result = search(cfg, splits=tiny_splits, local_device="epyc-zen3-2vcpu", profile_clock=lambda: next(ticks) * 1e-3)
    assert result.front.devices == ("epyc-zen3-2vcpu", "tpu-v4")  # front.json names the real entry
    assert result.front.sources("epyc-zen3-2vcpu") == ["measured"]
    with pytest.raises(ConfigError, match="matches no catalog entry"):
        search(make_config("none", devices=["local-cpu"]), splits=tiny_splits, local_device=None)
    with pytest.raises(ConfigError, match="keep one of them"):
        search(make_config("both", devices=["local-cpu", "epyc-zen3-2vcpu"]), splits=tiny_splits,
               local_device="epyc-zen3-2vcpu")


def test_a_saved_latency_predictor_labels_its_devices(make_config, tiny_splits, fast_tmp):
    from crossrec.hardware.features import CompressionChoice
    from crossrec.hardware.predictor import LatencyPredictor, synthetic_record
    from crossrec.models import ModelSpec

    spec = ModelSpec.for_schema(tiny_splits.train.schema, embedding_dim=4, bottom_mlp=(8, 4), top_mlp=(8,))
    records = [synthetic_record(spec, CompressionChoice(), b, "h100-sxm", 0.02 + 1e-5 * b, catalog_device="h100-sxm")
               for b in (1, 64, 512)]
    path = LatencyPredictor().fit(records).save(fast_tmp / "predictor.json")
    cfg = make_config(n_trials=2, latency={"predictor": str(path), "sources": {"h100-sxm": "predicted"}})
    result = search(cfg, splits=tiny_splits, local_device=None)
    assert result.front.sources("h100-sxm") == ["predicted"]  # adapted from three measurements
    assert result.front.sources("alveo-u280") == ["modeled"]  # nothing measured there: the roofline answers


def test_resuming_with_another_config_is_refused(make_config, tiny_splits):
    search(make_config("same", n_trials=1, baseline=None), splits=tiny_splits, local_device=None)
    changed = make_config("same", n_trials=2, baseline=None, space={**TINY_SPACE, "top_widths": [32]})
    with pytest.raises(ConfigError, match=r"another config \(differs in \['space'\]\)"):
        search(changed, splits=tiny_splits, local_device=None)


def test_workers_share_a_storage_and_its_budget(make_config, tiny_splits, fast_tmp):
    storage = f"sqlite:///{fast_tmp / 'shared.db'}"
    one = search(make_config("w1", n_trials=3, storage=storage, baseline=None), splits=tiny_splits, local_device=None)
    two = search(make_config("w2", n_trials=5, storage=storage, baseline=None), splits=tiny_splits, local_device=None)
    assert one.finished_trials == 3 and two.finished_trials == 5 and two.evaluated + two.cached == 2
    assert len(two.front.candidates) == len({c.key for c in two.front.candidates}) >= len(one.front.candidates)
    assert {c.key for c in one.front.candidates} <= {c.key for c in two.front.candidates}


def test_concurrent_workers_share_the_budget(make_config, tiny_splits, fast_tmp):
    storage = f"sqlite:///{fast_tmp / 'parallel.db'}"
    results, errors = {}, []

    def worker(name):
        try:
            cfg = make_config(name, n_trials=6, storage=storage, baseline=None, strategy={"name": "random"})
            results[name] = search(cfg, splits=tiny_splits, local_device=None)
        except Exception as exc:  # surfaced below: a thread's exception would otherwise vanish
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    study = optuna.load_study(study_name="tiny", storage=storage)
    # each worker checks the budget before asking: together they may overshoot by at most one trial
    assert 6 <= len(study.trials) <= 7 and all(t.state.name == "COMPLETE" for t in study.trials)
    assert sum(r.evaluated + r.cached for r in results.values()) == len(study.trials)
    numbers = sorted(t.number for t in study.trials)
    assert numbers == list(range(len(numbers)))


def test_run_search_reads_a_yaml_config_and_applies_overrides(make_config, fast_tmp):
    cfg = make_config("yaml", data={"synthetic": {"rows": 800, "num_dense": 1, "num_sparse": 3, "max_rows": 20}},
                      devices=["a100-sxm-80gb"], baseline=None)
    path = dump(cfg, fast_tmp / "search.yaml")
    result = run_search(path, n_trials=2, strategy="evolution", out=str(fast_tmp / "override"), auc_tolerance=0.01,
                        baseline_seeds=2)
    assert result.finished_trials == 2 and result.front_path.parent.name == "override"
    assert result.front.info["strategy"] == "evolution"
    written = json.loads((fast_tmp / "override" / "config.json").read_text())
    assert (written["auc_tolerance"], written["baseline_seeds"]) == (0.01, 2)


def test_a_static_int8_search_gives_members_that_compress_to_loadable_artifacts(make_config, tiny_splits, fast_tmp):
    from crossrec.artifact import save_artifact

    ticks = itertools.count()
    cfg = make_config("static", n_trials=3, space={**TINY_SPACE, "dense_precisions": ["int8-static"]},
                      devices=["epyc-zen5-2vcpu", "alveo-u280"], latency={"repeats": 2, "warmup": 0})
    result = search(cfg, splits=tiny_splits, local_device="epyc-zen5-2vcpu", profile_clock=lambda: next(ticks) * 1e-3)
    assert result.finished_trials == 3 and result.failed == 0
    assert {c.arch.compression.dense_precision for c in result.front.candidates} == {"int8-static"}
    assert result.front.sources("epyc-zen5-2vcpu") == ["measured"] and result.front.sources("alveo-u280") == ["modeled"]
    path, choice = front_member(result.front_path, "epyc-zen5-2vcpu", "most-accurate")
    member = max(result.front.members("epyc-zen5-2vcpu"), key=lambda c: c.evaluation.auc)
    art = load_artifact(path)  # the trained float model; calibrate on the rows it reads, as the search did
    compress_candidate(art.model, choice, project_data(tiny_splits.train, art.schema))
    val = project_data(tiny_splits.val, art.schema)
    assert evaluate(art.model, val).auc == pytest.approx(member.evaluation.auc, abs=1e-9)
    out = save_artifact(fast_tmp / "static-artifact", art.model, art.schema)
    loaded = load_artifact(out)  # restored without calibration data: the scales come from the file
    kinds = [type(m).__name__ for m in loaded.model.modules()]
    assert "Int8StaticMLP" in kinds and kinds == [type(m).__name__ for m in art.model.modules()]
    assert evaluate(loaded.model, val).auc == pytest.approx(member.evaluation.auc, abs=1e-9)


def test_baseline_seed_spread_sets_the_auto_tolerance_and_grows_on_resume(make_config, tiny_splits, monkeypatch):
    from crossrec.search.objectives import Evaluator

    calls = []
    real = Evaluator.proxy_auc
    monkeypatch.setattr(Evaluator, "proxy_auc", lambda self, arch, seed: calls.append(seed) or real(self, arch, seed))
    result = search(make_config("seeds", n_trials=2, baseline_seeds=2, auc_tolerance="auto"), splits=tiny_splits,
                    local_device=None)
    front = result.front
    assert sorted(calls) == [1, 1]  # seed 0 is the stored baseline; one more per baseline precision (2 here)
    for device in ("h100-sxm", "alveo-u280"):
        spread, verdict = front.baseline_spread[device], front.dominance[device]
        assert spread.seeds == (0, 1) and spread.auc[0] == front.baseline[device].evaluation.auc
        assert spread.std > 0 and verdict.auc_tolerance == pytest.approx(spread.std)
        assert verdict.tolerance_from == "1 std of the baseline AUC over 2 seeds"
        assert set(verdict.strict) <= set(verdict.tolerant) <= set(front.fronts[device])
    calls.clear()  # resuming with a third seed trains only that one (the study keeps the others)
    again = search(make_config("seeds", n_trials=2, baseline_seeds=3, auc_tolerance=0.01), splits=tiny_splits,
                   local_device=None)
    assert sorted(calls) == [2, 2] and again.evaluated == 0
    assert again.front.baseline_spread["h100-sxm"].auc[:2] == front.baseline_spread["h100-sxm"].auc
    assert again.front.dominance["h100-sxm"].tolerance_from == "given"
