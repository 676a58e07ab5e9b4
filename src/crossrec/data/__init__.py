"""CTR data: the `Batch` layout, schemas, `CTRData` tables and caches, synthetic and real readers."""

from crossrec.data.batch import Batch
from crossrec.data.dataset import CTRData, load_cache, save_cache
from crossrec.data.schema import FeatureSchema, SparseFeature

__all__ = ["Batch", "CTRData", "FeatureSchema", "SparseFeature", "load_cache", "save_cache"]
