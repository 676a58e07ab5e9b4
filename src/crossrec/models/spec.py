"""`ModelSpec`: what a CTR model is — tables, MLPs and the feature interaction.

One spec describes the families crossrec ships (interaction in brackets):
DLRM [``dot``], DCNv2 [``cross``], DeepFM/FM [``fm``], a plain deep model [``concat``] and
logistic regression [``lr``]. Specs are frozen and round-trip through JSON; an invalid spec
raises :class:`~crossrec.errors.ConfigError` saying which field to change and to what.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from crossrec.config import Config, check
from crossrec.data.schema import FeatureSchema

Interaction = Literal["dot", "cross", "fm", "concat", "lr"]
INTERACTIONS: tuple[str, ...] = ("dot", "cross", "fm", "concat", "lr")


@dataclass(frozen=True, kw_only=True)
class TableSpec(Config):
    """One embedding table; ``dim=None`` means the spec's ``embedding_dim``."""

    name: str
    num_embeddings: int
    dim: int | None = None

    def __post_init__(self) -> None:
        check(self.num_embeddings >= 1, f"TableSpec({self.name})", "num_embeddings", self.num_embeddings, ">= 1")
        check(self.dim is None or self.dim >= 1, f"TableSpec({self.name})", "dim", self.dim, ">= 1 or null")


@dataclass(frozen=True, kw_only=True)
class ModelSpec(Config):
    """A CTR model.

    - ``bottom_mlp``: hidden widths applied to the dense features. For ``dot`` and ``fm`` its
      last width must equal ``embedding_dim`` (the dense vector joins the interaction as one
      more field). Must be ``()`` when ``num_dense == 0``.
    - ``top_mlp``: hidden widths of the over arch; a final ``Linear(.., 1)`` is always added.
      For ``fm`` an empty ``top_mlp`` means no deep part (plain FM); otherwise DeepFM.
    - ``cross_layers`` / ``cross_rank``: DCNv2 cross network depth and optional low rank.
    - ``dropout``: applied after every hidden layer of the top MLP during training.
    - Tables whose ``dim`` differs from ``embedding_dim`` are projected to it where the
      interaction needs equal dims (``dot``, ``fm``).

    >>> spec = ModelSpec.for_schema(FeatureSchema.from_dict({"dense": ["a"], "sparse": [
    ...     {"name": "c", "num_embeddings": 10}]}), interaction="dot", embedding_dim=4, bottom_mlp=(8, 4))
    >>> ModelSpec.from_json(spec.to_json()) == spec
    True
    >>> ModelSpec(num_dense=1, tables=spec.tables, embedding_dim=4, bottom_mlp=(8, 3))
    Traceback (most recent call last):
    ...
    crossrec.errors.ConfigError: ModelSpec.bottom_mlp = (8, 3) is invalid: for interaction 'dot' the last \
bottom_mlp width must equal embedding_dim=4, e.g. bottom_mlp=(8, 4)
    """

    num_dense: int
    tables: tuple[TableSpec, ...]
    embedding_dim: int = 16
    bottom_mlp: tuple[int, ...] = (64, 16)
    top_mlp: tuple[int, ...] = (64, 32)
    interaction: Interaction = "dot"
    cross_layers: int = 3
    cross_rank: int | None = None
    dropout: float = 0.0
    name: str = "dlrm"

    def __post_init__(self) -> None:
        own = "ModelSpec"
        check(self.num_dense >= 0, own, "num_dense", self.num_dense, ">= 0")
        check(self.interaction in INTERACTIONS, own, "interaction", self.interaction, f"one of {INTERACTIONS}")
        check(self.embedding_dim >= 1, own, "embedding_dim", self.embedding_dim, ">= 1")
        check(len(self.tables) + self.num_dense > 0, own, "tables", self.tables, "at least one table or dense feature")
        names = [t.name for t in self.tables]
        check(len(set(names)) == len(names), own, "tables", names, "table names must be unique")
        for field in ("bottom_mlp", "top_mlp"):
            widths = getattr(self, field)
            check(all(w >= 1 for w in widths), own, field, widths, "every width must be >= 1")
        if self.num_dense == 0:
            check(not self.bottom_mlp, own, "bottom_mlp", self.bottom_mlp, "must be () when num_dense == 0")
        elif self.interaction in ("dot", "fm"):
            fix = (*self.bottom_mlp[:-1], self.embedding_dim) if self.bottom_mlp else (self.embedding_dim,)
            check(bool(self.bottom_mlp) and self.bottom_mlp[-1] == self.embedding_dim, own, "bottom_mlp",
                  self.bottom_mlp, f"for interaction {self.interaction!r} the last bottom_mlp width must equal "
                  f"embedding_dim={self.embedding_dim}, e.g. bottom_mlp={fix}")
        check(0.0 <= self.dropout < 1.0, own, "dropout", self.dropout, "in [0, 1)")
        check(self.cross_layers >= 0, own, "cross_layers", self.cross_layers, ">= 0")
        check(self.cross_rank is None or self.cross_rank >= 1, own, "cross_rank", self.cross_rank, ">= 1 or null")
        if self.interaction == "dot":
            check(len(self.tables) + (self.num_dense > 0) >= 2, own, "tables", len(self.tables),
                  "the dot interaction needs at least two fields (tables + the dense vector)")

    def dims(self) -> tuple[int, ...]:
        """Embedding dim of every table, in order."""
        return tuple(t.dim or self.embedding_dim for t in self.tables)

    @staticmethod
    def for_schema(schema: FeatureSchema, *, interaction: Interaction = "dot", embedding_dim: int = 16,
                   bottom_mlp: tuple[int, ...] | None = None, top_mlp: tuple[int, ...] = (64, 32),
                   table_dims: dict[str, int] | None = None, **kwargs) -> ModelSpec:
        """A spec whose tables match ``schema``; ``bottom_mlp`` defaults to ``(64, embedding_dim)``."""
        dims = table_dims or {}
        unknown = sorted(set(dims) - {f.name for f in schema.sparse})
        check(not unknown, "ModelSpec.for_schema", "table_dims", unknown, "names of the schema's sparse features")
        if bottom_mlp is None:
            bottom_mlp = (64, embedding_dim) if schema.num_dense else ()
        tables = tuple(TableSpec(name=f.name, num_embeddings=f.num_embeddings, dim=dims.get(f.name))
                       for f in schema.sparse)
        name = kwargs.pop("name", {"dot": "dlrm", "cross": "dcnv2", "fm": "deepfm" if top_mlp else "fm",
                                   "concat": "deep", "lr": "lr"}[interaction])
        return ModelSpec(num_dense=schema.num_dense, tables=tables, embedding_dim=embedding_dim,
                         bottom_mlp=tuple(bottom_mlp), top_mlp=tuple(top_mlp), interaction=interaction,
                         name=name, **kwargs)

    def matches(self, schema: FeatureSchema) -> bool:
        """True if this spec's tables and dense width fit ``schema``."""
        return self.num_dense == schema.num_dense and tuple(t.num_embeddings for t in self.tables) == \
            schema.cardinalities
