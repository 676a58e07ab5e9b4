"""The TorchScript runtime: equal to eager on compressed variants and jagged batches, refuses bad traces."""

import copy

import pytest
import torch

from crossrec.compress import CompressContext, DenseQuantConfig, EmbeddingQuantConfig, PipelineConfig, compress_
from crossrec.errors import BackendError
from crossrec.models import CTRModel, ModelSpec, build
from crossrec.runtime import ScriptRuntime, load
from crossrec.runtime.script import probe_batch

VARIANTS = {
    "int8 tables + int8-static dense": (EmbeddingQuantConfig(precision="int8"), DenseQuantConfig(mode="int8-static")),
    "int4 tables + int8 dense": (EmbeddingQuantConfig(precision="int4"), DenseQuantConfig(mode="int8")),
    "fp16 tables + bf16 dense": (EmbeddingQuantConfig(precision="fp16"), DenseQuantConfig(mode="bf16")),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_compressed_variants_trace_and_match_eager(tiny_dlrm, name):
    model, data = tiny_dlrm
    variant = compress_(copy.deepcopy(model), PipelineConfig(steps=VARIANTS[name]), CompressContext(train_data=data))
    rt = load(variant, "script")
    tol = 5e-2 if "bf16" in name else 1e-4  # bf16 fused ops round differently from eager's
    for batch in (data.slice(0, 1).to_batch(), data.slice(0, 300).to_batch(),
                  probe_batch(model.spec.num_dense, tuple(t.num_embeddings for t in model.spec.tables), 9, seed=4)):
        torch.testing.assert_close(rt(batch.dense, batch.ids, batch.offsets),
                                   variant(batch.dense, batch.ids, batch.offsets), atol=tol, rtol=0)
    assert rt.info["max_abs_diff"] <= tol and "deprecated" in rt.info["note"]


@pytest.mark.parametrize("interaction", ["cross", "fm", "concat", "lr"])
def test_every_interaction_traces(tiny_dlrm, interaction):
    data = tiny_dlrm[1]
    spec = ModelSpec.for_schema(data.schema, interaction=interaction, embedding_dim=4, bottom_mlp=(8, 4),
                                top_mlp=(8,))
    model = build(spec, seed=0)
    batch = data.slice(0, 64).to_batch()
    torch.testing.assert_close(ScriptRuntime(model, torch.device("cpu")).predict(batch), model.predict_proba(batch),
                               atol=1e-5, rtol=1e-5)


class BatchDependent(CTRModel):
    """A forward whose Python branch depends on the batch: a trace at batch 1 records the wrong path."""

    def forward(self, dense, ids, offsets):
        out = super().forward(dense, ids, offsets)
        return out * 0 if dense.shape[0] == 1 else out


def test_a_trace_that_differs_from_eager_is_refused(tiny_dlrm):
    model = BatchDependent(tiny_dlrm[0].spec)
    model.load_state_dict(tiny_dlrm[0].state_dict())
    with pytest.raises(BackendError, match="differs from eager on a jagged probe batch"):
        load(model, "script")


def test_the_callers_model_is_untouched_and_gpu_is_refused(tiny_dlrm):
    model = copy.deepcopy(tiny_dlrm[0]).train()
    load(model, "script")
    assert isinstance(model, CTRModel)  # still the eager module; eval() as every runtime does
    with pytest.raises(BackendError, match="CPU"):
        ScriptRuntime(model, torch.device("meta"))


# ------------------------------------------------------------------------------- the one-hot graph


def _one_hot_and_jagged(model, data):
    nums = tuple(t.num_embeddings for t in model.spec.tables)
    return data.slice(0, 37).to_batch(), probe_batch(model.spec.num_dense, nums, 9, seed=4)


@pytest.mark.parametrize("steps", [
    (EmbeddingQuantConfig(precision="int8"), DenseQuantConfig(mode="int8")),
    # mixed precision: two lookup groups, so the one-hot graph picks each group's columns
    (EmbeddingQuantConfig(precision="int8", per_table={"C1": "int4", "C3": "fp16"}),),
])
def test_one_hot_batches_take_the_specialised_graph_and_agree(tiny_dlrm, steps, monkeypatch):
    model, data = tiny_dlrm
    variant = compress_(copy.deepcopy(model), PipelineConfig(steps=steps), CompressContext(train_data=data))
    rt = load(variant, "script")
    assert rt.info["one_hot_graph"] and "one-hot probe" in rt.info["checked_on"]
    one_hot, jagged = _one_hot_and_jagged(model, data)
    assert rt._is_one_hot(one_hot.batch_size, one_hot.ids, one_hot.offsets)
    assert not rt._is_one_hot(jagged.batch_size, jagged.ids, jagged.offsets)
    calls = []
    for attr in ("_fn", "_one_hot_fn"):
        fn = getattr(rt, attr)
        monkeypatch.setattr(rt, attr, lambda *a, fn=fn, attr=attr: calls.append(attr) or fn(*a))
    for batch in (one_hot, jagged):
        torch.testing.assert_close(rt(batch.dense, batch.ids, batch.offsets),
                                   variant(batch.dense, batch.ids, batch.offsets), atol=1e-4, rtol=0)
    assert calls == ["_one_hot_fn", "_fn"]


def test_one_hot_graph_can_be_turned_off_and_fuses_int8_relu(tiny_dlrm):
    model, data = tiny_dlrm
    variant = compress_(copy.deepcopy(model), DenseQuantConfig(mode="int8"))
    rt = load(variant, "script", one_hot=False)
    assert rt._one_hot_fn is None and not rt.info["one_hot_graph"]
    graph = str(rt._fn.graph)
    # every hidden int8 layer is followed by a ReLU in an mlp(): all fused, none left over
    assert graph.count("quantized::linear_relu_dynamic") == 3 and "aten::relu" not in graph
    batch = data.slice(0, 20).to_batch()
    torch.testing.assert_close(rt(batch.dense, batch.ids, batch.offsets),
                               variant(batch.dense, batch.ids, batch.offsets), atol=1e-5, rtol=0)


def test_pruned_rows_model_traces_one_hot(tiny_dlrm):
    from crossrec.compress import EmbeddingRowPruneConfig

    model, data = tiny_dlrm
    variant = compress_(copy.deepcopy(model), EmbeddingRowPruneConfig(keep_ratio=0.5), CompressContext(train_data=data))
    rt = load(variant, "script")
    for batch in _one_hot_and_jagged(model, data):
        torch.testing.assert_close(rt(batch.dense, batch.ids, batch.offsets),
                                   variant(batch.dense, batch.ids, batch.offsets), atol=1e-5, rtol=0)
