"""Pareto fronts per device, hypervolume, and cross-hardware picks — as one frozen `ParetoFront` record.

Per device, a candidate is on the front when no other candidate that runs there has at least its
AUC and at most its latency (and bytes, when the search minimizes bytes), one of them strictly.
Energy is the device's power times latency, so it ranks like latency and adds nothing per device.
Cross-hardware picks choose one *architecture* (a model is trained once) and, per device, the
fastest compression variant of it the search measured there with AUC >= the floor. They look at
every candidate, not only front members (an architecture dominated on each device by a
*different* rival can still be the best compromise):

- ``minmax``: the architecture whose worst slowdown across devices (its latency / that device's
  fastest architecture at the floor) is smallest;
- ``weighted``: the smallest deployment-weighted mean latency (ms; weights = traffic shares).

**Against the baseline**: ``front.dominance[device]`` (:mod:`~crossrec.search.dominance`): does a member
beat the hand-designed baseline, strictly and within an AUC tolerance, against the FP32 eager baseline and on
the candidates' own runtime, from the search's timings or re-timed round-robin with the baseline.

``front.json`` is this record's JSON; ``crossrec compress`` takes a member via :func:`front_member`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crossrec.config import Config, check
from crossrec.errors import ArtifactError, ConfigError
from crossrec.search.dominance import (  # re-exported: they were defined here before the split
    AUTO_TOLERANCE_STDS,  # noqa: F401
    BaselineDominance,
    Retimed,  # noqa: F401
    SeedSpread,
    baseline_dominance,
    resolve_tolerance,
)
from crossrec.search.objectives import Evaluation
from crossrec.search.space import Architecture


def dominates(a: Sequence[float], b: Sequence[float], maximize: Sequence[bool]) -> bool:
    """True if ``a`` is no worse than ``b`` everywhere and better somewhere.

    >>> dominates([0.8, 1.0], [0.7, 2.0], [True, False]), dominates([0.8, 3.0], [0.7, 2.0], [True, False])
    (True, False)
    """
    better = False
    for x, y, up in zip(a, b, maximize):
        if (x < y) if up else (x > y):
            return False
        better = better or x != y
    return better


def non_dominated_sort(values: Sequence[Sequence[float]], maximize: Sequence[bool]) -> list[list[int]]:
    """Indices by Pareto rank: ``[first front, second front, ...]`` (Deb et al. 2002).

    >>> non_dominated_sort([[0.8, 1.0], [0.7, 2.0], [0.9, 3.0]], [True, False])
    [[0, 2], [1]]
    """
    v = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    sign = np.where(np.asarray(maximize, dtype=bool), -1.0, 1.0)  # minimize everything
    w = v * sign
    no_worse = (w[:, None, :] <= w[None, :, :]).all(axis=2)
    strictly = (w[:, None, :] < w[None, :, :]).any(axis=2)
    dom = no_worse & strictly  # dom[i, j]: i dominates j
    count = dom.sum(axis=0)
    fronts, remaining = [], np.ones(len(v), dtype=bool)
    while remaining.any():
        front = np.flatnonzero(remaining & (count == 0))
        fronts.append(front.tolist())
        remaining[front] = False
        count = count - dom[front].sum(axis=0)
        count[~remaining] = -1
    return fronts


def hypervolume_2d(points: Sequence[tuple[float, float]], reference: tuple[float, float]) -> float:
    """Area dominated by ``(auc, latency_ms)`` points up to ``reference = (auc_ref, latency_ref_ms)``,
    in AUC x decades of speed-up (``log10(latency_ref / latency)``): latencies span orders of magnitude.

    >>> hypervolume_2d([(0.8, 1.0), (0.7, 0.1)], reference=(0.6, 10.0))  # 1x0.2 + 2x0.1 - overlap 1x0.1
    0.3
    """
    auc_ref, lat_ref = reference
    check(lat_ref > 0, "hypervolume_2d", "reference", reference, "a latency > 0 ms")
    pts = sorted(((math.log10(lat_ref / lat), auc - auc_ref) for auc, lat in points if lat > 0), reverse=True)
    area, best = 0.0, 0.0
    for x, y in pts:
        if x > 0 and y > best:
            area += x * (y - best)
            best = y
    return round(area, 12)


@dataclass(frozen=True, kw_only=True)
class Candidate(Config):
    """One evaluated candidate: the trial, its choices, architecture, objectives and saved artifact
    (a path relative to the front file's folder, or None)."""

    key: str
    trial: int | None = None
    choices: dict[str, Any] = field(default_factory=dict)
    arch: Architecture
    evaluation: Evaluation
    artifact: str | None = None

    def latency(self, device: str) -> float | None:
        return self.evaluation.latency_ms.get(device)


@dataclass(frozen=True, kw_only=True)
class Pick(Config):
    """A cross-hardware pick: one architecture, and per device the index (into the candidates) of its
    variant to deploy there; no members when nothing meets the floor."""

    kind: str
    members: dict[str, int]
    score: float | None
    auc_floor: float | None
    detail: str = ""


@dataclass(frozen=True, kw_only=True)
class ParetoFront(Config):
    """Every candidate of a search, the indices of each device's front (fastest first), the
    baseline per device, hypervolume per device (reference recorded) and the cross-hardware picks.

    >>> from crossrec.models.spec import ModelSpec, TableSpec
    >>> spec = ModelSpec(num_dense=1, tables=(TableSpec(name="a", num_embeddings=5),), embedding_dim=4,
    ...                  bottom_mlp=(4,), top_mlp=(8,))
    >>> def cand(auc, ms):
    ...     ev = Evaluation(auc=auc, auc_uncompressed=auc, model_bytes=100, latency_ms={"cpu": ms},
    ...                     latency_source={"cpu": "modeled"}, energy_per_1k_j={"cpu": ms}, train_steps=1, train_s=0)
    ...     return Candidate(key=str(auc), arch=Architecture(spec=spec, features=("a",)), evaluation=ev)
    >>> front = build_front([cand(0.8, 2.0), cand(0.7, 3.0), cand(0.75, 1.0)], devices=("cpu",))
    >>> [front.candidates[i].evaluation.auc for i in front.fronts["cpu"]]
    [0.75, 0.8]
    >>> ParetoFront.from_json(front.to_json()) == front
    True
    """

    devices: tuple[str, ...]
    objectives: tuple[str, ...] = ("auc", "latency")
    candidates: tuple[Candidate, ...]
    fronts: dict[str, tuple[int, ...]]
    baseline: dict[str, Candidate] = field(default_factory=dict)
    hypervolume: dict[str, float] = field(default_factory=dict)
    reference: dict[str, tuple[float, ...]] = field(default_factory=dict)  # (auc_ref, latency_ref_ms)
    picks: dict[str, Pick] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    dominance: dict[str, BaselineDominance] = field(default_factory=dict)
    baseline_spread: dict[str, SeedSpread] = field(default_factory=dict)

    def members(self, device: str) -> list[Candidate]:
        """The front of ``device``, fastest first."""
        check(device in self.fronts, "ParetoFront", "device", device, f"one of {list(self.fronts)}")
        return [self.candidates[i] for i in self.fronts[device]]

    def sources(self, device: str) -> list[str]:
        """The latency sources used on ``device`` by candidates and baselines (e.g. ``["measured"]``), sorted."""
        every = (*self.candidates, *self.baseline.values())
        return sorted({c.evaluation.latency_source.get(device, "unsupported") for c in every} - {"unsupported"})

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json() + "\n")
        return path

    @staticmethod
    def load(path: str | Path) -> ParetoFront:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"front file {path} does not exist; run `crossrec search CONFIG` first")
        try:
            return ParetoFront.from_dict(json.loads(path.read_text()))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} is not valid JSON ({exc})") from None


def _device_front(candidates: Sequence[Candidate], device: str, with_bytes: bool) -> tuple[int, ...]:
    idx = [i for i, c in enumerate(candidates) if c.latency(device) is not None]
    if not idx:
        return ()
    rows = [[candidates[i].evaluation.auc, candidates[i].latency(device)]
            + ([candidates[i].evaluation.model_bytes] if with_bytes else []) for i in idx]
    first = non_dominated_sort(rows, [True, False, False][: len(rows[0])])[0]
    return tuple(sorted((idx[k] for k in first), key=lambda i: (candidates[i].latency(device), i)))


def _variants(candidates: Sequence[Candidate], devices: Sequence[str],
              auc_floor: float | None) -> dict[str, dict[str, int]]:
    """Per trained architecture (spec + features), per device: its fastest variant at the floor.

    A model is trained once and quantized per device at deployment, so a cross-hardware pick is an
    architecture, deployed on each device in the fastest precision the search measured for it there.
    """
    best: dict[str, dict[str, int]] = {}
    for i, c in enumerate(candidates):
        if auc_floor is not None and c.evaluation.auc < auc_floor:
            continue
        arch = json.dumps({"spec": c.arch.spec.to_dict(), "features": list(c.arch.features)}, sort_keys=True)
        per = best.setdefault(arch, {})
        for d in devices:
            if c.latency(d) is not None and (d not in per or c.latency(d) < candidates[per[d]].latency(d)):
                per[d] = i
    return {a: per for a, per in best.items() if all(d in per for d in devices)}


def minmax_pick(candidates: Sequence[Candidate], devices: Sequence[str], auc_floor: float | None) -> Pick:
    """The architecture whose worst slowdown across ``devices`` (latency / that device's fastest
    architecture at the floor) is smallest; ``members[device]`` = the variant to deploy there."""
    options = _variants(candidates, devices, auc_floor)
    if not options:
        return Pick(kind="minmax", members={}, score=None, auc_floor=auc_floor,
                    detail="no architecture runs on every device at this AUC floor")
    fastest = {d: min(candidates[per[d]].latency(d) for per in options.values()) for d in devices}
    score = {a: max(candidates[per[d]].latency(d) / fastest[d] for d in devices) for a, per in options.items()}
    arch = min(options, key=lambda a: (score[a], sorted(options[a].values())))
    return Pick(kind="minmax", members=options[arch], score=score[arch], auc_floor=auc_floor,
                detail="worst slowdown vs each device's fastest architecture at the floor")


def weighted_pick(candidates: Sequence[Candidate], weights: dict[str, float], auc_floor: float | None) -> Pick:
    """The architecture with the smallest deployment-weighted mean latency (ms; weights = traffic shares)."""
    used = {d: w for d, w in weights.items() if w > 0}
    options = _variants(candidates, list(used), auc_floor) if used else {}
    if not options:
        return Pick(kind="weighted", members={}, score=None, auc_floor=auc_floor,
                    detail="no architecture runs on every weighted device at this AUC floor")
    total = sum(used.values())
    score = {a: sum(w * candidates[per[d]].latency(d) for d, w in used.items()) / total for a, per in options.items()}
    arch = min(options, key=lambda a: (score[a], sorted(options[a].values())))
    return Pick(kind="weighted", members=options[arch], score=score[arch], auc_floor=auc_floor,
                detail="mean latency (ms) weighted by " + json.dumps(used, sort_keys=True))


def build_front(candidates: Sequence[Candidate], *, devices: Sequence[str], objectives: Sequence[str] = ("auc",
                "latency"), baseline: dict[str, Candidate] | None = None, auc_floor: float | None = None,
                weights: dict[str, float] | None = None, reference: dict[str, tuple[float, float]] | None = None,
                info: dict[str, Any] | None = None, auc_tolerance: float | str | None = None,
                baseline_spread: dict[str, SeedSpread] | None = None, min_speedup: float = 2.0) -> ParetoFront:
    """Fronts, hypervolumes, picks and dominance of the baseline of ``candidates`` (see the module docstring).

    ``auc_floor`` defaults to the lowest baseline AUC (None without a baseline); ``weights``
    default to equal traffic on every device; ``reference[device]`` defaults to the worst AUC
    and the slowest latency seen there. ``auc_tolerance`` (a number, ``"auto"`` with
    ``baseline_spread``, or None) and ``min_speedup`` shape :func:`baseline_dominance`.
    """
    candidates, baseline = tuple(candidates), dict(baseline or {})
    if auc_floor is None and baseline:
        auc_floor = min(b.evaluation.auc for b in baseline.values())
    fronts = {d: _device_front(candidates, d, "bytes" in objectives) for d in devices}
    refs, hv = {}, {}
    for d in devices:
        pts = [(c.evaluation.auc, c.latency(d)) for c in candidates if c.latency(d) is not None]
        if not pts:
            continue
        refs[d] = tuple((reference or {}).get(d) or (min(a for a, _ in pts), max(t for _, t in pts)))
        hv[d] = hypervolume_2d(pts, refs[d])  # type: ignore[arg-type]
    picks = {"minmax": minmax_pick(candidates, devices, auc_floor),
             "weighted": weighted_pick(candidates, weights or dict.fromkeys(devices, 1.0), auc_floor)}
    spread = dict(baseline_spread or {})
    dominance = {}
    for d in devices:
        if d in baseline:
            tol, origin = resolve_tolerance(auc_tolerance, spread.get(d))
            dominance[d] = baseline_dominance(candidates, baseline[d], d, among=fronts[d], min_speedup=min_speedup,
                                              auc_tolerance=tol, tolerance_from=origin)
    return ParetoFront(devices=tuple(devices), objectives=tuple(objectives), candidates=candidates, fronts=fronts,
                       baseline=baseline, hypervolume=hv, reference=refs, picks=picks, info=dict(info or {}),
                       dominance=dominance, baseline_spread=spread)


def choose(front: ParetoFront, device: str, pick: str | int = "fastest-within",
           auc_floor: float | None = None) -> Candidate:
    """A candidate of ``front``: ``"fastest-within"`` (fastest member of ``device``'s front with AUC >=
    the floor: ``auc_floor``, else the baseline's AUC there, else the best AUC), ``"most-accurate"``,
    ``"minmax"``/``"weighted"`` (the cross-hardware picks) or an index into the device's front.

    >>> from crossrec.models.spec import ModelSpec, TableSpec
    >>> spec = ModelSpec(num_dense=1, tables=(TableSpec(name="a", num_embeddings=5),), embedding_dim=4,
    ...                  bottom_mlp=(4,), top_mlp=(8,))
    >>> def cand(key, auc, ms):
    ...     ev = Evaluation(auc=auc, auc_uncompressed=auc, model_bytes=1, latency_ms={"cpu": ms},
    ...                     latency_source={"cpu": "measured"}, energy_per_1k_j={}, train_steps=1, train_s=0)
    ...     return Candidate(key=key, arch=Architecture(spec=spec, features=("a",)), evaluation=ev)
    >>> front = build_front([cand("a", 0.80, 3.0), cand("b", 0.78, 1.0), cand("c", 0.79, 2.0)], devices=("cpu",))
    >>> choose(front, "cpu", auc_floor=0.785).key, choose(front, "cpu", "most-accurate").key
    ('c', 'a')
    """
    members = front.members(device)
    if isinstance(pick, int) and not isinstance(pick, bool):
        check(-len(members) <= pick < len(members), "front_member", "pick", pick,
              f"an index into {device}'s {len(members)} members")
        return members[pick]
    if pick in front.picks:
        chosen = front.picks[pick]
        if device not in chosen.members:
            raise ConfigError(f"pick {pick!r} has no variant for {device}: {chosen.detail}")
        return front.candidates[chosen.members[device]]
    if not members:
        raise ConfigError(f"{device} has no front members: no candidate can run there")
    if pick == "most-accurate":
        return max(members, key=lambda c: c.evaluation.auc)
    check(pick == "fastest-within", "front_member", "pick", pick,
          f"'fastest-within', 'most-accurate', {', '.join(map(repr, front.picks))} or an index")
    if auc_floor is None:
        base = front.baseline.get(device)
        auc_floor = base.evaluation.auc if base is not None else max(c.evaluation.auc for c in members)
    within = [c for c in members if c.evaluation.auc >= auc_floor]
    if not within:
        raise ConfigError(f"no member of {device}'s front reaches AUC {auc_floor:.5f}; best is "
                          f"{max(c.evaluation.auc for c in members):.5f}: lower auc_floor or search longer")
    return within[0]  # members are sorted fastest first


def front_member(front_path: str | Path, device: str, pick: str | int = "fastest-within", *,
                 auc_floor: float | None = None) -> tuple[Path, Any]:
    """``(artifact directory, compression choice)`` of a front member, for ``crossrec compress``.

    The artifact is the member's trained float model (schema cut to its kept features, see
    :func:`crossrec.search.project_data`); the :class:`~crossrec.hardware.features.CompressionChoice`
    is the compression the search measured (``choice.to_configs()`` for ``compress_``).
    """
    front_path = Path(front_path)
    cand = choose(ParetoFront.load(front_path), device, pick, auc_floor)
    if cand.artifact is None:
        raise ArtifactError(f"candidate {cand.key} has no saved artifact: rerun the search with save_artifacts: true")
    path = front_path.parent / cand.artifact
    if not (path / "manifest.json").is_file():
        raise ArtifactError(f"{path} (candidate {cand.key}) is missing; was the search folder moved or pruned?")
    return path, cand.arch.compression
