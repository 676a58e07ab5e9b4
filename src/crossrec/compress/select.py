"""Choose, then apply: the fastest compression candidate inside an accuracy budget.

``select`` evaluates every candidate (accuracy on validation data, speed on the target device,
bytes) on its own copy of the model and returns a :class:`Selection`: the chosen config plus
every trial's measured scores. It never changes the model it is given and never stops at the
first candidate that fits — the objective decides among all that fit.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from torch import nn

from crossrec.compress.base import CompressContext, CompressionConfig, compress_, recipe_from_dicts, recipe_to_dicts
from crossrec.config import Config, check
from crossrec.errors import BudgetNotMetError, ConfigError

Objective = Literal["throughput", "latency", "size"]


@dataclass(frozen=True, kw_only=True)
class AccuracyBudget(Config):
    """The most accuracy a variant may lose: relative AUC drop, e.g. 0.001 = 0.1% (MLPerf 99.9% tier).

    >>> AccuracyBudget.parse("0.5%").max_relative_auc_drop
    0.005
    """

    max_relative_auc_drop: float = 0.001

    def __post_init__(self) -> None:
        check(0 <= self.max_relative_auc_drop < 1, "AccuracyBudget", "max_relative_auc_drop",
              self.max_relative_auc_drop, "a fraction in [0, 1), e.g. 0.001 for 0.1%")

    @staticmethod
    def parse(text: str) -> AccuracyBudget:
        """'0.5%' or '0.005' -> AccuracyBudget(0.005)."""
        t = str(text).strip()
        try:
            value = float(t[:-1]) / 100 if t.endswith("%") else float(t)
        except ValueError:
            raise ConfigError(f"budget {text!r} is not a number: write it like 0.5% or 0.005") from None
        return AccuracyBudget(max_relative_auc_drop=value)

    def allows(self, baseline_auc: float, auc: float) -> bool:
        return relative_drop(baseline_auc, auc) <= self.max_relative_auc_drop + 1e-12


def relative_drop(baseline_auc: float, auc: float) -> float:
    """(baseline - auc) / baseline; negative when the variant is better."""
    return (baseline_auc - auc) / baseline_auc


@dataclass(frozen=True)
class Trial:
    """One candidate's measured scores (``scores`` holds what ``evaluate`` returned)."""

    name: str
    config: dict | None
    scores: dict[str, float]
    relative_auc_drop: float
    within_budget: bool


@dataclass(frozen=True)
class Selection:
    """What ``select`` chose and why: every trial, the baseline, the budget and the objective."""

    chosen: Trial
    baseline: Trial
    trials: tuple[Trial, ...]
    budget: dict
    objective: str
    notes: dict = field(default_factory=dict)

    def config(self) -> CompressionConfig | None:
        """The chosen config, rebuilt (apply it with ``compress_``); None when the uncompressed model won
        (``select(..., keep_uncompressed=True)``)."""
        return None if self.chosen.config is None else recipe_from_dicts([self.chosen.config])[0]

    def to_dict(self) -> dict[str, Any]:
        return {"chosen": asdict(self.chosen), "baseline": asdict(self.baseline),
                "trials": [asdict(t) for t in self.trials], "budget": self.budget, "objective": self.objective,
                "notes": self.notes}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Selection:
        return Selection(chosen=Trial(**d["chosen"]), baseline=Trial(**d["baseline"]),
                         trials=tuple(Trial(**t) for t in d["trials"]), budget=d["budget"],
                         objective=d["objective"], notes=d.get("notes", {}))


def _better(objective: str, a: dict, b: dict) -> bool:
    if objective == "throughput":
        return a["throughput"] > b["throughput"]
    if objective == "latency":
        return a["latency_ms"] < b["latency_ms"]
    return a["size_bytes"] < b["size_bytes"]


def select(model: nn.Module, candidates: Sequence[CompressionConfig], evaluate: Callable[[nn.Module], dict] | None,
           budget: AccuracyBudget, objective: Objective = "throughput", *, ctx: CompressContext | None = None,
           names: Sequence[str] | None = None, progress: Callable[[str], None] | None = None,
           evaluate_all: Callable[[dict[str, nn.Module]], dict[str, dict]] | None = None,
           keep_uncompressed: bool = False) -> Selection:
    """Return the best candidate by ``objective`` among those whose AUC stays inside ``budget``.

    With ``keep_uncompressed`` the unmodified model competes too, so a candidate that measures slower
    (or larger) than it is never returned; the chosen trial is then ``baseline`` (config None). Off by
    default: compression is usually asked for its size as well as its speed.

    ``evaluate(model) -> {"auc", "throughput", "latency_ms", "size_bytes", ...}`` measures one
    model; it is called once for the unmodified baseline and once per candidate, each on a deep
    copy. Alternatively ``evaluate_all({"baseline": model, name: variant, ...})`` measures every
    variant in one go — what interleaved timing needs (all variants then live at once). Raises
    :class:`BudgetNotMetError` (with every trial) when no candidate fits.

    >>> from crossrec.compress import EmbeddingQuantConfig
    >>> from crossrec.data.synthetic import SyntheticConfig
    >>> from crossrec.models import ModelSpec, build, parameter_bytes
    >>> model = build(ModelSpec.for_schema(SyntheticConfig(num_sparse=2, max_rows=10).schema(), embedding_dim=8))
    >>> ev = lambda m: {"auc": 0.8, "throughput": 1e6 / parameter_bytes(m), "latency_ms": 1.0,
    ...                 "size_bytes": parameter_bytes(m)}
    >>> s = select(model, [EmbeddingQuantConfig(precision="int8"), EmbeddingQuantConfig(precision="int4")], ev,
    ...            AccuracyBudget(max_relative_auc_drop=0.001))
    >>> s.chosen.name
    'EmbeddingQuantConfig(int4)'
    """
    check(objective in ("throughput", "latency", "size"), "select", "objective", objective,
          "'throughput', 'latency' or 'size'")
    check((evaluate is None) != (evaluate_all is None), "select", "evaluate/evaluate_all", "both or neither",
          "exactly one of them")
    names = list(names) if names is not None else [describe(c) for c in candidates]
    check(len(set(names)) == len(names) and "baseline" not in names, "select", "names", names,
          "unique names other than 'baseline'")
    if evaluate_all is not None:
        variants = {"baseline": model}
        for name, config in zip(names, candidates):
            if progress:
                progress(f"compressing: {name}")
            variants[name] = compress_(copy.deepcopy(model), config, ctx)
        measured = evaluate_all(variants)
        base_scores = dict(measured["baseline"])
    else:
        base_scores = dict(evaluate(model))
    baseline = Trial(name="baseline", config=None, scores=base_scores, relative_auc_drop=0.0, within_budget=True)
    trials = []
    for name, config in zip(names, candidates):
        if evaluate_all is not None:
            scores = dict(measured[name])
        else:
            if progress:
                progress(f"trying {name}")
            scores = dict(evaluate(compress_(copy.deepcopy(model), config, ctx)))
        drop = relative_drop(base_scores["auc"], scores["auc"])
        trials.append(Trial(name=name, config=recipe_to_dicts([config])[0], scores=scores, relative_auc_drop=drop,
                            within_budget=budget.allows(base_scores["auc"], scores["auc"]) and math.isfinite(drop)))
    fits = [t for t in trials if t.within_budget]
    if not fits:
        lines = "; ".join(f"{t.name}: AUC drop {t.relative_auc_drop:.3%}" for t in trials)
        raise BudgetNotMetError(f"no candidate stays within a {budget.max_relative_auc_drop:.3%} relative AUC drop "
                                f"({lines}); loosen the budget or add gentler candidates", trials)
    best = fits[0]
    for t in fits[1:]:
        if _better(objective, t.scores, best.scores):
            best = t
    if keep_uncompressed and not _better(objective, best.scores, baseline.scores):
        best = baseline
    return Selection(chosen=best, baseline=baseline, trials=tuple(trials), budget=budget.to_dict(),
                     objective=objective)


def describe(config: CompressionConfig) -> str:
    """A short human name, e.g. ``EmbeddingQuantConfig(int8)``; fields left at ``"auto"`` are not shown."""
    values = [str(v) for v in config.to_dict().values() if v not in (None, {}, (), [], "auto")]
    return f"{type(config).__name__}({', '.join(values)})"
