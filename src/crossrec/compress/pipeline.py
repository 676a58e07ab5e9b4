"""A pipeline: an ordered list of methods applied as one config (e.g. int8 tables + bf16 dense)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from crossrec.compress.base import CompressContext, CompressionConfig, handler_for, register
from crossrec.config import check


@dataclass(frozen=True, kw_only=True)
class PipelineConfig(CompressionConfig):
    """Apply ``steps`` in order; recorded and restored as one method.

    >>> from crossrec.compress.quantize import DenseQuantConfig, EmbeddingQuantConfig
    >>> p = PipelineConfig(steps=(EmbeddingQuantConfig(precision="int8"), DenseQuantConfig(mode="bf16")))
    >>> PipelineConfig.from_dict(p.to_dict()) == p
    True
    """

    steps: tuple[CompressionConfig, ...]

    def __post_init__(self) -> None:
        check(len(self.steps) > 0, "PipelineConfig", "steps", self.steps, "at least one method")
        check(not any(isinstance(s, PipelineConfig) for s in self.steps), "PipelineConfig", "steps",
              "a nested pipeline", "methods only (flatten nested pipelines)")


@register(PipelineConfig)
class _Pipeline:
    def apply(self, model: nn.Module, config: PipelineConfig, ctx: CompressContext) -> None:
        for step in config.steps:
            handler_for(step).apply(model, step, ctx)

    def restore(self, model: nn.Module, config: PipelineConfig) -> None:
        for step in config.steps:
            handler_for(step).restore(model, step)
