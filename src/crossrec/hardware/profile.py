"""`profile()` / `profile_many()`: measured latency and throughput of a model per batch size.

A model is called as ``model(dense, ids, offsets)`` under ``torch.inference_mode()`` in eval
mode. Each batch size gets ``warmup`` untimed calls per model, then timed calls until every
model has at least ``repeats`` of them *and* ``min_time_s`` of measured time (capped at
``max_repeats``). :func:`profile_many` runs its models **round-robin** — ``block`` consecutive
calls of each per round, the starting model rotating every round — so machine noise (other jobs
on shared cores, frequency changes) falls on every variant alike; report speed-ups as ratios
between profiles of the same run (DESIGN.md §4). Every model sees the same batches at a batch size.

``block=1`` alternates models call by call: each call then starts with caches (weights, table
rows, the thread pool) disturbed by another model, which slows small models most. A deployed
variant runs back to back, so ``block`` of 5-10 with several distinct batches (``make_batch``
may return a list: calls cycle through it, so lookups do not hit the same rows every call) is
the closer picture; benchmarks report which they used.

The clock is injected (``clock=time.perf_counter``) so tests drive it by hand. Results are
frozen records labelled ``source="measured"`` that round-trip through JSON.

>>> import torch
>>> from crossrec.data import Batch
>>> from crossrec.models import ModelSpec, TableSpec, build
>>> spec = ModelSpec(num_dense=2, tables=(TableSpec(name="a", num_embeddings=5),), embedding_dim=4,
...                  bottom_mlp=(4,), top_mlp=(8,))
>>> make = lambda b: Batch.from_one_hot(torch.zeros(b, 2), torch.zeros(b, 1, dtype=torch.long))
>>> p = profile(build(spec), make, batch_sizes=(1, 8), warmup=1, repeats=3)
>>> [bp.batch_size for bp in p.batches], p.source, Profile.from_json(p.to_json()) == p
([1, 8], 'measured', True)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from crossrec.config import Config, check
from crossrec.errors import ConfigError

if TYPE_CHECKING:  # torch is imported on first use, not with this module
    from crossrec.data.batch import Batch


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), linear between order statistics (numpy's default).

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50), percentile([1.0, 2.0, 3.0, 4.0], 99)
    (2.5, 3.97)
    """
    check(len(values) > 0, "percentile", "values", values, "at least one value")
    check(0 <= q <= 100, "percentile", "q", q, "in [0, 100]")
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@dataclass(frozen=True, kw_only=True)
class BatchProfile(Config):
    """Timed calls at one batch size; ``samples_per_s`` = batch size x calls / total time.

    >>> bp = BatchProfile.from_latencies(4, [1.0, 2.0, 3.0, 4.0])
    >>> bp.p50_ms, bp.mean_ms, bp.samples_per_s
    (2.5, 2.5, 1600.0)
    """

    batch_size: int
    latencies_ms: tuple[float, ...]
    p50_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    samples_per_s: float

    def __post_init__(self) -> None:
        check(self.batch_size >= 1, "BatchProfile", "batch_size", self.batch_size, ">= 1")
        check(len(self.latencies_ms) >= 1, "BatchProfile", "latencies_ms", self.latencies_ms, "at least one timing")

    @staticmethod
    def from_latencies(batch_size: int, latencies_ms: Sequence[float]) -> BatchProfile:
        lat = tuple(float(x) for x in latencies_ms)
        check(len(lat) >= 1, "BatchProfile", "latencies_ms", lat, "at least one timing")
        total_s = sum(lat) / 1e3
        return BatchProfile(batch_size=batch_size, latencies_ms=lat, p50_ms=percentile(lat, 50),
                            p99_ms=percentile(lat, 99), mean_ms=sum(lat) / len(lat), min_ms=min(lat),
                            samples_per_s=batch_size * len(lat) / total_s if total_s > 0 else math.inf)


@dataclass(frozen=True, kw_only=True)
class Profile(Config):
    """Measured profile of one model on one device; ``interleaved_with`` names the models that
    were measured round-robin with it (only ratios against those are noise-fair)."""

    name: str
    device: str
    batches: tuple[BatchProfile, ...]
    threads: int
    interop_threads: int
    torch_version: str
    warmup: int
    interleaved_with: tuple[str, ...] = ()
    source: Literal["measured"] = "measured"

    def __post_init__(self) -> None:
        check(self.source == "measured", f"Profile({self.name})", "source", self.source, "'measured'")

    def at(self, batch_size: int) -> BatchProfile:
        """The entry for ``batch_size``; ConfigError listing the measured sizes if absent."""
        for bp in self.batches:
            if bp.batch_size == batch_size:
                return bp
        raise ConfigError(f"profile {self.name!r} has no batch size {batch_size}; measured: "
                          f"{[bp.batch_size for bp in self.batches]}")


def _check_args(models: dict, batch_sizes: Sequence[int], warmup: int, repeats: int, min_time_s: float,
                max_repeats: int, threads: int | None) -> None:
    own = "profile"
    check(len(models) >= 1, own, "models", list(models), "at least one model")
    check(len(batch_sizes) >= 1 and all(int(b) >= 1 for b in batch_sizes), own, "batch_sizes", batch_sizes,
          "one or more sizes >= 1")
    check(warmup >= 0, own, "warmup", warmup, ">= 0")
    check(repeats >= 1, own, "repeats", repeats, ">= 1")
    check(min_time_s >= 0, own, "min_time_s", min_time_s, ">= 0")
    check(max_repeats >= repeats, own, "max_repeats", max_repeats, f">= repeats ({repeats})")
    check(threads is None or threads >= 1, own, "threads", threads, ">= 1 or None (keep torch's setting)")


def _same_device(have, want) -> bool:
    """``cuda:0`` is on ``cuda`` (the current device, 0 unless changed): an unindexed device matches any index of
    its type, as ``Tensor.to("cuda")`` puts it there.

    >>> from torch import device as d
    >>> _same_device(d("cuda:0"), d("cuda")), _same_device(d("cpu"), d("cuda")), _same_device(d("cuda:1"), d("cuda:0"))
    (True, False, False)
    """
    return have.type == want.type and (want.index is None or have.index == want.index)


def _check_device(name: str, model, device) -> None:
    param = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
    if param is not None and not _same_device(param.device, device):
        raise ConfigError(f"model {name!r} lives on {param.device}, profiling was asked on {device}; "
                          f"move it first with model.to({str(device)!r})")


def _round_robin(models: dict, batches: Sequence[Batch], *, warmup: int, repeats: int, min_time_s: float,
                 max_repeats: int, clock: Callable[[], float], sync: Callable[[], None],
                 block: int = 1) -> dict[str, list[float]]:
    """Latencies (ms) per model; ``block`` calls of each model per round, rotating who goes first,
    cycling through ``batches`` (every model sees the same sequence)."""
    names = list(models)
    inputs = [(b.dense, b.ids, b.offsets) for b in batches]
    for name in names:
        for i in range(warmup):
            models[name](*inputs[i % len(inputs)])
    sync()
    times: dict[str, list[float]] = {n: [] for n in names}
    spent = dict.fromkeys(names, 0.0)
    r = 0
    while True:
        enough = all(len(times[n]) >= repeats and spent[n] >= min_time_s for n in names)
        if enough or len(times[names[0]]) >= max_repeats:
            return times
        k = r % len(names)
        for name in names[k:] + names[:k]:
            for j in range(block):
                args = inputs[(r * block + j) % len(inputs)]
                t0 = clock()
                models[name](*args)
                sync()
                t1 = clock()
                times[name].append((t1 - t0) * 1e3)
                spent[name] += t1 - t0
        r += 1


def profile_many(models: dict, make_batch: Callable[[int], Batch | Sequence[Batch]], *,
                 batch_sizes: Sequence[int], device: str = "cpu", threads: int | None = None, warmup: int = 5,
                 repeats: int = 30, min_time_s: float = 0.0, max_repeats: int = 100_000, block: int = 1,
                 clock: Callable[[], float] = time.perf_counter) -> dict[str, Profile]:
    """Profile several models round-robin (see the module docstring); one :class:`Profile` each.

    ``make_batch(bs)`` returns one Batch of ``bs`` rows or a list of them (cycled through);
    ``block`` is the number of consecutive calls of one model per round.

    Models must already live on ``device``; each is put in eval mode and restored afterwards.
    ``threads`` sets ``torch.set_num_threads`` for the run (restored afterwards).

    >>> import torch
    >>> from crossrec.data.batch import Batch
    >>> make = lambda b: Batch.from_one_hot(torch.zeros(b, 2), torch.zeros(b, 1, dtype=torch.long))
    >>> models = {"small": lambda d, i, o: d.sum(1), "big": lambda d, i, o: (d @ torch.ones(2, 64)).sum(1)}
    >>> p = profile_many(models, make, batch_sizes=(1, 8), repeats=3)
    >>> p["big"].at(8).samples_per_s > 0, p["small"].interleaved_with, p["small"].source
    (True, ('big',), 'measured')
    """
    import torch

    _check_args(models, batch_sizes, warmup, repeats, min_time_s, max_repeats, threads)
    check(block >= 1, "profile", "block", block, ">= 1 (consecutive calls of one model per round)")
    dev = torch.device(device)
    for name, model in models.items():
        _check_device(name, model, dev)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    training = {n: m.training for n, m in models.items() if hasattr(m, "training")}
    old_threads = torch.get_num_threads()
    per_model: dict[str, list[BatchProfile]] = {n: [] for n in models}
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        used_threads = torch.get_num_threads()
        for m in models.values():
            if hasattr(m, "eval"):
                m.eval()
        with torch.inference_mode():
            for bs in batch_sizes:
                made = make_batch(int(bs))
                batches = [made] if hasattr(made, "batch_size") else list(made)
                check(len(batches) >= 1 and all(b.batch_size == bs for b in batches), "profile", "make_batch",
                      f"make_batch({bs}) -> {[b.batch_size for b in batches]} rows",
                      f"a Batch (or a non-empty list of them) of exactly {bs} rows")
                times = _round_robin(models, [b.to(dev) for b in batches], warmup=warmup, repeats=repeats,
                                     min_time_s=min_time_s, max_repeats=max_repeats, clock=clock, sync=sync,
                                     block=block)
                for name, lat in times.items():
                    per_model[name].append(BatchProfile.from_latencies(int(bs), lat))
    finally:
        torch.set_num_threads(old_threads)
        for n, was in training.items():
            models[n].train(was)
    return {n: Profile(name=n, device=str(dev), batches=tuple(bps), threads=used_threads,
                       interop_threads=torch.get_num_interop_threads(), torch_version=torch.__version__,
                       warmup=warmup, interleaved_with=tuple(o for o in models if o != n))
            for n, bps in per_model.items()}


def profile(model, make_batch: Callable[[int], Batch], *, batch_sizes: Sequence[int], device: str = "cpu",
            threads: int | None = None, warmup: int = 5, repeats: int = 30, min_time_s: float = 0.0,
            max_repeats: int = 100_000, clock: Callable[[], float] = time.perf_counter,
            name: str = "model") -> Profile:
    """Profile one model (see :func:`profile_many` and the module docstring for the example)."""
    return profile_many({name: model}, make_batch, batch_sizes=batch_sizes, device=device, threads=threads,
                        warmup=warmup, repeats=repeats, min_time_s=min_time_s, max_repeats=max_repeats,
                        clock=clock)[name]
