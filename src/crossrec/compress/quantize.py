"""Quantization methods: embedding tables (row-wise, per-table mixed precision) and dense layers."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from crossrec.compress.base import CompressContext, CompressionConfig, register
from crossrec.config import check
from crossrec.errors import ConfigError
from crossrec.hardware.detect import detect_cpu, native_bf16
from crossrec.models import quantized as q
from crossrec.models.static_int8 import quantize_mlps_static_

TABLE_PRECISIONS = ("fp32", "fp16", "bf16", "int8", "int4", "int2")
DENSE_MODES = ("bf16", "int8", "int8-static")
_CALIBRATION_BATCH = 512


@dataclass(frozen=True, kw_only=True)
class EmbeddingQuantConfig(CompressionConfig):
    """Row-wise quantization of the fused embedding tables (FBGEMM kernels for int8/int4).

    ``precision`` applies to every table; ``per_table`` overrides it by table name (mixed
    precision, e.g. ``{"C3": "int4", "C9": "fp32"}``).

    >>> EmbeddingQuantConfig(precision="int4", per_table={"C1": "int8"}).precision_for(["C1", "C2"])
    {'C1': 'int8', 'C2': 'int4'}
    """

    precision: str = "int8"
    per_table: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check(self.precision in TABLE_PRECISIONS, "EmbeddingQuantConfig", "precision", self.precision,
              f"one of {TABLE_PRECISIONS}")
        bad = {k: v for k, v in self.per_table.items() if v not in TABLE_PRECISIONS}
        check(not bad, "EmbeddingQuantConfig", "per_table", bad, f"precisions from {TABLE_PRECISIONS}")

    def precision_for(self, tables: list[str]) -> dict[str, str]:
        unknown = sorted(set(self.per_table) - set(tables))
        check(not unknown, "EmbeddingQuantConfig", "per_table", unknown, f"names of the model's tables {tables}")
        return {t: self.per_table.get(t, self.precision) for t in tables}


@dataclass(frozen=True, kw_only=True)
class DenseQuantConfig(CompressionConfig):
    """The dense layers in lower precision.

    - ``"bf16"``: every ``nn.Linear`` in bf16 (oneDNN AVX512-BF16), the interaction too.
    - ``"int8"``: every ``nn.Linear`` int8 with dynamic (per call) activation quantization.
    - ``"int8-static"``: every MLP as one chain of int8 GEMMs with activation scales calibrated on
      ``ctx.calibration_batches`` batches of ``ctx.train_data``
      (:mod:`crossrec.models.static_int8`); Linear layers outside an MLP (a DCN cross network,
      projections) get dynamic int8. Needs training data. ``interaction`` is the dtype of the
      feature interaction between the MLPs: ``"auto"`` = bf16 where the CPU has AVX512-BF16 or
      AMX (its batched products are ~2-3x faster there; the int8 top MLP re-quantizes the result
      anyway), else fp32.

    >>> DenseQuantConfig(mode="int8").mode
    'int8'
    """

    mode: str = "bf16"
    interaction: str = "auto"

    def __post_init__(self) -> None:
        check(self.mode in DENSE_MODES, "DenseQuantConfig", "mode", self.mode, f"one of {DENSE_MODES}")
        check(self.interaction in ("auto", "fp32", "bf16"), "DenseQuantConfig", "interaction", self.interaction,
              "'auto', 'fp32' or 'bf16'")


def _interaction_dtype(config: DenseQuantConfig) -> torch.dtype:
    if config.interaction == "auto":
        return torch.bfloat16 if native_bf16(detect_cpu().flags) else torch.float32
    return torch.bfloat16 if config.interaction == "bf16" else torch.float32


def _table_precisions(model: nn.Module, config: EmbeddingQuantConfig) -> dict[str, str]:
    return config.precision_for([t.name for t in model.spec.tables])


@register(EmbeddingQuantConfig)
class _EmbeddingQuant:
    def apply(self, model: nn.Module, config: EmbeddingQuantConfig, ctx: CompressContext) -> None:
        q.quantize_embeddings_(model, _table_precisions(model, config))

    def restore(self, model: nn.Module, config: EmbeddingQuantConfig) -> None:
        q.quantize_embeddings_(model, _table_precisions(model, config), empty=True)


@register(DenseQuantConfig)
class _DenseQuant:
    def apply(self, model: nn.Module, config: DenseQuantConfig, ctx: CompressContext) -> None:
        if config.mode != "int8-static":
            q.quantize_dense_(model, config.mode)
            return
        data = ctx.train_data if ctx.train_data is not None else ctx.val_data
        if data is None:
            raise ConfigError("DenseQuantConfig(mode='int8-static') calibrates activation scales on data: pass "
                              "CompressContext(train_data=...) (crossrec compress does), or use mode='int8'")
        batches = data.batches(_CALIBRATION_BATCH, shuffle=True, seed=ctx.seed)
        names = quantize_mlps_static_(model, (b for _, b in zip(range(max(1, ctx.calibration_batches)), batches)))
        ctx.log(f"int8-static: calibrated {', '.join(names)} on {ctx.calibration_batches} batches")
        if any(isinstance(m, nn.Linear) for m in model.modules()):
            q.quantize_dense_(model, "int8")
        if hasattr(model, "compute_dtype"):
            model.compute_dtype = _interaction_dtype(config)

    def restore(self, model: nn.Module, config: DenseQuantConfig) -> None:
        if config.mode != "int8-static":
            q.quantize_dense_(model, config.mode, empty=True)
            return
        quantize_mlps_static_(model, None, empty=True)
        if any(isinstance(m, nn.Linear) for m in model.modules()):
            q.quantize_dense_(model, "int8", empty=True)
        if hasattr(model, "compute_dtype"):
            model.compute_dtype = _interaction_dtype(config)
