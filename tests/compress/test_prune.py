"""Pruning: shapes shrink, artifacts round-trip (restore needs no data), accuracy stays sane, bad input is refused."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from crossrec.artifact import load_artifact, save_artifact
from crossrec.compress import (
    CompressContext,
    DenseQuantConfig,
    EmbeddingQuantConfig,
    PipelineConfig,
    compress_,
    recipe_from_dicts,
    recipe_to_dicts,
    restore_,
)
from crossrec.compress.prune import (
    EmbeddingRowPruneConfig,
    MagnitudePruneConfig,
    RemappedEmbeddingBag,
    SemiStructuredConfig,
    SparseLinear,
    StructuredPruneConfig,
    kept_weights,
    kept_width,
    row_counts,
)
from crossrec.data.synthetic import SyntheticConfig, generate
from crossrec.errors import ConfigError
from crossrec.models import ModelSpec, build
from crossrec.train import TrainConfig, evaluate, predict, train

FINETUNE = TrainConfig(batch_size=512, lr=1e-3, embedding_lr=1e-2)


@pytest.fixture(scope="module")
def trained():
    data = generate(SyntheticConfig(rows=20000, num_sparse=6, max_rows=40, seed=5))
    tr, va, te = data.split((0.8, 0.1, 0.1))
    model = build(ModelSpec.for_schema(data.schema, interaction="dot", embedding_dim=8, bottom_mlp=(16, 8),
                                       top_mlp=(32, 16)), seed=0)
    train(model, tr, va, TrainConfig(epochs=2, batch_size=512, lr=3e-3, embedding_lr=3e-2))
    return model, data.schema, tr, va, te, evaluate(model, te).auc


def _linears(model):
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def _weights_bytes(tmp_path, name, model, schema):
    return (save_artifact(tmp_path / name, model, schema) / "weights.safetensors").stat().st_size


def _round_trip(tmp_path, variant, schema, te):
    back = load_artifact(save_artifact(tmp_path / "variant", variant, schema))
    np.testing.assert_array_equal(predict(back.model, te), predict(variant, te))
    return back


# ------------------------------------------------------------------------------------------------ structured


def test_structured_pruning_gives_smaller_linear_layers(trained, tmp_path):
    model, schema, _, _, te, _ = trained
    variant = compress_(copy.deepcopy(model), StructuredPruneConfig(ratio=0.5, finetune_epochs=0))
    widths = [(m.in_features, m.out_features) for m in _linears(variant)]
    # bottom 13->16->8 keeps its last (interaction-facing) width; top 32 and 16 halve; the logit stays
    assert widths[:2] == [(13, 8), (8, 8)]
    assert widths[2:] == [(_linears(model)[2].in_features, 16), (16, 8), (8, 1)]
    assert sum(p.numel() for p in variant.parameters()) < sum(p.numel() for p in model.parameters())
    assert _weights_bytes(tmp_path, "v", variant, schema) < _weights_bytes(tmp_path, "base", model, schema)
    _round_trip(tmp_path, variant, schema, te)


@pytest.mark.parametrize("config", [StructuredPruneConfig(ratio=0.5, importance="taylor", layers="top"),
                                    StructuredPruneConfig(ratio=0.3, layers="bottom", finetune=FINETUNE)],
                         ids=["taylor-top", "l1-bottom-finetuned"])
def test_structured_variants_round_trip(config, trained, tmp_path):
    model, schema, tr, va, te, _ = trained
    variant = compress_(copy.deepcopy(model), config, CompressContext(train_data=tr, val_data=va))
    back = _round_trip(tmp_path, variant, schema, te)
    assert recipe_from_dicts(back.manifest["compression"]) == [config]


def test_structured_half_pruned_and_finetuned_stays_near_the_original_auc(trained):
    model, _, tr, va, te, base_auc = trained
    logs = []
    variant = compress_(copy.deepcopy(model), StructuredPruneConfig(ratio=0.5, finetune=FINETUNE),
                        CompressContext(train_data=tr, val_data=va, log=logs.append))
    assert evaluate(variant, te).auc > base_auc - 0.01  # sanity bound on a tiny, briefly trained model
    assert any("fine-tuned" in line for line in logs)


def test_l1_keeps_the_neurons_that_matter():
    model = build(ModelSpec.for_schema(SyntheticConfig(num_sparse=2, max_rows=10).schema(), embedding_dim=4,
                                       bottom_mlp=(4, 4), top_mlp=(4,)), seed=0)
    with torch.no_grad():
        model.bottom[0].weight.copy_(torch.tensor([1.0, 5.0, 0.1, 3.0])[:, None].expand(4, 13))
        model.bottom[0].bias.zero_()
        model.bottom[2].weight.fill_(1.0)
    expected = model.bottom[0].weight[[1, 3]].clone()
    compress_(model, StructuredPruneConfig(ratio=0.5, layers="bottom"))
    assert torch.equal(model.bottom[0].weight, expected)  # rows 1 and 3 (largest), in their original order


def test_finetuning_without_training_data_is_skipped_and_logged(trained):
    logs = []
    compress_(copy.deepcopy(trained[0]), StructuredPruneConfig(ratio=0.5), CompressContext(log=logs.append))
    assert any("skipped 1 fine-tuning epoch" in line for line in logs)


def test_taylor_importance_needs_training_data(trained):
    with pytest.raises(ConfigError, match="train_data"):
        compress_(copy.deepcopy(trained[0]), StructuredPruneConfig(ratio=0.5, importance="taylor"))


def test_restore_rebuilds_every_shape_without_data(trained):
    model, _, tr, _, _, _ = trained
    recipe = [PipelineConfig(steps=(EmbeddingRowPruneConfig(keep_ratio=0.5), StructuredPruneConfig(ratio=0.5),
                                    MagnitudePruneConfig(sparsity=0.7, scope="all"), EmbeddingQuantConfig()))]
    variant = compress_(copy.deepcopy(model), recipe[0], CompressContext(train_data=tr))
    rebuilt = restore_(build(model.spec), recipe_from_dicts(recipe_to_dicts(recipe)))
    want = {k: (v.shape, v.dtype) for k, v in variant.state_dict().items()}
    assert {k: (v.shape, v.dtype) for k, v in rebuilt.state_dict().items()} == want


def test_width_and_count_rules_are_deterministic():
    assert [kept_width(w, 0.5) for w in (1, 7, 64)] == [1, 4, 32]
    assert kept_weights(10, 0.99) == 1 and kept_weights(1000, 0.75) == 250


# ------------------------------------------------------------------------------------ magnitude and 2:4


def test_magnitude_pruning_keeps_exactly_the_largest_weights(trained, tmp_path):
    model, schema, _, _, te, _ = trained
    variant = compress_(copy.deepcopy(model), MagnitudePruneConfig(sparsity=0.75))
    sparse = [m for m in variant.modules() if isinstance(m, SparseLinear)]
    assert len(sparse) == len(_linears(model)) and not _linears(variant)
    for dense, s in zip(_linears(model), sparse):
        w = s.dense_weight()
        assert s.values.numel() == int((w != 0).sum()) == kept_weights(dense.weight.numel(), 0.75)
        kept = dense.weight.detach().abs()[w != 0]
        assert kept.min() >= dense.weight.detach().abs()[w == 0].max()
    assert _weights_bytes(tmp_path, "v", variant, schema) < 0.75 * _weights_bytes(tmp_path, "base", model, schema) \
        + 4 * 6 * 40 * 8  # the MLP part shrinks; the tables (6 x <=40 x 8 fp32) are untouched
    _round_trip(tmp_path, variant, schema, te)


def test_magnitude_bf16_over_all_layers_round_trips(trained, tmp_path):
    model, schema, _, _, te, base_auc = trained
    variant = compress_(copy.deepcopy(model), MagnitudePruneConfig(sparsity=0.3, scope="all", precision="bf16"))
    assert {m.values.dtype for m in variant.modules() if isinstance(m, SparseLinear)} == {torch.bfloat16}
    assert evaluate(variant, te).auc > base_auc - 0.01
    _round_trip(tmp_path, variant, schema, te)


def test_masked_finetuning_keeps_pruned_weights_at_zero(trained):
    model, _, tr, va, _, _ = trained
    config = MagnitudePruneConfig(sparsity=0.5, finetune_epochs=1, finetune=FINETUNE)
    variant = compress_(copy.deepcopy(model), config, CompressContext(train_data=tr, val_data=va))
    changed = []
    for dense, s in zip(_linears(model), [m for m in variant.modules() if isinstance(m, SparseLinear)]):
        w0 = dense.weight.detach()
        mask = torch.zeros(w0.numel(), dtype=torch.bool)
        mask[w0.abs().flatten().topk(kept_weights(w0.numel(), 0.5)).indices] = True
        mask = mask.view_as(w0)  # chosen on the weights before fine-tuning
        assert torch.equal(s.dense_weight() != 0, mask)  # pruned weights stayed at zero while training
        changed.append(not torch.equal(s.values, w0[mask]))
    assert any(changed)  # the kept weights were fine-tuned


def test_semi_structured_keeps_two_of_every_four(trained, tmp_path):
    model, schema, _, _, te, base_auc = trained
    variant = compress_(copy.deepcopy(model), SemiStructuredConfig())
    for s in (m for m in variant.modules() if isinstance(m, SparseLinear)):
        w = s.dense_weight()
        full = w[:, : w.shape[1] // 4 * 4].reshape(w.shape[0], -1, 4)
        assert int((full != 0).sum(-1).max()) <= 2
    assert evaluate(variant, te).auc > base_auc - 0.03  # one-shot 50% pruning of a tiny MLP
    _round_trip(tmp_path, variant, schema, te)


def test_sparse_linear_cache_follows_its_buffers():
    lin = nn.Linear(6, 3)
    a = SparseLinear.from_dense(lin.weight, lin.bias, torch.rand(3, 6) > 0.5)
    x = torch.randn(2, 6)
    a(x)
    assert copy.deepcopy(a)._dense is None
    b = SparseLinear.from_dense(lin.weight * 2, lin.bias, torch.ones(3, 6, dtype=torch.bool))
    c = SparseLinear(6, 3, 18)
    c(x)  # caches the all-zero weight
    c.load_state_dict(b.state_dict())
    assert torch.allclose(c(x), b(x))


# ------------------------------------------------------------------------------------------ embedding rows


def test_embedding_row_pruning_shrinks_tables_and_remaps_ids(trained, tmp_path):
    model, schema, tr, _, te, base_auc = trained
    variant = compress_(copy.deepcopy(model), EmbeddingRowPruneConfig(keep_ratio=0.5), CompressContext(train_data=tr))
    emb = variant.embedding
    assert isinstance(emb, RemappedEmbeddingBag)
    assert emb.num_embeddings == tuple(max(1, round(n * 0.5)) + 1 for n in schema.cardinalities)
    assert _weights_bytes(tmp_path, "v", variant, schema) < _weights_bytes(tmp_path, "base", model, schema)
    # the most looked-up rows stay: samples using only those predict exactly as before
    counts = row_counts(tr)
    ids = np.asarray(te.ids).reshape(len(te), -1)
    kept = np.stack([np.isin(ids[:, f], np.argsort(-c, kind="stable")[: emb.kept_rows[f]]) for f, c in
                     enumerate(counts)], axis=1).all(axis=1)
    both = te.take(np.flatnonzero(kept))
    assert len(both) > 100
    np.testing.assert_allclose(predict(variant, both), predict(model, both), rtol=1e-6, atol=1e-7)
    assert evaluate(variant, te).auc > base_auc - 0.05  # half the rows gone, no fine-tuning
    _round_trip(tmp_path, variant, schema, te)


def test_pruned_ids_read_a_zero_row():
    spec = ModelSpec.for_schema(SyntheticConfig(num_sparse=2, max_rows=10).schema(), embedding_dim=4)
    data = generate(SyntheticConfig(rows=50, num_sparse=2, max_rows=10, zipf_exponent=0.0))
    model = compress_(build(spec, seed=0), EmbeddingRowPruneConfig(kept_rows={"C1": 3}),
                      CompressContext(train_data=data))
    emb = model.embedding
    pruned = int(torch.nonzero(emb.remap[:10] == 3)[0])
    out = emb(torch.tensor([pruned, 0]), torch.tensor([0, 1, 2]), 1)  # (1, 2, 4)
    assert torch.equal(out[0, 0], torch.zeros(4)) and emb.num_embeddings == (4, 10)


def test_min_count_becomes_explicit_row_counts(trained):
    _, _, tr, _, _, _ = trained
    cfg = EmbeddingRowPruneConfig.for_min_count(tr, min_count=200)
    counts = row_counts(tr)
    assert cfg.kept_rows == {f"C{i + 1}": max(1, int((c >= 200).sum())) for i, c in enumerate(counts)}
    assert EmbeddingRowPruneConfig.from_dict(cfg.to_dict()) == cfg


def test_row_pruning_then_table_quantization_round_trips(trained, tmp_path):
    model, schema, tr, _, te, _ = trained
    config = PipelineConfig(steps=(EmbeddingRowPruneConfig(keep_ratio=0.75), EmbeddingQuantConfig(precision="int8")))
    variant = compress_(copy.deepcopy(model), config, CompressContext(train_data=tr))
    assert isinstance(variant.embedding, RemappedEmbeddingBag)
    assert type(variant.embedding.bags[0]).__name__ == "QuantizedEmbeddingBag"
    _round_trip(tmp_path, variant, schema, te)


def test_norm_ranking_needs_no_data_frequency_does(trained):
    variant = compress_(copy.deepcopy(trained[0]), EmbeddingRowPruneConfig(kept_rows={"C1": 5}, rank_by="norm"))
    norms = trained[0].embedding.table_weight(0).norm(dim=1)
    kept = torch.nonzero(variant.embedding.remap[:40] < 5).flatten()
    assert torch.equal(kept, torch.sort(torch.argsort(norms, descending=True)[:5]).values)
    with pytest.raises(ConfigError, match="rank_by = 'frequency' needs data"):
        compress_(copy.deepcopy(trained[0]), EmbeddingRowPruneConfig(keep_ratio=0.5))


# ------------------------------------------------------------------------------------ order, combinations


@pytest.mark.parametrize("first, then", [
    (DenseQuantConfig(mode="int8"), StructuredPruneConfig(ratio=0.5)),
    (DenseQuantConfig(mode="bf16"), MagnitudePruneConfig(sparsity=0.5)),
    (MagnitudePruneConfig(sparsity=0.5), SemiStructuredConfig()),
    (EmbeddingQuantConfig(precision="int8"), EmbeddingRowPruneConfig(keep_ratio=0.5)),
], ids=["int8-structured", "bf16-magnitude", "sparse-2:4", "int8tables-rows"])
def test_pruning_a_quantized_model_says_to_prune_first(first, then, trained):
    model, _, tr, _, _, _ = trained
    variant = compress_(copy.deepcopy(model), first)
    with pytest.raises(ConfigError, match="prune .*before quantizing"):
        compress_(variant, then, CompressContext(train_data=tr))


def test_prune_then_quantize_pipeline_round_trips(trained, tmp_path):
    model, schema, tr, va, te, base_auc = trained
    config = PipelineConfig(steps=(StructuredPruneConfig(ratio=0.5, finetune=FINETUNE), DenseQuantConfig(mode="int8"),
                                   EmbeddingQuantConfig(precision="int8")))
    variant = compress_(copy.deepcopy(model), config, CompressContext(train_data=tr, val_data=va))
    assert evaluate(variant, te).auc > base_auc - 0.01
    assert _weights_bytes(tmp_path, "v", variant, schema) < _weights_bytes(tmp_path, "base", model, schema) / 2
    _round_trip(tmp_path, variant, schema, te)


@pytest.mark.parametrize("interaction", ["cross", "fm", "concat", "lr"])
def test_every_model_family_prunes_and_restores(interaction, tmp_path):
    data = generate(SyntheticConfig(rows=300, num_dense=3, num_sparse=3, max_rows=12, seed=1))
    spec = ModelSpec.for_schema(data.schema, interaction=interaction, embedding_dim=4, bottom_mlp=(8, 4),
                                top_mlp=(8, 4) if interaction != "lr" else ())
    steps = [EmbeddingRowPruneConfig(keep_ratio=0.5), MagnitudePruneConfig(sparsity=0.5, scope="all")]
    if interaction != "lr":
        steps.insert(1, StructuredPruneConfig(ratio=0.5, finetune_epochs=0))
    variant = compress_(build(spec, seed=0), PipelineConfig(steps=tuple(steps)), CompressContext(train_data=data))
    _round_trip(tmp_path, variant, data.schema, data)


# ------------------------------------------------------------------------------------------------ configs


@pytest.mark.parametrize("cls, kwargs, field", [
    (StructuredPruneConfig, {"ratio": 1.0}, "ratio"),
    (StructuredPruneConfig, {"ratio": 0.5, "importance": "l2"}, "importance"),
    (StructuredPruneConfig, {"ratio": 0.5, "layers": "cross"}, "layers"),
    (StructuredPruneConfig, {"ratio": 0.5, "finetune_epochs": -1}, "finetune_epochs"),
    (MagnitudePruneConfig, {"sparsity": 0.0}, "sparsity"),
    (MagnitudePruneConfig, {"sparsity": 0.5, "scope": "top"}, "scope"),
    (MagnitudePruneConfig, {"sparsity": 0.5, "precision": "int8"}, "precision"),
    (SemiStructuredConfig, {"scope": "everything"}, "scope"),
    (EmbeddingRowPruneConfig, {}, "keep_ratio"),
    (EmbeddingRowPruneConfig, {"keep_ratio": 1.5}, "keep_ratio"),
    (EmbeddingRowPruneConfig, {"kept_rows": {"C1": 0}}, "kept_rows"),
    (EmbeddingRowPruneConfig, {"keep_ratio": 0.5, "rank_by": "random"}, "rank_by"),
])
def test_bad_configs_name_field_value_and_what_is_allowed(cls, kwargs, field):
    with pytest.raises(ConfigError) as err:
        cls(**kwargs)
    message = str(err.value)
    assert f"{cls.__name__}.{field} = " in message and "is invalid:" in message
    if field in kwargs:
        assert repr(kwargs[field]) in message


def test_model_facing_errors_are_config_errors(trained):
    model = trained[0]
    with pytest.raises(ConfigError, match="kept_rows"):
        compress_(copy.deepcopy(model), EmbeddingRowPruneConfig(kept_rows={"nope": 3}),
                  CompressContext(train_data=trained[2]))
    lr = build(ModelSpec.for_schema(SyntheticConfig(num_sparse=2, max_rows=10).schema(), interaction="lr",
                                    top_mlp=()))
    with pytest.raises(ConfigError, match="no hidden MLP layer"):
        compress_(lr, StructuredPruneConfig(ratio=0.5))


def test_configs_round_trip_through_json():
    configs = [StructuredPruneConfig(ratio=0.25, importance="taylor", finetune=FINETUNE),
               MagnitudePruneConfig(sparsity=0.9, scope="all", precision="bf16"), SemiStructuredConfig(),
               EmbeddingRowPruneConfig(keep_ratio=0.5, kept_rows={"C1": 4}, rank_by="norm")]
    assert recipe_from_dicts(recipe_to_dicts(configs)) == configs
