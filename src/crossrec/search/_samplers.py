"""Optuna samplers behind the search strategies (imported on first use: ``import crossrec.search`` stays light).

Both keep no state in memory: every draw is seeded by ``(seed, trial number, ...)`` and every
parent is read from the study's storage, so a resumed search, or a second worker on the same
storage, continues the sequence instead of replaying it (a fresh ``RandomSampler(seed)`` would
propose trial 0's architecture again after every restart).
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from crossrec.data.schema import FeatureSchema
from crossrec.search.pareto import dominates
from crossrec.search.space import SearchSpace


def _rng(seed: int, number: int, salt: str) -> np.random.Generator:
    return np.random.default_rng([seed, number, zlib.crc32(salt.encode())])


class SeededRandomSampler(BaseSampler):
    """Uniform categorical draws seeded by ``(seed, trial number, parameter name)``."""

    def __init__(self, seed: int = 0):
        self.seed = seed
        self._fallback = RandomSampler(seed=seed)

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]) -> dict:
        return {}

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        if isinstance(param_distribution, CategoricalDistribution):
            choices = param_distribution.choices
            return choices[int(_rng(self.seed, trial.number, param_name).integers(len(choices)))]
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)


class RegularizedEvolutionSampler(SeededRandomSampler):
    """Regularized ("aging") evolution, Real et al. 2019, AAAI: the population is the last
    ``population_size`` finished trials (the oldest dies, not the worst); a child is a copy of the
    best of ``tournament_size`` random members with one choice mutated. Until the first population
    is complete, children are random. With several objectives, "best" is a member no other sampled
    member Pareto-dominates, ties broken at random (a multi-objective tournament).
    """

    def __init__(self, space: SearchSpace, schema: FeatureSchema, *, seed: int = 0, population_size: int = 16,
                 tournament_size: int = 4):
        super().__init__(seed)
        self.space, self.schema = space, schema
        self.population_size, self.tournament_size = population_size, tournament_size

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {name: CategoricalDistribution(choices) for name, choices in self.space.parameters(self.schema).items()}

    def sample_relative(self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]) -> dict:
        done = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number)
        if len(done) < self.population_size:
            return {}
        population = done[-self.population_size:]  # aging: only the youngest survive
        rng = _rng(self.seed, trial.number, "evolution")
        sample = [population[i] for i in rng.choice(len(population), self.tournament_size, replace=False)]
        maximize = [d == StudyDirection.MAXIMIZE for d in study.directions]
        best = [t for t in sample if not any(dominates(o.values, t.values, maximize) for o in sample if o is not t)]
        parent = best[int(rng.integers(len(best)))]
        recorded = parent.user_attrs.get("candidate", {}).get("choices")  # what the loop built, else the params
        child = self.space.mutate(dict(recorded or parent.params), rng, self.schema)
        for name, dist in search_space.items():  # values for parameters the child may newly activate
            if name not in child and isinstance(dist, CategoricalDistribution):
                child[name] = dist.choices[int(rng.integers(len(dist.choices)))]
        return child
