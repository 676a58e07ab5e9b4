"""Objectives: real compressed bytes, labelled latency sources, infeasible devices, energy, rank correlation."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest

from crossrec.compress import DenseQuantConfig, EmbeddingQuantConfig
from crossrec.errors import ConfigError
from crossrec.hardware import get_device, load_catalog
from crossrec.hardware.features import CompressionChoice
from crossrec.search import (
    Architecture,
    Evaluator,
    SearchSpace,
    compress_candidate,
    compression_configs,
    kendall,
    modeled_latency,
    predictor_latency,
    proxy_rank_correlation,
    spearman,
)
from crossrec.search.objectives import as_compression_choice, objective_names, train_candidate
from crossrec.train import TrainConfig

from .conftest import TINY_SPACE

TRAIN = TrainConfig(epochs=1, max_steps=3, batch_size=256)


def _arch(schema, **choices) -> Architecture:
    base = {"dim:C1": 8, "dim:C2": 8, "dim:C3": 0, "dim:C4": 4, "interaction": "dot", "embedding_dim": 8,
            "bottom_depth": 1, "bottom_width": 16, "top_depth": 1, "top_width": 16, "table_precision": "fp32",
            "dense_precision": "fp32"}
    space = {**TINY_SPACE, "dense_precisions": [*TINY_SPACE["dense_precisions"], "int8-static"]}
    return SearchSpace.from_dict(space).build({**base, **choices}, schema)


def _evaluator(splits, devices=("h100-sxm", "alveo-u280"), sources=None, **kw) -> Evaluator:
    catalog = load_catalog()
    return Evaluator(splits.train, splits.val, train_config=TRAIN, devices={d: catalog[d] for d in devices},
                     sources=sources or {}, latency_fn=modeled_latency(catalog), batch_size=64, **kw)


def test_compression_configs_realize_the_choice():
    assert compression_configs({"embedding_precision": "fp32", "dense_precision": "fp32"}) == []
    assert compression_configs({"embedding_precision": "int8", "dense_precision": "bf16"}) == [
        EmbeddingQuantConfig(precision="int8"), DenseQuantConfig(mode="bf16")]
    per = compression_configs({"embedding_precision": {"C1": "int4", "C2": "fp32"}, "dense_precision": "fp32"})
    assert per == [EmbeddingQuantConfig(precision="fp32", per_table={"C1": "int4", "C2": "fp32"})]


def test_quantized_candidates_have_fewer_real_bytes_and_same_architecture(tiny_splits):
    schema = tiny_splits.train.schema
    ev = _evaluator(tiny_splits)
    fp32, _ = ev(_arch(schema))
    int8, model = ev(_arch(schema, table_precision="int8", dense_precision="int8"))
    assert int8.model_bytes < fp32.model_bytes
    assert 0.0 <= int8.auc <= 1.0 and 0.0 <= int8.auc_uncompressed <= 1.0
    assert int8.auc_uncompressed == pytest.approx(fp32.auc_uncompressed)  # same float model, same seed
    assert int8.train_steps == 3
    assert type(model).__name__ == "CTRModel" and model.embedding.bags[0].weight.dtype.is_floating_point


def test_devices_without_kernels_for_a_precision_are_infeasible(tiny_splits):
    schema = tiny_splits.train.schema
    ev = _evaluator(tiny_splits)
    fp32, _ = ev(_arch(schema))
    assert fp32.latency_ms["alveo-u280"] is None and fp32.latency_source["alveo-u280"] == "unsupported"
    assert "int8" in fp32.notes["alveo-u280"]  # the FPGA only lists int8 compute
    assert fp32.values(("auc", "latency"), ("h100-sxm", "alveo-u280"))[2] == 1e12
    int8, _ = ev(_arch(schema, dense_precision="int8"))
    assert int8.latency_source == {"h100-sxm": "modeled", "alveo-u280": "modeled"}
    fpga = get_device("alveo-u280")
    assert int8.energy_per_1k_j["alveo-u280"] == pytest.approx(fpga.power_w * int8.latency_ms["alveo-u280"] / 64)


def test_measured_latency_uses_the_injected_clock(tiny_splits):
    ticks = itertools.count()
    clock = lambda: next(ticks) * 0.002  # every call takes exactly 2 ms
    ev = _evaluator(tiny_splits, devices=("epyc-zen5-2vcpu",), sources={"epyc-zen5-2vcpu": "measured"},
                    profile_clock=clock, repeats=3, warmup=1)
    result, _ = ev(_arch(tiny_splits.train.schema, table_precision="int4", dense_precision="bf16"))
    assert result.latency_ms == {"epyc-zen5-2vcpu": pytest.approx(2.0)}
    assert result.latency_source == {"epyc-zen5-2vcpu": "measured"}


def test_evaluator_needs_a_latency_fn_for_unmeasured_devices(tiny_splits):
    with pytest.raises(ConfigError, match="no latency_fn"):
        Evaluator(tiny_splits.train, tiny_splits.val, train_config=TRAIN, devices={"h100-sxm": get_device("h100-sxm")},
                  sources={}, latency_fn=None)


def test_predictor_adapter_passes_the_choice_and_keeps_the_predictors_label(tiny_splits):
    seen = []

    class FakePredictor:
        def predict(self, spec, compression, device, batch_size):
            seen.append((spec.name, compression, device, batch_size))
            return SimpleNamespace(latency_ms=1.25, samples_per_s=batch_size / 1.25e-3, source="predicted",
                                   device=device)

    arch = _arch(tiny_splits.train.schema, table_precision="int8")
    ms, source = predictor_latency(FakePredictor())(arch.spec, arch.compression, "h100-sxm", 64)
    assert (ms, source) == (1.25, "predicted")
    name, choice, device, batch = seen[0]
    assert (name, device, batch) == ("dlrm-nas", "h100-sxm", 64)
    assert isinstance(choice, CompressionChoice) and choice.label == "int8/fp32"
    assert as_compression_choice(choice.to_dict()) == choice


def test_objective_names_follow_devices():
    assert objective_names(("auc", "latency", "bytes", "energy"), ("a", "b")) == [
        ("auc", "maximize"), ("latency:a", "minimize"), ("latency:b", "minimize"), ("bytes", "minimize"),
        ("energy:a", "minimize"), ("energy:b", "minimize")]


def test_rank_correlations_against_known_values():
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert kendall([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert kendall([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(4 / 6)
    assert spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(np.sqrt(3) / 2)  # tied ranks averaged
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_proxy_rank_correlation_runs_on_a_sample(tiny_splits):
    schema = tiny_splits.train.schema
    archs = [_arch(schema), _arch(schema, interaction="concat"), _arch(schema, top_depth=0)]
    rc = proxy_rank_correlation(archs, tiny_splits.train, tiny_splits.val, proxy=TrainConfig(epochs=1, max_steps=2,
                                batch_size=256), full=TrainConfig(epochs=2, batch_size=256), eval_data=tiny_splits.test)
    assert rc.n == 3 and len(rc.proxy_auc) == len(rc.full_auc) == 3
    assert rc.proxy_auc != rc.full_auc  # the two budgets really train differently
    assert -1.0 <= rc.kendall <= 1.0 and -1.0 <= rc.spearman <= 1.0


def test_int8_static_candidates_calibrate_on_their_training_rows(tiny_splits):
    from crossrec.compress import compress_
    from crossrec.models import build
    from crossrec.models.static_int8 import Int8StaticMLP

    schema = tiny_splits.train.schema
    arch = _arch(schema, table_precision="int8", dense_precision="int8-static")
    _, compressed, _ = train_candidate(arch, tiny_splits.train, TRAIN)
    assert isinstance(compressed.top, Int8StaticMLP) and isinstance(compressed.bottom, Int8StaticMLP)
    assert [type(c).__name__ for c in compressed.compression_recipe] == ["EmbeddingQuantConfig", "DenseQuantConfig"]
    with pytest.raises(ConfigError, match="CompressContext\\(train_data"):  # what compress_candidate supplies
        compress_(build(arch.spec), compression_configs(arch.compression)[1])
    ev = _evaluator(tiny_splits)
    result, _ = ev(arch)
    assert result.latency_source == {"h100-sxm": "modeled", "alveo-u280": "modeled"}  # int8 compute suffices
    assert abs(result.auc - result.auc_uncompressed) < 0.05
    fp32, _ = ev(_arch(schema))
    assert result.model_bytes < fp32.model_bytes


def test_proxy_auc_repeats_the_search_seed_and_varies_with_others(tiny_splits):
    arch, ev = _arch(tiny_splits.train.schema), _evaluator(tiny_splits, seed=4)
    result, _ = ev(arch)
    assert ev.proxy_auc(arch, 4) == result.auc
    assert ev.proxy_auc(arch, 5) != result.auc  # another initialisation and batch order


def test_compress_candidate_records_the_recipe(tiny_splits):
    from crossrec.models import build

    arch = _arch(tiny_splits.train.schema, dense_precision="bf16")
    model = compress_candidate(build(arch.spec), arch.compression, tiny_splits.train)
    assert [c.mode for c in model.compression_recipe] == ["bf16"]
