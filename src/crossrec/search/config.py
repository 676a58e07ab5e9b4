"""`SearchConfig`: everything a search run needs, as one YAML/JSON file (``crossrec search CONFIG``).

A minimal file (every other field has a default)::

    name: movielens-nsga2
    data: {name: movielens-100k}
    devices: [local-cpu, h100-sxm, alveo-u280]   # local-cpu: this machine's CPU (its catalog entry)
    n_trials: 48
    strategy: {name: nsga2, population_size: 16}
    latency: {batch_size: 512, batch_sizes: {h100-sxm: 4096}, cpu_runtime: script}
    baseline_seeds: 3        # train the baseline with 3 seeds: its AUC spread
    auc_tolerance: auto      # "no worse AUC" within 1 std of that spread (strict is reported too)
    out: runs/search-movielens
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crossrec.config import Config, check
from crossrec.data.synthetic import SyntheticConfig
from crossrec.search.space import DENSE_PRECISIONS, SearchSpace
from crossrec.train.loop import TrainConfig

OBJECTIVES: tuple[str, ...] = ("auc", "latency", "bytes", "energy")
LATENCY_SOURCES: tuple[str, ...] = ("auto", "measured", "predicted", "modeled")
STRATEGY_NAMES: tuple[str, ...] = ("random", "evolution", "nsga2")


@dataclass(frozen=True, kw_only=True)
class DataConfig(Config):
    """Which data set (``crossrec.data.sources.load_splits``); ``synthetic`` overrides the generator's shape."""

    name: str = "synthetic"
    path: str | None = None
    split: str = "random"
    rows: int | None = None
    synthetic: SyntheticConfig | None = None

    def __post_init__(self) -> None:
        from crossrec.data.sources import DATASETS

        check(self.name in DATASETS, "DataConfig", "name", self.name, f"one of {', '.join(DATASETS)}")
        check(self.synthetic is None or self.name == "synthetic", "DataConfig", "synthetic", "set",
              "only with name: synthetic")


@dataclass(frozen=True, kw_only=True)
class ProxyConfig(Config):
    """The accuracy proxy: train each candidate on a data budget, then AUC on (part of) validation.

    ``train_rows``/``val_rows`` cap the rows used (first rows of the seeded splits); ``train``'s
    ``max_steps``/``epochs`` cap the optimizer steps. Every candidate sees the same rows, order and seed.
    ``threads`` sets torch's thread count while candidates train (e.g. 1 per worker when several
    workers share a machine: idle OpenMP threads spinning on shared cores slow tiny models ~10x).
    """

    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=1, batch_size=512, max_steps=200,
                                                                    lr=3e-3, embedding_lr=3e-2))
    train_rows: int | None = None
    val_rows: int | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        for name in ("train_rows", "val_rows", "threads"):
            value = getattr(self, name)
            check(value is None or value >= 1, "ProxyConfig", name, value, ">= 1 or null (all rows)")


@dataclass(frozen=True, kw_only=True)
class StrategyConfig(Config):
    """``name`` in random / evolution / nsga2. ``population_size``: the aging population of regularized
    evolution and NSGA-II's generation size; ``tournament_size``: evolution's sample (Real et al. 2019)."""

    name: str = "nsga2"
    population_size: int = 16
    tournament_size: int = 4

    def __post_init__(self) -> None:
        check(bool(self.name), "StrategyConfig", "name", self.name, f"a strategy name, e.g. one of {STRATEGY_NAMES}")
        check(self.population_size >= 2, "StrategyConfig", "population_size", self.population_size, ">= 2")
        check(1 <= self.tournament_size <= self.population_size, "StrategyConfig", "tournament_size",
              self.tournament_size, f"between 1 and population_size ({self.population_size})")


@dataclass(frozen=True, kw_only=True)
class BaselineConfig(Config):
    """The hand-designed model every front is compared with (defaults: a DLRM as in the Criteo reference).

    It is trained with the same proxy as the candidates. On each device it runs at the highest
    precision the device supports (a device without fp32 compute gets bf16, then int8).
    """

    interaction: str = "dot"
    embedding_dim: int = 16
    bottom_mlp: tuple[int, ...] = (64, 16)
    top_mlp: tuple[int, ...] = (256, 128)
    name: str = "dlrm-baseline"


def cpu_runtimes() -> tuple[str, ...]:
    """The registered :mod:`crossrec.runtime` runtimes that run on the CPU (what ``latency.cpu_runtime`` may name).

    >>> {"eager", "script"} <= set(cpu_runtimes()) and "cuda" not in cpu_runtimes()
    True
    """
    from crossrec.runtime import RUNTIMES  # imports torch: on first use, not with the config module

    return tuple(sorted(n for n, cls in RUNTIMES.items() if "cpu" in cls.devices))


def check_cpu_runtime(owner: str, runtime: str, options: dict[str, Any]) -> None:
    """ConfigError unless ``runtime`` is a registered CPU runtime and takes every key of ``options``."""
    from crossrec.runtime import get_runtime, options_of

    names = cpu_runtimes()
    check(runtime in names, owner, "cpu_runtime", runtime, f"a CPU runtime of crossrec.runtime, one of {names}")
    allowed = options_of(get_runtime(runtime))
    unknown = sorted(set(options) - set(allowed))
    check(not unknown, owner, "runtime_options", options, f"options of runtime {runtime!r}: {list(allowed)}")


@dataclass(frozen=True, kw_only=True)
class LatencyConfig(Config):
    """How each device's latency is obtained.

    ``sources[device]``: ``measured`` (profile the compressed model here: only the local CPU),
    ``predicted`` (the LatencyPredictor at ``predictor``), ``modeled`` (roofline ``estimate``) or
    ``auto`` (default: measured for the local CPU, else predicted with a predictor, else modeled).
    Measurement: ``warmup`` + ``repeats`` timed calls (p50) at ``batch_size`` on ``threads`` threads,
    cycling through ``batches`` distinct batches of validation rows (so lookups do not hit the same rows
    every call). ``batch_sizes[device]`` overrides ``batch_size`` for one device: accelerators serve larger
    batches, and at 512 a GPU's modeled call is mostly its fixed launch overhead.

    ``cpu_runtime``: the :mod:`crossrec.runtime` runtime candidates are measured on (default ``script``,
    TorchScript trace + freeze: what a CPU deployment would run; eager Python dispatch of ~25 small ops
    dominates small candidates' latency). ``runtime_options`` go to it (e.g. ``{hugepages: true}``). A
    candidate it cannot run (e.g. a trace that fails its check against eager) is measured on ``eager``,
    and its evaluation says so. The baseline is timed on FP32 ``eager`` (how users run it today: every
    crossrec speed-up is against that) and on ``cpu_runtime``, round-robin, ``block`` calls of each per round.

    >>> LatencyConfig(cpu_runtime="script", runtime_options={"hugepages": True}).cpu_runtime
    'script'
    >>> LatencyConfig(cpu_runtime="cuda")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    crossrec.errors.ConfigError: LatencyConfig.cpu_runtime = 'cuda' is invalid: a CPU runtime of crossrec.runtime, ...
    """

    batch_size: int = 512
    batch_sizes: dict[str, int] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    predictor: str | None = None
    warmup: int = 2
    repeats: int = 10
    threads: int | None = None
    cpu_runtime: str = "script"
    runtime_options: dict[str, Any] = field(default_factory=dict)
    batches: int = 4
    block: int = 5

    def __post_init__(self) -> None:
        own = "LatencyConfig"
        check(self.batch_size >= 1, own, "batch_size", self.batch_size, ">= 1")
        check(all(b >= 1 for b in self.batch_sizes.values()), own, "batch_sizes", self.batch_sizes, "each >= 1")
        bad = {d: s for d, s in self.sources.items() if s not in LATENCY_SOURCES}
        check(not bad, own, "sources", bad, f"each one of {LATENCY_SOURCES}")
        check(self.warmup >= 0 and self.repeats >= 1, own, "warmup/repeats", (self.warmup, self.repeats),
              "warmup >= 0 and repeats >= 1")
        check(self.batches >= 1, own, "batches", self.batches, ">= 1 distinct timing batches")
        check(self.block >= 1, own, "block", self.block, ">= 1 consecutive calls of one model per round")
        check_cpu_runtime(own, self.cpu_runtime, self.runtime_options)

    def batch_for(self, device: str) -> int:
        """The batch size ``device``'s latency is taken at."""
        return self.batch_sizes.get(device, self.batch_size)


@dataclass(frozen=True, kw_only=True)
class VerifyConfig(Config):
    """Re-timing after the search, on each measured device (issue #4: one timing per candidate is noisy).

    The members :func:`~crossrec.search.dominance.retime_targets` picks — the ``top`` fastest at the
    baseline's AUC and within the tolerance, then the other members claiming dominance, at most
    ``max_members`` — are each re-timed in one round-robin run with the FP32 eager baseline and the baseline
    on the member's runtime: ``rounds`` rounds of ``latency.block`` calls each after ``warmup`` calls, over
    ``latency.batches`` distinct batches. The reported dominance then uses those ratios (the search-time
    verdict is kept). ``enabled: false`` reports the search-time verdict only.
    """

    enabled: bool = True
    top: int = 3
    max_members: int = 8
    rounds: int = 10
    warmup: int = 5

    def __post_init__(self) -> None:
        own = "VerifyConfig"
        check(self.top >= 0, own, "top", self.top, ">= 0")
        check(self.max_members >= 1, own, "max_members", self.max_members, ">= 1")
        check(self.rounds >= 1, own, "rounds", self.rounds, ">= 1")
        check(self.warmup >= 0, own, "warmup", self.warmup, ">= 0")


@dataclass(frozen=True, kw_only=True)
class SearchConfig(Config):
    """A search run. ``objectives``: ``auc`` (always, maximized) plus any of ``latency``, ``bytes``,
    ``energy`` (minimized; latency and energy once per device). ``n_trials`` counts finished trials of
    the study (all workers); ``timeout_s`` bounds this worker's wall time. ``storage`` defaults to
    ``sqlite:///<out>/search.db``; the study is ``name``. ``deployment_weights`` (device -> traffic
    share) and ``auc_floor`` shape the cross-hardware picks (default floor: the baseline's AUC).

    ``baseline_seeds`` trains the baseline's proxy with that many seeds (``seed``, ``seed + 1``, ...) and
    records the spread of its AUC in the front (:class:`~crossrec.search.pareto.SeedSpread`).
    ``auc_tolerance`` is how much AUC (absolute, e.g. ``0.005``) a front member may lose and still count as
    "no worse" than the baseline in ``front.dominance``: None (strict), a number, or ``"auto"`` = one
    standard deviation of that spread (needs ``baseline_seeds >= 2``; see
    :data:`~crossrec.search.dominance.AUTO_TOLERANCE_STDS` for why one). ``verify`` re-times the members that
    claim dominance on a measured device against the baseline after the search (:class:`VerifyConfig`).
    These three only read and add results, so a study may be resumed with other values.

    >>> cfg = SearchConfig.from_dict({"data": {"name": "synthetic", "rows": 2000}, "strategy": {"name": "evolution"},
    ...                               "devices": ["epyc-zen5-2vcpu", "alveo-u280"], "n_trials": 10})
    >>> cfg.strategy.name, cfg.storage_url().startswith("sqlite:///")
    ('evolution', True)
    >>> SearchConfig.from_json(cfg.to_json()) == cfg
    True
    """

    name: str = "search"
    data: DataConfig = field(default_factory=DataConfig)
    space: SearchSpace = field(default_factory=SearchSpace)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    n_trials: int = 50
    timeout_s: float | None = None
    devices: tuple[str, ...] = ("epyc-zen5-2vcpu",)
    catalog: str | None = None
    objectives: tuple[str, ...] = ("auc", "latency")
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    baseline: BaselineConfig | None = field(default_factory=BaselineConfig)
    deployment_weights: dict[str, float] = field(default_factory=dict)
    auc_floor: float | None = None
    auc_tolerance: float | str | None = None
    baseline_seeds: int = 1
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    seed: int = 0
    out: str = "runs/search"
    storage: str | None = None
    save_artifacts: bool = True

    def __post_init__(self) -> None:
        own = "SearchConfig"
        check(bool(self.name), own, "name", self.name, "a non-empty study name")
        check(self.n_trials >= 1, own, "n_trials", self.n_trials, ">= 1")
        check(self.timeout_s is None or self.timeout_s > 0, own, "timeout_s", self.timeout_s, "> 0 or null")
        check(len(self.devices) >= 1 and len(set(self.devices)) == len(self.devices), own, "devices", self.devices,
              "one or more distinct catalog device names")
        check("auc" in self.objectives and set(self.objectives) <= set(OBJECTIVES)
              and len(set(self.objectives)) == len(self.objectives), own, "objectives", self.objectives,
              f"'auc' plus any of {OBJECTIVES[1:]}, without repeats")
        check(len(self.objectives) >= 2, own, "objectives", self.objectives,
              "at least one cost besides 'auc' (e.g. latency)")
        extra = sorted(set(self.deployment_weights) - set(self.devices))
        check(not extra and all(w >= 0 for w in self.deployment_weights.values()), own, "deployment_weights",
              self.deployment_weights, f"weights >= 0 for devices among {list(self.devices)}")
        unknown = sorted((set(self.latency.sources) | set(self.latency.batch_sizes)) - set(self.devices))
        check(not unknown, own, "latency.sources/batch_sizes", unknown, f"devices among {list(self.devices)}")
        check(self.baseline_seeds >= 1, own, "baseline_seeds", self.baseline_seeds, ">= 1")
        tol = self.auc_tolerance
        check(tol is None or tol == "auto" or (not isinstance(tol, str) and 0 <= tol < 1), own, "auc_tolerance", tol,
              "null (strict), an absolute AUC in [0, 1) such as 0.005, or 'auto'")
        check(tol != "auto" or (self.baseline_seeds >= 2 and self.baseline is not None), own, "auc_tolerance", tol,
              "'auto' only with a baseline and baseline_seeds >= 2 (it is measured from their spread)")

    def storage_url(self) -> str:
        """The Optuna storage URL (default: a SQLite file in ``out``)."""
        return self.storage or f"sqlite:///{Path(self.out).resolve() / 'search.db'}"


def baseline_precisions(supported_dense: tuple[str, ...], supported_tables: tuple[str, ...]) -> tuple[str, str]:
    """(table, dense) precision of the baseline on a device: the highest precision it supports.

    >>> baseline_precisions(("bf16", "int8"), ("fp32", "bf16"))
    ('fp32', 'bf16')
    """
    dense = next((p for p in DENSE_PRECISIONS if p in supported_dense), "int8")
    table = next((p for p in ("fp32", "bf16", "fp16", "int8", "int4", "int2") if p in supported_tables), "int8")
    return table, dense
