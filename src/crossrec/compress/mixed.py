"""Per-table mixed precision chosen from measured sensitivity (issue #3).

Tables differ in how much a lower precision hurts: a huge, rarely-looked-up table loses nothing
at 2 bits while a small, hot one may lose AUC at 4. :func:`choose_table_precisions` measures it:

1. **Sensitivity**: for each table and each candidate precision, the relative AUC drop on
   validation data when *only that table* is stored in that precision (simulated by round-tripping
   its rows through the real row-wise quantizer in place, then restoring them).
2. **Greedy knapsack**: start every table at the safest candidate; repeatedly lower the table
   whose next step saves the most bytes per unit of measured drop, while the summed drops stay
   inside the budget.
3. **Check**: the chosen mix is quantized for real and evaluated; while it misses the budget the
   last step is undone (drops need not add up exactly).

Choose, then apply (DESIGN.md §3): the result is a :class:`TablePrecisionChoice` holding every
measurement and an :class:`EmbeddingQuantConfig` to pass to ``compress_``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from crossrec.compress.quantize import EmbeddingQuantConfig
from crossrec.compress.select import relative_drop
from crossrec.config import Config, check
from crossrec.data.dataset import CTRData
from crossrec.errors import BudgetNotMetError, ConfigError
from crossrec.hardware.estimate import row_bytes
from crossrec.models import quantized as q
from crossrec.train import evaluate

# Safest first: the greedy pass walks each table down this order.
ORDER = ("fp32", "fp16", "int8", "int4", "int2")


@dataclass(frozen=True, kw_only=True)
class TablePrecisionChoice(Config):
    """What :func:`choose_table_precisions` measured and chose (JSON round-trip)."""

    base_auc: float
    budget: float
    per_table: dict[str, str]
    sensitivity: dict[str, dict[str, float]]  # table -> precision -> relative AUC drop alone
    bytes_per_table: dict[str, int]  # chosen storage bytes of each table
    fp32_bytes: int
    auc: float  # AUC of the chosen mix, measured
    relative_drop: float

    @property
    def config(self) -> EmbeddingQuantConfig:
        """The config that applies this choice: ``compress_(model, choice.config)``."""
        fallback = max(set(self.per_table.values()), key=list(self.per_table.values()).count)
        return EmbeddingQuantConfig(precision=fallback,
                                    per_table={t: p for t, p in self.per_table.items() if p != fallback})


def _fake_quantize_table(model: nn.Module, feature: int, precision: str) -> Callable[[], None]:
    """Round-trip one table's rows through ``precision`` in place; returns the function undoing it."""
    emb = model.embedding
    g = next(g for g, feats in enumerate(emb.group_features) if feature in feats)
    bag = emb.bags[g]
    if not isinstance(bag, nn.EmbeddingBag):
        raise ConfigError("per-table sensitivity is measured on the fp32 model; quantize its tables afterwards")
    start = int(getattr(emb, f"base_{g}")[emb.group_features[g].index(feature)])
    rows = slice(start, start + emb.num_embeddings[feature])
    saved = bag.weight.data[rows].clone()
    with torch.no_grad():
        bag.weight.data[rows] = q.QuantizedEmbeddingBag.from_float(saved, precision).dequantize()

    def undo() -> None:
        bag.weight.data[rows] = saved

    return undo


def _bytes(num_rows: int, dim: int, precision: str) -> int:
    return num_rows * row_bytes(dim, precision)


def table_sensitivity(model: nn.Module, val_data: CTRData, precisions: Sequence[str], *,
                      progress: Callable[[str], None] | None = None) -> tuple[float, dict[str, dict[str, float]]]:
    """``(base AUC, {table: {precision: relative AUC drop when only that table is in it}})``."""
    base = evaluate(model, val_data).auc
    out: dict[str, dict[str, float]] = {}
    names = [t.name for t in model.spec.tables]
    for f, name in enumerate(names):
        out[name] = {}
        for p in precisions:
            if p == "fp32":
                out[name][p] = 0.0
                continue
            undo = _fake_quantize_table(model, f, p)
            try:
                out[name][p] = relative_drop(base, evaluate(model, val_data).auc)
            finally:
                undo()
        if progress:
            progress(f"sensitivity {f + 1}/{len(names)} {name}: "
                     + ", ".join(f"{p} {d:+.4%}" for p, d in out[name].items()))
    return base, out


def _greedy(spec, sens: dict[str, dict[str, float]], order: list[str], budget: float) -> list[dict[str, str]]:
    """Every step of the greedy walk (each a full per-table map), safest first."""
    dims = dict(zip([t.name for t in spec.tables], spec.dims()))
    rows = {t.name: t.num_embeddings for t in spec.tables}
    level = dict.fromkeys(sens, 0)
    steps = [{t: order[0] for t in sens}]
    spent = sum(max(sens[t][order[0]], 0.0) for t in sens)
    while True:
        best, best_score = None, -1.0
        for t, i in level.items():
            if i + 1 >= len(order):
                continue
            a, b = order[i], order[i + 1]
            extra = max(sens[t][b], 0.0) - max(sens[t][a], 0.0)
            if spent + extra > budget:
                continue
            saved = _bytes(rows[t], dims[t], a) - _bytes(rows[t], dims[t], b)
            score = saved / max(extra, 1e-9)
            if score > best_score:
                best, best_score = t, score
        if best is None:
            return steps
        spent += max(sens[best][order[level[best] + 1]], 0.0) - max(sens[best][order[level[best]]], 0.0)
        level[best] += 1
        steps.append({t: order[i] for t, i in level.items()})


def choose_table_precisions(model: nn.Module, val_data: CTRData, budget: float, *,
                            precisions: Sequence[str] = ("int8", "int4", "int2"),
                            progress: Callable[[str], None] | None = None) -> TablePrecisionChoice:
    """Pick a precision per table: the smallest mix whose measured relative AUC drop stays ``<= budget``.

    ``model`` has fp32 tables (it is not changed); ``precisions`` are the candidates (any of
    fp32/fp16/int8/int4/int2; a table whose dim a format cannot pack skips it).

    >>> from crossrec.data.synthetic import SyntheticConfig, generate
    >>> from crossrec.models import ModelSpec, build
    >>> data = generate(SyntheticConfig(rows=2000, num_sparse=3, max_rows=20, seed=0))
    >>> model = build(ModelSpec.for_schema(data.schema, embedding_dim=8, bottom_mlp=(8,), top_mlp=(8,)), seed=0)
    >>> choice = choose_table_precisions(model, data, budget=0.01)
    >>> sorted(choice.per_table) == [t.name for t in model.spec.tables], choice.relative_drop <= 0.01
    (True, True)
    """
    check(0 <= budget < 1, "choose_table_precisions", "budget", budget, "a relative AUC drop in [0, 1)")
    bad = [p for p in precisions if p not in ORDER]
    check(not bad and len(precisions) > 0, "choose_table_precisions", "precisions", tuple(precisions),
          f"a non-empty subset of {ORDER}")
    if getattr(model, "embedding", None) is None:
        raise ConfigError("the model has no embedding tables to quantize")
    order = [p for p in ORDER if p in precisions]
    work = copy.deepcopy(model).eval()
    dims = dict(zip([t.name for t in work.spec.tables], work.spec.dims()))
    usable = {t: [p for p in order if _packs(dims[t], p)] for t in dims}
    base, sens = table_sensitivity(work, val_data, sorted(set(order)), progress=progress)
    for t, ps in usable.items():  # a precision a table cannot pack is never chosen for it
        sens[t] = {p: (sens[t].get(p, 0.0) if p in ps else float("inf")) for p in order}
    steps = _greedy(work.spec, sens, order, budget)
    for per_table in reversed(steps):  # check the mix for real; undo steps while it misses
        trial = q.quantize_embeddings_(copy.deepcopy(work), per_table)
        auc = evaluate(trial, val_data).auc
        drop = relative_drop(base, auc)
        if progress:
            progress(f"mix {sum(p != order[0] for p in per_table.values())} tables lowered: drop {drop:+.4%}")
        if drop <= budget:
            rows = {t.name: t.num_embeddings for t in work.spec.tables}
            return TablePrecisionChoice(
                base_auc=base, budget=budget, per_table=per_table,
                sensitivity={t: {p: d for p, d in s.items() if d != float("inf")} for t, s in sens.items()},
                bytes_per_table={t: _bytes(rows[t], dims[t], p) for t, p in per_table.items()},
                fp32_bytes=sum(_bytes(rows[t], dims[t], "fp32") for t in rows), auc=auc, relative_drop=drop)
    raise BudgetNotMetError(f"even the safest mix ({order[0]} for every table) loses {drop:.4%} relative AUC, "
                            f"over the budget {budget:.4%}; allow a larger budget or add a safer precision "
                            f"(e.g. 'fp16') to the candidates")


def _packs(dim: int, precision: str) -> bool:
    try:
        q.check_precision(precision, dim)
    except ConfigError:
        return False
    return True
