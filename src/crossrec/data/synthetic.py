"""Synthetic Criteo-shaped CTR data with a *planted teacher*.

Labels come from a fixed random DLRM (the teacher, numpy only) plus logistic noise:
``y = 1[teacher_logit(x) + noise > 0]``, i.e. ``y ~ Bernoulli(sigmoid(teacher_logit))``. So a
model's test AUC is meaningful, and the teacher's own AUC on the same rows is the ceiling no
model can beat on average. Ids follow a Zipf-like law per table (a few hot rows, a long
tail), tables default to the Criteo Kaggle cardinalities capped at ``max_rows``.

Rows are produced in chunks seeded by ``(seed, chunk index)``: deterministic for a given
``(seed, chunk_rows)``, and 100M+ rows can be streamed to a cache without ever being held in
memory at once (:func:`write_cache`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from math import gcd
from pathlib import Path

import numpy as np

from crossrec.config import Config, check
from crossrec.data.dataset import CTRData, load_cache, write_manifest
from crossrec.data.schema import FeatureSchema, SparseFeature

# Criteo Kaggle (DAC) table sizes C1..C26, as used by the DLRM reference implementation.
CRITEO_KAGGLE_CARDINALITIES: tuple[int, ...] = (
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194, 27, 14992,
    5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572)


@dataclass(frozen=True, kw_only=True)
class SyntheticConfig(Config):
    """What to generate. ``cardinalities=None`` takes the Criteo Kaggle sizes (cycled past 26).

    ``logit_scale`` sets the std of the teacher's logits (higher: easier task, higher ceiling);
    ``ctr`` the approximate positive rate; ``zipf_exponent`` the id skew (0 = uniform).
    """

    rows: int = 100_000
    num_dense: int = 13
    num_sparse: int = 26
    cardinalities: tuple[int, ...] | None = None
    max_rows: int | None = 100_000
    zipf_exponent: float = 1.05
    teacher_dim: int = 8
    teacher_rows: int = 1024
    teacher_hidden: int = 0
    logit_scale: float = 2.0
    ctr: float = 0.25
    chunk_rows: int = 65_536
    seed: int = 0

    def __post_init__(self) -> None:
        own = "SyntheticConfig"
        check(self.rows >= 1, own, "rows", self.rows, ">= 1")
        check(self.num_dense >= 0 and self.num_sparse >= 1, own, "num_dense/num_sparse",
              (self.num_dense, self.num_sparse), "num_dense >= 0 and num_sparse >= 1")
        if self.cardinalities is not None:
            check(len(self.cardinalities) == self.num_sparse and min(self.cardinalities) >= 1, own,
                  "cardinalities", self.cardinalities, f"{self.num_sparse} sizes, each >= 1")
        check(self.max_rows is None or self.max_rows >= 1, own, "max_rows", self.max_rows, ">= 1 or null")
        check(self.zipf_exponent >= 0, own, "zipf_exponent", self.zipf_exponent, ">= 0")
        check(self.teacher_dim >= 1 and self.teacher_rows >= 1, own, "teacher_dim/teacher_rows",
              (self.teacher_dim, self.teacher_rows), ">= 1")
        check(self.teacher_hidden >= 0, own, "teacher_hidden", self.teacher_hidden, ">= 0 (0 = linear top)")
        check(self.logit_scale > 0, own, "logit_scale", self.logit_scale, "> 0")
        check(0 < self.ctr < 1, own, "ctr", self.ctr, "strictly between 0 and 1")
        check(self.chunk_rows >= 1, own, "chunk_rows", self.chunk_rows, ">= 1")

    def table_sizes(self) -> tuple[int, ...]:
        sizes = self.cardinalities or tuple(CRITEO_KAGGLE_CARDINALITIES[i % 26] for i in range(self.num_sparse))
        return tuple(min(s, self.max_rows) if self.max_rows else s for s in sizes)

    def schema(self) -> FeatureSchema:
        return FeatureSchema(dense=tuple(f"I{i + 1}" for i in range(self.num_dense)),
                             sparse=tuple(SparseFeature(name=f"C{i + 1}", num_embeddings=n)
                                          for i, n in enumerate(self.table_sizes())),
                             preprocessing={"reader": "synthetic", "config": self.to_dict()})


class Teacher:
    """The planted random DLRM: hashed tables, bottom MLP, dot interaction, top MLP (numpy).

    >>> t = Teacher(SyntheticConfig(rows=10, num_sparse=3, max_rows=20))
    >>> d = generate(SyntheticConfig(rows=10, num_sparse=3, max_rows=20))
    >>> t.logits(d).shape
    (10,)
    """

    def __init__(self, config: SyntheticConfig):
        self.config = c = config
        rng = np.random.default_rng([c.seed, 0x7EAC4E])
        d, f = c.teacher_dim, c.num_sparse
        self.tables = rng.standard_normal((f, c.teacher_rows, d)) / np.sqrt(d)
        self.w1 = rng.standard_normal((c.num_dense, 32)) / np.sqrt(max(c.num_dense, 1))
        self.w2 = rng.standard_normal((32, d)) / np.sqrt(32)
        n = f + (c.num_dense > 0)
        self.li, self.lj = np.tril_indices(n, k=-1)
        top_in = len(self.li) + (d if c.num_dense else 0)
        hidden = c.teacher_hidden or top_in
        self.w3 = rng.standard_normal((top_in, hidden)) / np.sqrt(top_in) if c.teacher_hidden else None
        self.w4 = rng.standard_normal(hidden) / np.sqrt(hidden)
        self.shift, self.scale = 0.0, 1.0
        self._calibrate()

    def _raw(self, dense: np.ndarray, ids: np.ndarray) -> np.ndarray:
        c = self.config
        rows = (ids * 2654435761) % c.teacher_rows  # (B, F) Knuth hash: hot ids spread over teacher rows
        fields = self.tables[np.arange(c.num_sparse), rows]  # (B, F, d)
        parts = []
        if c.num_dense:
            x = np.maximum(dense @ self.w1, 0) @ self.w2  # (B, d)
            fields = np.concatenate([x[:, None, :], fields], axis=1)
            parts.append(x)
        z = np.einsum("bid,bjd->bij", fields, fields)[:, self.li, self.lj]  # (B, pairs)
        h = np.concatenate([*parts, z], axis=1)
        if self.w3 is not None:  # optional hidden ReLU layer in the top MLP
            h = np.maximum(h @ self.w3, 0)
        return h @ self.w4

    def _calibrate(self) -> None:
        # Standardize logits on a fixed sample, then shift so the mean sigmoid is ~ctr.
        c = self.config
        rng = np.random.default_rng([c.seed, 0xCA11B])
        dense, ids = _features(c, 20_000, rng)
        raw = self._raw(dense, ids)
        self.scale = c.logit_scale / (raw.std() + 1e-12)
        z = (raw - raw.mean()) * self.scale
        lo, hi = -20.0, 20.0
        for _ in range(60):  # bisection on the intercept
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if (1 / (1 + np.exp(-(z + mid)))).mean() < c.ctr else (lo, mid)
        self.shift = (lo + hi) / 2 - raw.mean() * self.scale

    def logits_from(self, dense: np.ndarray, ids: np.ndarray) -> np.ndarray:
        out = np.empty(len(ids))
        for s in range(0, len(ids), 16_384):  # bound the (B, F, F) intermediate
            out[s : s + 16_384] = self._raw(dense[s : s + 16_384], ids[s : s + 16_384]) * self.scale + self.shift
        return out

    def logits(self, data: CTRData) -> np.ndarray:
        """The teacher's logit for every sample of ``data`` (one-hot synthetic data only)."""
        ids = np.asarray(data.ids).reshape(len(data), self.config.num_sparse)
        return self.logits_from(np.asarray(data.dense, np.float64), ids)


def _zipf_ids(n: int, size: int, s: float, rng: np.random.Generator) -> np.ndarray:
    """Ranks with P(r) ~ (r+1)^-s (continuous inverse CDF), scattered over [0, n) by a bijection."""
    u = rng.random(size)
    if s == 0 or n == 1:
        ranks = np.floor(u * n)
    elif abs(s - 1.0) < 1e-9:
        ranks = np.floor(np.exp(u * np.log(n + 1.0))) - 1
    else:
        a = 1.0 - s
        ranks = np.floor(((u * ((n + 1.0) ** a - 1.0)) + 1.0) ** (1.0 / a)) - 1
    ranks = np.clip(ranks, 0, n - 1).astype(np.int64)
    mult = next(m for m in (2654435761, 2246822519, 3266489917, 668265263) if gcd(m, n) == 1)
    return (ranks * mult + 12345) % n


def _features(c: SyntheticConfig, rows: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    # Dense: log1p of heavy-tailed counts, as Criteo's integer features look after preprocessing.
    dense = np.log1p(np.floor(np.exp(rng.normal(1.0, 1.5, size=(rows, c.num_dense))))).astype(np.float32)
    ids = np.stack([_zipf_ids(n, rows, c.zipf_exponent, rng) for n in c.table_sizes()], axis=1)
    return dense, ids


def chunks(config: SyntheticConfig, teacher: Teacher | None = None) -> Iterator[CTRData]:
    """Yield the data set as CTRData chunks of ``config.chunk_rows`` rows (last one shorter)."""
    teacher = teacher or Teacher(config)
    schema = config.schema()
    for i, start in enumerate(range(0, config.rows, config.chunk_rows)):
        rows = min(config.chunk_rows, config.rows - start)
        rng = np.random.default_rng([config.seed, 1, i])
        dense, ids = _features(config, rows, rng)
        p = 1.0 / (1.0 + np.exp(-teacher.logits_from(dense.astype(np.float64), ids)))
        labels = (rng.random(rows) < p).astype(np.float32)
        yield CTRData.from_one_hot(schema, dense, ids, labels)


def generate(config: SyntheticConfig) -> CTRData:
    """All rows in memory (fine up to a few million rows; stream with :func:`chunks` beyond).

    >>> d = generate(SyntheticConfig(rows=1000, num_sparse=4, max_rows=100, seed=3))
    >>> len(d), d.schema.cardinalities
    (1000, (100, 100, 100, 100))
    """
    return CTRData.concat(list(chunks(config)))


def write_cache(config: SyntheticConfig, directory: str | Path, progress=None) -> CTRData:
    """Stream the data set into a memory-mapped cache chunk by chunk; returns it loaded (mmap)."""
    from numpy.lib.format import open_memmap

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    n, f = config.rows, config.num_sparse
    arrays = {"dense": open_memmap(directory / "dense.npy", "w+", np.float32, (n, config.num_dense)),
              "labels": open_memmap(directory / "labels.npy", "w+", np.float32, (n,)),
              "ids": open_memmap(directory / "ids.npy", "w+", np.int64, (n * f,)),
              "lengths": open_memmap(directory / "lengths.npy", "w+", np.int32, (n, f))}
    start = 0
    for chunk in chunks(config):
        stop = start + len(chunk)
        arrays["dense"][start:stop] = chunk.dense
        arrays["labels"][start:stop] = chunk.labels
        arrays["ids"][start * f : stop * f] = chunk.ids
        arrays["lengths"][start:stop] = 1
        start = stop
        if progress:
            progress(stop, n)
    for a in arrays.values():
        a.flush()
    write_manifest(directory, n, config.schema(), {})
    return load_cache(directory)
