"""Knowledge distillation: a smaller student close to the teacher, rebuilt from the config alone."""

import copy

import numpy as np
import pytest
import torch

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
from crossrec.compress.distill import DistillConfig, StudentSpec, distillation_loss, is_fresh, project_tables
from crossrec.data.synthetic import SyntheticConfig, generate
from crossrec.errors import ConfigError
from crossrec.models import ModelSpec, build, parameter_bytes
from crossrec.models.quantized import QuantizedEmbeddingBag
from crossrec.train import TrainConfig, evaluate, predict, train

STUDENT = StudentSpec(embedding_dim=4, top_mlp=(8,))


@pytest.fixture(scope="module")
def setup():
    data = generate(SyntheticConfig(rows=20000, num_sparse=6, max_rows=40, seed=5))
    tr, va, te = data.split((0.8, 0.1, 0.1))
    teacher = build(ModelSpec.for_schema(data.schema, interaction="dot", embedding_dim=8, bottom_mlp=(16, 8),
                                         top_mlp=(32,)), seed=0)
    result = train(teacher, tr, va, TrainConfig(epochs=8, batch_size=512, lr=3e-3, embedding_lr=3e-2))
    assert result.steps >= 200  # "a few hundred steps"
    return teacher, data.schema, CompressContext(train_data=tr, val_data=va), te


def _distill(setup, **kw):
    teacher, _, ctx, _ = setup
    config = DistillConfig(**{"student": STUDENT, "epochs": 4, "batch_size": 512, **kw})
    return compress_(copy.deepcopy(teacher), config, ctx)


@pytest.fixture(scope="module")
def distilled(setup):
    return _distill(setup, alpha=0.9)


def test_student_is_smaller_and_close_to_the_teacher(setup, distilled):
    teacher, _, _, te = setup
    assert distilled.spec == STUDENT.resolve(teacher.spec)
    assert distilled.spec.bottom_mlp == (16, 4)  # last width follows embedding_dim for 'dot'
    assert parameter_bytes(distilled) < 0.5 * parameter_bytes(teacher)
    teacher_auc, student_auc = evaluate(teacher, te).auc, evaluate(distilled, te).auc
    assert student_auc > teacher_auc - 0.01  # sanity bound on a tiny model, not the product target
    # The same student, same loop and steps, labels only (alpha=0): measured 0.808 vs 0.812 distilled
    # (teacher 0.813) with seed 0; across seeds distillation was ahead by -0.001 to +0.004, so only a
    # loose bound is asserted.
    scratch = _distill(setup, alpha=0.0, init_from_teacher=False)
    assert student_auc > evaluate(scratch, te).auc - 0.003


def test_artifact_round_trip_gives_identical_predictions(setup, distilled, tmp_path):
    _, schema, _, te = setup
    back = load_artifact(save_artifact(tmp_path / "s", distilled, schema))
    assert back.spec == distilled.spec  # the manifest records the student
    assert back.manifest["compression"][0]["type"] == "DistillConfig"
    np.testing.assert_array_equal(predict(back.model, te), predict(distilled, te))


def test_restore_rebuilds_the_student_from_the_teacher_spec_without_data(setup, distilled):
    teacher, _, _, te = setup
    fresh = restore_(build(teacher.spec), distilled.compression_recipe)
    assert fresh.spec == distilled.spec
    fresh.load_state_dict(distilled.state_dict())  # strict: every key and shape matches
    np.testing.assert_array_equal(predict(fresh, te), predict(distilled, te))


def test_restore_leaves_a_freshly_built_student_alone(distilled):
    student = build(distilled.spec)
    embedding = student.embedding
    assert is_fresh(student, distilled.spec)
    restore_(student, distilled.compression_recipe)
    assert student.embedding is embedding  # idempotent: nothing rebuilt


def test_student_spec_overrides_are_idempotent(setup):
    teacher = setup[0].spec
    for s in (STUDENT, StudentSpec(interaction="cross", cross_layers=1, cross_rank=2), StudentSpec(cross_rank=0),
              StudentSpec(embedding_dim=2, bottom_mlp=(4, 2), dropout=0.1)):
        once = s.resolve(teacher)
        assert s.resolve(once) == once
    assert StudentSpec(interaction="cross").resolve(teacher).name == "dcnv2"


def test_pipeline_with_quantization_round_trips(setup, tmp_path):
    teacher, schema, ctx, te = setup
    pipe = PipelineConfig(steps=(DistillConfig(student=STUDENT, epochs=1, batch_size=512),
                                 EmbeddingQuantConfig(precision="int8"), DenseQuantConfig(mode="bf16")))
    variant = compress_(copy.deepcopy(teacher), pipe, ctx)
    assert isinstance(variant.embedding.bags[0], QuantizedEmbeddingBag) and variant.spec.embedding_dim == 4
    back = load_artifact(save_artifact(tmp_path / "p", variant, schema))
    np.testing.assert_array_equal(predict(back.model, te), predict(variant, te))
    assert recipe_from_dicts(recipe_to_dicts([pipe])) == [pipe]


def test_distilling_a_quantized_teacher_round_trips(setup, tmp_path):
    teacher, schema, ctx, te = setup
    pipe = PipelineConfig(steps=(EmbeddingQuantConfig(precision="int8"),
                                 DistillConfig(student=StudentSpec(top_mlp=(8,)), epochs=1, batch_size=512)))
    variant = compress_(copy.deepcopy(teacher), pipe, ctx)
    assert type(variant.embedding.bags[0]) is torch.nn.EmbeddingBag  # the student is float again
    back = load_artifact(save_artifact(tmp_path / "q", variant, schema))  # restore undoes the int8 step
    np.testing.assert_array_equal(predict(back.model, te), predict(variant, te))


def test_student_tables_start_from_the_teachers(setup):
    teacher = setup[0]
    same_dim = _distill(setup, student=StudentSpec(top_mlp=(8,)), max_steps=1, embedding_lr=1e-7)
    for f in range(len(teacher.spec.tables)):
        torch.testing.assert_close(same_dim.embedding.table_weight(f), teacher.embedding.table_weight(f),
                                   atol=1e-6, rtol=0)


def test_smaller_student_tables_are_the_teachers_projected(setup):
    """Teacher rows that lie in a 4-dim subspace: the projection to dim 4 keeps every dot product."""
    teacher, schema, ctx, _ = setup
    teacher = copy.deepcopy(teacher)
    basis = torch.linalg.qr(torch.randn(8, 4, generator=torch.Generator().manual_seed(0)))[0]  # (8, 4) orthonormal
    with torch.no_grad():
        for bag in teacher.embedding.bags:
            bag.weight.copy_(torch.randn(bag.weight.shape[0], 4) @ basis.T)
    student = build(ModelSpec.for_schema(schema, interaction="dot", embedding_dim=4, bottom_mlp=(16, 4),
                                         top_mlp=(8,)), seed=0)
    assert project_tables(teacher, student, ctx.train_data) == len(schema.sparse)
    t0, t1 = teacher.embedding.table_weight(0), teacher.embedding.table_weight(1)
    s0, s1 = student.embedding.table_weight(0), student.embedding.table_weight(1)
    torch.testing.assert_close(s0 @ s1.T, t0 @ t1.T, atol=1e-4, rtol=1e-4)
    # a student wider than the teacher, or one with the same dim, is not projected
    wide = build(ModelSpec.for_schema(schema, interaction="dot", embedding_dim=8, bottom_mlp=(16, 8)), seed=0)
    assert project_tables(teacher, wide, ctx.train_data) == 0


def test_feature_loss_trains_and_needs_a_top_mlp(setup):
    teacher, _, ctx, te = setup
    m = _distill(setup, feature_weight=0.1, alpha=0.9)  # measured 0.811 (teacher 0.813)
    assert evaluate(m, te).auc > evaluate(teacher, te).auc - 0.01
    fm_spec = ModelSpec.for_schema(ctx.train_data.schema, interaction="fm", embedding_dim=4,
                                   top_mlp=())
    with pytest.raises(ConfigError, match="feature_weight"):
        compress_(build(fm_spec), DistillConfig(student=StudentSpec(embedding_dim=2), feature_weight=1.0), ctx)


def test_missing_or_mismatched_data_raises_config_error(setup):
    teacher = copy.deepcopy(setup[0])
    with pytest.raises(ConfigError, match="train_data"):
        compress_(teacher, DistillConfig(student=STUDENT))
    other = generate(SyntheticConfig(rows=100, num_sparse=3, max_rows=10))
    with pytest.raises(ConfigError, match="train_data"):
        compress_(teacher, DistillConfig(student=STUDENT), CompressContext(train_data=other))
    assert teacher.spec == setup[0].spec  # untouched


@pytest.mark.parametrize("kwargs, field", [
    ({"temperature": 0.0}, "temperature"), ({"alpha": 1.5}, "alpha"), ({"feature_weight": -1.0}, "feature_weight"),
    ({"epochs": 0}, "epochs"), ({"batch_size": 0}, "batch_size"), ({"lr": 0.0}, "lr"), ({"patience": 0}, "patience"),
    ({"max_steps": 0}, "max_steps"), ({"student": {"embedding_dim": 4}}, "student"),
])
def test_bad_configs_name_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=f"DistillConfig.{field}"):
        DistillConfig(**{"student": STUDENT, **kwargs})


@pytest.mark.parametrize("kwargs, field", [
    ({"embedding_dim": 0}, "embedding_dim"), ({"top_mlp": (8, 0)}, "top_mlp"), ({"interaction": "mlp"}, "interaction"),
    ({"cross_rank": -1}, "cross_rank"), ({"dropout": 1.0}, "dropout"), ({"cross_layers": -1}, "cross_layers"),
])
def test_bad_student_specs_name_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=f"StudentSpec.{field}"):
        StudentSpec(**kwargs)


def test_a_student_invalid_for_the_teacher_says_so(setup):
    with pytest.raises(ConfigError, match="student .*bottom_mlp"):
        StudentSpec(bottom_mlp=(16, 3)).resolve(setup[0].spec)


def test_config_round_trips_through_json():
    cfg = DistillConfig(student=StudentSpec(embedding_dim=4, top_mlp=(16,), cross_rank=0), temperature=2.0, alpha=0.7)
    assert DistillConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ConfigError, match="unknown key"):
        DistillConfig.from_dict({"student": {"embeding_dim": 4}})


def test_distillation_loss_matches_its_definition():
    s, t, y = torch.tensor([0.3, -1.0, 2.0]), torch.tensor([1.0, -2.0, 0.5]), torch.tensor([1.0, 0.0, 1.0])
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    got = distillation_loss(s, t, y, temperature=2.0, alpha=0.25)
    torch.testing.assert_close(got, 0.75 * bce(s, y) + 0.25 * 4 * bce(s / 2, torch.sigmoid(t / 2)))
    s = t.clone().requires_grad_(True)  # the soft term is minimal where the student equals the teacher
    distillation_loss(s, t, y, temperature=3.0, alpha=1.0).backward()
    torch.testing.assert_close(s.grad, torch.zeros(3), atol=1e-6, rtol=0)
