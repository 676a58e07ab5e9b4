"""`CudaRuntime`: a CTRModel on a CUDA GPU with fp16/bf16 dense compute and fp16 tables.

``load(model, device="cuda")`` picks it. The caller's model is left as it is: a copy moves to
the GPU, where every dense layer (MLPs, interaction, cross network) is cast to ``dtype``
(``model.compute_dtype`` too, so the interaction runs in it) and every fp32 table to
``table_dtype`` (``embedding_bag`` accumulates in fp32 and returns ``table_dtype``; the model
casts once to ``dtype``). Logistic regression (``interaction="lr"``) keeps its one dense layer
in fp32. Compressed models run if their blocks have CUDA kernels: fp16/bf16 tables and
:class:`~crossrec.models.BF16Linear` do; FBGEMM row-wise int8/int4/int2 tables and
:class:`~crossrec.models.Int8DynamicLinear` are CPU-only ops and raise :class:`ConfigError`.
``compile=True`` wraps the GPU model in ``torch.compile`` (inductor, Triton kernels); ``compile_mode`` is its
``mode``: ``"reduce-overhead"`` adds CUDA graphs (one graph replay per call instead of one launch per kernel).

Without a CUDA device it raises :class:`BackendError`; its tests live in ``tests/gpu``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from crossrec.config import check
from crossrec.errors import BackendError, ConfigError
from crossrec.models.quantized import Int8DynamicLinear, QuantizedEmbeddingBag
from crossrec.models.static_int8 import Int8StaticMLP
from crossrec.runtime.base import Runtime, register_runtime
from crossrec.runtime.compiled import _make_cache_room

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
_TABLES = ("embedding", "first_order", "project")  # run in table_dtype; everything else in dtype
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # torch.compile's


def cuda_blockers(model: nn.Module) -> list[str]:
    """``"name (why)"`` for every module of ``model`` that has no CUDA kernel."""
    out = []
    for name, m in model.named_modules():
        if isinstance(m, QuantizedEmbeddingBag) and m.precision not in DTYPES:
            out.append(f"{name} (QuantizedEmbeddingBag {m.precision}: FBGEMM row-wise ops are CPU-only here)")
        elif isinstance(m, Int8DynamicLinear):
            out.append(f"{name} (Int8DynamicLinear: quantized::linear_dynamic is CPU-only)")
        elif isinstance(m, Int8StaticMLP):
            out.append(f"{name} (Int8StaticMLP: quantized::linear_relu is CPU-only)")
    return out


@register_runtime
class CudaRuntime(Runtime):
    """A copy of the model on a CUDA device in ``dtype`` / ``table_dtype`` (see the module docstring).

    >>> from crossrec.runtime import load
    >>> rt = load(model, device="cuda", dtype="bf16")  # doctest: +SKIP
    >>> rt.predict(batch)  # probabilities on the CPU  # doctest: +SKIP
    """

    name = "cuda"
    devices = ("cuda",)

    def __init__(self, model: nn.Module, device: torch.device, *, dtype: str = "bf16", table_dtype: str = "fp16",
                 compile: bool = False, compile_mode: str = "default"):
        super().__init__(model, device)
        check(dtype in DTYPES, "CudaRuntime", "dtype", dtype, f"one of {tuple(DTYPES)}")
        check(table_dtype in DTYPES, "CudaRuntime", "table_dtype", table_dtype, f"one of {tuple(DTYPES)}")
        check(compile_mode in COMPILE_MODES, "CudaRuntime", "compile_mode", compile_mode, f"one of {COMPILE_MODES}")
        if not torch.cuda.is_available():
            raise BackendError("runtime 'cuda' needs a CUDA device, and torch.cuda.is_available() is False "
                               f"(torch {torch.__version__}); use runtime='eager' or 'compiled' on the CPU")
        blockers = cuda_blockers(model)
        if blockers:
            raise ConfigError(f"cannot run {self.spec.name!r} on CUDA: {'; '.join(blockers)}; use a variant with "
                              "fp16/bf16 tables and bf16 dense layers, or a CPU runtime")
        m = copy.deepcopy(model).eval()
        # LR has no dense part worth casting, and CTRModel runs it before the compute_dtype cast.
        dense_dtype = torch.float32 if self.spec.interaction == "lr" else DTYPES[dtype]
        for name, child in m.named_children():
            child.to(DTYPES[table_dtype] if name in _TABLES else dense_dtype)
        if m.bias is not None:
            m.bias.data = m.bias.data.to(dense_dtype)
        m.compute_dtype = dense_dtype
        self.model = m.to(device)
        if compile:  # room in Dynamo's per-code-object cache, else a 9th compiled model silently runs eager
            _make_cache_room()
        self._fn = torch.compile(self.model, mode=compile_mode) if compile else self.model
        self.info.update(dtype=dtype, table_dtype=table_dtype, compile=compile,
                         compile_mode=compile_mode if compile else None,
                         gpu=torch.cuda.get_device_name(device))

    def __call__(self, dense: torch.Tensor, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        d = self.device
        with torch.inference_mode():
            return self._fn(dense.to(d, non_blocking=True), ids.to(d, non_blocking=True),
                            offsets.to(d, non_blocking=True))
