"""SearchSpace: every point builds a valid model for the schema; dropping, repair, mutation, data projection."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crossrec.config import dump, load
from crossrec.data.dataset import CTRData
from crossrec.data.schema import FeatureSchema, SparseFeature
from crossrec.errors import ConfigError, DataError
from crossrec.models import build
from crossrec.search import SearchConfig, SearchSpace, project_data, select_features, subset_schema
from crossrec.search.objectives import compression_configs

from .conftest import TINY_SPACE


def test_every_sampled_point_builds_a_model_that_runs(tiny_splits):
    space = SearchSpace.from_dict(TINY_SPACE)
    schema = tiny_splits.train.schema
    rows = tiny_splits.val.slice(0, 16)
    seen = set()
    for seed in range(60):
        arch = space.build(space.sample(np.random.default_rng(seed), schema), schema)
        seen.add(arch.spec.interaction)
        model = build(arch.spec, seed=0)
        for cfg in compression_configs(arch.compression):
            from crossrec.compress import compress_

            compress_(model, cfg)
        batch = select_features(rows, arch.features).to_batch()
        out = model(batch.dense, batch.ids, batch.offsets)
        assert out.shape == (16,) and torch.isfinite(out).all()
        assert arch.spec.matches(subset_schema(schema, arch.features))
    assert seen == {"dot", "cross", "fm", "concat"}


def test_dims_map_to_tables_and_zero_drops_the_feature(tiny_splits):
    schema = tiny_splits.train.schema
    space = SearchSpace.from_dict(TINY_SPACE)
    choices = {"dim:C1": 0, "dim:C2": 4, "dim:C3": 8, "dim:C4": 0, "interaction": "dot", "embedding_dim": 8,
               "bottom_depth": 1, "bottom_width": 16, "top_depth": 2, "top_width": 8, "table_precision": "int4",
               "dense_precision": "bf16"}
    arch = space.build(choices, schema)
    assert arch.features == ("C2", "C3")
    assert [t.name for t in arch.spec.tables] == ["C2", "C3"]
    assert arch.spec.dims() == (4, 8)
    assert arch.spec.bottom_mlp == (16, 8)  # one hidden layer, then the projection to embedding_dim for dot
    assert arch.spec.top_mlp == (8, 8)
    assert arch.compression.label == "int4/bf16"


def test_irrelevant_parameters_are_not_asked():
    schema = FeatureSchema(dense=(), sparse=(SparseFeature(name="a", num_embeddings=5),
                                             SparseFeature(name="b", num_embeddings=5)))
    space = SearchSpace(interactions=("concat",), top_depths=(0,))
    asked = space.walk(schema, lambda name, options: options[-1])
    assert set(asked) == {"dim:a", "dim:b", "interaction", "top_depth", "table_precision", "dense_precision"}


def test_too_few_fields_are_repaired_deterministically():
    schema = FeatureSchema(dense=(), sparse=(SparseFeature(name="a", num_embeddings=5),
                                             SparseFeature(name="b", num_embeddings=5),
                                             SparseFeature(name="c", num_embeddings=5)))
    space = SearchSpace(embedding_dims=(0, 8, 16), interactions=("dot",), interaction_dims=(8,), top_depths=(1,),
                        top_widths=(8,), table_precisions=("fp32",), dense_precisions=("fp32",))
    choices = {"dim:a": 0, "dim:b": 0, "dim:c": 16, "interaction": "dot", "embedding_dim": 8, "top_depth": 1,
               "top_width": 8, "table_precision": "fp32", "dense_precision": "fp32"}
    arch = space.build(choices, schema)
    assert arch.features == ("a", "c") and arch.spec.dims() == (8, 16)  # 'a' came back at the smallest width
    assert space.build(choices, schema) == arch


def test_mutation_changes_exactly_one_shared_choice(tiny_splits):
    schema = tiny_splits.train.schema
    space = SearchSpace.from_dict(TINY_SPACE)
    rng = np.random.default_rng(0)
    for _ in range(40):
        parent = space.sample(rng, schema)
        child = space.mutate(parent, rng, schema)
        shared = set(parent) & set(child)
        changed = [k for k in shared if parent[k] != child[k]]
        assert len(changed) <= 1
        if not changed:  # the mutated choice switched parameters on or off (e.g. depth 0 <-> 1)
            assert set(parent) != set(child)
        space.build(child, schema)


def test_per_table_precision(tiny_splits):
    schema = tiny_splits.train.schema
    space = SearchSpace.from_dict({**TINY_SPACE, "embedding_dims": [4], "per_table_precision": True})
    choices = space.sample(np.random.default_rng(3), schema)
    choices.update({"precision:C1": "int8", "precision:C2": "fp32", "precision:C3": "int4", "precision:C4": "int8"})
    arch = space.build(choices, schema)
    assert arch.compression.embedding_precision == {"C1": "int8", "C2": "fp32", "C3": "int4", "C4": "int8"}
    (cfg, *_) = compression_configs(arch.compression)
    assert cfg.precision_for(["C1", "C2", "C3", "C4"]) == arch.compression.embedding_precision


def test_a_shared_dim_puts_every_kept_feature_in_one_fused_bag(tiny_splits):
    schema = tiny_splits.train.schema
    space = SearchSpace.from_dict({**TINY_SPACE, "shared_dims": [False, True]})
    choices = {"dim:C1": 0, "dim:C2": 4, "dim:C3": 8, "dim:C4": 4, "interaction": "concat", "shared_dim": True,
               "embedding_dim": 8, "bottom_depth": 0, "top_depth": 1, "top_width": 8, "table_precision": "fp32",
               "dense_precision": "fp32"}
    arch = space.build(choices, schema)
    assert arch.features == ("C2", "C3", "C4") and arch.spec.dims() == (8, 8, 8)  # the dims only say which stay
    model = build(arch.spec, seed=0)
    assert sum(type(m).__name__ == "EmbeddingBag" for m in model.modules()) == 1  # one lookup for every table
    mixed = space.build({**choices, "shared_dim": False}, schema)
    assert mixed.spec.dims() == (4, 8, 4)  # concat without a shared dim asks no embedding_dim: widths as chosen
    pick = {"shared_dim": False, "interaction": "concat"}
    assert "embedding_dim" not in space.walk(schema, lambda n, o: pick.get(n, o[-1]))
    # offered only when asked for: an older space asks exactly what it asked before
    assert "shared_dim" not in SearchSpace.from_dict(TINY_SPACE).parameters(schema)
    assert space.parameters(schema)["shared_dim"] == (False, True)


@pytest.mark.parametrize("bad,match", [
    ({"shared_dims": [True], "interaction_dims": [6], "table_precisions": ["int2"]}, "shared dim 6"),
    ({"shared_dims": []}, "shared_dims"),
    ({"interactions": ["dot", "attention"]}, "no attention"),
    ({"embedding_dims": [0, 6], "table_precisions": ["int2"]}, "cannot be stored"),
    ({"embedding_dims": [0]}, "at least one width"),
    ({"dense_precisions": ["fp16"]}, "subset of"),
    ({"top_widths": []}, "non-empty"),
])
def test_invalid_spaces_say_what_is_allowed(bad, match):
    with pytest.raises(ConfigError, match=match):
        SearchSpace.from_dict(bad)


def test_choices_outside_the_space_are_rejected(tiny_splits):
    schema = tiny_splits.train.schema
    space = SearchSpace.from_dict(TINY_SPACE)
    choices = space.sample(np.random.default_rng(1), schema)
    with pytest.raises(ConfigError, match="not in the search space"):
        space.build({**choices, "dense_precision": "fp8"}, schema)
    with pytest.raises(ConfigError, match="no value for 'interaction'"):
        space.build({k: v for k, v in choices.items() if k != "interaction"}, schema)


def test_select_features_on_multi_hot_bags():
    schema = FeatureSchema(dense=("x",), sparse=(SparseFeature(name="a", num_embeddings=9),
                                                 SparseFeature(name="g", num_embeddings=9, multi_hot=True),
                                                 SparseFeature(name="c", num_embeddings=9)))
    lengths = np.array([[1, 2, 1], [1, 0, 1], [1, 3, 1]], np.int32)
    ids = np.array([0, 1, 2, 3,   4, 5,   6, 7, 8, 1, 2])  # sample-major bags
    data = CTRData(schema=schema, dense=np.zeros((3, 1), np.float32), labels=np.array([0, 1, 0], np.float32),
                   ids=ids, lengths=lengths)
    sel = select_features(data, ["g", "c"])
    assert [f.name for f in sel.schema.sparse] == ["g", "c"]
    assert sel.ids.tolist() == [1, 2, 3, 5, 7, 8, 1, 2]
    assert sel.lengths.tolist() == [[2, 1], [0, 1], [3, 1]]
    assert select_features(data, ["a", "g", "c"]) is data


def test_project_data_cuts_full_data_to_a_searched_schema(tiny_splits):
    full = tiny_splits.val
    cut = subset_schema(full.schema, ["C2", "C4"])
    projected = project_data(full, cut)
    assert projected.schema.cardinalities == cut.cardinalities
    assert project_data(full, full.schema) is full
    other = FeatureSchema(dense=full.schema.dense, sparse=(SparseFeature(name="zz", num_embeddings=3),))
    with pytest.raises(DataError, match="do not match"):
        project_data(full, other)


def test_search_config_round_trips_through_yaml(tmp_path):
    cfg = SearchConfig.from_dict({"space": TINY_SPACE, "devices": ["epyc-zen5-2vcpu", "tpu-v4"],
                                  "objectives": ["auc", "latency", "bytes", "energy"],
                                  "deployment_weights": {"tpu-v4": 2.0}, "latency": {"sources": {"tpu-v4": "modeled"}}})
    assert load(dump(cfg, tmp_path / "search.yaml"), SearchConfig) == cfg
    with pytest.raises(ConfigError, match="valid keys"):
        SearchConfig.from_dict({"n_trial": 3})
    with pytest.raises(ConfigError, match="deployment_weights"):
        SearchConfig.from_dict({"deployment_weights": {"h100-sxm": 1.0}})
    with pytest.raises(ConfigError, match="objectives"):
        SearchConfig.from_dict({"objectives": ["latency"]})


def test_int8_static_is_in_the_default_space_and_old_lists_stay_valid(tiny_splits):
    assert SearchSpace().dense_precisions == ("fp32", "bf16", "int8", "int8-static")
    old = SearchSpace.from_dict({**TINY_SPACE, "dense_precisions": ["fp32", "bf16", "int8"]})
    assert "int8-static" not in old.parameters(tiny_splits.train.schema)["dense_precision"]
    space = SearchSpace.from_dict({**TINY_SPACE, "dense_precisions": ["int8-static"]})
    arch = space.build(space.sample(np.random.default_rng(0), tiny_splits.train.schema), tiny_splits.train.schema)
    assert arch.compression.dense_precision == "int8-static"
    assert [c.mode for c in compression_configs(arch.compression) if hasattr(c, "mode")] == ["int8-static"]


def test_auc_tolerance_and_baseline_seeds_are_checked():
    assert SearchConfig().auc_tolerance is None and SearchConfig().baseline_seeds == 1
    cfg = SearchConfig.from_dict({"auc_tolerance": "auto", "baseline_seeds": 3})
    assert SearchConfig.from_json(cfg.to_json()) == cfg
    assert SearchConfig.from_dict({"auc_tolerance": 0.005}).auc_tolerance == 0.005
    for bad, match in [({"auc_tolerance": "auto"}, "baseline_seeds >= 2"),
                       ({"auc_tolerance": "auto", "baseline_seeds": 3, "baseline": None}, "only with a baseline"),
                       ({"auc_tolerance": -0.01}, "absolute AUC"), ({"auc_tolerance": "1 std"}, "'auto'"),
                       ({"baseline_seeds": 0}, "baseline_seeds")]:
        with pytest.raises(ConfigError, match=match):
            SearchConfig.from_dict(bad)
