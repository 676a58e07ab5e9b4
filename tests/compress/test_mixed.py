"""Per-table mixed precision from measured sensitivity."""

import copy

import pytest

from crossrec.compress import compress_
from crossrec.compress.mixed import TablePrecisionChoice, _greedy, choose_table_precisions
from crossrec.compress.select import relative_drop
from crossrec.errors import BudgetNotMetError, ConfigError
from crossrec.models import ModelSpec, TableSpec
from crossrec.train import evaluate


@pytest.fixture(scope="module")
def trained(tiny_dlrm):
    return tiny_dlrm


def test_choice_meets_budget_and_applies(trained):
    model, te = trained
    before = copy.deepcopy(model.state_dict())
    choice = choose_table_precisions(model, te, budget=0.002)
    assert all(v.equal(model.state_dict()[k]) for k, v in before.items())  # the input model is unchanged
    assert choice.relative_drop <= 0.002
    assert set(choice.sensitivity) == {t.name for t in model.spec.tables}
    assert sum(choice.bytes_per_table.values()) < choice.fp32_bytes / 3  # at least int8 everywhere
    variant = compress_(copy.deepcopy(model), choice.config)
    assert relative_drop(choice.base_auc, evaluate(variant, te).auc) == pytest.approx(choice.relative_drop, abs=1e-9)
    assert TablePrecisionChoice.from_json(choice.to_json()) == choice


def test_larger_budget_never_gives_a_bigger_model(trained):
    model, te = trained
    tight = choose_table_precisions(model, te, budget=0.001)
    loose = choose_table_precisions(model, te, budget=0.2)
    assert sum(loose.bytes_per_table.values()) <= sum(tight.bytes_per_table.values())
    assert "int2" in loose.per_table.values()  # 20% of AUC buys 2-bit tables on this tiny model


def test_greedy_lowers_the_cheapest_bytes_first():
    spec = ModelSpec(num_dense=0, tables=(TableSpec(name="big", num_embeddings=1000),
                                          TableSpec(name="small", num_embeddings=10)),
                     embedding_dim=8, bottom_mlp=(), top_mlp=(4,))
    sens = {"big": {"int8": 0.0, "int4": 0.01, "int2": 0.05}, "small": {"int8": 0.0, "int4": 0.01, "int2": 0.05}}
    steps = _greedy(spec, sens, ["int8", "int4", "int2"], budget=0.015)
    assert steps[-1] == {"big": "int4", "small": "int8"}  # equal drop: the big table saves more bytes


def test_bad_inputs_are_clear(trained):
    model, te = trained
    with pytest.raises(ConfigError, match="precisions"):
        choose_table_precisions(model, te, budget=0.01, precisions=("int3",))
    with pytest.raises(ConfigError, match="budget"):
        choose_table_precisions(model, te, budget=1.5)
    quantized = compress_(copy.deepcopy(model), choose_table_precisions(model, te, budget=0.01).config)
    with pytest.raises(ConfigError, match="fp32 model"):
        choose_table_precisions(quantized, te, budget=0.01)
    with pytest.raises(BudgetNotMetError, match="safest"):  # int8 everywhere loses ~0.01% on this model
        choose_table_precisions(model, te, budget=0.0)
