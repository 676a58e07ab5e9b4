"""Models: `ModelSpec` -> `build(spec)` -> `CTRModel` (DLRM, DCNv2, DeepFM, FM, deep, LR)."""

from crossrec.models.ctr import CTRModel, build, parameter_bytes
from crossrec.models.embedding import FusedEmbeddingBag
from crossrec.models.spec import INTERACTIONS, ModelSpec, TableSpec

__all__ = ["INTERACTIONS", "CTRModel", "FusedEmbeddingBag", "ModelSpec", "TableSpec", "build", "parameter_bytes"]
