"""CTR data: the `Batch` layout, schemas, `CTRData` tables and caches, synthetic and real readers."""

from crossrec.data.avazu import AvazuConfig, prepare_avazu, read_avazu
from crossrec.data.batch import Batch
from crossrec.data.categorical import CategoricalEncoding, Vocabulary
from crossrec.data.criteo import CriteoConfig, prepare_criteo, read_criteo
from crossrec.data.dataset import CTRData, load_cache, save_cache
from crossrec.data.fetch import fetch_movielens_100k, verify_movielens_100k
from crossrec.data.movielens import MovieLens100K, MovieLensSplits, load_movielens
from crossrec.data.raw import read_with_schema
from crossrec.data.schema import FeatureSchema, SparseFeature
from crossrec.data.textcache import PrepareInfo, prepare_info

__all__ = ["AvazuConfig", "Batch", "CTRData", "CategoricalEncoding", "CriteoConfig", "FeatureSchema",
           "MovieLens100K", "MovieLensSplits", "PrepareInfo", "SparseFeature", "Vocabulary", "fetch_movielens_100k",
           "load_cache", "load_movielens", "prepare_avazu", "prepare_criteo", "prepare_info", "read_avazu",
           "read_criteo", "read_with_schema", "save_cache", "verify_movielens_100k"]
