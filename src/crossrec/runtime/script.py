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

Most CTR traffic has one id per bag. With ``one_hot=True`` (default) a second graph is traced with
the lookups specialised to that layout (:func:`crossrec.models.embedding.one_hot_layout`: ids
reshape to ``(B, F)`` and each table's row offset is a broadcast add, instead of expanding per-bag
lengths) and checked the same way on a one-hot probe batch; each call takes it when its offsets are
exactly ``0..B*F`` (one ``torch.equal``), else the general graph. Measured at batch 1 on one thread,
the jagged path's index arithmetic was ~25 of ~110 us of the int8 DLRM. The two graphs share the
weights (freezing folds the same tensors in as constants).
"""

from __future__ import annotations

import time
import warnings

import torch
from torch import nn

from crossrec.data.batch import Batch
from crossrec.errors import BackendError
from crossrec.models.embedding import one_hot_layout
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


def one_hot_probe(num_dense: int, num_embeddings: tuple[int, ...], batch_size: int, seed: int = 0) -> Batch:
    """A batch with one valid id per bag, for tracing and checking the one-hot graph."""
    g = torch.Generator().manual_seed(seed)
    ids = (torch.rand(batch_size, len(num_embeddings), generator=g) * torch.tensor(num_embeddings)).long()
    return Batch.from_one_hot(torch.randn(batch_size, num_dense, generator=g), ids)


_LINEAR_RELU = ("""graph(%x, %packed, %rr):
    %y = quantized::linear_dynamic(%x, %packed, %rr)
    %z = aten::relu(%y)
    return (%z)""", """graph(%x, %packed, %rr):
    %z = quantized::linear_relu_dynamic(%x, %packed, %rr)
    return (%z)""")


def _fuse_dynamic_linear_relu(fn) -> None:
    """Rewrite int8 dynamic Linear + ReLU into FBGEMM's fused op (one pass over the activations, one op
    dispatch fewer per layer). Uses TorchScript's pattern rewriter (a torch._C pass); the result is
    checked against eager like the rest of the graph, and if the pass is missing the graph stays as is."""
    rewrite = getattr(torch._C, "_jit_pass_custom_pattern_based_rewrite_graph", None)
    if rewrite is not None:
        rewrite(*_LINEAR_RELU, fn.graph)


def _drop_packed_caches(model: nn.Module) -> None:
    """Forget int8 Linear layers' cached prepacked weights (rebuilt from their buffers on next use):
    a trace records the packing from the buffers, and an object packed inside one trace cannot be
    used by the next one ("not part of the active trace")."""
    for m in model.modules():
        if hasattr(m, "_packed"):
            m._packed = None


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
    (True, 'jagged probe batch of 5, one-hot probe batch of 5')
    """

    name = "script"

    def __init__(self, model: nn.Module, device: torch.device, *, optimize: bool = True, atol: float | None = None,
                 hugepages: bool = False, one_hot: bool = True):
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
        self._features = len(nums)
        t0 = time.perf_counter()
        self._fn = self._trace(model, probe_batch(self.spec.num_dense, nums, batch_size=1, seed=1),
                               probe_batch(self.spec.num_dense, nums), optimize, atol, "jagged")
        self._one_hot_fn = None
        if one_hot and nums:
            with one_hot_layout(model):
                self._one_hot_fn = self._trace(model, one_hot_probe(self.spec.num_dense, nums, 1, seed=1),
                                               one_hot_probe(self.spec.num_dense, nums, 5), optimize, atol,
                                               "one-hot")
        self._arange: dict[int, torch.Tensor] = {}
        self.info.update(optimize=optimize, trace_s=round(time.perf_counter() - t0, 3),
                         checked_on="jagged probe batch of 5" + (", one-hot probe batch of 5" if one_hot else ""),
                         one_hot_graph=self._one_hot_fn is not None,
                         note="torch.jit is deprecated in torch 2.13; its warnings are silenced here")

    def _trace(self, model: nn.Module, example: Batch, probe: Batch, optimize: bool, atol: float, kind: str):
        """Trace + freeze (+ optimize) ``model`` on ``example``; the graph must match eager on ``probe``."""
        _drop_packed_caches(model)  # packed weights made in an earlier trace belong to that trace
        with warnings.catch_warnings(), torch.inference_mode():
            # torch.jit's deprecation and tracer warnings (the trace is verified below instead)
            warnings.simplefilter("ignore")
            try:
                traced = torch.jit.trace(model, (example.dense, example.ids, example.offsets), check_trace=False)
                fn = torch.jit.freeze(traced.eval())
                if optimize:
                    fn = torch.jit.optimize_for_inference(fn)
                    _fuse_dynamic_linear_relu(fn)
            except Exception as exc:  # tracing failures come in many types; all mean "cannot script"
                raise BackendError(f"TorchScript could not trace {self.spec.name!r}: {type(exc).__name__}: "
                                   f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}; use runtime "
                                   "'eager' or 'compiled'") from exc
            _drop_packed_caches(model)
            want = model(probe.dense, probe.ids, probe.offsets)
            got = fn(probe.dense, probe.ids, probe.offsets)
        err = float((want.float() - got.float()).abs().max()) if want.shape == got.shape else float("inf")
        if not err <= atol:
            raise BackendError(f"the traced {self.spec.name!r} differs from eager on a {kind} probe batch (max |diff| "
                               f"{err:.3g} > atol {atol}): its forward depends on the batch in a way tracing cannot "
                               "record; use runtime 'eager' or 'compiled'")
        self.info["max_abs_diff"] = max(err, self.info.get("max_abs_diff", 0.0))
        return fn

    def _is_one_hot(self, b: int, ids: torch.Tensor, offsets: torch.Tensor) -> bool:
        n = b * self._features
        if ids.numel() != n or offsets.numel() != n + 1:
            return False
        ref = self._arange.get(n)
        if ref is None or ref.dtype != offsets.dtype:
            ref = torch.arange(n + 1, dtype=offsets.dtype)
            if len(self._arange) < 64:  # a few batch sizes recur; don't grow without bound
                self._arange[n] = ref
        return torch.equal(offsets, ref)

    def __call__(self, dense: torch.Tensor, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        # No inference_mode switch per call: the frozen graphs hold no tensor that requires grad.
        if self._one_hot_fn is not None and self._is_one_hot(int(dense.shape[0]), ids, offsets):
            return self._one_hot_fn(dense, ids, offsets)
        return self._fn(dense, ids, offsets)
