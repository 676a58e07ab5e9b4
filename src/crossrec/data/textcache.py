"""The on-disk cache of the text readers (Criteo, Avazu): written block by block, swapped in atomically.

The cache has exactly the layout of :func:`crossrec.data.dataset.save_cache` (``dense.npy``,
``labels.npy``, ``ids.npy``, ``lengths.npy``, ``manifest.json``) and is read back with
:func:`~crossrec.data.dataset.load_cache`. It is written here block by block (``.npy`` files whose
header is fixed up at the end) rather than through ``save_cache``, because a full Criteo set's
arrays (~370 bytes/row, 17 GB for Kaggle's 45M rows) do not fit in memory.

A cache is reused only when its ``manifest.json`` ``extra.key`` equals the new request's key: the
reader, its config, the vocabulary digest and the *source fingerprint* — file size, mtime (ns) and
sha256 of its first and last MiB. Size + mtime catch ordinary edits and re-downloads; the two hashes
catch a different file with a copied mtime. (A same-size in-place edit of only the middle of a file
that also restores its mtime would go unnoticed; delete the cache after such surgery.) The cache is
built in a temporary sibling folder and renamed into place, so an interrupted run never leaves a
half-written cache that a later run would trust.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from crossrec.data.dataset import CTRData, load_cache
from crossrec.errors import DataError, DatasetNotFoundError

_MIB = 1 << 20
_NPY_HEADER_BYTES = 128  # fixed, so the final shape can be written over the placeholder


class NpyAppender:
    """Append row blocks to a ``.npy`` file whose row count is unknown until :meth:`close`.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "x.npy"
    >>> w = NpyAppender(path, np.int64, (2,))
    >>> w.append(np.ones((3, 2), np.int64)); w.append(np.zeros((1, 2), np.int64)); w.close()
    >>> np.load(path).shape
    (4, 2)
    """

    def __init__(self, path: Path, dtype: Any, tail: tuple[int, ...]):
        self.path, self.dtype, self.tail, self.rows = Path(path), np.dtype(dtype), tuple(tail), 0
        self._file = self.path.open("wb")
        self._file.write(b"\0" * _NPY_HEADER_BYTES)

    def append(self, block: np.ndarray) -> None:
        if block.shape[1:] != self.tail:
            raise DataError(f"internal: block of shape {block.shape} appended to {self.path.name} of rows {self.tail}")
        np.ascontiguousarray(block, self.dtype).tofile(self._file)
        self.rows += len(block)

    def close(self) -> None:
        header = repr({"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                       "shape": (self.rows, *self.tail)}).encode("latin1")
        room = _NPY_HEADER_BYTES - 10  # magic (6) + version (2) + header length (2)
        self._file.seek(0)
        self._file.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", room) + header.ljust(room - 1) + b"\n")
        self._file.close()


class NpySink:
    """Writes the four cache arrays of a one-hot CTR table block by block into ``directory``."""

    def __init__(self, directory: Path, num_dense: int, num_sparse: int):
        self.directory = directory
        self._w = {"dense": NpyAppender(directory / "dense.npy", np.float32, (num_dense,)),
                   "labels": NpyAppender(directory / "labels.npy", np.float32, ()),
                   "ids": NpyAppender(directory / "ids.npy", np.int64, ()),  # flat, as CTRData holds it
                   "lengths": NpyAppender(directory / "lengths.npy", np.int32, (num_sparse,))}

    def append(self, dense: np.ndarray, labels: np.ndarray) -> None:
        self._w["dense"].append(dense)
        self._w["labels"].append(labels)

    def append_ids(self, ids_t: np.ndarray) -> None:
        """Rows of ``ids_t`` (F, n) feature-major, stored sample-major and flat (n * F,)."""
        self._w["ids"].append(np.ascontiguousarray(ids_t.T).reshape(-1))
        self._w["lengths"].append(np.ones(ids_t.shape[::-1], np.int32))

    def finish(self) -> None:
        for w in self._w.values():
            w.close()


def source_fingerprint(path: str | Path) -> dict[str, Any]:
    """Size, mtime and sha256 of the first and last MiB of a file (see the module docstring).

    >>> sorted(source_fingerprint(__file__))
    ['head_sha256', 'mtime_ns', 'size_bytes', 'tail_sha256']
    """
    path = Path(path)
    stat = path.stat()
    with path.open("rb") as f:
        head = hashlib.sha256(f.read(_MIB)).hexdigest()
        f.seek(max(stat.st_size - _MIB, 0))
        tail = hashlib.sha256(f.read(_MIB)).hexdigest()
    return {"size_bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "head_sha256": head, "tail_sha256": tail}


@dataclass(frozen=True)
class PrepareInfo:
    """What preparing a cache recorded: rows, bad rows skipped (with the first few), source, time.

    Read it with :func:`prepare_info` (example in :func:`crossrec.data.criteo.prepare_criteo`).
    """

    rows: int
    skipped_rows: int
    bad_row_examples: tuple[dict, ...]
    source: dict
    seconds: float
    key: dict


def prepare_info(cache_dir: str | Path) -> PrepareInfo:
    """Read the :class:`PrepareInfo` of a cache made by ``prepare_criteo`` / ``prepare_avazu``."""
    path = Path(cache_dir) / "manifest.json"
    if not path.is_file():
        raise DatasetNotFoundError(f"{cache_dir} is not a prepared data cache (no manifest.json)")
    manifest = json.loads(path.read_text())
    extra = manifest.get("extra", {})
    if "key" not in extra:
        raise DataError(f"{path}: this cache was not written by a crossrec text reader (no extra.key)")
    bad = extra.get("bad_rows", {})
    return PrepareInfo(rows=int(manifest["rows"]), skipped_rows=int(bad.get("skipped", 0)),
                       bad_row_examples=tuple(bad.get("examples", ())), source=extra.get("source", {}),
                       seconds=float(extra.get("seconds", 0.0)), key=extra["key"])


def load_if_valid(cache_dir: Path, key: dict, on_bad_row: str) -> CTRData | None:
    """The cached data if ``cache_dir`` was built for ``key``; None if absent, stale or unreadable.

    A cache that skipped bad rows is not reused for ``on_bad_row="error"``: that caller asked to be
    told about bad rows, so the rebuild raises.
    """
    try:
        info = prepare_info(cache_dir)
    except (DatasetNotFoundError, DataError, ValueError, KeyError):
        return None
    if info.key != json.loads(json.dumps(key)) or (on_bad_row == "error" and info.skipped_rows):
        return None
    try:
        return load_cache(cache_dir)
    except (DataError, DatasetNotFoundError, ValueError, OSError):
        return None


def build_atomically(cache_dir: Path, fill: Callable[[Path], None]) -> None:
    """Run ``fill(tmp)`` in a fresh sibling folder, then swap it in for ``cache_dir``.

    If ``fill`` raises, ``cache_dir`` is left as it was and the temp folder is removed.

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> build_atomically(root / "c", lambda tmp: (tmp / "manifest.json").write_text("{}"))
    >>> sorted(p.name for p in root.iterdir())
    ['c']
    """
    cache_dir = Path(cache_dir)
    if cache_dir.exists() and any(cache_dir.iterdir()) and not (cache_dir / "manifest.json").is_file():
        raise DataError(f"refusing to replace {cache_dir}: it is not empty and not a crossrec data cache; "
                        "choose an empty or new cache folder")
    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(cache_dir)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = cache_dir.parent / f".{cache_dir.name}.tmp-{tag}"
    tmp.mkdir()
    try:
        fill(tmp)
        old = cache_dir.parent / f".{cache_dir.name}.old-{tag}"
        if cache_dir.exists():
            os.rename(cache_dir, old)  # a directory cannot be renamed over a non-empty one
        os.rename(tmp, cache_dir)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _remove_stale(cache_dir: Path) -> None:
    """Delete temp folders left by killed builds of ``cache_dir`` (their process no longer exists)."""
    for p in cache_dir.parent.glob(f".{cache_dir.name}.*-*-*"):
        try:
            os.kill(int(p.name.rsplit("-", 2)[1]), 0)
        except ProcessLookupError:
            shutil.rmtree(p, ignore_errors=True)
        except (ValueError, PermissionError, IndexError):
            continue


