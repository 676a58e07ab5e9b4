"""Compression: one config + one handler per method; ``compress_`` applies, ``select`` chooses.

>>> from crossrec.compress import registered
>>> {"DenseQuantConfig", "EmbeddingQuantConfig", "StructuredPruneConfig"} <= {c.__name__ for c in registered()}
True
"""

from crossrec.compress.auto import auto_compress, default_candidates, measure, mixed_candidates
from crossrec.compress.base import (
    CompressContext,
    CompressionConfig,
    compress_,
    recipe_from_dicts,
    recipe_to_dicts,
    register,
    registered,
    restore_,
)
from crossrec.compress.distill import DistillConfig, StudentSpec, distillation_loss
from crossrec.compress.mixed import TablePrecisionChoice, choose_table_precisions, table_sensitivity
from crossrec.compress.pipeline import PipelineConfig
from crossrec.compress.prune import (
    EmbeddingRowPruneConfig,
    MagnitudePruneConfig,
    SemiStructuredConfig,
    StructuredPruneConfig,
)
from crossrec.compress.qat import QATConfig
from crossrec.compress.quantize import DenseQuantConfig, EmbeddingQuantConfig
from crossrec.compress.select import AccuracyBudget, Selection, Trial, describe, relative_drop, select

__all__ = ["AccuracyBudget", "CompressContext", "CompressionConfig", "DenseQuantConfig", "DistillConfig",
           "EmbeddingQuantConfig", "EmbeddingRowPruneConfig", "MagnitudePruneConfig", "PipelineConfig", "QATConfig",
           "Selection", "SemiStructuredConfig", "StructuredPruneConfig", "StudentSpec", "TablePrecisionChoice",
           "Trial", "auto_compress", "choose_table_precisions", "compress_", "default_candidates", "describe",
           "distillation_loss", "measure", "mixed_candidates", "recipe_from_dicts", "recipe_to_dicts", "register",
           "registered", "relative_drop", "restore_", "select", "table_sensitivity"]
