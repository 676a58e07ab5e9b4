"""Pruning methods (issue #3): MLP neurons, unstructured magnitude, 2:4 semi-structured, embedding rows.

Every method yields a structure that ``restore`` rebuilds from the config and ``model.spec`` alone
(no data), so an artifact's tensors load into it with their shapes checked:

- :class:`StructuredPruneConfig` removes whole hidden neurons of the bottom/top MLPs — genuinely
  smaller ``nn.Linear`` layers, the only kind of pruning that makes a CPU faster. The kept width of
  every layer is ``max(1, round(width * (1 - ratio)))``, so it follows from the shapes.
- :class:`MagnitudePruneConfig` / :class:`SemiStructuredConfig` zero weights inside the Linear layers
  and store them as :class:`SparseLinear` (kept values + a 1-bit mask): a smaller artifact, *not* a
  faster CPU model — the forward densifies the weight once and runs the dense GEMM (measured faster
  than ``torch.sparse`` CSR matmul at these sparsities, see :class:`SparseLinear`). The number of
  kept weights per layer follows from the shapes and the config.
- :class:`EmbeddingRowPruneConfig` drops rarely looked-up table rows and remaps ids
  (:class:`RemappedEmbeddingBag`); pruned ids read a shared zero row of their table.

Prune *before* quantizing: pruning reads float ``nn.Linear`` / fp32 tables and refuses quantized ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune as torch_prune

from crossrec.compress.base import CompressContext, CompressionConfig, register
from crossrec.config import check
from crossrec.data.dataset import CTRData
from crossrec.errors import ConfigError
from crossrec.models.embedding import FusedEmbeddingBag
from crossrec.models.quantized import BF16Linear, Int8DynamicLinear, _StrictDtype
from crossrec.train.loop import TrainConfig, train

IMPORTANCES = ("l1", "taylor")
STRUCTURED_LAYERS = ("mlp", "top", "bottom")
SPARSE_SCOPES = ("mlp", "all")
SPARSE_PRECISIONS = ("fp32", "bf16")
ROW_RANKINGS = ("frequency", "norm")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
_TAYLOR_BATCH = 1024


def kept_width(width: int, ratio: float) -> int:
    """Neurons a layer of ``width`` keeps when pruned by ``ratio`` (what ``restore`` recomputes).

    >>> kept_width(64, 0.5), kept_width(3, 0.9)
    (32, 1)
    """
    return max(1, round(width * (1.0 - ratio)))


def kept_weights(numel: int, sparsity: float) -> int:
    """Weights an unstructured-pruned layer of ``numel`` weights keeps.

    >>> kept_weights(100, 0.9)
    10
    """
    return max(1, round(numel * (1.0 - sparsity)))


# ---------------------------------------------------------------------------------------------------- configs


@dataclass(frozen=True, kw_only=True)
class StructuredPruneConfig(CompressionConfig):
    """Remove the least important ``ratio`` of the hidden neurons of every hidden MLP layer, then fine-tune.

    - ``importance="l1"``: ``(||W_in[j]||_1 + |b_j|) * ||W_out[:, j]||_1`` — incoming times outgoing
      weight mass. The product is invariant to ReLU's rescaling symmetry (scaling a neuron's inputs by
      c and its outputs by 1/c leaves the model unchanged), which incoming norms alone are not.
    - ``importance="taylor"``: first-order Taylor estimate of the loss change when a neuron is removed,
      ``mean |a_j * dL/da_j|`` over ``ctx.calibration_batches`` batches of ``ctx.train_data``
      (Molchanov et al., ICLR 2017); needs training data.
    - ``layers``: ``"mlp"`` (bottom and top), ``"top"`` or ``"bottom"``. Interaction-facing widths
      stay: the bottom MLP's last width (== embedding_dim for dot/fm; the cross network's input
      otherwise) and the final ``Linear(.., 1)``.
    - ``finetune_epochs`` epochs of :func:`crossrec.train.train` follow on ``ctx.train_data`` (early
      stopping on ``ctx.val_data``; the pruned weights before fine-tuning compete too) with the settings
      of ``finetune`` (default ``TrainConfig(freeze_tables=True)``: pruning changed only the MLPs, and a
      second pass over the same rows overfit the 1.43 GB model's tables — 6.3% AUC lost; its own
      ``epochs`` is replaced by ``finetune_epochs``). Without training data it is skipped and
      ``ctx.log`` says so.

    >>> from crossrec.compress import compress_
    >>> from crossrec.data.synthetic import SyntheticConfig
    >>> from crossrec.models import ModelSpec, build
    >>> spec = ModelSpec.for_schema(SyntheticConfig(num_sparse=2, max_rows=10).schema(), embedding_dim=4,
    ...                             bottom_mlp=(16, 4), top_mlp=(32, 8))
    >>> model = compress_(build(spec, seed=0), StructuredPruneConfig(ratio=0.5))
    >>> [m.out_features for m in (*model.bottom, *model.top) if isinstance(m, nn.Linear)]
    [8, 4, 16, 4, 1]
    """

    ratio: float
    importance: str = "l1"
    layers: str = "mlp"
    finetune_epochs: int = 1
    finetune: TrainConfig | None = None

    def __post_init__(self) -> None:
        own = "StructuredPruneConfig"
        check(0 < self.ratio < 1, own, "ratio", self.ratio, "a fraction of neurons to remove in (0, 1), e.g. 0.5")
        check(self.importance in IMPORTANCES, own, "importance", self.importance, f"one of {IMPORTANCES}")
        check(self.layers in STRUCTURED_LAYERS, own, "layers", self.layers, f"one of {STRUCTURED_LAYERS}")
        check(self.finetune_epochs >= 0, own, "finetune_epochs", self.finetune_epochs, ">= 0 (0 = no fine-tuning)")


@dataclass(frozen=True, kw_only=True)
class MagnitudePruneConfig(CompressionConfig):
    """Zero the ``sparsity`` fraction of smallest-|w| weights of each Linear layer (per layer); store
    the rest as :class:`SparseLinear` (``precision`` values + a 1-bit mask).

    Exactly :func:`kept_weights` ``(numel, sparsity)`` weights stay per layer. ``scope="mlp"`` prunes the
    bottom and top MLPs, ``"all"`` every ``nn.Linear`` (cross layers, projections too). With
    ``finetune_epochs`` > 0 and ``ctx.train_data``, the masked model is fine-tuned before packing
    (``torch.nn.utils.prune`` keeps the zeros at zero). Smaller artifact, no CPU speed-up.

    >>> MagnitudePruneConfig(sparsity=0.8, scope="all").sparsity
    0.8
    """

    sparsity: float
    scope: str = "mlp"
    precision: str = "fp32"
    finetune_epochs: int = 0
    finetune: TrainConfig | None = None

    def __post_init__(self) -> None:
        own = "MagnitudePruneConfig"
        check(0 < self.sparsity < 1, own, "sparsity", self.sparsity, "a fraction of weights to zero in (0, 1)")
        _check_sparse_common(self, own)


@dataclass(frozen=True, kw_only=True)
class SemiStructuredConfig(CompressionConfig):
    """2:4 sparsity: in every group of 4 consecutive input weights of a row, keep the 2 largest |w|.

    Stored like :class:`MagnitudePruneConfig` (values + 1-bit mask: the same 4 bits per group of 4 as
    2-bit positions). On CPU this is about size only — no CPU kernel runs 2:4 faster. On NVIDIA
    Ampere+ GPUs a runtime may convert ``SparseLinear.dense_weight()`` with
    ``torch.sparse.to_sparse_semi_structured`` for sparse tensor-core GEMMs (not measured: no GPU here).
    A trailing group of r < 4 inputs keeps min(2, r).

    >>> SemiStructuredConfig().scope
    'mlp'
    """

    scope: str = "mlp"
    precision: str = "fp32"
    finetune_epochs: int = 0
    finetune: TrainConfig | None = None

    def __post_init__(self) -> None:
        _check_sparse_common(self, "SemiStructuredConfig")


def _check_sparse_common(config, own: str) -> None:
    check(config.scope in SPARSE_SCOPES, own, "scope", config.scope, f"one of {SPARSE_SCOPES}")
    check(config.precision in SPARSE_PRECISIONS, own, "precision", config.precision, f"one of {SPARSE_PRECISIONS}")
    check(config.finetune_epochs >= 0, own, "finetune_epochs", config.finetune_epochs, ">= 0 (0 = no fine-tuning)")


@dataclass(frozen=True, kw_only=True)
class EmbeddingRowPruneConfig(CompressionConfig):
    """Keep only the most important rows of each table; the others read one shared zero row.

    ``rank_by="frequency"`` keeps the rows looked up most often in ``ctx.train_data`` (ties, e.g. rows
    never seen, go to the larger L2 norm); ``"norm"`` keeps the largest-norm rows and needs no data.
    On small synthetic tables (40 and 400 rows) norm ranking lost as little AUC as frequency or less
    (e.g. keeping 75% of 40-row tables: -0.0002 vs -0.013); frequency is the usual choice for long-tailed
    real ids, where rare rows stay near their random initialization.

    Rows kept per table: ``kept_rows[name]`` if given, else ``max(1, round(rows * keep_ratio))``, else
    all. A pruned table stores its
    kept rows plus one zero row that every pruned id reads; an ``int32`` id map per table (4 bytes per
    original row) travels with it. Row counts must not depend on data (``restore`` has none), so a
    frequency threshold is turned into explicit counts first: :meth:`for_min_count`.

    >>> cfg = EmbeddingRowPruneConfig(keep_ratio=0.5, kept_rows={"C1": 3})
    >>> from crossrec.models.spec import TableSpec
    >>> cfg.rows_to_keep([TableSpec(name="C1", num_embeddings=10), TableSpec(name="C2", num_embeddings=10)])
    {'C1': 3, 'C2': 5}
    """

    keep_ratio: float | None = None
    kept_rows: dict[str, int] = field(default_factory=dict)
    rank_by: str = "frequency"

    def __post_init__(self) -> None:
        own = "EmbeddingRowPruneConfig"
        check(self.rank_by in ROW_RANKINGS, own, "rank_by", self.rank_by, f"one of {ROW_RANKINGS}")
        check(self.keep_ratio is not None or bool(self.kept_rows), own, "keep_ratio", self.keep_ratio,
              "a fraction in (0, 1] (or give kept_rows per table, e.g. from EmbeddingRowPruneConfig.for_min_count)")
        check(self.keep_ratio is None or 0 < self.keep_ratio <= 1, own, "keep_ratio", self.keep_ratio,
              "a fraction of rows to keep in (0, 1], or null")
        bad = {k: v for k, v in self.kept_rows.items() if not (isinstance(v, int) and v >= 1)}
        check(not bad, own, "kept_rows", bad, "table name -> rows to keep, each an integer >= 1")

    def rows_to_keep(self, tables: Sequence) -> dict[str, int]:
        """Rows kept per table name (never more than the table has)."""
        names = [t.name for t in tables]
        unknown = sorted(set(self.kept_rows) - set(names))
        check(not unknown, "EmbeddingRowPruneConfig", "kept_rows", unknown, f"names of the model's tables {names}")
        out = {}
        for t in tables:
            n = t.num_embeddings
            default = max(1, round(n * self.keep_ratio)) if self.keep_ratio is not None else n
            out[t.name] = min(n, self.kept_rows.get(t.name, default))
        return out

    @staticmethod
    def for_min_count(data: CTRData, min_count: int) -> EmbeddingRowPruneConfig:
        """Explicit ``kept_rows``: per table, the rows looked up at least ``min_count`` times in ``data``.

        >>> from crossrec.data.synthetic import SyntheticConfig, generate
        >>> cfg = EmbeddingRowPruneConfig.for_min_count(generate(SyntheticConfig(rows=200, num_sparse=2,
        ...                                             max_rows=50)), min_count=2)
        >>> sorted(cfg.kept_rows), all(1 <= v <= 50 for v in cfg.kept_rows.values())
        (['C1', 'C2'], True)
        """
        check(min_count >= 1, "EmbeddingRowPruneConfig.for_min_count", "min_count", min_count, ">= 1")
        counts = row_counts(data)
        return EmbeddingRowPruneConfig(kept_rows={f.name: max(1, int((c >= min_count).sum()))
                                                  for f, c in zip(data.schema.sparse, counts)})


# ------------------------------------------------------------------------------------------ shared helpers


def _finetune(model: nn.Module, epochs: int, settings: TrainConfig | None, ctx: CompressContext, what: str,
              default: TrainConfig | None = None) -> None:
    """Fine-tune with ``settings`` (else ``default``, else ``TrainConfig()``); the weights before
    fine-tuning compete too (``eval_first``), so a fine-tune that only hurts is undone."""
    if epochs == 0:
        return
    if ctx.train_data is None:
        ctx.log(f"{what}: no train_data in the CompressContext, skipped {epochs} fine-tuning epoch(s)")
        return
    cfg = dataclasses.replace(settings or default or TrainConfig(), epochs=epochs, eval_first=True)
    result = train(model, ctx.train_data, ctx.val_data, cfg)
    auc = f", validation AUC {result.best.auc:.4f}" if result.best is not None else ""
    ctx.log(f"{what}: fine-tuned {result.steps} steps{auc}")


def _not_linear(owner: str, where: str, module: nn.Module) -> ConfigError:
    return ConfigError(f"{owner}: {where} is a {type(module).__name__}, expected a float nn.Linear; prune before "
                       "quantizing or sparsifying (put the pruning step first in the PipelineConfig)")


def _mlps(model: nn.Module, which: str) -> list[tuple[str, nn.Sequential]]:
    names = {"mlp": ("bottom", "top"), "top": ("top",), "bottom": ("bottom",)}[which]
    return [(n, getattr(model, n)) for n in names if getattr(model, n, None) is not None]


# ------------------------------------------------------------------------------------------ structured (MLP)


def _hidden_pairs(model: nn.Module, layers: str) -> list[tuple[nn.Sequential, int, int]]:
    """(mlp, index of a hidden Linear, index of the Linear after it); each MLP's last Linear stays."""
    pairs = []
    for name, seq in _mlps(model, layers):
        for i, m in enumerate(seq):
            if not isinstance(m, (nn.Linear, nn.ReLU, nn.Dropout)):
                raise _not_linear("StructuredPruneConfig", f"{name}[{i}]", m)
        pos = [i for i, m in enumerate(seq) if isinstance(m, nn.Linear)]
        pairs += [(seq, a, b) for a, b in zip(pos[:-1], pos[1:])]
    if not pairs:
        spec = getattr(model, "spec", None)
        raise ConfigError(f"StructuredPruneConfig.layers = {layers!r} is invalid: the model has no hidden MLP layer "
                          f"there to prune (bottom_mlp={getattr(spec, 'bottom_mlp', None)}, "
                          f"top_mlp={getattr(spec, 'top_mlp', None)}); the last bottom width and the output stay")
    return pairs


def _l1_importance(seq: nn.Sequential, i: int, j: int) -> torch.Tensor:  # (out_i,)
    lin, nxt = seq[i], seq[j]
    incoming = lin.weight.detach().abs().sum(1)
    if lin.bias is not None:
        incoming = incoming + lin.bias.detach().abs()
    return incoming * nxt.weight.detach().abs().sum(0)


def _taylor_importance(model: nn.Module, pairs, ctx: CompressContext) -> list[torch.Tensor]:
    if ctx.train_data is None:
        raise ConfigError("StructuredPruneConfig.importance = 'taylor' needs data: pass "
                          "CompressContext(train_data=...) or use importance='l1'")
    sums = [torch.zeros(seq[i].out_features) for seq, i, _ in pairs]

    def hook(k):
        def on_output(_module, _inputs, out):  # out: (B, width) pre-ReLU; z * dL/dz == a * dL/da under ReLU
            def on_grad(grad: torch.Tensor) -> None:  # returns None: the gradient itself is left alone
                sums[k].add_((out.detach() * grad).abs().sum(0).float())

            out.register_hook(on_grad)
        return on_output

    handles = [seq[i].register_forward_hook(hook(k)) for k, (seq, i, _) in enumerate(pairs)]
    was, loss_fn = model.training, nn.BCEWithLogitsLoss(reduction="sum")  # sum: per-sample gradients
    model.eval()  # no dropout: score the network that will serve
    try:
        batches = ctx.train_data.batches(_TAYLOR_BATCH, shuffle=True, seed=ctx.seed)
        for _, batch in zip(range(max(1, ctx.calibration_batches)), batches):
            loss_fn(model(batch.dense, batch.ids, batch.offsets), batch.labels).backward()
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
        model.train(was)
    return sums


def _resize_pair(seq: nn.Sequential, i: int, j: int, width: int, keep: torch.Tensor | None) -> None:
    """Give ``seq[i]`` ``width`` outputs and ``seq[j]`` as many inputs; copy rows/columns ``keep`` if given."""
    lin, nxt = seq[i], seq[j]
    kw = {"dtype": lin.weight.dtype, "device": lin.weight.device}
    new_lin = nn.Linear(lin.in_features, width, bias=lin.bias is not None, **kw)
    new_nxt = nn.Linear(width, nxt.out_features, bias=nxt.bias is not None, **kw)
    if keep is not None:
        with torch.no_grad():
            new_lin.weight.copy_(lin.weight[keep])
            new_nxt.weight.copy_(nxt.weight[:, keep])
            if lin.bias is not None:
                new_lin.bias.copy_(lin.bias[keep])
            if nxt.bias is not None:
                new_nxt.bias.copy_(nxt.bias)
    seq[i], seq[j] = new_lin, new_nxt


@register(StructuredPruneConfig)
class _StructuredPrune:
    def apply(self, model: nn.Module, config: StructuredPruneConfig, ctx: CompressContext) -> None:
        pairs = _hidden_pairs(model, config.layers)
        # Score everything on the unpruned model first: removing layer i's neurons changes only the
        # *columns* of layer i+1, never the rows its own scores index.
        scores = _taylor_importance(model, pairs, ctx) if config.importance == "taylor" else \
            [_l1_importance(seq, i, j) for seq, i, j in pairs]
        for (seq, i, j), score in zip(pairs, scores):
            width = kept_width(seq[i].out_features, config.ratio)
            order = torch.argsort(score, descending=True, stable=True)  # ties: lower index first
            _resize_pair(seq, i, j, width, torch.sort(order[:width]).values)  # keep the original order
        _finetune(model, config.finetune_epochs, config.finetune, ctx, "StructuredPruneConfig",
                  default=TrainConfig(freeze_tables=True))

    def restore(self, model: nn.Module, config: StructuredPruneConfig) -> None:
        for seq, i, j in _hidden_pairs(model, config.layers):
            _resize_pair(seq, i, j, kept_width(seq[i].out_features, config.ratio), None)


# ------------------------------------------------------------------------------ unstructured / 2:4 storage


def _tensor_key(t: torch.Tensor | None) -> tuple[int, int]:
    if t is None:
        return (0, 0)
    return (t.data_ptr(), -1 if t.is_inference() else t._version)


def _bit_weights(device) -> torch.Tensor:
    return torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8, device=device)


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """Bool ``(out, in)`` -> uint8 ``(out, ceil(in / 8))``; bit k of byte b is column ``8 b + k``.

    >>> m = torch.tensor([[True, False, True, True, False, False, False, False, True]])
    >>> pack_mask(m).tolist(), bool((unpack_mask(pack_mask(m), 9) == m).all())
    ([[13, 1]], True)
    """
    rows, cols = mask.shape
    bits = F.pad(mask.to(torch.uint8), (0, (-cols) % 8)).view(rows, -1, 8)  # (out, bytes, 8)
    return (bits * _bit_weights(mask.device)).sum(-1).to(torch.uint8)


def unpack_mask(packed: torch.Tensor, cols: int) -> torch.Tensor:
    """Inverse of :func:`pack_mask`: uint8 ``(out, bytes)`` -> bool ``(out, cols)``."""
    bits = packed.unsqueeze(-1).bitwise_and(_bit_weights(packed.device)).ne(0)  # (out, bytes, 8)
    return bits.flatten(1)[:, :cols]


class SparseLinear(_StrictDtype):
    """A Linear layer holding only its kept weights: ``values`` (nnz,) in row-major order of the kept
    positions, ``mask`` (out, ceil(in/8)) uint8 bits, dense ``bias``. fp32 in -> fp32 out, bf16 -> bf16.

    At 50% sparsity that is 2.125 bytes per original fp32 weight (1.125 with bf16 values), vs 3 for
    int16 CSR column indices; a bitmask beats int16 indices below ~94% sparsity. The forward
    densifies the weight once and caches it outside the state dict (rebuilt when a buffer changes),
    then runs the dense GEMM: same speed as the unpruned layer. Measured on the 2-core CPU (batch 512,
    256x512 and 512x1024 layers, busy machine, rough): ``torch.sparse`` CSR matmul was 2.5-4x slower than
    dense ``F.linear`` at 50% and 90% sparsity, COO 7-25x slower, densifying on every call ~4x slower.
    Unstructured sparsity buys artifact size here, not speed.

    >>> lin = nn.Linear(8, 4)
    >>> keep = torch.rand(4, 8) > 0.5
    >>> s = SparseLinear.from_dense(lin.weight, lin.bias, keep)
    >>> x = torch.randn(2, 8)
    >>> bool(torch.allclose(s(x), F.linear(x, lin.weight * keep, lin.bias)))
    True
    """

    def __init__(self, in_features: int, out_features: int, nnz: int, *, bias: bool = True,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("values", torch.zeros(nnz, dtype=dtype))
        self.register_buffer("mask", torch.zeros(out_features, (in_features + 7) // 8, dtype=torch.uint8))
        self.register_buffer("bias", torch.zeros(out_features, dtype=dtype) if bias else None)
        self._dense: tuple[tuple, torch.Tensor] | None = None

    @classmethod
    def from_dense(cls, weight: torch.Tensor, bias: torch.Tensor | None, keep: torch.Tensor,
                   dtype: torch.dtype = torch.float32) -> SparseLinear:
        """Keep ``weight[keep]`` (``keep``: bool, same shape as ``weight``)."""
        if keep.shape != weight.shape or keep.dtype != torch.bool:
            raise ConfigError(f"SparseLinear.from_dense: keep must be a bool mask of shape {tuple(weight.shape)}, "
                              f"got {keep.dtype} {tuple(keep.shape)}")
        out_f, in_f = weight.shape
        m = cls(in_f, out_f, int(keep.sum()), bias=bias is not None, dtype=dtype)
        with torch.no_grad():
            m.values.copy_(weight.detach()[keep])
            m.mask.copy_(pack_mask(keep))
            if bias is not None:
                m.bias.copy_(bias.detach())
        return m

    def dense_weight(self) -> torch.Tensor:
        """The ``(out, in)`` weight with zeros where pruned (cached)."""
        key = (_tensor_key(self.values), _tensor_key(self.mask))
        if self._dense is None or self._dense[0] != key:
            w = torch.zeros(self.out_features, self.in_features, dtype=self.values.dtype, device=self.values.device)
            w.masked_scatter_(unpack_mask(self.mask, self.in_features), self.values)  # 2x faster than w[keep] = v
            self._dense = (key, w)
        return self._dense[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.dense_weight()
        return F.linear(x.to(w.dtype), w, self.bias).to(x.dtype)

    def _load_from_state_dict(self, *args, **kwargs):
        self._dense = None
        super()._load_from_state_dict(*args, **kwargs)

    def __getstate__(self):  # the dense weight is a cache: never copy or pickle it
        return {**self.__dict__, "_dense": None}

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, nnz={self.values.numel()}, "
                f"dtype={self.values.dtype}, bias={self.bias is not None}")


def semi_structured_mask(weight: torch.Tensor) -> torch.Tensor:
    """Bool mask keeping the 2 largest |w| of every 4 consecutive inputs per row (min(2, r) of a last group of r).

    >>> semi_structured_mask(torch.tensor([[1., -4., 3., 0., 5., 6.]])).tolist()
    [[False, True, True, False, True, True]]
    """
    rows, cols = weight.shape
    mag = F.pad(weight.detach().abs().float(), (0, (-cols) % 4), value=-1.0).view(rows, -1, 4)  # (out, groups, 4)
    top = mag.topk(2, dim=-1).indices
    return torch.zeros_like(mag, dtype=torch.bool).scatter_(-1, top, True).flatten(1)[:, :cols]


def _semi_structured_nnz(out_f: int, in_f: int) -> int:
    return out_f * (2 * (in_f // 4) + min(2, in_f % 4))


def _magnitude_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    k = kept_weights(weight.numel(), sparsity)
    top = weight.detach().abs().flatten().topk(k).indices
    return torch.zeros(weight.numel(), dtype=torch.bool, device=weight.device).index_fill_(0, top, True) \
        .view_as(weight)


def _sparse_targets(model: nn.Module, scope: str, owner: str) -> list[tuple[str, nn.Linear]]:
    if scope == "all":
        found = [(n, m) for n, m in model.named_modules() if n and _is_dense_layer(m)]
    else:
        found = [(f"{name}.{i}", m) for name, seq in _mlps(model, "mlp") for i, m in enumerate(seq)
                 if _is_dense_layer(m)]
    for where, m in found:
        if not isinstance(m, nn.Linear):
            raise _not_linear(owner, where, m)
    if not found:
        raise ConfigError(f"{owner}.scope = {scope!r} is invalid: the model has no Linear layer there; try scope='all'")
    return found


def _is_dense_layer(m: nn.Module) -> bool:
    """A Linear layer, or what quantization / sparsification turned one into."""
    return isinstance(m, (nn.Linear, BF16Linear, Int8DynamicLinear, SparseLinear))


class _SparseHandler:
    """Shared by magnitude and 2:4 pruning: mask, optional masked fine-tune, pack into SparseLinear."""

    def mask(self, weight: torch.Tensor, config) -> torch.Tensor: ...

    def nnz(self, linear: nn.Linear, config) -> int: ...

    def apply(self, model: nn.Module, config, ctx: CompressContext) -> None:
        owner = type(config).__name__
        targets = _sparse_targets(model, config.scope, owner)
        for _, lin in targets:  # reparametrize weight = weight_orig * weight_mask while fine-tuning
            torch_prune.custom_from_mask(lin, "weight", self.mask(lin.weight, config))
        try:
            _finetune(model, config.finetune_epochs, config.finetune, ctx, owner)
        finally:
            masks = {id(lin): lin.weight_mask.bool() for _, lin in targets}
            for _, lin in targets:
                torch_prune.remove(lin, "weight")
        for name, lin in targets:
            new = SparseLinear.from_dense(lin.weight, lin.bias, masks[id(lin)], _DTYPES[config.precision])
            _replace(model, name, new)

    def restore(self, model: nn.Module, config) -> None:
        for name, lin in _sparse_targets(model, config.scope, type(config).__name__):
            new = SparseLinear(lin.in_features, lin.out_features, self.nnz(lin, config), bias=lin.bias is not None,
                               dtype=_DTYPES[config.precision])
            _replace(model, name, new)


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent), attr, new)


@register(MagnitudePruneConfig)
class _MagnitudePrune(_SparseHandler):
    def mask(self, weight, config):
        return _magnitude_mask(weight, config.sparsity)

    def nnz(self, linear, config):
        return kept_weights(linear.weight.numel(), config.sparsity)


@register(SemiStructuredConfig)
class _SemiStructured(_SparseHandler):
    def mask(self, weight, config):
        return semi_structured_mask(weight)

    def nnz(self, linear, config):
        return _semi_structured_nnz(linear.out_features, linear.in_features)


# ------------------------------------------------------------------------------------------ embedding rows


def row_counts(data: CTRData, chunk_rows: int = 1 << 20) -> list[np.ndarray]:
    """How often each row of each table is looked up in ``data`` (one int64 array per table).

    >>> from crossrec.data.synthetic import SyntheticConfig, generate
    >>> counts = row_counts(generate(SyntheticConfig(rows=100, num_sparse=2, max_rows=5)))
    >>> [int(c.sum()) for c in counts]
    [100, 100]
    """
    sizes = np.asarray(data.schema.cardinalities, dtype=np.int64)
    base = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    total = np.zeros(int(sizes.sum()), dtype=np.int64)
    for start in range(0, len(data), chunk_rows):  # bounded memory on memory-mapped data
        part = data.slice(start, start + chunk_rows)
        feature = np.repeat(np.tile(np.arange(len(sizes)), len(part)), np.asarray(part.lengths).reshape(-1))
        total += np.bincount(np.asarray(part.ids, dtype=np.int64) + base[feature], minlength=total.size)[:total.size]
    return np.split(total, np.cumsum(sizes)[:-1])


class RemappedEmbeddingBag(FusedEmbeddingBag):
    """A :class:`FusedEmbeddingBag` whose pruned tables store only kept rows plus one zero row.

    ``remap`` (int32, one entry per *original* row of every table, tables concatenated) maps an
    original id to its stored row; pruned ids map to the table's last (zero) row. Lookups take the
    original ids, so the model and its inputs are unchanged. Tables with nothing pruned store all rows.

    >>> emb = RemappedEmbeddingBag([10, 6], [4, 6], [8, 8])
    >>> emb.num_embeddings, emb.remap.numel()  # 4 kept + 1 zero row; the second table is whole
    ((5, 6), 16)
    """

    def __init__(self, original_rows: Sequence[int], kept_rows: Sequence[int], dims: Sequence[int], *,
                 precisions: list[str] | None = None, sparse: bool = True, init_scale: float | None = None):
        stored = [k + 1 if k < n else n for n, k in zip(original_rows, kept_rows)]
        super().__init__(stored, list(dims), precisions=precisions, sparse=sparse, init_scale=init_scale)
        self.original_rows, self.kept_rows = tuple(original_rows), tuple(min(k, n) for n, k in
                                                                         zip(original_rows, kept_rows))
        self.register_buffer("remap", torch.cat([torch.arange(n, dtype=torch.int32) for n in original_rows]))
        base = torch.tensor([0, *original_rows[:-1]], dtype=torch.int64).cumsum(0)
        self.register_buffer("remap_base", base, persistent=False)  # (F,) first entry of each table in remap

    def forward_groups(self, ids: torch.Tensor, offsets: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
        if self.one_hot:  # one id per bag (see crossrec.models.embedding.one_hot_layout)
            flat = (ids.view(batch_size, self.num_features) + self.remap_base).view(-1)
            return super().forward_groups(self.remap[flat].long(), offsets, batch_size)
        lengths = offsets[1:] - offsets[:-1]  # (B*F,)
        shift = torch.repeat_interleave(self.remap_base.repeat(batch_size), lengths, output_size=ids.numel())
        return super().forward_groups(self.remap[ids + shift].long(), offsets, batch_size)

    def quantized(self, precisions: list[str], *, empty: bool = False) -> RemappedEmbeddingBag:
        """Same as :meth:`FusedEmbeddingBag.quantized`, keeping the id map (quantize after pruning)."""
        inner = super().quantized(precisions, empty=empty)
        new = RemappedEmbeddingBag(self.original_rows, self.kept_rows, self.dims, precisions=precisions,
                                   sparse=self.sparse, init_scale=None)
        new.bags = inner.bags
        new.remap.copy_(self.remap)
        return new

    @classmethod
    def compact(cls, old: FusedEmbeddingBag, kept: list[np.ndarray]) -> RemappedEmbeddingBag:
        """Keep rows ``kept[f]`` (sorted ids) of every table of the fp32 ``old``."""
        new = cls(old.num_embeddings, [len(k) for k in kept], old.dims, sparse=old.sparse)
        remap = []
        with torch.no_grad():
            for g, feats in enumerate(new.group_features):
                parts = []
                for f in feats:
                    w, n = old.table_weight(f), old.num_embeddings[f]
                    if len(kept[f]) < n:
                        w = torch.cat([w[torch.from_numpy(kept[f])], w.new_zeros(1, w.shape[1])])
                    parts.append(w)
                new.bags[g].weight.copy_(torch.cat(parts))
            for f, n in enumerate(old.num_embeddings):
                m = torch.full((n,), len(kept[f]), dtype=torch.int32)
                m[torch.from_numpy(kept[f])] = torch.arange(len(kept[f]), dtype=torch.int32)
                remap.append(m)
            new.remap.copy_(torch.cat(remap))
        return new


def _embedding_stages(model: nn.Module) -> list[str]:
    stages = [n for n in ("embedding", "first_order") if getattr(model, n, None) is not None]
    for n in stages:
        emb = getattr(model, n)
        if isinstance(emb, RemappedEmbeddingBag):
            raise ConfigError("EmbeddingRowPruneConfig: the model's embedding rows are already pruned; prune once "
                              "(combine the row counts into one EmbeddingRowPruneConfig)")
        if any(p != "fp32" for p in emb.precisions):
            raise ConfigError(f"EmbeddingRowPruneConfig: model.{n} holds tables in {sorted(set(emb.precisions))}, "
                              "expected fp32; prune rows before quantizing tables (put it first in the PipelineConfig)")
    if not stages:
        raise ConfigError("EmbeddingRowPruneConfig: the model has no embedding tables to prune")
    return stages


@register(EmbeddingRowPruneConfig)
class _EmbeddingRowPrune:
    def apply(self, model: nn.Module, config: EmbeddingRowPruneConfig, ctx: CompressContext) -> None:
        stages = _embedding_stages(model)
        keep = config.rows_to_keep(model.spec.tables)
        emb = getattr(model, stages[0])
        if config.rank_by == "norm":
            all_counts = [np.zeros(n, dtype=np.int64) for n in emb.num_embeddings]
        elif ctx.train_data is None:
            raise ConfigError("EmbeddingRowPruneConfig.rank_by = 'frequency' needs data to count lookups: pass "
                              "CompressContext(train_data=...) or use rank_by='norm'")
        else:
            all_counts = row_counts(ctx.train_data)
        kept = []
        for f, (table, counts) in enumerate(zip(model.spec.tables, all_counts)):
            norms = emb.table_weight(f).norm(dim=1).numpy()
            # most looked-up first (all tie under rank_by="norm"); ties by larger norm, then lower id
            order = np.lexsort((np.arange(counts.size), -norms, -counts))
            kept.append(np.sort(order[: keep[table.name]]))
        for n in stages:
            setattr(model, n, RemappedEmbeddingBag.compact(getattr(model, n), kept))
        ctx.log(f"EmbeddingRowPruneConfig: kept {sum(map(len, kept))} of {sum(emb.num_embeddings)} rows")

    def restore(self, model: nn.Module, config: EmbeddingRowPruneConfig) -> None:
        keep = config.rows_to_keep(model.spec.tables)
        for n in _embedding_stages(model):
            old = getattr(model, n)
            setattr(model, n, RemappedEmbeddingBag(old.num_embeddings, [keep[t.name] for t in model.spec.tables],
                                                   old.dims, sparse=old.sparse))


__all__ = ["EmbeddingRowPruneConfig", "MagnitudePruneConfig", "RemappedEmbeddingBag", "SemiStructuredConfig",
           "SparseLinear", "StructuredPruneConfig", "kept_weights", "kept_width", "pack_mask", "row_counts",
           "semi_structured_mask", "unpack_mask"]
