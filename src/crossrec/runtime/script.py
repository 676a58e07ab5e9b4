"""`ScriptRuntime`: TorchScript trace + freeze + ``optimize_for_inference`` — the small-batch CPU path.

At batch 1 an eager CTRModel is ~25 small ops, and Python dispatch is most of its latency. A
traced, frozen graph runs them from C++ with the weights folded in as constants (oneDNN prepacks
the fp32 Linear weights, conv/linear + ReLU fuse): measured here at batch 1 on one thread, fp32
2.1x and int8 tables + int8 dynamic MLPs 3.4x faster than eager fp32 (BENCHMARKS.md §4). torch
2.13 marks ``torch.jit`` deprecated in favour of ``torch.compile``/``torch.export``, but inductor
was slower than eager at batch 1 here, so this runtime stays until a replacement is measured
faster; the deprecation warnings are silenced once, here, and said so in ``info``.

Tracing records one path through ``forward``. CTRModel's Python branches depend only on the model
(never on the batch), and every size is read from the inputs, so one trace serves every batch size
and jagged layout — and the runtime *checks* that at load time: the traced graph must reproduce
eager outputs on a jagged probe batch (empty and multi-hot bags, a batch size other than the trace's)
to ``atol`` on the logits (default 1e-4, or 5e-2 for models that compute in bf16/fp16, whose fused
ops round differently), else :class:`BackendError`. Compressed variants trace too (FBGEMM row-wise tables, bf16 and int8
dynamic/static Linear layers). The caller's model is left as it is, except that ``hugepages=True``
first moves its large tables into transparent huge pages (:mod:`crossrec.models.hugepages`).
"""

from __future__ import annotations

import time
import warnings

import torch
from torch import nn

from crossrec.data.batch import Batch
from crossrec.errors import BackendError
from crossrec.models.hugepages import advise_tables_
from crossrec.runtime.base import Runtime, register_runtime


def probe_batch(num_dense: int, num_embeddings: tuple[int, ...], batch_size: int = 5, seed: int = 0) -> Batch:
    """A jagged batch with empty and multi-hot bags (ids valid for every table), for equivalence checks."""
    g = torch.Generator().manual_seed(seed)
    f = len(num_embeddings)
    lengths = torch.randint(0, 3, (batch_size * f,), generator=g)
    rows = torch.tensor(num_embeddings).repeat(batch_size).repeat_interleave(lengths)
    ids = (torch.rand(int(lengths.sum()), generator=g) * rows).long()
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    return Batch(dense=torch.randn(batch_size, num_dense, generator=g), ids=ids, offsets=offsets, num_sparse=f)


@register_runtime
class ScriptRuntime(Runtime):
    """A traced, frozen TorchScript copy of the model (see the module docstring).

    >>> import torch
    >>> from crossrec.models import ModelSpec, TableSpec, build
    >>> spec = ModelSpec(num_dense=2, tables=(TableSpec(name="a", num_embeddings=5),), embedding_dim=4,
    ...                  bottom_mlp=(4,), top_mlp=(8,))
    >>> model = build(spec, seed=0)
    >>> rt = ScriptRuntime(model, torch.device("cpu"))
    >>> batch = Batch.from_one_hot(torch.zeros(3, 2), torch.tensor([[0], [3], [4]]))
    >>> torch.allclose(rt.predict(batch), model.predict_proba(batch), atol=1e-6), rt.info["checked_on"]
    (True, 'jagged probe batch of 5')
    """

    name = "script"

    def __init__(self, model: nn.Module, device: torch.device, *, optimize: bool = True, atol: float | None = None,
                 hugepages: bool = False):
        super().__init__(model, device)
        if atol is None:  # logits: fp32 graphs agree to rounding; bf16 ones to bf16's ~3 digits (fused ops reorder)
            low = getattr(model, "compute_dtype", torch.float32) != torch.float32 or any(
                p.dtype in (torch.bfloat16, torch.float16) for p in model.parameters())
            atol = 5e-2 if low else 1e-4
        if device.type != "cpu":
            raise BackendError(f"runtime 'script' runs on the CPU here, not {device}; use 'cuda' on a GPU")
        model.eval()
        # large tables into transparent huge pages first (in place), so the frozen graph's constants are them
        self.info["hugepages_bytes"] = advise_tables_(model) if hugepages else 0
        nums = tuple(t.num_embeddings for t in self.spec.tables)
        example = probe_batch(self.spec.num_dense, nums, batch_size=1, seed=1)
        probe = probe_batch(self.spec.num_dense, nums)
        t0 = time.perf_counter()
        with warnings.catch_warnings(), torch.inference_mode():
            # torch.jit's deprecation and tracer warnings (the trace is verified below instead)
            warnings.simplefilter("ignore")
            try:
                traced = torch.jit.trace(model, (example.dense, example.ids, example.offsets), check_trace=False)
                fn = torch.jit.freeze(traced.eval())
                if optimize:
                    fn = torch.jit.optimize_for_inference(fn)
            except Exception as exc:  # tracing failures come in many types; all mean "cannot script"
                raise BackendError(f"TorchScript could not trace {self.spec.name!r}: {type(exc).__name__}: "
                                   f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}; use runtime "
                                   "'eager' or 'compiled'") from exc
            want = model(probe.dense, probe.ids, probe.offsets)
            got = fn(probe.dense, probe.ids, probe.offsets)
        err = float((want.float() - got.float()).abs().max()) if want.shape == got.shape else float("inf")
        if not err <= atol:
            raise BackendError(f"the traced {self.spec.name!r} differs from eager on a jagged probe batch (max |diff| "
                               f"{err:.3g} > atol {atol}): its forward depends on the batch in a way tracing cannot "
                               "record; use runtime 'eager' or 'compiled'")
        self._fn = fn
        self.info.update(optimize=optimize, trace_s=round(time.perf_counter() - t0, 3), max_abs_diff=err,
                         checked_on=f"jagged probe batch of {probe.batch_size}",
                         note="torch.jit is deprecated in torch 2.13; its warnings are silenced here")

    def __call__(self, dense: torch.Tensor, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self._fn(dense, ids, offsets)
