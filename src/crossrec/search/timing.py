"""How the search times models on the local CPU: on a :mod:`crossrec.runtime` runtime, over distinct batches.

- :func:`load_runtime`: the model on the configured CPU runtime (TorchScript by default), or on eager when
  that runtime cannot run it (a trace that fails, or disagrees with eager on the probe batch) — with the
  reason, which the candidate's evaluation records.
- :class:`OwnBatches`: a runtime that calls itself on *its own* batches, in turn, whatever batch the
  profiler hands it. Candidates read different feature subsets from the same rows, so this is how a
  candidate and the baseline are timed round-robin in one :func:`~crossrec.hardware.profile_many` run.
- :func:`time_models`: one such run; the profiler is injected (same signature as ``profile_many``), so
  tests replace it with a fake that records what it was asked to time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from crossrec.data.batch import Batch
from crossrec.errors import ConfigError, CrossrecError
from crossrec.hardware.profile import Profile, profile_many

Profiler = Callable[..., dict[str, Profile]]  # crossrec.hardware.profile_many's signature


def load_runtime(model: Any, runtime: str, options: dict[str, Any] | None = None) -> tuple[Any, str, str | None]:
    """``(runtime object, its name, why it fell back or None)``: ``model`` on ``runtime`` with ``options``, or
    on ``eager`` (without options) when ``runtime`` cannot run it.

    >>> from crossrec.models import ModelSpec, TableSpec, build
    >>> spec = ModelSpec(num_dense=2, tables=(TableSpec(name="a", num_embeddings=5),), embedding_dim=4,
    ...                  bottom_mlp=(4,), top_mlp=(8,))
    >>> rt, name, why = load_runtime(build(spec, seed=0), "script")
    >>> type(rt).__name__, name, why
    ('ScriptRuntime', 'script', None)
    """
    from crossrec.runtime import load

    try:
        return load(model, runtime, **(options or {})), runtime, None
    except (CrossrecError, RuntimeError) as exc:  # BackendError: trace failed or disagrees; torch: RuntimeError
        if runtime == "eager":
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return load(model, "eager"), "eager", (f"{runtime} could not run it ({type(exc).__name__}: {first}); "
                                               "timed on eager")


class OwnBatches:
    """Call ``fn(dense, ids, offsets)`` on ``batches`` in turn, ignoring the batch the profiler passes.

    >>> import torch
    >>> b = [Batch.from_one_hot(torch.full((2, 1), float(v)), torch.zeros(2, 1, dtype=torch.long)) for v in (1, 2)]
    >>> f = OwnBatches(lambda d, i, o: d.sum(), b)
    >>> [float(f(None, None, None)) for _ in range(3)]
    [2.0, 4.0, 2.0]
    """

    def __init__(self, fn: Callable[..., Any], batches: Sequence[Batch]):
        self.fn, self.calls = fn, 0
        self.inputs = [(b.dense, b.ids, b.offsets) for b in batches]

    def __call__(self, *_ignored: Any) -> Any:
        args = self.inputs[self.calls % len(self.inputs)]
        self.calls += 1
        return self.fn(*args)


def time_models(models: dict[str, tuple[Any, Sequence[Batch]]], *, warmup: int, repeats: int, block: int,
                threads: int | None, profiler: Profiler = profile_many,
                clock: Callable[[], float] = time.perf_counter) -> dict[str, Profile]:
    """Time ``models`` (name -> (runtime, its batches)) round-robin in one profiler run: ``block`` calls of each
    per round, the first model rotating, until each has ``repeats`` timed calls after ``warmup``; every model
    cycles through its own batches (all of one batch size).

    >>> import torch
    >>> b = [Batch.from_one_hot(torch.zeros(4, 1), torch.zeros(4, 1, dtype=torch.long))]
    >>> p = time_models({"a": (lambda d, i, o: d, b), "b": (lambda d, i, o: d, b)}, warmup=0, repeats=4, block=2,
    ...                 threads=None)
    >>> len(p["a"].at(4).latencies_ms), p["a"].interleaved_with
    (4, ('b',))
    """
    sizes = {b.batch_size for _, batches in models.values() for b in batches}
    if len(sizes) != 1:
        raise ConfigError(f"time_models times one batch size per run, got batches of sizes {sorted(sizes)}; "
                          "give every model batches of the same size")
    size = sizes.pop()
    first = next(iter(models.values()))[1]
    bound = {name: OwnBatches(rt, batches) for name, (rt, batches) in models.items()}
    # the profiler's own batches only set the size and the call count: each model reads its own
    return profiler(bound, lambda _bs: list(first), batch_sizes=(size,), warmup=warmup, repeats=repeats,
                    block=block, threads=threads, clock=clock)


def round_speedups(base: Sequence[float], other: Sequence[float], block: int) -> tuple[float, ...]:
    """Per round of a round-robin run: median of the baseline's block / median of the other's block.

    >>> round_speedups([4.0, 4.0, 6.0, 6.0], [2.0, 2.0, 2.0, 3.0], block=2)
    (2.0, 2.4)
    """
    import statistics

    n = min(len(base), len(other)) // block
    return tuple(round(statistics.median(base[r * block:(r + 1) * block])
                       / statistics.median(other[r * block:(r + 1) * block]), 6) for r in range(n))
