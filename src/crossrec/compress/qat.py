"""Quantization-aware training (issue #3): fine-tune through int8 rounding, then convert to int8 Linear.

Every ``nn.Linear`` is wrapped in :class:`FakeQuantLinear`, which computes exactly what the deployed
:class:`~crossrec.models.quantized.Int8DynamicLinear` will, in float: weights rounded per output
channel, symmetric int8, with the scale ``from_float`` uses (``max|w| / 127.5``); inputs rounded per
tensor, affine, to the 7-bit range ``[0, 127]`` with the batch's own min/max — the *dynamic*
quantization ``quantized::linear_dynamic`` applies on x86 (``reduce_range``). A static activation
observer (``torch.ao`` FakeQuantize with a moving average) would train for ranges the deployed
kernel never uses. Gradients pass the rounding straight through (Bengio et al. 2013), zero outside
the clamp range, via ``torch.fake_quantize_per_{channel,tensor}_affine``.

After fine-tuning the wrappers become ``Int8DynamicLinear`` — the same modules and state-dict layout
as ``DenseQuantConfig(mode="int8")`` — so ``restore`` is ``quantize_dense_(model, "int8", empty=True)``.
The untouched (post-training-quantized) weights are the first candidate of the early stopping on
validation AUC, so with ``ctx.val_data`` QAT keeps PTQ's weights unless fine-tuning beats them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from crossrec.compress.base import CompressContext, CompressionConfig, register
from crossrec.compress.distill import training_data
from crossrec.config import check
from crossrec.errors import ConfigError
from crossrec.models.embedding import FusedEmbeddingBag
from crossrec.models.quantized import Int8DynamicLinear, quantize_dense_
from crossrec.train.loop import TrainConfig, _EarlyStopping, _Stepper, evaluate

QAT_MODES = ("int8",)
_EPS = torch.finfo(torch.float32).eps


@dataclass(frozen=True, kw_only=True)
class QATConfig(CompressionConfig):
    """Fine-tune with int8 fake quantization of every Linear, then convert them to int8 (in place).

    ``lr`` is the dense layers' Adam rate (small: this is fine-tuning); ``embedding_lr=None`` keeps
    the tables frozen, a number fine-tunes them with SparseAdam. ``activations=False`` rounds only
    the weights while training. Needs ``ctx.train_data``; ``ctx.val_data`` enables early stopping.

    >>> from crossrec.compress import CompressContext, compress_
    >>> from crossrec.data.synthetic import SyntheticConfig, generate
    >>> from crossrec.models import ModelSpec, build
    >>> data = generate(SyntheticConfig(rows=600, num_sparse=3, max_rows=20))
    >>> model = build(ModelSpec.for_schema(data.schema, embedding_dim=8, top_mlp=(32,)), seed=0)
    >>> _ = compress_(model, QATConfig(epochs=1, batch_size=200), CompressContext(train_data=data, val_data=data))
    >>> type(model.top[0]).__name__
    'Int8DynamicLinear'
    """

    mode: str = "int8"
    epochs: int = 2
    batch_size: int = 1024
    lr: float = 1e-4
    embedding_lr: float | None = None
    activations: bool = True
    patience: int = 2
    max_steps: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        own = "QATConfig"
        check(self.mode in QAT_MODES, own, "mode", self.mode, f"one of {QAT_MODES}")
        check(self.epochs >= 1, own, "epochs", self.epochs, ">= 1")
        check(self.batch_size >= 1, own, "batch_size", self.batch_size, ">= 1")
        check(math.isfinite(self.lr) and self.lr > 0, own, "lr", self.lr, "> 0 (e.g. 1e-4 for fine-tuning)")
        check(self.embedding_lr is None or self.embedding_lr > 0, own, "embedding_lr", self.embedding_lr,
              "> 0, or null to keep the tables frozen")
        check(self.patience >= 1, own, "patience", self.patience, ">= 1")
        check(self.max_steps is None or self.max_steps >= 1, own, "max_steps", self.max_steps, ">= 1 or null")


def fake_quant_weight(w: torch.Tensor) -> torch.Tensor:
    """``w`` rounded as :meth:`Int8DynamicLinear.from_float` stores it (per row, symmetric int8), straight-through.

    >>> lin = nn.Linear(8, 4)
    >>> q = Int8DynamicLinear.from_float(lin)
    >>> bool(torch.allclose(fake_quant_weight(lin.weight), q.weight.float() * q.scale[:, None]))
    True
    """
    d = w.detach()
    amax = torch.maximum(-d.amin(dim=1).clamp(max=0), d.amax(dim=1).clamp(min=0))
    scale = torch.clamp(amax / 127.5, min=_EPS).float()
    zero = torch.zeros(w.shape[0], dtype=torch.int32, device=w.device)
    return torch.fake_quantize_per_channel_affine(w, scale, zero, 0, -128, 127)


def fake_quant_activation(x: torch.Tensor) -> torch.Tensor:
    """``x`` rounded per tensor to 7-bit affine codes from its own min/max (0 always representable)."""
    d = x.detach()
    lo, hi = d.min().clamp(max=0), d.max().clamp(min=0)
    scale = torch.clamp((hi - lo) / 127, min=_EPS).float().reshape(1)
    zero = torch.clamp(torch.round(-lo / scale), 0, 127).to(torch.int32).reshape(1)
    return torch.fake_quantize_per_tensor_affine(x, scale, zero, 0, 127)


class FakeQuantLinear(nn.Module):
    """A float ``nn.Linear`` (kept as ``.linear``, trainable) that computes through int8 rounding."""

    def __init__(self, linear: nn.Linear, activations: bool = True):
        super().__init__()
        self.linear, self.activations = linear, activations

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if self.activations:
            x = fake_quant_activation(x)
        return F.linear(x, fake_quant_weight(self.linear.weight), self.linear.bias)


def _swap(model: nn.Module, cls: type, make) -> int:
    targets = [(name, m) for name, m in model.named_modules() if type(m) is cls]
    for name, m in targets:
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent), attr, make(m))
    return len(targets)


def _fine_tune(model: nn.Module, train_data, val_data, cfg: QATConfig, log) -> None:
    tc = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, embedding_lr=cfg.embedding_lr or 1.0,
                     patience=cfg.patience, seed=cfg.seed)
    tables = [p for m in model.modules() if isinstance(m, FusedEmbeddingBag) for p in m.parameters()]
    frozen = [p for p in tables if p.requires_grad] if cfg.embedding_lr is None else []
    for p in frozen:  # no gradient, so SparseAdam skips them
        p.requires_grad_(False)
    step, stopper = _Stepper(model, tc), _EarlyStopping(model, cfg.patience)
    total = cfg.max_steps or math.inf
    if val_data is not None:  # the post-training-quantized weights are the first candidate
        stopper.record(evaluate(model, val_data), 0, -1)
        log(f"qat: before fine-tuning, validation AUC {stopper.best.auc:.4f}")
    torch.manual_seed(cfg.seed)
    try:
        for epoch in range(cfg.epochs):
            model.train()
            for batch in train_data.batches(cfg.batch_size, shuffle=True, seed=cfg.seed * 1000 + epoch):
                step(batch)
                if step.count >= total:
                    break
            if val_data is not None:
                metrics = evaluate(model, val_data)
                stopper.record(metrics, step.count, epoch)
                log(f"qat: epoch {epoch + 1}, step {step.count}, validation AUC {metrics.auc:.4f}")
            if stopper.stop or step.count >= total:
                break
    finally:
        step.close()
        for p in frozen:
            p.requires_grad_(True)
    stopper.restore_best()


@register(QATConfig)
class _QAT:
    def apply(self, model: nn.Module, config: QATConfig, ctx: CompressContext) -> None:
        train_data, val_data = training_data(model, ctx, "QATConfig")
        if getattr(model, "compute_dtype", torch.float32) != torch.float32:
            raise ConfigError("QATConfig needs a model computing in fp32; put it before DenseQuantConfig(mode='bf16')")
        n = _swap(model, nn.Linear, lambda m: FakeQuantLinear(m, config.activations))
        if n == 0:
            raise ConfigError("QATConfig found no float nn.Linear layers to quantize (are they already quantized?); "
                              "put QATConfig before DenseQuantConfig in a pipeline")
        try:
            _fine_tune(model, train_data, val_data, config, ctx.log)
        except BaseException:
            _swap(model, FakeQuantLinear, lambda m: m.linear)  # never leave training wrappers behind
            raise
        _swap(model, FakeQuantLinear, lambda m: Int8DynamicLinear.from_float(m.linear))
        model.eval()

    def restore(self, model: nn.Module, config: QATConfig) -> None:
        quantize_dense_(model, config.mode, empty=True)
