"""Every strategy: terminates, respects the trial budget, is reproducible by seed, resumes from its storage.

The search's only memory is its Optuna storage, so a run stopped after k trials and resumed must
propose exactly what an uninterrupted run proposes.
"""

from __future__ import annotations

import json

import optuna
import pytest

from crossrec.search import STRATEGIES, SearchSpace, search
from crossrec.search.pareto import dominates

NAMES = ["random", "evolution", "nsga2"]


def _choices(result) -> list[dict]:
    lines = [json.loads(line) for line in result.history_path.read_text().splitlines()]
    return [line["choices"] for line in sorted(lines, key=lambda r: r["trial"])]


def _run(make_config, tiny_splits, sub, name, **kw):
    cfg = make_config(sub, strategy={"name": name, "population_size": 3, "tournament_size": 2}, **kw)
    return search(cfg, splits=tiny_splits, local_device=None)


def test_every_shipped_strategy_is_covered():
    assert set(NAMES) <= set(STRATEGIES)


@pytest.mark.parametrize("name", NAMES)
def test_budget_seed_and_resume(make_config, tiny_splits, name):
    # terminates within the trial budget
    whole = _run(make_config, tiny_splits, "whole", name, n_trials=6)
    study = optuna.load_study(study_name="tiny", storage=whole.storage)
    assert len(study.trials) == 6 and all(t.state.name == "COMPLETE" for t in study.trials)
    assert whole.finished_trials == 6 and whole.evaluated + whole.cached == 6 and whole.failed == 0
    assert len(whole.history_path.read_text().splitlines()) == 6
    assert whole.front_path.is_file() and whole.front.fronts["h100-sxm"]
    # stopped after 2 trials and resumed from the storage: the same proposals as the uninterrupted run,
    # which also makes the proposals reproducible by seed across two storages
    part = _run(make_config, tiny_splits, "part", name, n_trials=2)
    assert part.finished_trials == 2
    resumed = _run(make_config, tiny_splits, "part", name, n_trials=6)
    assert resumed.finished_trials == 6 and resumed.evaluated + resumed.cached == 4  # only the missing trials
    assert _choices(resumed) == _choices(whole)
    assert [c.key for c in resumed.front.candidates] == [c.key for c in whole.front.candidates]
    again = _run(make_config, tiny_splits, "part", name, n_trials=6)  # budget spent: nothing more to do
    assert again.evaluated + again.cached == 0 and again.finished_trials == 6
    # another seed proposes something else
    other = _run(make_config, tiny_splits, "other", name, n_trials=6, seed=1)
    assert _choices(other) != _choices(whole)


@pytest.mark.parametrize("name", NAMES)
def test_wall_time_budget_stops_the_worker(make_config, tiny_splits, name):
    now = iter(range(1000))
    cfg = make_config("t", strategy={"name": name, "population_size": 3, "tournament_size": 2}, n_trials=50,
                      timeout_s=3)
    result = search(cfg, splits=tiny_splits, local_device=None, clock=lambda: float(next(now)))
    assert 1 <= result.finished_trials < 50


def test_evolution_children_are_one_mutation_from_a_tournament_winner(make_config, tiny_splits):
    result = _run(make_config, tiny_splits, "evo", "evolution", n_trials=9)
    study = optuna.load_study(study_name="tiny", storage=result.storage)
    trials = sorted(study.trials, key=lambda t: t.number)
    schema = tiny_splits.train.schema
    space = SearchSpace.from_dict(make_config().space.to_dict())
    params = space.parameters(schema)
    maximize = [d == optuna.study.StudyDirection.MAXIMIZE for d in study.directions]
    for child in trials[3:]:
        population = trials[child.number - 3 : child.number]  # the last 3 finished: aging
        # p can win a tournament of 2 out of 3 only if at most one member dominates it
        parents = [p for p in population
                   if sum(dominates(o.values, p.values, maximize) for o in population if o is not p) <= 1]
        c = child.user_attrs["candidate"]["choices"]
        distances = [sum(1 for k, v in p.user_attrs["candidate"]["choices"].items() if k in c and c[k] != v)
                     for p in parents]
        assert min(distances) <= 1, (child.number, c)
        assert all(c[k] in params[k] for k in c)


def test_nsga2_runs_generations_of_optunas_sampler(make_config, tiny_splits):
    result = _run(make_config, tiny_splits, "nsga", "nsga2", n_trials=8)
    study = optuna.load_study(study_name="tiny", storage=result.storage)
    generations = [v for t in study.trials for k, v in t.system_attrs.items() if k.endswith(":generation")]
    assert len(generations) == 8 and max(generations) >= 1
