"""Every registered compression method: applies, keeps shapes, stays accurate, round-trips as an artifact.

A new method must add its example configs to EXAMPLES (the first test fails until it does).
"""

import copy

import numpy as np
import pytest

from crossrec.artifact import load_artifact, save_artifact
from crossrec.compress import (
    CompressContext,
    DenseQuantConfig,
    DistillConfig,
    EmbeddingQuantConfig,
    EmbeddingRowPruneConfig,
    MagnitudePruneConfig,
    PipelineConfig,
    QATConfig,
    SemiStructuredConfig,
    StructuredPruneConfig,
    StudentSpec,
    compress_,
    registered,
)
from crossrec.data.synthetic import SyntheticConfig, generate
from crossrec.models import ModelSpec, build
from crossrec.train import TrainConfig, evaluate, predict, train

EXAMPLES = {
    EmbeddingQuantConfig: [EmbeddingQuantConfig(precision=p) for p in ("fp16", "bf16", "int8", "int4", "int2")]
    + [EmbeddingQuantConfig(precision="int4", per_table={"C1": "int8", "C2": "fp32"})],
    DenseQuantConfig: [DenseQuantConfig(mode="bf16"), DenseQuantConfig(mode="int8"),
                       DenseQuantConfig(mode="int8-static")],
    PipelineConfig: [PipelineConfig(steps=(EmbeddingQuantConfig(precision="int8"), DenseQuantConfig(mode="bf16"))),
                     PipelineConfig(steps=(StructuredPruneConfig(ratio=0.25, finetune_epochs=0),
                                           DenseQuantConfig(mode="int8")))],
    StructuredPruneConfig: [StructuredPruneConfig(ratio=0.2, finetune_epochs=0),
                            StructuredPruneConfig(ratio=0.5, layers="top", finetune_epochs=1)],
    MagnitudePruneConfig: [MagnitudePruneConfig(sparsity=0.3),
                           MagnitudePruneConfig(sparsity=0.3, scope="all", precision="bf16")],
    SemiStructuredConfig: [SemiStructuredConfig()],
    EmbeddingRowPruneConfig: [EmbeddingRowPruneConfig(keep_ratio=0.75, rank_by="norm")],
    DistillConfig: [DistillConfig(student=StudentSpec(embedding_dim=4, top_mlp=(16,)), epochs=6, batch_size=512,
                                  alpha=0.9),
                    DistillConfig(student=StudentSpec(top_mlp=(16,)), epochs=3, batch_size=512, alpha=0.9)],
    QATConfig: [QATConfig(epochs=1, batch_size=512, lr=3e-4)],
}
# Largest absolute test-AUC loss accepted on the tiny model (a sanity bound, not the product target).
TOLERANCE = {"int4": 0.02, "int2": 0.1}
METHOD_TOLERANCE = {SemiStructuredConfig: 0.03}  # one-shot 2:4 without fine-tuning
CASES = [c for cls in EXAMPLES for c in EXAMPLES[cls]]


def test_every_registered_method_has_examples():
    missing = [c.__name__ for c in registered() if c not in EXAMPLES]
    assert not missing, f"add example configs for {missing} to EXAMPLES"


@pytest.fixture(scope="module")
def trained():
    data = generate(SyntheticConfig(rows=20000, num_sparse=6, max_rows=40, seed=5))
    tr, va, te = data.split((0.8, 0.1, 0.1))
    model = build(ModelSpec.for_schema(data.schema, interaction="dot", embedding_dim=8, bottom_mlp=(16, 8),
                                       top_mlp=(32,)), seed=0)
    train(model, tr, va, TrainConfig(epochs=2, batch_size=512, lr=3e-3, embedding_lr=3e-2))
    return model, data.schema, te, evaluate(model, te).auc, CompressContext(train_data=tr, val_data=va)


@pytest.mark.parametrize("config", CASES, ids=lambda c: f"{type(c).__name__}-{c.to_json()[:60]}")
def test_method_conformance(config, trained, tmp_path):
    model, schema, te, base_auc, ctx = trained
    variant = compress_(copy.deepcopy(model), config, ctx)
    batch = next(te.batches(64))
    assert variant(batch.dense, batch.ids, batch.offsets).shape == (64,)
    precision = getattr(config, "precision", "")
    assert evaluate(variant, te).auc > base_auc - TOLERANCE.get(precision, METHOD_TOLERANCE.get(type(config), 0.005))
    path = save_artifact(tmp_path / "v", variant, schema)
    back = load_artifact(path)
    np.testing.assert_array_equal(predict(back.model, te), predict(variant, te))
    assert back.manifest["compression"][0]["type"] == type(config).__name__


def test_compressed_artifacts_are_smaller_on_disk(trained, tmp_path):
    model, schema = trained[:2]
    sizes = {}
    for name, cfg in {"fp32": None, "int8": EmbeddingQuantConfig(precision="int8"),
                      "int4": EmbeddingQuantConfig(precision="int4")}.items():
        m = copy.deepcopy(model) if cfg is None else compress_(copy.deepcopy(model), cfg)
        sizes[name] = (save_artifact(tmp_path / name, m, schema) / "weights.safetensors").stat().st_size
    assert sizes["int4"] < sizes["int8"] < sizes["fp32"]
