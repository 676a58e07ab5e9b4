"""int8-static as a dense precision of CompressionChoice (issue #4): round trip, apply_ with and without
calibration, the same model as the compress handler, and latency features that match the built layers."""

from __future__ import annotations

import pytest
import torch

from crossrec.compress import CompressContext, DenseQuantConfig, EmbeddingQuantConfig, compress_
from crossrec.data.synthetic import SyntheticConfig, generate
from crossrec.errors import ConfigError
from crossrec.hardware import get_device
from crossrec.hardware.features import DENSE_PRECISIONS, FEATURE_NAMES, TERMS, CompressionChoice, features
from crossrec.models import ModelSpec, build
from crossrec.models.quantized import Int8DynamicLinear
from crossrec.models.static_int8 import Int8StaticMLP

STATIC = CompressionChoice.parse("int8/int8-static")


@pytest.fixture(scope="module")
def data():
    """600 rows, 3 dense and 3 sparse features (tables of <= 20 rows)."""
    return generate(SyntheticConfig(rows=600, num_dense=3, num_sparse=3, max_rows=20, seed=2))


def _spec(data, **kw) -> ModelSpec:
    return ModelSpec.for_schema(data.schema, **{"embedding_dim": 8, "bottom_mlp": (16, 8), "top_mlp": (16,), **kw})


def test_int8_static_is_a_dense_precision_that_round_trips():
    assert DENSE_PRECISIONS == ("fp32", "bf16", "int8", "int8-static")
    assert CompressionChoice(embedding_precision="int8", dense_precision="int8-static") == STATIC
    assert STATIC.label == "int8/int8-static" and CompressionChoice.from_json(STATIC.to_json()) == STATIC
    assert STATIC.needs_calibration and not CompressionChoice.parse("int8/int8").needs_calibration
    assert STATIC.to_configs() == [EmbeddingQuantConfig(precision="int8"), DenseQuantConfig(mode="int8-static")]
    assert {"linear_int8_static", "flops_int8_static", "act_int8_static", "weight_bytes_int8_static"} <= set(TERMS)
    with pytest.raises(ConfigError, match="dense_precision"):
        CompressionChoice(dense_precision="int8_static")


def test_apply_without_calibration_says_how_to_pass_it(data):
    with pytest.raises(ConfigError, match=r"int8-static .*calibration=train_data"):
        STATIC.apply_(build(_spec(data), seed=0))
    model = build(_spec(data), seed=0)
    CompressionChoice.parse("int8/int8").apply_(model)  # dynamic int8 needs no data
    assert isinstance(model.top[0], Int8DynamicLinear)


def test_apply_calibrated_on_data_builds_the_compress_handlers_model(data):
    spec = _spec(data)
    direct = STATIC.apply_(build(spec, seed=0).eval(), calibration=data)
    via = build(spec, seed=0).eval()
    ctx = CompressContext(train_data=data)
    for cfg in STATIC.to_configs():
        compress_(via, cfg, ctx)
    assert [type(m).__name__ for m in direct.modules()] == [type(m).__name__ for m in via.modules()]
    assert isinstance(direct.top, Int8StaticMLP) and direct.compute_dtype == via.compute_dtype
    batch = data.slice(0, 256).to_batch()
    with torch.no_grad():  # the same rows calibrate both: the same scales, the same outputs
        assert torch.equal(direct(batch.dense, batch.ids, batch.offsets), via(batch.dense, batch.ids, batch.offsets))


def test_apply_takes_batches_and_stays_close_to_the_float_model(data):
    spec = _spec(data)
    ref = build(spec, seed=0).eval()
    batches = [data.slice(0, 300).to_batch(), data.slice(300, 600).to_batch()]
    q = CompressionChoice(dense_precision="int8-static").apply_(build(spec, seed=0).eval(), calibration=batches)
    assert isinstance(q.bottom, Int8StaticMLP) and isinstance(q.top, Int8StaticMLP)
    b = batches[0]
    with torch.no_grad():
        p_ref, p_q = torch.sigmoid(ref(b.dense, b.ids, b.offsets)), torch.sigmoid(q(b.dense, b.ids, b.offsets))
    assert float((p_ref - p_q).abs().max()) < 0.05


def _counts(model) -> dict[str, int]:
    """Linear layers of a compressed model by how they run: static int8, fp32 (static tails) and dynamic int8."""
    static = [m for m in model.modules() if isinstance(m, Int8StaticMLP)]
    return {"int8_static": sum(m.n_int8 for m in static), "fp32": sum(m.fp32_tail for m in static)
            + sum(isinstance(m, torch.nn.Linear) for m in model.modules()),
            "int8": sum(isinstance(m, Int8DynamicLinear) for m in model.modules())}


@pytest.mark.parametrize("kw", [
    {"interaction": "dot"},
    {"interaction": "dot", "table_dims": {"C1": 4, "C3": 16}},  # projections: outside the MLPs, dynamic int8
    {"interaction": "cross", "cross_layers": 2},  # full-rank cross layers: dynamic int8
    {"interaction": "cross", "cross_layers": 1, "cross_rank": 4},  # low rank: a Linear chain, static
    {"interaction": "fm", "bottom_mlp": (8,)},  # first-order dense term: dynamic int8
    {"interaction": "concat", "top_mlp": ()},  # a lone logit layer stays fp32
    {"interaction": "concat", "top_mlp": (32, 16)},
], ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items() if k != "table_dims") + ("-dims" * ("table_dims" in kw)))
def test_int8_static_features_count_the_layers_the_handler_builds(data, kw):
    spec = _spec(data, **kw)
    f = features(spec, CompressionChoice(dense_precision="int8-static"), 64)
    model = CompressionChoice(dense_precision="int8-static").apply_(build(spec, seed=0), calibration=data)
    got = _counts(model)
    assert (f["linear_int8_static"], f["linear_fp32"], f["linear_int8"]) == (got["int8_static"], got["fp32"],
                                                                            got["int8"])
    assert f["linear_bf16"] == 0 and list(f) == list(FEATURE_NAMES)
    fp32 = features(spec, CompressionChoice(), 64)  # the same matmuls, split over precisions
    assert f["flops_int8_static"] + f["flops_fp32"] + f["flops_int8"] == fp32["flops_fp32"]


def test_int8_static_interaction_is_bf16_only_on_a_cpu_that_computes_bf16(data):
    spec, c = _spec(data), CompressionChoice(dense_precision="int8-static")
    bf16_cpu = features(spec, c, 64, device=get_device("epyc-zen5-2vcpu"))
    assert bf16_cpu["dot_flops_bf16"] > 0 and bf16_cpu["dot_flops_fp32"] == 0
    unknown = features(spec, c, 64)
    assert unknown["dot_flops_fp32"] == bf16_cpu["dot_flops_bf16"] and unknown["dot_flops_bf16"] == 0
    assert bf16_cpu["roofline_ms"] > 0  # the roofline models it (as int8)


def test_int8_static_needs_an_mlp(data):
    lr = ModelSpec.for_schema(data.schema, embedding_dim=8, bottom_mlp=(), top_mlp=(), interaction="lr")
    with pytest.raises(ConfigError, match="no MLP for int8-static"):
        CompressionChoice(dense_precision="int8-static").precisions_for(lr)
    assert CompressionChoice(dense_precision="int8").precisions_for(lr)
