"""Latency features of (ModelSpec, CompressionChoice, batch size), from the spec alone.

The :class:`~crossrec.hardware.predictor.LatencyPredictor` is a sum of non-negative per-term
costs, so every feature here is a physical *amount of work per call* that some part of the
machine spends time on, and grows (never shrinks) with the model:

- **per-op overheads** (eager PyTorch dispatches every op from Python: ~5-20 µs each on a CPU):
  ``calls``, ``linear_{p}`` (Linear layers at dense precision ``p``; ``int8-static`` is spelled
  ``int8_static`` in term names), ``lookup_groups``
  (one ``embedding_bag`` call per (dim, precision) group, :class:`~crossrec.models.FusedEmbeddingBag`),
  ``multi_group`` (the id masking/shifting ops a split table stage adds), ``dim_groups``,
  ``inter_{kind}`` (the interaction's fixed ops);
- **compute**: ``flops_{p}`` (B x matmul FLOPs of every Linear at precision ``p``, as
  :func:`~crossrec.hardware.estimate.dense_stages` counts them), ``dot_flops_{fp32|bf16}`` (the DLRM
  ``bmm``, in the model's compute dtype), ``dot_pairs`` (the triangle gather), ``inter_elems``
  (elementwise interaction work: DCNv2's ``x0 * y + x``, the FM sums, concatenation, bf16 casts),
  ``act_{p}`` (B x Linear in+out features: bias, ReLU, int8 activation quantization), ``group_bags``
  (B x tables x lookup groups: each group masks and shifts the ids of every bag), ``samples``;
- **memory**: ``weight_bytes_{p}`` (dense weights read once per call: dominant at batch 1),
  ``emb_rows_{e}`` / ``emb_bytes_{e}`` (rows and bytes gathered per table precision ``e``, first-order
  FM/LR tables included at their stored precision), ``emb_miss_bytes`` (gathered bytes x the share
  of the tables that cannot stay in a cache of :data:`CACHE_BYTES`: large tables gather from DRAM),
  ``weight_miss_bytes`` (the same for the dense weights, re-read on every call), ``index_bytes``
  (int64 ids and offsets);
- **prior**: ``roofline_ms``, the analytic :func:`~crossrec.hardware.estimate` for the device, when
  one is given (else 0).

Lookups are one id per bag (one-hot, as in Criteo); ``batch_size`` is recorded but is not a cost
term by itself (``samples`` is).

Dense precision ``int8-static`` (calibrated static int8 MLPs, :mod:`crossrec.models.static_int8`) is
counted layer by layer as the compress handler builds it: the Linear layers of an MLP ``Sequential``
are ``int8_static`` (one chain of int8 GEMMs), an MLP's narrow final layer (``out <= 16``, no ReLU:
the logit) stays ``fp32``, and Linear layers outside an MLP (projections, full-rank cross layers,
the FM/LR first-order term) are dynamic ``int8``. Its interaction runs in bf16 on a CPU with bf16
compute (``DenseQuantConfig(interaction="auto")``), which the features know only from ``device``:
without one it is counted as fp32.

>>> from crossrec.models import ModelSpec, TableSpec
>>> spec = ModelSpec(num_dense=13, tables=tuple(TableSpec(name=f"C{i}", num_embeddings=1000) for i in range(8)),
...                  embedding_dim=16, bottom_mlp=(64, 16), top_mlp=(64,))
>>> f = features(spec, CompressionChoice(embedding_precision="int8", dense_precision="bf16"), 64)
>>> f["linear_bf16"], f["linear_fp32"], f["emb_bytes_int8"], f["flops_bf16"] > 0
(4.0, 0.0, 12288.0, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from crossrec.config import Config, check
from crossrec.errors import ConfigError
from crossrec.hardware.estimate import INDEX_BYTES, estimate, per_table, row_bytes
from crossrec.hardware.spec import EMBEDDING_PRECISIONS, DeviceSpec

if TYPE_CHECKING:  # read through attributes only: importing this module loads neither torch nor models
    from crossrec.models.spec import ModelSpec

# "int8" = dynamic int8 Linear layers; "int8-static" = calibrated static int8 MLPs (issue #4: needs calibration data).
DENSE_PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "int8", "int8-static")
_WEIGHT_BYTES = {"fp32": 4, "bf16": 2, "int8": 1, "int8-static": 1}
_STATIC_TAIL_MAX_OUT = 16  # models.static_int8 keeps an MLP's final Linear fp32 up to this width (its logit)
INTERACTION_KINDS: tuple[str, ...] = ("dot", "cross", "fm", "concat", "lr")
# A cache size for the "share of the tables that misses" proxy. One number for every device on purpose:
# it only shapes a feature (tables much smaller than this gather from cache, much larger from DRAM); the
# per-device fit weighs it. 32 MiB is the L3 of the dev machine (lscpu).
CACHE_BYTES = 32 * 2**20
_ROWWISE_VALUES_PER_BYTE = {"int8": 1, "int4": 2, "int2": 4}


def dense_term(kind: str, precision: str) -> str:
    """The name of a per-dense-precision term: ``dense_term("flops", "int8-static") == "flops_int8_static"``.

    >>> dense_term("linear", "bf16"), dense_term("act", "int8-static")
    ('linear_bf16', 'act_int8_static')
    """
    return f"{kind}_{precision.replace('-', '_')}"


OVERHEAD_TERMS: tuple[str, ...] = (
    "calls", "lookup_groups", "multi_group", "dim_groups", *(dense_term("linear", p) for p in DENSE_PRECISIONS),
    *(f"inter_{k}" for k in INTERACTION_KINDS))
COMPUTE_TERMS: tuple[str, ...] = (
    "samples", *(dense_term("flops", p) for p in DENSE_PRECISIONS), *(dense_term("act", p) for p in DENSE_PRECISIONS),
    "dot_flops_fp32", "dot_flops_bf16", "dot_pairs", "inter_elems", "group_bags")
MEMORY_TERMS: tuple[str, ...] = (
    *(dense_term("weight_bytes", p) for p in DENSE_PRECISIONS), *(f"emb_rows_{e}" for e in EMBEDDING_PRECISIONS),
    *(f"emb_bytes_{e}" for e in EMBEDDING_PRECISIONS), "emb_miss_bytes", "weight_miss_bytes", "index_bytes")
PRIOR_TERMS: tuple[str, ...] = ("roofline_ms",)
# The cost terms a predictor weighs, in a fixed order (saved predictors store it and check it on load).
TERMS: tuple[str, ...] = OVERHEAD_TERMS + COMPUTE_TERMS + MEMORY_TERMS + PRIOR_TERMS
FEATURE_NAMES: tuple[str, ...] = ("batch_size", "tables", *TERMS)


@dataclass(frozen=True, kw_only=True)
class CompressionChoice(Config):
    """How a model is compressed for latency purposes: table storage and dense-layer precision.

    ``embedding_precision`` is one format for every table or ``{table: format}`` (tables not named
    stay fp32). ``dense_precision`` is ``fp32``, ``bf16``, ``int8`` (dynamic int8 Linear layers) or
    ``int8-static`` (calibrated static int8 MLPs: realizing it needs calibration data, see
    :meth:`apply_`). :meth:`to_configs` gives the :mod:`crossrec.compress` configs that realize it,
    :meth:`apply_` applies it to a built model directly (the same model functions those configs'
    handlers call).

    >>> c = CompressionChoice.parse("int8/bf16")
    >>> c, c.label
    (CompressionChoice(embedding_precision='int8', dense_precision='bf16'), 'int8/bf16')
    >>> [d["type"] for d in c.to_recipe()]
    ['EmbeddingQuantConfig', 'DenseQuantConfig']
    """

    embedding_precision: str | dict[str, str] = "fp32"
    dense_precision: Literal["fp32", "bf16", "int8", "int8-static"] = "fp32"

    def __post_init__(self) -> None:
        own = "CompressionChoice"
        check(self.dense_precision in DENSE_PRECISIONS, own, "dense_precision", self.dense_precision,
              f"one of {DENSE_PRECISIONS}")
        values = [self.embedding_precision] if isinstance(self.embedding_precision, str) \
            else list(self.embedding_precision.values())
        bad = [p for p in values if p not in EMBEDDING_PRECISIONS]
        check(not bad, own, "embedding_precision", self.embedding_precision,
              f"one of {EMBEDDING_PRECISIONS}, or a mapping table name -> one of them")

    @staticmethod
    def parse(text: str) -> CompressionChoice:
        """``"EMB/DENSE"`` (e.g. ``"int8/bf16"``), or ``"EMB"`` alone (dense fp32)."""
        emb, _, dense = text.strip().partition("/")
        return CompressionChoice(embedding_precision=emb or "fp32", dense_precision=dense or "fp32")

    @property
    def label(self) -> str:
        """Short name: ``"int8/bf16"``; a per-table mapping reads ``"mixed(C1=int4,...)/bf16"``."""
        e = self.embedding_precision
        emb = e if isinstance(e, str) else "mixed(" + ",".join(f"{k}={v}" for k, v in sorted(e.items())) + ")"
        return f"{emb}/{self.dense_precision}"

    def precisions_for(self, spec: ModelSpec) -> dict[str, str]:
        """``{table: precision}`` for every table of ``spec``; ConfigError for a table it lacks, a row
        width the format cannot pack (int4 needs an even dim, int2 a multiple of 4), or ``int8-static``
        dense layers for a spec without an MLP (plain LR/FM: nothing to quantize statically)."""
        chosen = per_table(spec, self.embedding_precision, owner="CompressionChoice")
        for t, dim in zip(spec.tables, spec.dims()):
            per = _ROWWISE_VALUES_PER_BYTE.get(chosen[t.name], 1)
            if dim % per:
                raise ConfigError(f"CompressionChoice {self.label!r}: table {t.name!r} has dim {dim}, but "
                                  f"{chosen[t.name]} packs {per} values per byte and needs dim % {per} == 0; "
                                  "use int8 or a float format for it")
        if self.needs_calibration and not any(where != "other" for *_, where in _tagged_layers(spec)):
            raise ConfigError(f"CompressionChoice {self.label!r}: {spec.name} ({spec.interaction}) has no MLP for "
                              "int8-static to quantize; use dense_precision='int8'")
        return chosen

    def to_recipe(self) -> list[dict]:
        """The compression recipe as data (``crossrec.compress.recipe_from_dicts`` builds the configs)."""
        out: list[dict] = []
        e = self.embedding_precision
        if isinstance(e, str) and e != "fp32":
            out.append({"type": "EmbeddingQuantConfig", "precision": e, "per_table": {}})
        elif isinstance(e, dict) and any(p != "fp32" for p in e.values()):
            out.append({"type": "EmbeddingQuantConfig", "precision": "fp32", "per_table": dict(e)})
        if self.dense_precision != "fp32":
            out.append({"type": "DenseQuantConfig", "mode": self.dense_precision})
        return out

    def to_configs(self) -> list:
        """The :mod:`crossrec.compress` configs that realize this choice (``[]`` for fp32/fp32).

        Hardware (layer 3) may not import compress (layer 4, DESIGN.md §2), so the classes are found
        by name in the config registry, which holds them once ``crossrec.compress`` is imported (as
        it is by any caller that will apply them).

        >>> import crossrec.compress
        >>> [(type(c).__name__, getattr(c, "precision", None) or c.mode)
        ...  for c in CompressionChoice.parse("int4/int8").to_configs()]
        [('EmbeddingQuantConfig', 'int4'), ('DenseQuantConfig', 'int8')]
        """
        from crossrec.config import _REGISTRY  # the allowlist of config classes, filled by subclassing

        out = []
        for item in self.to_recipe():
            cls = _REGISTRY.get(item["type"])
            if cls is None:
                raise ConfigError(f"{item['type']} is not registered: import crossrec.compress before "
                                  "CompressionChoice.to_configs(), or apply the choice with apply_(model)")
            out.append(cls.from_dict(item))
        return out

    @property
    def needs_calibration(self) -> bool:
        """True when realizing the choice needs calibration data (``int8-static`` dense layers)."""
        return self.dense_precision == "int8-static"

    def cpu_only_parts(self, spec: ModelSpec) -> list[str]:
        """What of this choice runs only on a CPU in crossrec: FBGEMM row-wise int8/int4/int2 tables and
        int8 dense layers (``quantized::linear*`` kernels). Empty when the choice also runs on a CUDA GPU.

        >>> from crossrec.models import ModelSpec, TableSpec
        >>> spec = ModelSpec(num_dense=2, tables=(TableSpec(name="a", num_embeddings=9),), embedding_dim=4,
        ...                  bottom_mlp=(4,), top_mlp=(4,))
        >>> CompressionChoice.parse("fp16/bf16").cpu_only_parts(spec)
        []
        >>> CompressionChoice.parse("int8/int8").cpu_only_parts(spec)
        ['table a (int8 row-wise)', 'dense int8']
        """
        parts = [f"table {t} ({p} row-wise)" for t, p in self.precisions_for(spec).items()
                 if p in _ROWWISE_VALUES_PER_BYTE]
        return parts + ([f"dense {self.dense_precision}"] if self.dense_precision.startswith("int8") else [])

    def apply_(self, model, calibration=None):
        """Compress a built :class:`~crossrec.models.CTRModel` in place the way the compress handlers do
        (``quantize_embeddings_`` then the dense layers); returns it.

        ``calibration`` is what ``int8-static`` fixes its activation scales on: a ``CTRData`` (its first
        :data:`CALIBRATION_BATCHES` shuffled batches of :data:`CALIBRATION_BATCH` rows, as
        ``DenseQuantConfig(mode="int8-static")`` takes from ``CompressContext.train_data``) or an iterable
        of :class:`~crossrec.data.batch.Batch`. Without it, ``int8-static`` raises ConfigError; other
        choices ignore it.

        >>> import torch
        >>> from crossrec.data.batch import Batch
        >>> from crossrec.models import ModelSpec, TableSpec, build
        >>> model = build(ModelSpec(num_dense=2, tables=(TableSpec(name="a", num_embeddings=5),), embedding_dim=4,
        ...                         bottom_mlp=(4,), top_mlp=(8,)), seed=0)
        >>> batch = Batch.from_one_hot(torch.randn(32, 2), torch.randint(0, 5, (32, 1)))
        >>> type(CompressionChoice.parse("int8/int8-static").apply_(model, [batch]).top).__name__
        'Int8StaticMLP'
        """
        from crossrec.models.quantized import quantize_dense_, quantize_embeddings_

        precisions = self.precisions_for(model.spec)
        static = self.needs_calibration
        if static and calibration is None:
            raise ConfigError(f"CompressionChoice {self.label!r}: int8-static dense layers calibrate their activation "
                              "scales on data; pass apply_(model, calibration=train_data) (a CTRData or an iterable "
                              "of Batch), or use dense_precision='int8' (dynamic, no calibration)")
        if any(p != "fp32" for p in precisions.values()):
            quantize_embeddings_(model, precisions)
        if static:
            _quantize_static_(model, calibration)
        elif self.dense_precision != "fp32":
            quantize_dense_(model, self.dense_precision)
        return model


# What DenseQuantConfig(mode="int8-static") calibrates on (crossrec.compress.quantize: _CALIBRATION_BATCH and
# CompressContext.calibration_batches): apply_ takes the same rows from a CTRData, so both give the same model.
CALIBRATION_BATCH = 512
CALIBRATION_BATCHES = 8


def _quantize_static_(model, calibration) -> None:
    """What the ``int8-static`` compress handler does (crossrec.compress.quantize._DenseQuant), repeated here
    because hardware (layer 3) may not import compress (layer 4): static int8 MLPs calibrated on
    ``calibration``, dynamic int8 for the Linear layers left outside them, the interaction in bf16 where the
    CPU computes bf16 natively (``interaction="auto"``)."""
    import torch
    from torch import nn

    from crossrec.hardware.detect import detect_cpu, native_bf16
    from crossrec.models.quantized import quantize_dense_
    from crossrec.models.static_int8 import quantize_mlps_static_

    if hasattr(calibration, "batches"):  # a CTRData: the handler's shuffled batches (seed 0, CompressContext's)
        batches = calibration.batches(CALIBRATION_BATCH, shuffle=True, seed=0)
        calibration = [b for _, b in zip(range(CALIBRATION_BATCHES), batches)]
    quantize_mlps_static_(model, calibration)
    if any(isinstance(m, nn.Linear) for m in model.modules()):
        quantize_dense_(model, "int8")
    if hasattr(model, "compute_dtype"):
        model.compute_dtype = torch.bfloat16 if native_bf16(detect_cpu().flags) else torch.float32


def linear_layers(spec: ModelSpec) -> list[tuple[int, int, int]]:
    """``(in, out, rows per sample)`` of every ``nn.Linear`` that :class:`CTRModel` builds for ``spec``.

    ``rows per sample`` is 1 except for the projections of tables whose dim differs from
    ``embedding_dim`` (one projection per distinct dim, applied to each of its tables).

    >>> from crossrec.models import ModelSpec, TableSpec
    >>> linear_layers(ModelSpec(num_dense=2, tables=(TableSpec(name="a", num_embeddings=5),), embedding_dim=4,
    ...                         bottom_mlp=(4,), top_mlp=(8,)))
    [(2, 4, 1), (5, 8, 1), (8, 1, 1)]
    """
    return [(i, o, rows) for i, o, rows, _ in _tagged_layers(spec)]


def _mlp_layers(widths_in: tuple[int, ...], widths_out: tuple[int, ...], relu_last: bool) -> list:
    """The layers of one MLP ``Sequential``: ``"mlp"``, except a last layer without ReLU narrow enough to
    stay fp32 under static int8 (``"tail"``, models.static_int8)."""
    out = [(i, o, 1, "mlp") for i, o in zip(widths_in, widths_out)]
    if out and not relu_last and out[-1][1] <= _STATIC_TAIL_MAX_OUT:
        out[-1] = (*out[-1][:3], "tail")
    return out


def _tagged_layers(spec: ModelSpec) -> list[tuple[int, int, int, str]]:
    """:func:`linear_layers` with where each layer lives: ``"mlp"`` / ``"tail"`` (in an MLP ``Sequential``,
    what static int8 quantizes) or ``"other"`` (projections, full-rank cross layers, first-order term)."""
    n_tab, has_dense, d, inter = len(spec.tables), spec.num_dense > 0, spec.embedding_dim, spec.interaction
    layers: list[tuple[int, int, int, str]] = []
    if inter in ("fm", "lr") and has_dense:
        layers.append((spec.num_dense, 1, 1, "other"))  # first-order dense term
    if inter == "lr":
        return layers
    if has_dense:
        layers += _mlp_layers((spec.num_dense, *spec.bottom_mlp[:-1]), spec.bottom_mlp, relu_last=True)
    dense_out = (spec.bottom_mlp[-1] if spec.bottom_mlp else spec.num_dense) if has_dense else 0
    equal_dims = inter in ("dot", "fm")
    if equal_dims:
        for g in sorted(set(spec.dims()) - {d}):
            layers.append((g, d, sum(1 for x in spec.dims() if x == g), "other"))
    n = n_tab + has_dense
    top_in = dense_out + (n_tab * d if equal_dims else sum(spec.dims()))
    if inter == "dot":
        top_in = n * (n - 1) // 2 + dense_out
    elif inter == "cross":
        for _ in range(spec.cross_layers):
            r = spec.cross_rank  # a low-rank layer is a Sequential(Linear, Linear): an MLP to static int8
            layers += [(top_in, top_in, 1, "other")] if r is None else _mlp_layers((top_in, r), (r, top_in), False)
    if not (inter == "fm" and not spec.top_mlp):
        layers += _mlp_layers((top_in, *spec.top_mlp), (*spec.top_mlp, 1), relu_last=False)
    return layers


def _layer_precision(dense_precision: str, where: str) -> str:
    """The precision one layer runs at under ``dense_precision`` (static int8 leaves some layers out)."""
    if dense_precision != "int8-static":
        return dense_precision
    return {"mlp": "int8-static", "tail": "fp32", "other": "int8"}[where]


def _embedding_terms(spec: ModelSpec, precisions: dict[str, str], b: int, f: dict[str, float]) -> None:
    """Lookup groups, rows, bytes and index traffic of the second- and first-order tables."""
    inter, n_tab = spec.interaction, len(spec.tables)
    second = n_tab > 0 and inter != "lr"
    first = n_tab > 0 and inter in ("fm", "lr")
    table_bytes = 0.0
    if second:
        keys = {(dim, precisions[t.name]) for t, dim in zip(spec.tables, spec.dims())}
        f["lookup_groups"] += len(keys)
        f["multi_group"] += float(len(keys) > 1)
        f["dim_groups"] += len({dim for dim, _ in keys})
        f["group_bags"] += b * n_tab * len(keys)  # every group masks/shifts ids over all B*F bags
        if len(keys) > 1:  # the groups' pooled rows are concatenated (and reordered) into one tensor
            f["inter_elems"] += b * (n_tab * spec.embedding_dim if inter in ("dot", "fm") else sum(spec.dims()))
        for t, dim in zip(spec.tables, spec.dims()):
            p = precisions[t.name]
            f[f"emb_rows_{p}"] += b
            f[f"emb_bytes_{p}"] += b * row_bytes(dim, p)
            table_bytes += t.num_embeddings * row_bytes(dim, p)
    if first:  # dim-1 tables: row-wise int formats are stored as fp16 (models.quantized.first_order_precision)
        fo = {precisions[t.name] if precisions[t.name] in ("fp32", "fp16", "bf16") else "fp16" for t in spec.tables}
        f["lookup_groups"] += len(fo)
        f["multi_group"] += float(len(fo) > 1)
        f["group_bags"] += b * n_tab * len(fo)
        for t in spec.tables:
            p = precisions[t.name] if precisions[t.name] in ("fp32", "fp16", "bf16") else "fp16"
            f[f"emb_rows_{p}"] += b
            f[f"emb_bytes_{p}"] += b * row_bytes(1, p)
            table_bytes += t.num_embeddings * row_bytes(1, p)
    gathered = sum(f[f"emb_bytes_{e}"] for e in EMBEDDING_PRECISIONS)
    f["emb_miss_bytes"] = gathered * table_bytes / (table_bytes + CACHE_BYTES)
    f["index_bytes"] = (second + first) * n_tab * 2 * b * INDEX_BYTES  # one id and one offset per bag


def _interaction_terms(spec: ModelSpec, bf16: bool, b: int, f: dict[str, float]) -> None:
    """``bf16``: the interaction runs in bf16 (``CTRModel.compute_dtype``), with a cast."""
    inter, n_tab, d = spec.interaction, len(spec.tables), spec.embedding_dim
    has_dense = spec.num_dense > 0
    f[f"inter_{inter}"] = 1.0
    n = n_tab + has_dense
    emb_width = n_tab * d if inter in ("dot", "fm") else sum(spec.dims())
    elems = emb_width * (1 + bf16)  # concatenation (+ the cast to bf16)
    if inter == "dot":
        f[f"dot_flops_{'bf16' if bf16 else 'fp32'}"] = b * 2.0 * n * n * d
        f["dot_pairs"] = b * n * (n - 1) / 2
    elif inter == "cross":
        width = emb_width + (spec.bottom_mlp[-1] if spec.bottom_mlp else spec.num_dense) * has_dense
        elems += 2 * width * spec.cross_layers
    elif inter == "fm":
        elems += 3 * n * d
    f["inter_elems"] += b * elems if inter != "lr" else 0.0


OP_TERMS = ("calls", "lookup_groups", "multi_group", "dim_groups")


def eager_ops(spec: ModelSpec, compression: CompressionChoice) -> float:
    """Operators one eager call dispatches, as the per-op features count them: the call, the lookup groups,
    every Linear layer (at any precision) and the interaction's fixed ops. A coarse count (a Linear is a few
    kernels), which :func:`~crossrec.hardware.estimate` multiplies by a device's ``op_overhead_us``.

    >>> from crossrec.models import ModelSpec, TableSpec
    >>> spec = ModelSpec(num_dense=2, tables=(TableSpec(name="a", num_embeddings=50),), embedding_dim=4,
    ...                  bottom_mlp=(4,), top_mlp=(8,))
    >>> eager_ops(spec, CompressionChoice())  # the call, 1 lookup group, 1 dim group, 3 Linear, the dot interaction
    7.0
    """
    f = features(spec, compression, 1)
    return float(sum(v for k, v in f.items() if k in OP_TERMS or k.startswith("linear_")
                     or (k.startswith("inter_") and k != "inter_elems")))


def features(spec: ModelSpec, compression: CompressionChoice, batch_size: int, *,
             device: DeviceSpec | None = None) -> dict[str, float]:
    """The named features of one call (see the module docstring); :data:`FEATURE_NAMES` order.

    ``device`` adds its roofline :func:`~crossrec.hardware.estimate` as ``roofline_ms`` (0 without one);
    a precision the device cannot run raises :class:`ConfigError`. Deterministic: spec in, numbers out.

    >>> from crossrec.hardware.spec import get_device
    >>> from crossrec.models import ModelSpec, TableSpec
    >>> spec = ModelSpec(num_dense=2, tables=(TableSpec(name="a", num_embeddings=50),), embedding_dim=4,
    ...                  bottom_mlp=(4,), top_mlp=(8,))
    >>> f = features(spec, CompressionChoice(), 16, device=get_device("epyc-zen5-2vcpu"))
    >>> f["linear_fp32"], f["flops_fp32"], f["emb_bytes_fp32"], f["roofline_ms"] > 0  # 16 x 2(2*4 + 5*8 + 8*1)
    (3.0, 1792.0, 256.0, True)
    """
    check(batch_size >= 1, "features", "batch_size", batch_size, ">= 1")
    b = float(batch_size)
    f = dict.fromkeys(FEATURE_NAMES, 0.0)
    f["batch_size"], f["tables"], f["calls"], f["samples"] = b, float(len(spec.tables)), 1.0, b
    precisions = compression.precisions_for(spec)
    p = compression.dense_precision
    for i, o, rows, where in _tagged_layers(spec):
        q = _layer_precision(p, where)
        f[dense_term("linear", q)] += 1
        f[dense_term("flops", q)] += b * rows * 2.0 * i * o
        f[dense_term("weight_bytes", q)] += (i * o + o) * _WEIGHT_BYTES[q]
        f[dense_term("act", q)] += b * rows * (i + o)
    weights = sum(f[dense_term("weight_bytes", q)] for q in DENSE_PRECISIONS)
    f["weight_miss_bytes"] = weights * weights / (weights + CACHE_BYTES)  # weights that stay in cache read faster
    _embedding_terms(spec, precisions, batch_size, f)
    # bf16 dense layers run the interaction in bf16; int8-static does where the CPU computes bf16 ("auto")
    static_bf16 = device is not None and device.kind == "cpu" and device.supports("bf16")
    _interaction_terms(spec, p == "bf16" or (p == "int8-static" and static_bf16), batch_size, f)
    if device is not None:
        f["roofline_ms"] = estimate(spec, device, batch_size, embedding_precision=precisions,
                                    dense_precision=p).latency_ms
    return f
