"""`CTRData`: a table of CTR samples held as numpy arrays (in memory or memory-mapped).

Storage is columnar and jagged like :class:`~crossrec.data.batch.Batch`: ``lengths (N, F)``
ids per bag, ``ids`` flat in sample-major bag order, ``row_ptr (N+1,)`` where each sample's
ids start. Every reader returns one; :func:`save_cache` / :func:`load_cache` store it as
``.npy`` files + ``manifest.json`` (no pickle) and load it back memory-mapped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from crossrec.data.batch import Batch
from crossrec.data.schema import FeatureSchema
from crossrec.errors import DataError, DatasetNotFoundError

CACHE_VERSION = 1
_ARRAYS = ("dense", "labels", "ids", "lengths")


@dataclass
class CTRData:
    """N samples: dense ``(N, num_dense)`` float32, labels ``(N,)`` float32, jagged sparse ids.

    >>> from crossrec.data.schema import SparseFeature
    >>> s = FeatureSchema(dense=("x",), sparse=(SparseFeature(name="c", num_embeddings=5),))
    >>> d = CTRData.from_one_hot(s, np.zeros((4, 1), np.float32), np.arange(4).reshape(4, 1), np.ones(4))
    >>> len(d), next(d.batches(3)).batch_size
    (4, 3)
    """

    schema: FeatureSchema
    dense: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    lengths: np.ndarray

    def __post_init__(self) -> None:
        n, f = len(self.labels), self.schema.num_sparse
        if self.dense.shape != (n, self.schema.num_dense):
            raise DataError(f"dense has shape {self.dense.shape}, expected ({n}, {self.schema.num_dense})")
        if self.lengths.shape != (n, f):
            raise DataError(f"lengths has shape {self.lengths.shape}, expected ({n}, {f})")
        self._one_hot = bool(self.ids.shape[0] == n * f and (n == 0 or f == 0 or int(self.lengths.min()) == 1))
        self._row_ptr: np.ndarray | None = None

    @staticmethod
    def from_one_hot(schema: FeatureSchema, dense: np.ndarray, ids: np.ndarray, labels: np.ndarray) -> CTRData:
        """Build from exactly one id per feature and sample: ``ids`` is ``(N, F)``."""
        n, f = ids.shape
        return CTRData(schema=schema, dense=np.asarray(dense, np.float32), labels=np.asarray(labels, np.float32),
                       ids=np.ascontiguousarray(ids, dtype=np.int64).reshape(-1), lengths=np.ones((n, f), np.int32))

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def ctr(self) -> float:
        return float(self.labels.mean()) if len(self) else float("nan")

    @property
    def row_ptr(self) -> np.ndarray:
        """(N+1,) index into ``ids`` where each sample starts."""
        if self._row_ptr is None:
            ptr = np.zeros(len(self) + 1, dtype=np.int64)
            np.cumsum(self.lengths.sum(axis=1, dtype=np.int64), out=ptr[1:])
            self._row_ptr = ptr
        return self._row_ptr

    def take(self, index: np.ndarray) -> CTRData:
        """A new CTRData holding the samples at ``index`` (in that order)."""
        index = np.asarray(index, dtype=np.int64)
        f = self.schema.num_sparse
        if self._one_hot:
            ids = self.ids.reshape(-1, f)[index].reshape(-1)
        else:
            ptr, lens = self.row_ptr, self.lengths[index].sum(axis=1, dtype=np.int64)
            starts = np.repeat(ptr[index], lens)
            within = np.arange(int(lens.sum()), dtype=np.int64) - np.repeat(np.cumsum(lens) - lens, lens)
            ids = self.ids[starts + within]
        return CTRData(schema=self.schema, dense=np.asarray(self.dense[index]), labels=np.asarray(self.labels[index]),
                       ids=np.asarray(ids, np.int64), lengths=np.asarray(self.lengths[index]))

    def slice(self, start: int, stop: int) -> CTRData:
        """Samples ``start:stop`` (contiguous; views where the storage allows)."""
        stop = min(stop, len(self))
        if self._one_hot:
            f = self.schema.num_sparse
            ids = self.ids[start * f : stop * f]
        else:
            ids = self.ids[self.row_ptr[start] : self.row_ptr[stop]]
        return CTRData(schema=self.schema, dense=self.dense[start:stop], labels=self.labels[start:stop],
                       ids=ids, lengths=self.lengths[start:stop])

    def to_batch(self) -> Batch:
        """All samples as one :class:`Batch` (copies into torch tensors)."""
        offsets = np.zeros(self.lengths.size + 1, dtype=np.int64)
        np.cumsum(self.lengths.reshape(-1), out=offsets[1:])
        return Batch(dense=torch.from_numpy(np.array(self.dense, np.float32)),
                     ids=torch.from_numpy(np.array(self.ids, np.int64)),
                     offsets=torch.from_numpy(offsets), num_sparse=self.schema.num_sparse,
                     labels=torch.from_numpy(np.array(self.labels, np.float32)))

    def distinct_batches(self, batch_size: int, count: int) -> list[Batch]:
        """``count`` batches of ``batch_size`` consecutive samples each (wrapping around when the data
        is smaller), e.g. so repeated timing calls do not look up the same rows every time.

        >>> from crossrec.data.synthetic import SyntheticConfig, generate
        >>> [b.batch_size for b in generate(SyntheticConfig(rows=10, num_sparse=2)).distinct_batches(4, 3)]
        [4, 4, 4]
        """
        if batch_size < 1 or count < 1 or len(self) == 0:
            raise DataError(f"distinct_batches needs batch_size >= 1, count >= 1 and data, got {batch_size}, "
                            f"{count}, {len(self)} samples")
        return [self.take(np.arange(i * batch_size, (i + 1) * batch_size) % len(self)).to_batch()
                for i in range(count)]

    def batches(self, batch_size: int, *, shuffle: bool = False, seed: int = 0,
                drop_last: bool = False) -> Iterator[Batch]:
        """Yield :class:`Batch` es of ``batch_size`` samples (seeded shuffle if asked)."""
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        n = len(self)
        order = np.random.default_rng(seed).permutation(n) if shuffle else None
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            if drop_last and stop - start < batch_size:
                return
            part = self.take(order[start:stop]) if order is not None else self.slice(start, stop)
            yield part.to_batch()

    def split(self, fractions: tuple[float, ...], seed: int = 0) -> tuple[CTRData, ...]:
        """Seeded random split by fractions that sum to 1, e.g. ``(0.8, 0.1, 0.1)``."""
        if abs(sum(fractions) - 1.0) > 1e-6 or any(f < 0 for f in fractions):
            raise DataError(f"split fractions must be >= 0 and sum to 1, got {fractions}")
        order = np.random.default_rng(seed).permutation(len(self))
        bounds = np.round(np.cumsum((0.0, *fractions)) * len(self)).astype(int)
        return tuple(self.take(np.sort(order[a:b])) for a, b in zip(bounds[:-1], bounds[1:]))

    @staticmethod
    def concat(parts: list[CTRData]) -> CTRData:
        if not parts:
            raise DataError("nothing to concatenate")
        return CTRData(schema=parts[0].schema, dense=np.concatenate([p.dense for p in parts]),
                       labels=np.concatenate([p.labels for p in parts]),
                       ids=np.concatenate([p.ids for p in parts]),
                       lengths=np.concatenate([p.lengths for p in parts]))


def save_cache(data: CTRData, directory: str | Path, extra: dict | None = None) -> Path:
    """Write ``data`` as ``<name>.npy`` files + ``manifest.json``; returns the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name in _ARRAYS:
        np.save(directory / f"{name}.npy", np.ascontiguousarray(getattr(data, name)), allow_pickle=False)
    write_manifest(directory, len(data), data.schema, extra or {})
    return directory


def write_manifest(directory: Path, rows: int, schema: FeatureSchema, extra: dict) -> None:
    """The cache's ``manifest.json``; writers that stream arrays to disk themselves call this last."""
    manifest = {"format": "crossrec-ctr-cache", "version": CACHE_VERSION, "rows": rows,
                "schema": schema.to_dict(), "extra": extra}
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2))


def load_cache(directory: str | Path, *, mmap: bool = True) -> CTRData:
    """Load a cache written by :func:`save_cache`, memory-mapped unless ``mmap=False``."""
    directory = Path(directory)
    manifest_path = directory / "manifest.json"
    if not manifest_path.is_file():
        raise DatasetNotFoundError(f"{directory} is not a crossrec data cache (no manifest.json); "
                                   "create one with `crossrec datasets prepare`")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != "crossrec-ctr-cache" or manifest.get("version") != CACHE_VERSION:
        raise DataError(f"{manifest_path}: unsupported cache format/version "
                        f"{manifest.get('format')}/{manifest.get('version')}; delete it and prepare again")
    arrays = {}
    for name in _ARRAYS:
        path = directory / f"{name}.npy"
        if not path.is_file():
            raise DataError(f"{directory}: cache file {path.name} is missing; delete the cache and prepare again")
        arrays[name] = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    data = CTRData(schema=FeatureSchema.from_dict(manifest["schema"]), **arrays)
    if len(data) != manifest["rows"]:
        raise DataError(f"{directory}: manifest says {manifest['rows']} rows, arrays hold {len(data)}")
    return data
