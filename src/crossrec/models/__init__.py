"""Models: `ModelSpec` -> `build(spec)` -> `CTRModel` (DLRM, DCNv2, DeepFM, FM, deep, LR)."""

from crossrec.models.ctr import CTRModel, build, parameter_bytes
from crossrec.models.embedding import FusedEmbeddingBag
from crossrec.models.quantized import (
    PRECISIONS,
    BF16Linear,
    Int8DynamicLinear,
    QuantizedEmbeddingBag,
    quantize_dense_,
    quantize_embeddings_,
)
from crossrec.models.spec import INTERACTIONS, ModelSpec, TableSpec

__all__ = ["INTERACTIONS", "PRECISIONS", "BF16Linear", "CTRModel", "FusedEmbeddingBag", "Int8DynamicLinear",
           "ModelSpec", "QuantizedEmbeddingBag", "TableSpec", "build", "parameter_bytes", "quantize_dense_",
           "quantize_embeddings_"]
