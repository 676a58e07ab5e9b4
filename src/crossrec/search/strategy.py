"""Search strategies: one small interface, the loop in :func:`crossrec.search.search` does the rest.

A :class:`Strategy` answers three questions:

- ``sampler(study)``: the Optuna sampler for the next ``study.ask()`` (how parameters are drawn);
- ``propose(trial)``: the choices of that trial (``trial.study`` holds the whole history);
- ``feedback(choices, objectives)``: what the loop measured for them.

The shipped strategies keep all their state in the study's storage (parents, generations), so
``feedback`` has nothing to do for them and a search resumes, or runs several workers, from the
storage alone; a strategy that learns in memory (a surrogate model, a bandit) would use it.

- ``random``: uniform choices, seeded per trial.
- ``evolution``: regularized evolution (Real et al. 2019): tournament + aging, mutate one choice.
- ``nsga2``: Optuna's ``NSGAIISampler`` (Deb et al. 2002), re-seeded per trial from the storage size.

>>> from crossrec.data.synthetic import SyntheticConfig
>>> schema = SyntheticConfig(num_dense=1, num_sparse=2, max_rows=10).schema()
>>> make_strategy("evolution", SearchSpace(), schema, seed=1).name
'evolution'
"""

from __future__ import annotations

from typing import Any, ClassVar

from crossrec.config import check
from crossrec.data.schema import FeatureSchema
from crossrec.search.space import SearchSpace


class Strategy:
    """Base strategy: subclasses set ``name`` and implement :meth:`sampler`."""

    name: ClassVar[str] = ""

    def __init__(self, space: SearchSpace, schema: FeatureSchema, *, seed: int = 0, population_size: int = 16,
                 tournament_size: int = 4):
        self.space, self.schema, self.seed = space, schema, seed
        self.population_size, self.tournament_size = population_size, tournament_size

    def sampler(self, study: Any) -> Any:
        """The Optuna sampler for the next trial of ``study``."""
        raise NotImplementedError(f"{type(self).__name__} must implement sampler(study)")

    def propose(self, trial: Any) -> dict[str, Any]:
        """The choices of ``trial`` (drawn through the study's sampler)."""
        return self.space.suggest(trial, self.schema)

    def feedback(self, choices: dict[str, Any], objectives: dict[str, float]) -> None:
        """Measured objectives of ``choices``; stateless strategies read them from the storage instead."""


class RandomStrategy(Strategy):
    """Uniformly random architectures (the baseline every strategy must beat).

    >>> from crossrec.data.synthetic import SyntheticConfig
    >>> RandomStrategy(SearchSpace(), SyntheticConfig(num_sparse=2, max_rows=9).schema()).name
    'random'
    """

    name = "random"

    def sampler(self, study: Any) -> Any:
        from crossrec.search._samplers import SeededRandomSampler

        return SeededRandomSampler(self.seed)


class EvolutionStrategy(Strategy):
    """Regularized evolution: tournament of ``tournament_size`` among the last ``population_size``
    finished trials, the winner's copy mutated in one choice (Real et al. 2019).

    >>> from crossrec.data.synthetic import SyntheticConfig
    >>> EvolutionStrategy(SearchSpace(), SyntheticConfig(num_sparse=2, max_rows=9).schema()).tournament_size
    4
    """

    name = "evolution"

    def sampler(self, study: Any) -> Any:
        from crossrec.search._samplers import RegularizedEvolutionSampler

        return RegularizedEvolutionSampler(self.space, self.schema, seed=self.seed,
                                           population_size=self.population_size,
                                           tournament_size=self.tournament_size)


class NSGA2Strategy(Strategy):
    """Multi-objective NSGA-II through Optuna's ``NSGAIISampler`` (generation size ``population_size``).

    Its generations live in the storage; its random generator is re-seeded from ``(seed, trials so
    far)`` before every trial so a resumed run continues deterministically instead of replaying.

    >>> from crossrec.data.synthetic import SyntheticConfig
    >>> NSGA2Strategy(SearchSpace(), SyntheticConfig(num_sparse=2, max_rows=9).schema()).name
    'nsga2'
    """

    name = "nsga2"

    def sampler(self, study: Any) -> Any:
        from optuna.samplers import NSGAIISampler

        n = len(study.get_trials(deepcopy=False))
        return NSGAIISampler(population_size=self.population_size, seed=(self.seed * 1_000_003 + n) % 2**32)


STRATEGIES: dict[str, type[Strategy]] = {s.name: s for s in (RandomStrategy, EvolutionStrategy, NSGA2Strategy)}


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: make a :class:`Strategy` subclass available by its ``name``."""
    check(bool(cls.name), "register_strategy", "name", cls.name, "a non-empty class attribute")
    STRATEGIES[cls.name] = cls
    return cls


def make_strategy(name: str, space: SearchSpace, schema: FeatureSchema, **options: Any) -> Strategy:
    """The strategy called ``name`` (ConfigError listing the known ones otherwise)."""
    check(name in STRATEGIES, "make_strategy", "name", name, f"one of {sorted(STRATEGIES)}")
    return STRATEGIES[name](space, schema, **options)
