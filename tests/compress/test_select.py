"""select(): fastest inside the budget (not the first), every trial recorded, clear failure."""

import json

import pytest

from crossrec.compress import AccuracyBudget, DenseQuantConfig, EmbeddingQuantConfig, Selection, select
from crossrec.data.synthetic import SyntheticConfig
from crossrec.errors import BudgetNotMetError, ConfigError
from crossrec.models import ModelSpec, build

CANDIDATES = [EmbeddingQuantConfig(precision="int8"), EmbeddingQuantConfig(precision="int4"),
              DenseQuantConfig(mode="bf16")]


def _model():
    return build(ModelSpec.for_schema(SyntheticConfig(num_sparse=3, max_rows=20).schema(), embedding_dim=8), seed=0)


def _scripted(scores_by_kind):
    """An evaluate() that reports fixed scores per variant kind, so the choice logic is tested exactly."""

    def evaluate(model):
        kind = "baseline"
        for c in getattr(model, "compression_recipe", []):
            kind = getattr(c, "precision", None) or getattr(c, "mode", None)
        return dict(scores_by_kind[kind], latency_ms=1.0, size_bytes=1)

    return evaluate


def test_picks_the_fastest_within_budget_not_the_first():
    ev = _scripted({"baseline": {"auc": 0.800, "throughput": 100}, "int8": {"auc": 0.7999, "throughput": 150},
                    "int4": {"auc": 0.790, "throughput": 400}, "bf16": {"auc": 0.7995, "throughput": 300}})
    s = select(_model(), CANDIDATES, ev, AccuracyBudget(max_relative_auc_drop=0.001))
    assert s.chosen.name == "DenseQuantConfig(bf16)"  # int4 is faster but outside the budget
    assert [t.within_budget for t in s.trials] == [True, False, True]
    again = Selection.from_dict(json.loads(json.dumps(s.to_dict())))
    assert again == s and again.config() == DenseQuantConfig(mode="bf16")


def test_keep_uncompressed_lets_a_faster_model_win():
    ev = _scripted({"baseline": {"auc": 0.800, "throughput": 500}, "int8": {"auc": 0.7999, "throughput": 150},
                    "int4": {"auc": 0.790, "throughput": 400}, "bf16": {"auc": 0.7995, "throughput": 300}})
    budget = AccuracyBudget(max_relative_auc_drop=0.001)
    assert select(_model(), CANDIDATES, ev, budget).chosen.name == "DenseQuantConfig(bf16)"  # always compresses
    s = select(_model(), CANDIDATES, ev, budget, keep_uncompressed=True)
    assert s.chosen.name == "baseline" and s.config() is None
    assert Selection.from_dict(json.loads(json.dumps(s.to_dict()))).config() is None
    faster = _scripted({"baseline": {"auc": 0.800, "throughput": 100}, "int8": {"auc": 0.7999, "throughput": 150},
                        "int4": {"auc": 0.790, "throughput": 400}, "bf16": {"auc": 0.7995, "throughput": 300}})
    assert select(_model(), CANDIDATES, faster, budget, keep_uncompressed=True).chosen.name == "DenseQuantConfig(bf16)"


def test_model_is_left_untouched_and_failure_lists_trials():
    model = _model()
    ev = _scripted({"baseline": {"auc": 0.8, "throughput": 1}, "int8": {"auc": 0.7, "throughput": 2},
                    "int4": {"auc": 0.6, "throughput": 3}, "bf16": {"auc": 0.5, "throughput": 4}})
    with pytest.raises(BudgetNotMetError, match="int8.*12.500%") as info:
        select(model, CANDIDATES, ev, AccuracyBudget.parse("0.5%"))
    assert len(info.value.trials) == 3
    assert not hasattr(model, "compression_recipe")


def test_budget_parsing():
    assert AccuracyBudget.parse("0.1%").max_relative_auc_drop == pytest.approx(0.001)
    with pytest.raises(ConfigError, match="not a number"):
        AccuracyBudget.parse("tiny")
    with pytest.raises(ConfigError, match="max_relative_auc_drop"):
        AccuracyBudget(max_relative_auc_drop=2)


def test_auto_compress_times_on_a_runtime_and_falls_back_per_candidate(monkeypatch):
    import crossrec.compress.auto as auto
    from crossrec.compress import AccuracyBudget, DenseQuantConfig, EmbeddingQuantConfig, auto_compress
    from crossrec.data.synthetic import SyntheticConfig, generate
    from crossrec.errors import BackendError
    from crossrec.models import ModelSpec, build

    data = generate(SyntheticConfig(rows=600, num_sparse=3, max_rows=20))
    model = build(ModelSpec.for_schema(data.schema, embedding_dim=8), seed=0)
    seen = []
    real_load = auto.load

    def load(m, runtime, **options):  # the runtime refuses the bf16 candidate, as a failed trace would
        seen.append((runtime, options))
        if getattr(m, "compute_dtype", None) is not None and str(m.compute_dtype) == "torch.bfloat16":
            raise BackendError("trace differs from eager")
        return real_load(m, runtime, **options)

    monkeypatch.setattr(auto, "load", load)
    cands = {"int8 tables": EmbeddingQuantConfig(precision="int8"), "bf16 dense": DenseQuantConfig(mode="bf16")}
    sel, _ = auto_compress(model, data, AccuracyBudget(max_relative_auc_drop=0.5), candidates=cands, repeats=2,
                           batch_size=64, runtime="script", runtime_options={"hugepages": True})
    assert {r for r, _ in seen} == {"script"} and all(o == {"hugepages": True} for _, o in seen)
    assert len(seen) == 3  # the baseline and both candidates
    assert list(sel.notes["runtime_fallbacks"]) == ["bf16 dense"] and sel.notes["runtime"] == "script"
    assert {t.name for t in sel.trials} == set(cands)  # the refused one was still measured (eager)
