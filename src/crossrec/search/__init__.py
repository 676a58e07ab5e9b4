"""Hardware-aware architecture search: per-device Pareto fronts of AUC vs latency (issue #4).

- :mod:`~crossrec.search.space`: :class:`SearchSpace` -> :class:`Architecture` (ModelSpec + compression).
- :mod:`~crossrec.search.objectives`: proxy AUC, bytes, latency (measured / predicted / modeled), energy.
- :mod:`~crossrec.search.strategy`: ``random``, ``evolution`` (regularized), ``nsga2`` behind one interface.
- :mod:`~crossrec.search.pareto`: fronts, hypervolume, cross-hardware picks, :func:`front_member`.
- :mod:`~crossrec.search.dominance`: :func:`baseline_dominance` (strict and within an AUC tolerance measured
  from the baseline's seed spread; vs the FP32 eager baseline and on the candidates' runtime).
- :mod:`~crossrec.search.timing` / :mod:`~crossrec.search.verify`: CPU timing on a crossrec runtime
  (TorchScript by default) over distinct batches, and :func:`verify_front`: claimed winners re-timed
  round-robin with the baseline after the search.
- :mod:`~crossrec.search.loop`: :func:`search` / :func:`run_search` (Optuna ask/tell, SQLite storage, resumable).

Optuna is imported when a search runs, not with this package.
"""

from crossrec.search.config import (
    BaselineConfig,
    DataConfig,
    LatencyConfig,
    ProxyConfig,
    SearchConfig,
    StrategyConfig,
    VerifyConfig,
    cpu_runtimes,
)
from crossrec.search.dominance import Retimed, retime_targets, retimed_dominance
from crossrec.search.loop import SearchResult, load_data, run_search, search
from crossrec.search.objectives import (
    Evaluation,
    Evaluator,
    RankCorrelation,
    compress_candidate,
    compression_configs,
    kendall,
    modeled_latency,
    predictor_latency,
    proxy_rank_correlation,
    spearman,
    train_candidate,
)
from crossrec.search.pareto import (
    BaselineDominance,
    Candidate,
    ParetoFront,
    Pick,
    SeedSpread,
    baseline_dominance,
    build_front,
    choose,
    dominates,
    front_member,
    hypervolume_2d,
    non_dominated_sort,
)
from crossrec.search.space import Architecture, SearchSpace, project_data, select_features, subset_schema
from crossrec.search.strategy import (
    STRATEGIES,
    EvolutionStrategy,
    NSGA2Strategy,
    RandomStrategy,
    Strategy,
    make_strategy,
    register_strategy,
)
from crossrec.search.timing import load_runtime
from crossrec.search.verify import verify_front

__all__ = ["STRATEGIES", "Architecture", "BaselineConfig", "BaselineDominance", "Candidate", "DataConfig",
           "Evaluation", "Evaluator", "EvolutionStrategy", "LatencyConfig", "NSGA2Strategy", "ParetoFront", "Pick",
           "ProxyConfig", "RandomStrategy", "RankCorrelation", "Retimed", "SearchConfig", "SearchResult",
           "SearchSpace", "SeedSpread", "Strategy", "StrategyConfig", "VerifyConfig", "baseline_dominance",
           "build_front", "choose", "compress_candidate", "compression_configs", "cpu_runtimes", "dominates",
           "front_member", "hypervolume_2d", "kendall", "load_data", "load_runtime", "make_strategy",
           "modeled_latency", "non_dominated_sort", "predictor_latency", "project_data", "proxy_rank_correlation",
           "register_strategy", "retime_targets", "retimed_dominance", "run_search", "search", "select_features",
           "spearman", "subset_schema", "train_candidate", "verify_front"]
