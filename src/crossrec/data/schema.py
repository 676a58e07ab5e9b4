"""What a data set's features are: dense columns, sparse (categorical) features, label."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from crossrec.config import Config, check


@dataclass(frozen=True, kw_only=True)
class SparseFeature(Config):
    """One categorical feature and the size of its embedding table.

    ``multi_hot`` features may carry any number of ids per sample (a bag); the rest carry one.

    >>> SparseFeature(name="C1", num_embeddings=1460)
    SparseFeature(name='C1', num_embeddings=1460, multi_hot=False)
    """

    name: str
    num_embeddings: int
    multi_hot: bool = False

    def __post_init__(self) -> None:
        check(bool(self.name), "SparseFeature", "name", self.name, "a non-empty name")
        check(self.num_embeddings >= 1, f"SparseFeature({self.name})", "num_embeddings",
              self.num_embeddings, "at least 1 row")


@dataclass(frozen=True, kw_only=True)
class FeatureSchema(Config):
    """Dense column names, sparse features in order, and how the raw data was preprocessed.

    ``preprocessing`` records the reader and its options (JSON types only) so that an artifact
    can apply the same transform to new raw files.

    >>> s = FeatureSchema(dense=("I1",), sparse=(SparseFeature(name="C1", num_embeddings=10),))
    >>> s.num_dense, s.num_sparse, s.cardinalities
    (1, 1, (10,))
    """

    dense: tuple[str, ...]
    sparse: tuple[SparseFeature, ...]
    label: str = "label"
    preprocessing: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [*self.dense, *(f.name for f in self.sparse)]
        dupes = sorted({n for n in names if names.count(n) > 1})
        check(not dupes, "FeatureSchema", "features", dupes, "feature names must be unique")
        check(len(self.sparse) > 0 or len(self.dense) > 0, "FeatureSchema", "features", names,
              "at least one dense or sparse feature")

    @property
    def num_dense(self) -> int:
        return len(self.dense)

    @property
    def num_sparse(self) -> int:
        return len(self.sparse)

    @property
    def cardinalities(self) -> tuple[int, ...]:
        return tuple(f.num_embeddings for f in self.sparse)
