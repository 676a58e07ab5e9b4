"""Quantized building blocks: row-wise quantized / half-precision tables and int8 / bf16 Linear.

The compression toolkit (issue #3) applies these; they only hold data and run PyTorch's own kernels:

- :class:`QuantizedEmbeddingBag` — one (fused) table in ``fp32``, ``fp16``, ``bf16`` (F.embedding_bag,
  which accumulates in fp32 on CPU) or FBGEMM row-wise ``int8`` (fp32 scale+bias per row), ``int4``
  and ``int2`` (fp16 scale+bias per row) via ``torch.ops.quantized.embedding_bag_*_rowwise_offsets``.
- :class:`BF16Linear` (oneDNN bf16 matmul, ~3x MKL fp32 on AVX512-BF16, DESIGN.md §5) and
  :class:`Int8DynamicLinear` (int8 per-output-channel weights, activations quantized per call by
  ``quantized::linear_dynamic``; numerically the same as ``quantize_dynamic`` with a per-channel qconfig).
- :func:`quantize_dense_` / :func:`quantize_embeddings_` swap these into a :class:`CTRModel` in place.

Everything a module needs lives in plain tensor buffers (uint8 / int8 / half / bfloat16), so
``state_dict()`` saves with safetensors; ``empty(...)`` builds correctly shaped buffers to
``load_state_dict`` into when restoring without the float weights. Loading a tensor of another
dtype is an error instead of a silent cast.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from crossrec.config import check
from crossrec.errors import ConfigError

if TYPE_CHECKING:
    from crossrec.models.ctr import CTRModel

PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16", "int8", "int4", "int2")
DENSE_MODES: tuple[str, ...] = ("bf16", "int8")
_FLOAT = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# FBGEMM row-wise formats: op-name infix, values per byte, bytes of scale+bias appended to each row.
_ROWWISE = {"int8": ("byte", 1, 8), "int4": ("4bit", 2, 4), "int2": ("2bit", 4, 4)}


def _values_per_byte(precision: str) -> int:
    return _ROWWISE[precision][1] if precision in _ROWWISE else 1


def check_precision(precision: str, dim: int, owner: str = "QuantizedEmbeddingBag") -> None:
    """Raise :class:`ConfigError` unless ``precision`` is known and can store rows of width ``dim``.

    >>> check_precision("int4", 3)
    Traceback (most recent call last):
    ...
    crossrec.errors.ConfigError: QuantizedEmbeddingBag.precision = 'int4' is invalid: 'int4' packs 2 values \
per byte and needs dim % 2 == 0, got dim=3; for dim 3 use one of ('fp32', 'fp16', 'bf16', 'int8')
    """
    check(precision in PRECISIONS, owner, "precision", precision, f"one of {PRECISIONS}")
    per = _values_per_byte(precision)
    fits = tuple(p for p in PRECISIONS if dim % _values_per_byte(p) == 0)
    check(dim % per == 0, owner, "precision", precision,
          f"{precision!r} packs {per} values per byte and needs dim % {per} == 0, got dim={dim}; "
          f"for dim {dim} use one of {fits}")


def storage_layout(num_rows: int, dim: int, precision: str) -> tuple[tuple[int, int], torch.dtype]:
    """Shape and dtype of the buffer holding a ``num_rows x dim`` table in ``precision``.

    >>> storage_layout(10, 16, "int8"), storage_layout(10, 16, "int4")
    (((10, 24), torch.uint8), ((10, 12), torch.uint8))
    """
    check_precision(precision, dim)
    if precision in _FLOAT:
        return (num_rows, dim), _FLOAT[precision]
    _, per, extra = _ROWWISE[precision]
    return (num_rows, dim // per + extra), torch.uint8


def _rowwise_op(precision: str, kind: str):
    return getattr(torch.ops.quantized, f"embedding_bag_{_ROWWISE[precision][0]}_{kind}")


class _StrictDtype(nn.Module):
    """Refuses to load a buffer of another dtype (``copy_`` would cast a bf16 table into fp16 silently)."""

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        for name, buf in self._buffers.items():
            got = state_dict.get(prefix + name)
            if buf is not None and isinstance(got, torch.Tensor) and got.dtype != buf.dtype:
                error_msgs.append(f"{prefix}{name}: {type(self).__name__} ({self.extra_repr()}) stores "
                                  f"{buf.dtype}, the state dict has {got.dtype}; rebuild the module for that layout")
                return
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


class QuantizedEmbeddingBag(_StrictDtype):
    """A sum-pooled table stored in ``precision``; same semantics as
    ``nn.EmbeddingBag(mode="sum", include_last_offset=True)``, output float32.

    ``weight`` is the packed buffer: ``(rows, dim)`` fp32/fp16/bf16, or uint8 rows of FBGEMM's
    row-wise layout — ``dim`` int8 codes + fp32 scale + fp32 bias (int8), ``dim/2`` bytes + fp16
    scale + fp16 bias (int4), ``dim/4`` bytes + fp16 scale + bias (int2).

    >>> w = torch.randn(10, 8)
    >>> q = QuantizedEmbeddingBag.from_float(w, "int8")
    >>> ids, offsets = torch.tensor([1, 2, 9]), torch.tensor([0, 2, 2, 3])  # bags {1, 2}, {}, {9}
    >>> out = q(ids, offsets)
    >>> out.shape, out.dtype, q.weight.shape
    (torch.Size([3, 8]), torch.float32, torch.Size([10, 16]))
    >>> ref = nn.functional.embedding_bag(ids, w, offsets, mode="sum", include_last_offset=True)
    >>> bool((out - ref).abs().max() < 0.05)
    True
    """

    def __init__(self, num_rows: int, dim: int, precision: str, *, packed: torch.Tensor | None = None):
        super().__init__()
        shape, dtype = storage_layout(num_rows, dim, precision)
        if packed is None:
            packed = torch.zeros(shape, dtype=dtype)
        elif tuple(packed.shape) != shape or packed.dtype != dtype:
            raise ConfigError(f"QuantizedEmbeddingBag: packed must be {dtype} of shape {shape} for {num_rows} rows "
                              f"of dim {dim} in {precision}, got {packed.dtype} {tuple(packed.shape)}")
        self.num_rows, self.dim, self.precision = num_rows, dim, precision
        self.register_buffer("weight", packed)

    @classmethod
    def empty(cls, num_rows: int, dim: int, precision: str) -> QuantizedEmbeddingBag:
        """Zero-filled buffers of the right shape and dtype, to ``load_state_dict`` into."""
        return cls(num_rows, dim, precision)

    @classmethod
    def from_float(cls, weight: torch.Tensor, precision: str) -> QuantizedEmbeddingBag:
        """Convert a float ``(rows, dim)`` table (row-wise min/max quantization for the int formats)."""
        if weight.dim() != 2:
            raise ConfigError(f"QuantizedEmbeddingBag.from_float: weight must be 2-D (rows, dim), "
                              f"got shape {tuple(weight.shape)}")
        rows, dim = weight.shape
        check_precision(precision, dim)
        w = weight.detach().to("cpu", torch.float32).contiguous()
        packed = w.to(_FLOAT[precision], copy=True) if precision in _FLOAT else _rowwise_op(precision, "prepack")(w)
        return cls(rows, dim, precision, packed=packed)

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:  # -> (len(offsets)-1, dim)
        if self.precision in _ROWWISE:
            return _rowwise_op(self.precision, "rowwise_offsets")(self.weight, ids, offsets, mode=0,
                                                                   include_last_offset=True)
        # fp16/bf16: the CPU kernel accumulates in fp32 and rounds the pooled sum once; measured as
        # fast as int8 and ~5x faster than gathering and upcasting the rows first.
        out = F.embedding_bag(ids, self.weight, offsets, mode="sum", include_last_offset=True)
        return out.float()

    def dequantize(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Rows ``start:stop`` as a float32 ``(n, dim)`` tensor."""
        part = self.weight[start:stop]
        if self.precision in _ROWWISE:
            return _rowwise_op(self.precision, "unpack")(part)
        return part.float()

    def extra_repr(self) -> str:
        return f"{self.num_rows}, {self.dim}, precision={self.precision!r}"


class BF16Linear(_StrictDtype):
    """``nn.Linear`` with bf16 weight and bias buffers (oneDNN bf16 GEMM inside): fp32 in -> fp32 out,
    bf16 in -> bf16 out (so a model computing in bf16 casts once, not per layer).

    >>> lin = nn.Linear(8, 4)
    >>> x = torch.randn(3, 8)
    >>> bool((BF16Linear.from_float(lin)(x) - lin(x)).abs().max() < 0.05)
    True
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.bfloat16))
        self.register_buffer("bias", torch.zeros(out_features, dtype=torch.bfloat16) if bias else None)

    @classmethod
    def empty(cls, in_features: int, out_features: int, bias: bool = True) -> BF16Linear:
        """Zero buffers of the right shape and dtype, to ``load_state_dict`` into."""
        return cls(in_features, out_features, bias)

    @classmethod
    def from_float(cls, linear: nn.Linear) -> BF16Linear:
        """Round ``linear``'s weight and bias to bf16."""
        m = cls(linear.in_features, linear.out_features, linear.bias is not None)
        with torch.no_grad():
            m.weight.copy_(linear.weight)
            if linear.bias is not None:
                m.bias.copy_(linear.bias)
        return m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x.to(self.weight.dtype), self.weight, self.bias)
        return y if x.dtype == self.weight.dtype else y.float()  # bf16 in (a bf16 model) stays bf16

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


@contextmanager
def _quantized_tensor_api():
    # torch 2.13 deprecates creating qint8 tensors, but linear_prepack still takes one; the packing
    # happens once per module, so the warning says nothing useful to a crossrec user.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions", category=UserWarning)
        yield


def _tensor_key(t: torch.Tensor | None) -> tuple[int, int]:
    if t is None:
        return (0, 0)
    return (t.data_ptr(), -1 if t.is_inference() else t._version)


class Int8DynamicLinear(_StrictDtype):
    """``nn.Linear`` with int8 per-output-channel symmetric weights, fp32 ``scale`` per row and fp32 bias.

    Activations are quantized per call (per tensor, 7-bit range as ``quantize_dynamic`` does on
    x86) by ``quantized::linear_dynamic``. Its prepacked weight is built lazily from the buffers
    and cached outside the state dict; it is rebuilt when a buffer changes.

    >>> lin = nn.Linear(8, 4)
    >>> q = Int8DynamicLinear.from_float(lin)
    >>> q.weight.dtype, q.scale.dtype
    (torch.int8, torch.float32)
    >>> x = torch.randn(3, 8)
    >>> bool((q(x) - lin(x)).abs().max() < 0.05)
    True
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("scale", torch.ones(out_features, dtype=torch.float32))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self._packed: tuple[tuple, object] | None = None

    @classmethod
    def empty(cls, in_features: int, out_features: int, bias: bool = True) -> Int8DynamicLinear:
        """Zero weights / unit scales of the right shape and dtype, to ``load_state_dict`` into."""
        return cls(in_features, out_features, bias)

    @classmethod
    def from_float(cls, linear: nn.Linear) -> Int8DynamicLinear:
        """Quantize ``linear`` with the scales of ``PerChannelMinMaxObserver(qscheme=per_channel_symmetric)``."""
        w = linear.weight.detach().to("cpu", torch.float32)
        # Same arithmetic as the observer: max(|min|, |max|) / ((127 - -128) / 2), at least eps.
        amax = torch.maximum(-w.amin(dim=1).clamp(max=0), w.amax(dim=1).clamp(min=0))
        scale = torch.clamp(amax / 127.5, min=torch.finfo(torch.float32).eps)
        m = cls(linear.in_features, linear.out_features, linear.bias is not None)
        with _quantized_tensor_api(), torch.no_grad():
            q = torch.quantize_per_channel(w, scale.double(), torch.zeros_like(scale, dtype=torch.int64), 0,
                                           torch.qint8)
            m.weight.copy_(q.int_repr())
            m.scale.copy_(scale)
            if linear.bias is not None:
                m.bias.copy_(linear.bias)
        return m

    def _packed_params(self):
        key = (torch.backends.quantized.engine, _tensor_key(self.weight), _tensor_key(self.scale),
               _tensor_key(self.bias))
        if self._packed is None or self._packed[0] != key:
            scale = self.scale.double()
            with _quantized_tensor_api(), torch.no_grad():
                # Re-quantizing q * s with scale s returns q exactly (|rounding error| << 0.5).
                qw = torch.quantize_per_channel(self.weight.float() * self.scale[:, None], scale,
                                                torch.zeros_like(scale, dtype=torch.int64), 0, torch.qint8)
                packed = torch.ops.quantized.linear_prepack(qw, self.bias)
            self._packed = (key, packed)
        return self._packed[1]

    # Dynamo cannot pass the packed weight (a TorchScript object) through a graph, so under
    # torch.compile this layer runs eager between compiled regions, as quantize_dynamic's modules do.
    @torch.compiler.disable
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.linear_dynamic(x.float(), self._packed_params(), True)

    def _load_from_state_dict(self, *args, **kwargs):
        self._packed = None
        super()._load_from_state_dict(*args, **kwargs)

    def __getstate__(self):  # the packed weight is a cache: never copy or pickle it
        return {**self.__dict__, "_packed": None}

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def quantize_dense_(model: nn.Module, mode: str, *, empty: bool = False) -> nn.Module:
    """Replace every ``nn.Linear`` in ``model`` by :class:`BF16Linear` (``"bf16"``) or
    :class:`Int8DynamicLinear` (``"int8"``), in place; ``empty=True`` builds the layout only (for restore).

    >>> from crossrec.models.spec import ModelSpec, TableSpec
    >>> from crossrec.models.ctr import build
    >>> model = build(ModelSpec(num_dense=2, tables=(TableSpec(name="a", num_embeddings=5),), embedding_dim=4,
    ...                         bottom_mlp=(4,), top_mlp=(8,)), seed=0)
    >>> type(quantize_dense_(model, "int8").top[0]).__name__
    'Int8DynamicLinear'
    """
    check(mode in DENSE_MODES, "quantize_dense_", "mode", mode, f"one of {DENSE_MODES}")
    cls = {"bf16": BF16Linear, "int8": Int8DynamicLinear}[mode]
    if isinstance(model, nn.Linear):
        raise ConfigError(f"quantize_dense_ replaces Linear layers inside a model; for a lone Linear use "
                          f"{cls.__name__}.from_float(linear)")
    targets = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    for name, lin in targets:
        parent_name, _, attr = name.rpartition(".")
        new = cls.empty(lin.in_features, lin.out_features, lin.bias is not None) if empty else cls.from_float(lin)
        setattr(model.get_submodule(parent_name), attr, new)
    if mode == "bf16" and hasattr(model, "compute_dtype"):
        model.compute_dtype = torch.bfloat16  # run the interaction in bf16 too, not just the GEMMs
    return model


def first_order_precision(precision: str) -> str:
    """Precision for a table's first-order (dim 1) weights: row-wise int formats need dim % 2 or 4 == 0,
    and int8 adds 8 bytes of scale+bias to every 1-value row (9 bytes vs 4 in fp32), so they become fp16."""
    check(precision in PRECISIONS, "first_order_precision", "precision", precision, f"one of {PRECISIONS}")
    return precision if precision in _FLOAT else "fp16"


def _per_table(precisions: str | dict[str, str], names: list[str]) -> list[str]:
    if isinstance(precisions, str):
        return [precisions] * len(names)
    unknown = sorted(set(precisions) - set(names))
    check(not unknown, "quantize_embeddings_", "precisions", unknown, f"keys must be table names: {names}")
    return [precisions.get(n, "fp32") for n in names]


def quantize_embeddings_(model: CTRModel, precisions: str | dict[str, str], *, first_order: str = "auto",
                         empty: bool = False) -> CTRModel:
    """Store ``model``'s tables in ``precisions`` (one for all, or table name -> precision; unnamed
    tables stay fp32), in place. ``first_order="auto"`` maps each table's precision through
    :func:`first_order_precision` for FM/LR first-order weights; any other value applies to all of them.
    ``empty=True`` builds the layout only, to ``load_state_dict`` a compressed model into.

    >>> from crossrec.models.spec import ModelSpec, TableSpec
    >>> from crossrec.models.ctr import build, parameter_bytes
    >>> spec = ModelSpec(num_dense=0, tables=(TableSpec(name="a", num_embeddings=100),
    ...     TableSpec(name="b", num_embeddings=100)), embedding_dim=16, bottom_mlp=(), top_mlp=(8,))
    >>> model = build(spec, seed=0)
    >>> before = parameter_bytes(model.embedding)
    >>> after = parameter_bytes(quantize_embeddings_(model, {"a": "int8", "b": "int4"}).embedding)
    >>> before, after  # 200*16*4 -> 100*(16+8) + 100*(8+4)
    (12800, 3600)
    """
    names = [t.name for t in model.spec.tables]
    per_table = _per_table(precisions, names)
    for name, dim, p in zip(names, model.spec.dims(), per_table):
        check_precision(p, dim, owner=f"quantize_embeddings_[table {name!r}]")
    if first_order != "auto":
        check(first_order in PRECISIONS, "quantize_embeddings_", "first_order", first_order,
              f"'auto' or one of {PRECISIONS}")
    if model.embedding is not None:
        model.embedding = model.embedding.quantized(per_table, empty=empty)
    if model.first_order is not None:
        fo = [first_order_precision(p) if first_order == "auto" else first_order for p in per_table]
        model.first_order = model.first_order.quantized(fo, empty=empty)
    return model
