"""The training loop learns, stops early, restores the best weights and is reproducible."""

import numpy as np
import pytest

from crossrec.data.synthetic import SyntheticConfig, Teacher, generate
from crossrec.errors import DataError
from crossrec.models import ModelSpec, build
from crossrec.train import TrainConfig, auc, evaluate, predict, train

CONFIG = SyntheticConfig(rows=30000, num_sparse=8, max_rows=30, seed=3)


@pytest.fixture(scope="module")
def splits():
    data = generate(CONFIG)
    return data.split((0.8, 0.1, 0.1), seed=0)


def _model(schema, seed=0):
    return build(ModelSpec.for_schema(schema, embedding_dim=8, bottom_mlp=(16, 8), top_mlp=(32,)), seed=seed)


def test_training_beats_chance_and_approaches_the_teacher(splits):
    tr, va, te = splits
    model = _model(tr.schema)
    before = evaluate(model, te).auc
    result = train(model, tr, va, TrainConfig(epochs=5, batch_size=256, lr=3e-3, embedding_lr=3e-2))
    after = evaluate(model, te).auc
    ceiling = auc(te.labels, Teacher(CONFIG).logits(te))
    assert after > before + 0.1
    assert after > ceiling - 0.08
    assert result.best is not None and len(result.history) >= 1


def test_same_seed_same_model(splits):
    tr, va, _ = splits
    cfg = TrainConfig(epochs=1, batch_size=1024, max_steps=10)
    a, b = _model(tr.schema), _model(tr.schema)
    train(a, tr, va, cfg)
    train(b, tr, va, cfg)
    np.testing.assert_array_equal(predict(a, va), predict(b, va))


def test_early_stopping_restores_best_weights(splits):
    tr, va, _ = splits
    model = _model(tr.schema)
    # A huge learning rate makes validation AUC fall after the first evaluation.
    cfg = TrainConfig(epochs=6, batch_size=256, lr=0.05, embedding_lr=0.5, evals_per_epoch=4, patience=2)
    result = train(model, tr.slice(0, 8000), va, cfg)
    assert result.stopped_early
    best_auc = max(h["auc"] for h in result.history)
    assert evaluate(model, va).auc == pytest.approx(best_auc, abs=1e-9)


def test_progress_events_and_empty_data(splits):
    tr, va, _ = splits
    events = []
    train(_model(tr.schema), tr.slice(0, 2048), va, TrainConfig(epochs=1, batch_size=1024), progress=events.append)
    assert [e.kind for e in events] == ["start", "step", "step", "eval"]
    with pytest.raises(DataError, match="empty"):
        train(_model(tr.schema), tr.slice(0, 0), va)


def test_embedding_l2_shrinks_the_looked_up_rows(splits):
    tr, _, _ = splits
    norms = []
    for l2 in (0.0, 1.0):
        model = _model(tr.schema)
        train(model, tr.slice(0, 4096), None, TrainConfig(epochs=2, batch_size=256, embedding_l2=l2))
        norms.append(model.embedding.bags[0].weight.detach().norm().item())
        assert not any(m._forward_hooks for m in model.modules())  # hooks are removed afterwards
    assert norms[1] < 0.8 * norms[0]


def test_dropout_is_only_active_in_training(splits):
    tr, _, _ = splits
    spec = ModelSpec.for_schema(tr.schema, embedding_dim=8, bottom_mlp=(16, 8), top_mlp=(32,), dropout=0.5)
    model = build(spec, seed=0)
    b = next(tr.batches(64))
    model.train()
    assert not np.allclose(model(b.dense, b.ids, b.offsets).detach(), model(b.dense, b.ids, b.offsets).detach())
    np.testing.assert_array_equal(predict(model, tr.slice(0, 64)), predict(model, tr.slice(0, 64)))


def test_freeze_tables_trains_only_the_dense_layers(splits):
    import torch

    tr = splits[0]
    model = build(ModelSpec.for_schema(tr.schema, embedding_dim=4, top_mlp=(8,)), seed=0)
    tables = {k: v.clone() for k, v in model.embedding.state_dict().items()}
    dense = model.top[0].weight.detach().clone()
    train(model, tr, None, TrainConfig(epochs=1, batch_size=256, max_steps=5, freeze_tables=True))
    for k, v in model.embedding.state_dict().items():
        assert torch.equal(v, tables[k]), f"table {k} moved"
    assert not torch.equal(model.top[0].weight, dense)
    assert all(p.requires_grad for p in model.embedding.parameters()), "requires_grad is restored"


def test_eval_first_lets_the_starting_weights_win(splits):
    tr, va = splits[0], splits[1]
    model = build(ModelSpec.for_schema(tr.schema, embedding_dim=4, top_mlp=(8,)), seed=0)
    train(model, tr, va, TrainConfig(epochs=2, batch_size=256))
    before = evaluate(model, va).auc
    # a learning rate that wrecks the model: the evaluation before the first step keeps the old weights
    result = train(model, tr, va, TrainConfig(epochs=1, batch_size=256, lr=5.0, embedding_lr=5.0, eval_first=True))
    assert result.history[0]["step"] == 0
    assert evaluate(model, va).auc == pytest.approx(before)
