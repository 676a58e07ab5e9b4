"""`SearchSpace`: the architectures a search may propose, and how a set of choices becomes a model.

A point of the space is a flat ``{name: value}`` dict of categorical choices (what an Optuna trial
suggests, what history files record). :meth:`SearchSpace.build` turns it into an
:class:`Architecture` — a valid :class:`~crossrec.models.ModelSpec` plus the compression to apply
(table and dense precision) and the sparse features kept — for one :class:`FeatureSchema`.

Choices, and the parameter names they go by:

- ``dim:<feature>`` — AutoDim-style per-feature embedding width (Zhao et al. 2021); ``0`` drops the
  feature (its table is not built and its ids are not read).
- ``shared_dim`` (only when ``shared_dims`` offers ``true``) — every kept feature at one width, ``embedding_dim``
  (from ``interaction_dims``), instead of its ``dim:<feature>``: crossrec then looks all tables up in one fused
  ``EmbeddingBag`` with no projections — fewer kernels, which is what a GPU pays for (BENCHMARKS §6, §8).
- ``interaction`` — ``dot`` (DLRM), ``cross`` (DCNv2), ``fm`` (DeepFM), ``concat`` (plain deep);
  ``embedding_dim`` (the width every table is projected to, only for ``dot``/``fm`` or a shared dim) and
  ``cross_layers`` (only for ``cross``) are asked only where they matter. crossrec.models has no
  attention interaction (AutoInt), so the space cannot offer one.
- ``bottom_depth``/``bottom_width`` (dense features only) and ``top_depth``/``top_width``: MLPs of
  equal-width hidden layers. For ``dot``/``fm`` the bottom MLP gets one more layer to
  ``embedding_dim``, which the interaction needs (ModelSpec's rule), so depth 0 is one Linear.
- ``table_precision`` (or ``precision:<feature>`` with ``per_table_precision``) and ``dense_precision``
  (``fp32``, ``bf16``, ``int8`` = dynamic int8 Linear layers, ``int8-static`` = calibrated static int8
  MLPs, calibrated on the candidate's training rows; a candidate without an MLP cannot take it and fails).

Parameters that a choice makes irrelevant are not asked (define-by-run), so equal architectures
come from equal choices and the search's cache (keyed on the architecture) catches the rest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crossrec.config import Config, check
from crossrec.data.dataset import CTRData
from crossrec.data.schema import FeatureSchema
from crossrec.errors import ConfigError, DataError
from crossrec.hardware.features import DENSE_PRECISIONS, CompressionChoice
from crossrec.models.quantized import PRECISIONS, check_precision
from crossrec.models.spec import INTERACTIONS, ModelSpec, TableSpec

_FAMILY = {"dot": "dlrm", "cross": "dcnv2", "fm": "deepfm", "concat": "deep", "lr": "lr"}
Pick = Callable[[str, tuple], Any]


@dataclass(frozen=True, kw_only=True)
class Architecture(Config):
    """One candidate: the model, its compression and the sparse features it reads.

    ``compression`` is applied post-training (``compression.to_configs()``); ``features`` are the
    sparse features the model reads, in schema order.

    >>> spec = ModelSpec(num_dense=1, tables=(TableSpec(name="a", num_embeddings=5),), embedding_dim=4,
    ...                  bottom_mlp=(4,), top_mlp=(8,))
    >>> arch = Architecture(spec=spec, compression=CompressionChoice.parse("int8/bf16"), features=("a",))
    >>> Architecture.from_json(arch.to_json()).key() == arch.key(), arch.compression.label
    (True, 'int8/bf16')
    """

    spec: ModelSpec
    compression: CompressionChoice = field(default_factory=CompressionChoice)
    features: tuple[str, ...]

    def key(self) -> str:
        """Content hash: equal architectures (whatever the choices that led there) share it."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:20]


@dataclass(frozen=True, kw_only=True)
class SearchSpace(Config):
    """Categorical choices of an architecture search (module docstring); loads from YAML/JSON.

    >>> from crossrec.data.synthetic import SyntheticConfig
    >>> schema = SyntheticConfig(num_dense=2, num_sparse=3, max_rows=50).schema()
    >>> space = SearchSpace(embedding_dims=(0, 4, 8), interactions=("dot", "cross"))
    >>> arch = space.build(space.sample(np.random.default_rng(0), schema), schema)
    >>> arch.spec.matches(subset_schema(schema, arch.features))
    True
    >>> SearchSpace(interactions=("attention",))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    crossrec.errors.ConfigError: SearchSpace.interactions = ('attention',) is invalid: ... no attention ...
    """

    embedding_dims: tuple[int, ...] = (0, 4, 8, 16, 32)
    feature_dims: dict[str, tuple[int, ...]] = field(default_factory=dict)
    interaction_dims: tuple[int, ...] = (8, 16, 32)
    interactions: tuple[str, ...] = ("dot", "cross", "fm", "concat")
    cross_layers: tuple[int, ...] = (1, 2, 3)
    bottom_depths: tuple[int, ...] = (0, 1, 2)
    bottom_widths: tuple[int, ...] = (32, 64, 128)
    top_depths: tuple[int, ...] = (1, 2, 3)
    top_widths: tuple[int, ...] = (64, 128, 256, 512)
    table_precisions: tuple[str, ...] = ("fp32", "fp16", "int8", "int4")
    dense_precisions: tuple[str, ...] = ("fp32", "bf16", "int8", "int8-static")
    per_table_precision: bool = False
    shared_dims: tuple[bool, ...] = (False,)

    def __post_init__(self) -> None:
        own = "SearchSpace"
        for name in ("embedding_dims", "interaction_dims", "interactions", "cross_layers", "bottom_depths",
                     "bottom_widths", "top_depths", "top_widths", "table_precisions", "dense_precisions"):
            values = getattr(self, name)
            check(len(values) > 0 and len(set(values)) == len(values), own, name, values,
                  "a non-empty list without repeats")
        check(set(self.interactions) <= set(INTERACTIONS), own, "interactions", self.interactions,
              f"a subset of {INTERACTIONS} (crossrec.models has no attention interaction)")
        check(set(self.table_precisions) <= set(PRECISIONS), own, "table_precisions", self.table_precisions,
              f"a subset of {PRECISIONS}")
        check(set(self.dense_precisions) <= set(DENSE_PRECISIONS), own, "dense_precisions", self.dense_precisions,
              f"a subset of {DENSE_PRECISIONS}")
        check(len(self.shared_dims) > 0 and set(self.shared_dims) <= {False, True}
              and len(set(self.shared_dims)) == len(self.shared_dims), own, "shared_dims", self.shared_dims,
              "[false], [true] or [false, true] (true: every kept feature at one dim from interaction_dims)")
        if True in self.shared_dims:
            for d in self.interaction_dims:
                for p in self.table_precisions:
                    try:
                        check_precision(p, d, owner=own)
                    except ConfigError as exc:
                        raise ConfigError(f"{own}: shared dim {d} (interaction_dims) cannot be stored as {p!r} "
                                          f"({exc}); use dims divisible by 4 or drop that precision") from None
        for name in ("interaction_dims", "cross_layers", "bottom_widths", "top_widths"):
            check(min(getattr(self, name)) >= 1, own, name, getattr(self, name), "every value >= 1")
        for name in ("bottom_depths", "top_depths"):
            check(min(getattr(self, name)) >= 0, own, name, getattr(self, name), "every value >= 0")
        all_dims = [self.embedding_dims, *self.feature_dims.values()]
        for dims in all_dims:
            check(len(dims) > 0 and min(dims) >= 0 and any(d > 0 for d in dims), own, "embedding_dims", dims,
                  "values >= 0 (0 drops the feature) with at least one width >= 1")
            for d in (d for d in dims if d > 0):
                for p in self.table_precisions:  # every dim must be storable in every precision offered
                    try:
                        check_precision(p, d, owner=own)
                    except ConfigError as exc:
                        raise ConfigError(f"{own}: embedding dim {d} cannot be stored as {p!r} ({exc}); "
                                          "use dims divisible by 4 or drop that precision") from None

    def dims_for(self, feature: str) -> tuple[int, ...]:
        return self.feature_dims.get(feature, self.embedding_dims)

    def walk(self, schema: FeatureSchema, pick: Pick) -> dict[str, Any]:
        """Ask ``pick(name, choices)`` for every parameter that is active given the earlier answers."""
        unknown = sorted(set(self.feature_dims) - {f.name for f in schema.sparse})
        check(not unknown, "SearchSpace", "feature_dims", unknown, "names of the schema's sparse features")
        out: dict[str, Any] = {}

        def ask(name: str, options: Sequence) -> Any:
            out[name] = pick(name, tuple(options))
            return out[name]

        kept = [f.name for f in schema.sparse if ask(f"dim:{f.name}", self.dims_for(f.name)) > 0]
        inter = ask("interaction", self.interactions)
        # one dim for every kept feature: crossrec then looks them all up in one fused EmbeddingBag (fewer kernels,
        # what a GPU pays for); asked only when the space offers it, so older searches keep their parameters
        shared = True in self.shared_dims and ask("shared_dim", self.shared_dims)
        if inter in ("dot", "fm") or shared:
            ask("embedding_dim", self.interaction_dims)
        if inter == "cross":
            ask("cross_layers", self.cross_layers)
        if schema.num_dense and inter != "lr" and ask("bottom_depth", self.bottom_depths) > 0:
            ask("bottom_width", self.bottom_widths)
        if inter != "lr" and ask("top_depth", self.top_depths) > 0:
            ask("top_width", self.top_widths)
        if self.per_table_precision:
            for name in kept:
                ask(f"precision:{name}", self.table_precisions)
        else:
            ask("table_precision", self.table_precisions)
        ask("dense_precision", self.dense_precisions)
        return out

    def parameters(self, schema: FeatureSchema) -> dict[str, tuple]:
        """Every parameter the space may ask for ``schema`` and its choices (active or not)."""
        params = {f"dim:{f.name}": self.dims_for(f.name) for f in schema.sparse}
        if True in self.shared_dims:
            params["shared_dim"] = self.shared_dims
        params.update(interaction=self.interactions, embedding_dim=self.interaction_dims,
                      cross_layers=self.cross_layers, top_depth=self.top_depths, top_width=self.top_widths,
                      dense_precision=self.dense_precisions)
        if schema.num_dense:
            params.update(bottom_depth=self.bottom_depths, bottom_width=self.bottom_widths)
        if self.per_table_precision:
            params.update({f"precision:{f.name}": self.table_precisions for f in schema.sparse})
        else:
            params["table_precision"] = self.table_precisions
        return params

    def suggest(self, trial, schema: FeatureSchema) -> dict[str, Any]:
        """The choices of an Optuna ``trial`` (``suggest_categorical`` for every active parameter)."""
        return self.walk(schema, lambda name, options: trial.suggest_categorical(name, options))

    def sample(self, rng: np.random.Generator, schema: FeatureSchema) -> dict[str, Any]:
        """Uniformly random choices."""
        return self.walk(schema, lambda _name, options: options[int(rng.integers(len(options)))])

    def mutate(self, choices: dict[str, Any], rng: np.random.Generator, schema: FeatureSchema) -> dict[str, Any]:
        """Change one active choice to another value (Real et al. 2019); newly active ones are random."""
        params = self.parameters(schema)
        mutable = sorted(n for n in choices if len(params.get(n, ())) > 1)
        check(bool(mutable), "SearchSpace.mutate", "choices", choices, "at least one choice with two or more values")
        name = mutable[int(rng.integers(len(mutable)))]
        others = [v for v in params[name] if v != choices[name]]
        changed = {**choices, name: others[int(rng.integers(len(others)))]}
        return self.walk(schema, lambda n, options: changed[n] if n in changed and changed[n] in options
                         else options[int(rng.integers(len(options)))])

    def build(self, choices: dict[str, Any], schema: FeatureSchema) -> Architecture:
        """The :class:`Architecture` of ``choices`` (missing or unknown values raise ConfigError).

        If too few features are kept (``dot`` needs two fields counting the dense vector, and at least
        one sparse feature is always kept: crossrec's CTRData cannot hold zero sparse features), the
        first dropped features come back at their smallest width: a deterministic repair, visible in
        :attr:`Architecture.features`.
        """
        params = self.walk(schema, lambda name, options: _lookup(choices, name, options))
        dims = {f.name: params[f"dim:{f.name}"] for f in schema.sparse}
        inter = params["interaction"]
        need = max(1, (2 if inter == "dot" else 1) - (schema.num_dense > 0))
        for f in schema.sparse:  # repair: too few fields for the interaction
            if sum(d > 0 for d in dims.values()) >= need:
                break
            if dims[f.name] == 0:
                dims[f.name] = min(d for d in self.dims_for(f.name) if d > 0)
        kept = tuple(n for n, d in dims.items() if d > 0)
        width = params.get("embedding_dim") or max([dims[n] for n in kept], default=1)
        if params.get("shared_dim"):
            dims.update({n: width for n in kept})
        bottom: tuple[int, ...] = ()
        if schema.num_dense and inter != "lr":
            bottom = (params.get("bottom_width", 0),) * params["bottom_depth"]
            if inter in ("dot", "fm"):
                bottom = (*bottom, width)
        top = (params.get("top_width", 0),) * params.get("top_depth", 0)
        tables = tuple(TableSpec(name=n, num_embeddings=_cardinality(schema, n),
                                 dim=None if dims[n] == width else dims[n]) for n in kept)
        spec = ModelSpec(num_dense=schema.num_dense, tables=tables, embedding_dim=width, bottom_mlp=bottom,
                         top_mlp=top, interaction=inter, cross_layers=params.get("cross_layers", 0),
                         name=f"{_FAMILY[inter]}-nas")
        if self.per_table_precision:
            per = {n: params.get(f"precision:{n}", "fp32") for n in kept}
            emb: str | dict[str, str] = next(iter(set(per.values()))) if len(set(per.values())) == 1 else per
        else:
            emb = params["table_precision"]
        return Architecture(spec=spec, compression=CompressionChoice(embedding_precision=emb,
                            dense_precision=params["dense_precision"]), features=kept)


def _lookup(choices: dict[str, Any], name: str, options: tuple) -> Any:
    if name not in choices:
        raise ConfigError(f"choices have no value for {name!r} (got {sorted(choices)}); allowed: {list(options)}")
    value = choices[name]
    if value not in options:
        raise ConfigError(f"choice {name} = {value!r} is not in the search space; allowed: {list(options)}")
    return value


def _cardinality(schema: FeatureSchema, name: str) -> int:
    return next(f.num_embeddings for f in schema.sparse if f.name == name)


def subset_schema(schema: FeatureSchema, features: Sequence[str]) -> FeatureSchema:
    """``schema`` with only the sparse ``features`` (in schema order); records them in ``preprocessing``.

    Returns ``schema`` itself when every feature is kept, so full-width artifacts stay unchanged.

    >>> from crossrec.data.synthetic import SyntheticConfig
    >>> s = subset_schema(SyntheticConfig(num_sparse=3, max_rows=9).schema(), ["C3", "C1"])
    >>> [f.name for f in s.sparse], s.preprocessing["selected_sparse"]
    (['C1', 'C3'], ['C1', 'C3'])
    """
    names = set(features)
    unknown = sorted(names - {f.name for f in schema.sparse})
    check(not unknown, "subset_schema", "features", unknown, "names of the schema's sparse features")
    if len(names) == schema.num_sparse:
        return schema
    kept = tuple(f for f in schema.sparse if f.name in names)
    return FeatureSchema(dense=schema.dense, sparse=kept, label=schema.label,
                         preprocessing={**schema.preprocessing, "selected_sparse": [f.name for f in kept]})


def select_features(data: CTRData, features: Sequence[str]) -> CTRData:
    """The samples of ``data`` with only the sparse ``features`` (one-hot or multi-hot bags).

    >>> from crossrec.data.synthetic import SyntheticConfig, generate
    >>> d = generate(SyntheticConfig(rows=5, num_sparse=3, max_rows=9))
    >>> s = select_features(d, ["C2"])
    >>> s.schema.num_sparse, bool((s.ids == d.ids.reshape(5, 3)[:, 1]).all())
    (1, True)
    """
    schema = subset_schema(data.schema, features)
    if schema is data.schema:
        return data
    names = [f.name for f in data.schema.sparse]
    cols = np.array([names.index(f.name) for f in schema.sparse], dtype=np.int64)
    n, f = len(data), data.schema.num_sparse
    lengths = np.asarray(data.lengths)
    if data.ids.shape[0] == n * f and (n == 0 or int(lengths.min()) == 1):  # one id per bag
        ids = np.asarray(data.ids).reshape(n, f)[:, cols].reshape(-1)
    else:  # jagged: gather each kept bag's ids by its start offset
        starts = np.zeros(n * f + 1, dtype=np.int64)
        np.cumsum(lengths.reshape(-1), out=starts[1:])
        first = starts[:-1].reshape(n, f)[:, cols].reshape(-1)
        lens = lengths[:, cols].reshape(-1).astype(np.int64)
        within = np.arange(int(lens.sum()), dtype=np.int64) - np.repeat(np.cumsum(lens) - lens, lens)
        ids = np.asarray(data.ids)[np.repeat(first, lens) + within]
    return CTRData(schema=schema, dense=np.asarray(data.dense), labels=np.asarray(data.labels),
                   ids=np.ascontiguousarray(ids, dtype=np.int64), lengths=np.ascontiguousarray(lengths[:, cols]))


def project_data(data: CTRData, schema: FeatureSchema) -> CTRData:
    """``data`` read with the full feature set, cut to an artifact's ``schema`` (a search may drop features).

    Use it before checking that data fits a searched artifact, e.g. in ``crossrec compress``.

    >>> from crossrec.data.synthetic import SyntheticConfig, generate
    >>> d = generate(SyntheticConfig(rows=5, num_sparse=3, max_rows=9))
    >>> project_data(d, subset_schema(d.schema, ["C1", "C3"])).schema.num_sparse
    2
    """
    if data.schema.cardinalities == schema.cardinalities and data.schema.num_dense == schema.num_dense:
        return data
    selected = schema.preprocessing.get("selected_sparse")
    if selected:
        out = select_features(data, selected)
        if out.schema.cardinalities == schema.cardinalities and out.schema.num_dense == schema.num_dense:
            return out
    raise DataError(f"the data's features ({data.schema.num_dense} dense, tables {list(data.schema.cardinalities)}) "
                    f"do not match the model's ({schema.num_dense} dense, tables {list(schema.cardinalities)}); "
                    "pass the data set the model was trained or searched on")

