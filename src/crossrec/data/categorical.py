"""Categorical encodings shared by the Criteo and Avazu readers: hashing or a frequency vocabulary.

Readers first turn each raw categorical value into a non-negative int64 *raw key* (Criteo: the
8-hex-digit value as uint32; Avazu: a 63-bit FNV-1a hash of the string bytes), with ``-1`` for a
missing value. :func:`encode_keys` then maps keys to embedding rows:

* ``mode="hash"``: row 0 = missing, row ``1 + key % (num_embeddings - 1)`` otherwise.
* ``mode="vocab"``: row 0 = out-of-vocabulary (rare or unseen), row 1 = missing, rows ``2..`` =
  the vocabulary's values in sorted order (sorted so two runs over the same data agree).

A :class:`Vocabulary` is plain named numpy arrays (``{"vocab/C1": uint32 array, ...}``), so it can
be stored as ``.npy`` files in a cache or as safetensors in an artifact and applied to new files.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crossrec.config import Config, check
from crossrec.errors import DataError, DatasetNotFoundError

PREFIX = "vocab/"


@dataclass(frozen=True, kw_only=True)
class CategoricalEncoding(Config):
    """How raw categorical values become embedding rows (see the module docstring).

    >>> CategoricalEncoding(mode="hash", num_embeddings=1000).rows_for(None)
    1000
    >>> CategoricalEncoding(mode="vocab", min_count=5).min_count
    5
    >>> CategoricalEncoding(mode="hash")
    Traceback (most recent call last):
    ...
    crossrec.errors.ConfigError: CategoricalEncoding.num_embeddings = None is invalid: an int >= 2 for mode='hash'
    """

    mode: Literal["hash", "vocab"]
    num_embeddings: int | None = None  # hash mode: rows per table (row 0 = missing)
    min_count: int = 1  # vocab mode: values seen fewer times share the OOV row 0

    def __post_init__(self) -> None:
        check(self.mode in ("hash", "vocab"), "CategoricalEncoding", "mode", self.mode, "'hash' or 'vocab'")
        if self.mode == "hash":
            check(isinstance(self.num_embeddings, int) and self.num_embeddings >= 2, "CategoricalEncoding",
                  "num_embeddings", self.num_embeddings, "an int >= 2 for mode='hash'")
            check(self.min_count == 1, "CategoricalEncoding", "min_count", self.min_count,
                  "only mode='vocab' uses min_count; leave it at 1 for mode='hash'")
        else:
            check(self.num_embeddings is None, "CategoricalEncoding", "num_embeddings", self.num_embeddings,
                  "None for mode='vocab' (the table size is 2 + the vocabulary size)")
            check(isinstance(self.min_count, int) and self.min_count >= 1, "CategoricalEncoding", "min_count",
                  self.min_count, "an int >= 1")

    def rows_for(self, values: np.ndarray | None) -> int:
        """Embedding rows of one feature: the hash size, or 2 + the vocabulary size."""
        if self.mode == "hash":
            return int(self.num_embeddings)  # type: ignore[arg-type]
        if values is None:
            raise DataError("mode='vocab' needs the feature's vocabulary to size its table")
        return 2 + len(values)


@dataclass(frozen=True)
class Vocabulary:
    """Sorted raw keys per feature; ``values[name]`` is a uint32 (Criteo) or uint64 (Avazu) array.

    >>> v = Vocabulary({"C1": np.array([3, 7], np.uint32)})
    >>> sorted(v.to_arrays()), v.num_embeddings("C1")
    (['vocab/C1'], 4)
    >>> Vocabulary.from_arrays(v.to_arrays()).digest() == v.digest()
    True
    """

    values: dict[str, np.ndarray]

    def __post_init__(self) -> None:
        for name, arr in self.values.items():
            if arr.ndim != 1 or arr.dtype not in (np.uint32, np.uint64):
                raise DataError(f"vocabulary of {name}: expected a 1-D uint32/uint64 array, got {arr.dtype} "
                                f"with shape {arr.shape}")
            if len(arr) > 1 and not bool(np.all(arr[1:] > arr[:-1])):
                raise DataError(f"vocabulary of {name} is not strictly increasing; it was not built by crossrec")

    def num_embeddings(self, name: str) -> int:
        return 2 + len(self[name])

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.values:
            raise DataError(f"the vocabulary has no feature {name!r}; it has {', '.join(self.values)}")
        return self.values[name]

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Named arrays (``"vocab/<feature>"``), ready for safetensors or ``.npy`` files."""
        return {PREFIX + name: arr for name, arr in self.values.items()}

    @staticmethod
    def from_arrays(arrays: dict[str, np.ndarray]) -> Vocabulary:
        """Inverse of :meth:`to_arrays`; keys without the ``vocab/`` prefix are ignored."""
        return Vocabulary({k[len(PREFIX):]: np.asarray(v) for k, v in arrays.items() if k.startswith(PREFIX)})

    def digest(self) -> str:
        """sha256 over names, dtypes and values: two vocabularies with equal digests encode alike."""
        h = hashlib.sha256()
        for name in sorted(self.values):
            arr = np.ascontiguousarray(self.values[name])
            h.update(f"{name}:{arr.dtype.str}:{len(arr)};".encode())
            h.update(arr.tobytes())
        return h.hexdigest()

    def save(self, directory: str | Path) -> Path:
        """Write ``<directory>/vocab/<feature>.npy`` (no pickle); returns the ``vocab`` folder."""
        folder = Path(directory) / PREFIX.rstrip("/")
        folder.mkdir(parents=True, exist_ok=True)
        for name, arr in self.values.items():
            np.save(folder / f"{name}.npy", arr, allow_pickle=False)
        return folder

    @staticmethod
    def load(directory: str | Path, names: tuple[str, ...] | None = None) -> Vocabulary:
        """Read what :meth:`save` wrote (all features, or ``names`` in that order)."""
        folder = Path(directory) / PREFIX.rstrip("/")
        if not folder.is_dir():
            raise DatasetNotFoundError(f"{folder} does not exist: {directory} holds no vocabulary "
                                       "(prepare the training file with CategoricalEncoding(mode='vocab') first)")
        names = names or tuple(sorted(p.stem for p in folder.glob("*.npy")))
        missing = [n for n in names if not (folder / f"{n}.npy").is_file()]
        if missing:
            raise DataError(f"{folder}: no vocabulary file for {', '.join(missing)}; prepare the training data again")
        return Vocabulary({n: np.load(folder / f"{n}.npy", allow_pickle=False) for n in names})


class VocabCounter:
    """Counts raw keys per feature over many blocks, in memory bounded by the distinct values.

    Partial counts are merged lazily (when they outgrow the merged table), so the total cost stays
    O(values · log) instead of re-sorting the whole table after every block.

    >>> c = VocabCounter(("C1",), np.uint32)
    >>> c.update(np.array([[5, 5, -1, 9]]))
    >>> c.build(min_count=2)["C1"]
    array([5], dtype=uint32)
    """

    def __init__(self, names: tuple[str, ...], dtype: type[np.unsignedinteger]):
        self.names, self.dtype = names, np.dtype(dtype)
        self._merged = [(np.empty(0, self.dtype), np.empty(0, np.int64)) for _ in names]
        self._pending: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in names]

    def update(self, keys: np.ndarray) -> None:
        """Count one block of raw keys ``(F, n)`` int64 (feature-major; ``-1`` = missing, not counted)."""
        for f, col in enumerate(keys):
            values, counts = np.unique(col[col >= 0].astype(self.dtype), return_counts=True)
            self._pending[f].append((values, counts.astype(np.int64)))
            if sum(len(v) for v, _ in self._pending[f]) > max(len(self._merged[f][0]), 1 << 16):
                self._merge(f)

    def _merge(self, f: int) -> None:
        parts = [self._merged[f], *self._pending[f]]
        values = np.concatenate([v for v, _ in parts])
        counts = np.concatenate([c for _, c in parts])
        order = np.argsort(values, kind="stable")
        values, counts = values[order], counts[order]
        if len(values):
            starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
            values, counts = values[starts], np.add.reduceat(counts, starts)
        self._merged[f] = (values, counts)
        self._pending[f] = []

    def build(self, min_count: int) -> Vocabulary:
        """Values seen at least ``min_count`` times, sorted, per feature."""
        out = {}
        for f, name in enumerate(self.names):
            self._merge(f)
            values, counts = self._merged[f]
            out[name] = values[counts >= min_count]
        return Vocabulary(out)


def encode_keys(keys: np.ndarray, names: tuple[str, ...], encoding: CategoricalEncoding,
                vocab: Vocabulary | None) -> np.ndarray:
    """Map raw keys ``(F, n)`` int64 (feature-major, ``-1`` = missing) to embedding rows ``(F, n)``.

    >>> keys = np.array([[-1, 12], [10, 11]])  # feature a: missing, 12; feature b: 10, 11
    >>> encode_keys(keys, ("a", "b"), CategoricalEncoding(mode="hash", num_embeddings=5), None).tolist()
    [[0, 1], [3, 4]]
    >>> v = Vocabulary({"a": np.array([12], np.uint32), "b": np.array([10, 11], np.uint32)})
    >>> encode_keys(keys, ("a", "b"), CategoricalEncoding(mode="vocab"), v).tolist()
    [[1, 2], [2, 3]]
    """
    missing = keys < 0
    if encoding.mode == "hash":
        rows = 1 + keys % (int(encoding.num_embeddings) - 1)  # type: ignore[arg-type]
        rows[missing] = 0
        return rows
    if vocab is None:
        raise DataError("mode='vocab' needs a Vocabulary to encode keys")
    out = np.empty(keys.shape, np.int64)
    for f, name in enumerate(names):
        # Arrow's hash-table lookup is ~3x faster than np.searchsorted (the table is built per call,
        # so callers pass big blocks).
        values = pa.array(vocab[name].astype(np.int64))
        index = pc.fill_null(pc.index_in(pa.array(keys[f]), value_set=values), -1).to_numpy()
        out[f] = np.where(index < 0, 0, index.astype(np.int64) + 2)  # unseen/rare -> OOV row 0
    out[missing] = 1
    return out
