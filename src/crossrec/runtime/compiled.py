"""`CompiledRuntime`: ``torch.compile(model, backend="inductor")`` on the CPU.

Inductor generates C++/OpenMP kernels for the dense part (it needs a C++ compiler: gcc here);
the fused ``embedding_bag`` and the FBGEMM row-wise ops stay ATen calls, and
:class:`~crossrec.models.Int8DynamicLinear` runs eager between compiled regions (it is marked
``torch.compiler.disable``). Compiling happens on the first call of each new shape:

- ``dynamic=True`` (default): one graph symbolic in the batch size and the number of ids —
  batch 1 still gets its own graph (torch specializes sizes 0 and 1), so at most two compiles
  for every batch size and every jagged batch (whose id count varies call to call);
- ``dynamic=False``: one static graph per (batch size, id count) — fastest kernels, but a
  jagged workload recompiles on every new id count until torch's recompile limit falls back to eager;
- ``dynamic=None``: torch's "automatic dynamic" (static first, symbolic after a shape changes).

``freezing=True`` sets inductor's ``freezing`` (weights become constants, so oneDNN can prepack
them; the runtime then ignores later changes to the model's weights). ``mode`` passes through
to ``torch.compile`` (not with ``freezing``: torch takes one or the other).

Dynamo caches graphs per code object, so every compiled CTRModel in a process shares
``CTRModel.forward``'s cache; loading a compiled runtime raises dynamo's ``recompile_limit`` to
at least 64 so a handful of compiled variants never fall back to eager silently.

``warmup_batch_sizes`` compiles those (one-hot) batch sizes at load time, so the cost is paid
up front and recorded in ``info["compile_s"]`` (seconds of the first call per batch size; the
first call of any later new batch size is recorded too). If inductor fails (no compiler, an
unsupported op) and ``fallback=True``, the runtime warns, records the reason in
``info["fallback"]`` and runs eager; with ``fallback=False`` it raises :class:`BackendError`.
"""

from __future__ import annotations

import time
import warnings

import torch
from torch import nn

from crossrec.config import check
from crossrec.data.batch import Batch
from crossrec.errors import BackendError
from crossrec.runtime.base import Runtime, register_runtime

MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def example_batch(num_dense: int, num_tables: int, batch_size: int) -> Batch:
    """A one-hot batch of zeros: enough to trace or compile a model of that shape."""
    return Batch.from_one_hot(torch.zeros(batch_size, num_dense), torch.zeros(batch_size, num_tables,
                                                                             dtype=torch.int64))


def _make_cache_room(limit: int = 64) -> None:
    # Dynamo keeps its compiled graphs per *code object*: every CTRModel instance and every
    # torch.compile call adds entries for CTRModel.forward, and past `recompile_limit` (8) new
    # ones silently run eager. Several compiled variants in one process (profiling, serving)
    # pass 8 quickly, so raise the limit (never lower it).
    import torch._dynamo

    cfg = torch._dynamo.config
    name = "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"
    setattr(cfg, name, max(getattr(cfg, name), limit))


@register_runtime
class CompiledRuntime(Runtime):
    """``torch.compile`` with inductor; see the module docstring for the options.

    >>> import torch
    >>> from crossrec.models import ModelSpec, TableSpec, build
    >>> spec = ModelSpec(num_dense=2, tables=(TableSpec(name="a", num_embeddings=5),), embedding_dim=4,
    ...                  bottom_mlp=(4,), top_mlp=(8,))
    >>> rt = CompiledRuntime(build(spec, seed=0), torch.device("cpu"))
    >>> rt.info["dynamic"], rt.info["compile_s"]  # nothing compiled before the first call
    (True, {})
    """

    name = "compiled"

    def __init__(self, model: nn.Module, device: torch.device, *, dynamic: bool | None = True,
                 mode: str = "default", freezing: bool = False, warmup_batch_sizes: tuple[int, ...] = (),
                 fallback: bool = True):
        super().__init__(model, device)
        check(dynamic in (True, False, None), "CompiledRuntime", "dynamic", dynamic, "True, False or None")
        check(mode in MODES, "CompiledRuntime", "mode", mode, f"one of {MODES}")
        check(all(int(b) >= 1 for b in warmup_batch_sizes), "CompiledRuntime", "warmup_batch_sizes",
              warmup_batch_sizes, "batch sizes >= 1")
        model.eval()
        self.fallback = fallback
        _make_cache_room()
        check(not (freezing and mode != "default"), "CompiledRuntime", "mode", mode,
              "'default' when freezing=True (torch.compile takes a mode or inductor options, not both)")
        self._fn = torch.compile(model, backend="inductor", dynamic=dynamic, mode=None if mode == "default" else mode,
                                 options={"freezing": True} if freezing else None)
        self._seen: set[int] = set()
        self.info.update(dynamic=dynamic, mode=mode, freezing=freezing, compile_s={}, fallback=None)
        for bs in warmup_batch_sizes:
            b = example_batch(self.spec.num_dense, len(self.spec.tables), int(bs))
            self(b.dense, b.ids, b.offsets)

    def __call__(self, dense: torch.Tensor, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        bs = int(dense.shape[0])
        with torch.inference_mode():
            if bs in self._seen:
                return self._fn(dense, ids, offsets)
            t0 = time.perf_counter()
            try:
                out = self._fn(dense, ids, offsets)
            except Exception as exc:  # inductor/dynamo failures have many types; all mean "cannot compile"
                out = self._give_up(exc, dense, ids, offsets)
            self._seen.add(bs)
            self.info["compile_s"][bs] = round(time.perf_counter() - t0, 3)
            return out

    def _give_up(self, exc: Exception, dense, ids, offsets) -> torch.Tensor:
        reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:400]
        if not self.fallback:
            raise BackendError(f"torch.compile (inductor) failed on {self.spec.name!r}: {reason}; inductor needs a "
                               "C++ compiler on PATH; pass fallback=True to run eager instead") from exc
        warnings.warn(f"torch.compile (inductor) failed, running eager instead: {reason}", RuntimeWarning,
                      stacklevel=3)
        self.info["fallback"] = reason
        self._fn = self.model
        return self.model(dense, ids, offsets)
