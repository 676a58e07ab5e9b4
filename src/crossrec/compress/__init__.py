"""Compression: one config + one handler per method; ``compress_`` applies, ``select`` chooses.

>>> from crossrec.compress import registered
>>> sorted(c.__name__ for c in registered())[:2]
['DenseQuantConfig', 'EmbeddingQuantConfig']
"""

from crossrec.compress.auto import auto_compress, default_candidates, measure
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
from crossrec.compress.pipeline import PipelineConfig
from crossrec.compress.quantize import DenseQuantConfig, EmbeddingQuantConfig
from crossrec.compress.select import AccuracyBudget, Selection, Trial, describe, relative_drop, select

__all__ = [
    "AccuracyBudget",
    "CompressContext",
    "CompressionConfig",
    "DenseQuantConfig",
    "EmbeddingQuantConfig",
    "PipelineConfig",
    "Selection",
    "Trial",
    "auto_compress",
    "compress_",
    "default_candidates",
    "describe",
    "measure",
    "recipe_from_dicts",
    "recipe_to_dicts",
    "register",
    "registered",
    "relative_drop",
    "restore_",
    "select",
]
