"""Re-time the front members that claim to beat the baseline, round-robin with it (issue #4).

During a search each candidate is timed once, when it comes, while the machine's load drifts: a winner
measured 5.47x there and 2.49x re-timed against the baseline in one run (BENCHMARKS.md §8). After the
search, on each measured device, :func:`verify_front` takes the members
:func:`~crossrec.search.dominance.retime_targets` names and times each in **one** round-robin
:func:`~crossrec.hardware.profile_many` run (:func:`~crossrec.search.timing.time_models`) with:

- the baseline on FP32 **eager** — how users run it today; the speed-up that decides dominance;
- the baseline on the member's runtime (the search's ``cpu_runtime``) — the same-runtime speed-up;
- the member, on the runtime the search timed it on;

``rounds`` rounds of ``block`` consecutive calls of each (the first model rotating), every model cycling
through the same distinct validation rows cut to its features. Blocks keep each model's caches warm as a
deployed model's are; rounds spread machine drift over all three alike. The verdict is then rebuilt from
these ratios (:func:`~crossrec.search.dominance.retimed_dominance`); the search-time one is kept beside it.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from crossrec.search.config import VerifyConfig
from crossrec.search.dominance import Retimed, retime_targets, retimed_dominance
from crossrec.search.objectives import Evaluator
from crossrec.search.pareto import Candidate, ParetoFront
from crossrec.search.timing import load_runtime, round_speedups, time_models

ModelFor = Callable[[Candidate], Any]  # candidate -> its compressed CTRModel, as the search timed it


def retime_member(index: int, member: Candidate, baseline: Candidate, device: str, *, model_for: ModelFor,
                  evaluator: Evaluator, rounds: int, warmup: int) -> Retimed:
    """One run: the baseline (eager, and on the member's runtime) and ``member`` round-robin (module docstring).

    ``evaluator`` supplies the timing protocol of the search: batch size, distinct batches, ``block``,
    threads, runtime options, the profiler and its clock.
    """
    size, block = evaluator.batch[device], evaluator.block
    want = member.evaluation.latency_runtime.get(device, evaluator.runtime)
    options = evaluator.runtime_options if want == evaluator.runtime else None
    member_rt, runtime, _ = load_runtime(model_for(member), want, options)
    base_model = model_for(baseline)
    base_batches = evaluator.timing_batches(size, baseline.arch.features)
    timed: dict[str, tuple[Any, Sequence]] = {"baseline": (load_runtime(base_model, "eager")[0], base_batches)}
    if runtime != "eager":
        # hugepages=True moves tables in place: the eager baseline keeps its own copy, as users have it
        same, used, _ = load_runtime(copy.deepcopy(base_model) if options else base_model, runtime, options)
        if used == runtime:
            timed[f"baseline@{runtime}"] = (same, base_batches)
    timed[f"member@{runtime}"] = (member_rt, evaluator.timing_batches(size, member.arch.features))
    warmup = warmup if runtime == "eager" else max(warmup, 3)  # TorchScript specializes during its first calls
    prof = time_models(timed, warmup=warmup, repeats=rounds * block, block=block, threads=evaluator.threads,
                       profiler=evaluator.profiler, clock=evaluator.profile_clock)
    lat = {n: prof[n].at(size) for n in timed}
    base, mine = lat["baseline"], lat[f"member@{runtime}"]
    same_ms = lat[f"baseline@{runtime}"].p50_ms if f"baseline@{runtime}" in lat else \
        (base.p50_ms if runtime == "eager" else None)
    search_base, search_ms = baseline.latency(device), member.latency(device)
    return Retimed(index=index, key=member.key, auc=member.evaluation.auc, runtime=runtime, member_ms=mine.p50_ms,
                   baseline_ms=base.p50_ms, baseline_same_runtime_ms=same_ms,
                   speedup_vs_eager_baseline=base.p50_ms / mine.p50_ms,
                   speedup_same_runtime=same_ms / mine.p50_ms if same_ms is not None else None,
                   search_speedup=search_base / search_ms if search_base is not None and search_ms else None,
                   round_speedups=round_speedups(base.latencies_ms, mine.latencies_ms, block),
                   calls=len(mine.latencies_ms))


def verify_front(front: ParetoFront, devices: Sequence[str], *, model_for: ModelFor, evaluator: Evaluator,
                 config: VerifyConfig) -> ParetoFront:
    """``front`` with the dominance of each of ``devices`` (measured here) re-timed: see the module docstring.

    Devices without a baseline latency are left as they are; a device whose front has no member at the
    tolerant AUC floor gets a re-timed verdict with nothing re-timed (there was nothing to claim).
    """
    dominance = dict(front.dominance)
    for device in devices:
        verdict, base = dominance.get(device), front.baseline.get(device)
        if verdict is None or base is None or base.latency(device) is None or verdict.timing == "retimed":
            continue
        targets = retime_targets(front.candidates, verdict, front.fronts[device], top=config.top,
                                 max_members=config.max_members)
        rows = [retime_member(i, front.candidates[i], base, device, model_for=model_for, evaluator=evaluator,
                              rounds=config.rounds, warmup=config.warmup) for i in targets]
        dominance[device] = retimed_dominance(verdict, rows)
    info = {**front.info, "verification": {"devices": list(devices), **config.to_dict(), "block": evaluator.block,
                                           "batches": evaluator.n_batches, "cpu_runtime": evaluator.runtime}}
    return dataclasses.replace(front, dominance=dominance, info=info)
