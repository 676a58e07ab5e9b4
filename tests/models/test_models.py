"""Model behaviour: every interaction family builds, runs, learns and round-trips its spec."""

import pytest
import torch

from crossrec.data import Batch
from crossrec.errors import ConfigError
from crossrec.models import INTERACTIONS, FusedEmbeddingBag, ModelSpec, TableSpec, build


def _tables(dims=(None, None, None)):
    return tuple(TableSpec(name=f"t{i}", num_embeddings=20 + i, dim=d) for i, d in enumerate(dims))


def _spec(interaction, num_dense=3, dims=(None, None, None)):
    bottom = ((8, 4) if interaction in ("dot", "fm") else (8,)) if num_dense else ()
    return ModelSpec(num_dense=num_dense, tables=_tables(dims), embedding_dim=4, bottom_mlp=bottom, top_mlp=(8,),
                     interaction=interaction)


def _jagged_batch(b=5, f=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, 3, (b * f,), generator=g)  # 0..2 ids per bag: empty and multi-hot bags
    ids = torch.randint(0, 20, (int(lengths.sum()),), generator=g)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    return Batch(dense=torch.randn(b, 3, generator=g), ids=ids, offsets=offsets, num_sparse=f,
                 labels=torch.randint(0, 2, (b,), generator=g).float())


@pytest.mark.parametrize("interaction", INTERACTIONS)
@pytest.mark.parametrize("dims", [(None, None, None), (4, 8, 2)])
def test_every_family_runs_on_jagged_input_and_gets_gradients(interaction, dims):
    model = build(_spec(interaction, dims=dims), seed=0)
    batch = _jagged_batch()
    out = model(batch.dense, batch.ids, batch.offsets)
    assert out.shape == (5,)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("interaction", INTERACTIONS)
def test_models_without_dense_features(interaction):
    model = build(_spec(interaction, num_dense=0))
    batch = _jagged_batch()
    assert model(batch.dense[:, :0], batch.ids, batch.offsets).shape == (5,)


def test_fused_lookup_equals_per_table_lookup():
    emb = FusedEmbeddingBag([5, 7, 3], [4, 4, 4])
    batch = _jagged_batch(b=4, f=3)
    batch.ids = batch.ids % 3  # valid for every table
    fused = emb(batch.ids, batch.offsets, 4)  # (B, F, D)
    weight = emb.bags[0].weight
    starts = [0, 5, 12]
    for b in range(4):
        for f in range(3):
            i = b * 3 + f
            rows = batch.ids[batch.offsets[i] : batch.offsets[i + 1]] + starts[f]
            expected = weight[rows].sum(0) if rows.numel() else torch.zeros(4)
            torch.testing.assert_close(fused[b, f], expected)


def test_mixed_dims_keep_feature_order():
    emb = FusedEmbeddingBag([5, 5, 5], [2, 4, 2])
    ids = torch.tensor([1, 2, 3])
    offsets = torch.tensor([0, 1, 2, 3])
    groups = emb.forward_groups(ids, offsets, 1)
    assert [tuple(g.shape) for g in groups] == [(1, 2, 2), (1, 1, 4)]
    torch.testing.assert_close(groups[1][0, 0], emb.bags[1].weight[2])  # feature 1 is the only dim-4 table
    torch.testing.assert_close(groups[0][0, 1], emb.bags[0].weight[5 + 3])  # feature 2 is the 2nd dim-2 table


def test_model_learns_a_simple_rule():
    torch.manual_seed(0)
    model = build(_spec("dot"), seed=0)
    ids = torch.randint(0, 20, (512, 3))
    labels = (ids[:, 0] < 10).float()  # clicks depend on table 0 only
    batch = Batch.from_one_hot(torch.randn(512, 3), ids, labels)
    opt = torch.optim.Adam([p for n, p in model.named_parameters() if "embedding" not in n], lr=0.01)
    sparse = torch.optim.SparseAdam(list(model.embedding.parameters()), lr=0.05)
    for _ in range(150):
        opt.zero_grad()
        sparse.zero_grad()
        logits = model(batch.dense, batch.ids, batch.offsets)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
        loss.backward()
        opt.step()
        sparse.step()
    assert loss.item() < 0.1


def test_spec_round_trip_and_validation():
    spec = _spec("cross", dims=(4, 8, None))
    assert ModelSpec.from_json(spec.to_json()) == spec
    with pytest.raises(ConfigError, match="interaction"):
        ModelSpec.from_dict({**spec.to_dict(), "interaction": "attention-typo"})
    with pytest.raises(ConfigError, match="unknown key 'embeding_dim'.*embedding_dim"):
        ModelSpec.from_dict({**spec.to_dict(), "embeding_dim": 3})
    with pytest.raises(ConfigError, match=r"must be \(\) when num_dense == 0"):
        ModelSpec(num_dense=0, tables=_tables(), bottom_mlp=(4,))
    with pytest.raises(ConfigError, match="names must be unique"):
        ModelSpec(num_dense=0, tables=(TableSpec(name="a", num_embeddings=2),) * 2, bottom_mlp=(), interaction="lr")
    with pytest.raises(ConfigError, match="num_embeddings"):
        TableSpec(name="a", num_embeddings=0)
