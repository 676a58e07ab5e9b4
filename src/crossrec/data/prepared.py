"""The driver shared by the text readers: stream -> parse -> decode -> bad rows -> encode -> sink.

A reader module (:mod:`~crossrec.data.criteo`, :mod:`~crossrec.data.avazu`) describes its layout as a
:class:`TextFormat` (column names, a block decoder, a schema builder); :func:`read_text` runs it into
memory and :func:`prepare_text` into the cache of :mod:`crossrec.data.textcache`. Chunks are parsed
and decoded one ahead on a worker thread while the caller encodes and writes the previous one.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa

from crossrec.config import Config
from crossrec.data.categorical import CategoricalEncoding, VocabCounter, Vocabulary, encode_keys
from crossrec.data.dataset import CTRData, load_cache, write_manifest
from crossrec.data.schema import FeatureSchema
from crossrec.data.textcache import NpySink, build_atomically, load_if_valid, source_fingerprint
from crossrec.data.textreader import BadRows, Check, OnBadRow, Parsed, iter_chunks, open_source, parse_chunk
from crossrec.errors import ConfigError, DataError

log = logging.getLogger("crossrec.data")
ENCODE_ROWS = 1 << 19  # most rows per vocabulary lookup call (see _Encoder)


@dataclass
class Block:
    """One decoded chunk: features before encoding, plus the validation results."""

    dense: np.ndarray  # (n, num_dense) float32, already transformed
    labels: np.ndarray  # (n,) float32
    fixed: np.ndarray  # (X, n) int64 ids of features with a fixed table (e.g. Avazu's hour of day)
    keys: np.ndarray  # (K, n) int64 raw keys of the encoded features, -1 = missing
    checks: list[Check]
    # Sparse features are feature-major: each is decoded, counted and encoded as one contiguous row.

    def select(self, keep: np.ndarray) -> Block:
        return Block(self.dense[keep], self.labels[keep], self.fixed[:, keep], self.keys[:, keep], [])


@dataclass(frozen=True)
class TextFormat:
    """Everything the driver needs to know about one file layout."""

    reader: str  # "criteo" / "avazu"
    names: list[str]  # every column, in file order
    include: list[str]  # the columns to parse
    delimiter: str
    sep_name: str  # "tab" / "comma", for messages
    key_names: tuple[str, ...]  # features encoded by CategoricalEncoding
    key_dtype: Any  # vocabulary dtype: np.uint32 / np.uint64
    num_fixed: int
    num_dense: int
    decode: Callable[[pa.Table], Block]
    schema: Callable[[Vocabulary | None], FeatureSchema]


# (stream, name for messages) -> (physical line number of the first data row, format)
Opener = Callable[[BinaryIO, str], tuple[int, TextFormat]]


class MemorySink:
    """Collects blocks in memory (for small files and prediction-time inputs)."""

    def __init__(self, num_dense: int, num_sparse: int) -> None:
        self.parts: dict[str, list[np.ndarray]] = {"dense": [np.empty((0, num_dense), np.float32)],
                                                   "labels": [np.empty(0, np.float32)],
                                                   "ids": [np.empty((0, num_sparse), np.int64)]}

    def append(self, dense: np.ndarray, labels: np.ndarray) -> None:
        self.parts["dense"].append(dense)
        self.parts["labels"].append(labels)

    def append_ids(self, ids_t: np.ndarray) -> None:
        self.parts["ids"].append(ids_t.T)

    def finish(self) -> None:
        self.arrays = {k: np.concatenate(v) for k, v in self.parts.items()}


class KeyScratch:
    """Raw key blocks ``(F, n)`` spilled to an anonymous temp file until the vocabulary is known.

    Read back block by block in order, so the second pass is sequential and needs no transposes
    of a memory-mapped (N, F) array.

    >>> s = KeyScratch(None)
    >>> s.append(np.array([[1, 2], [3, 4]])); s.append(np.array([[5], [6]]))
    >>> [b.tolist() for b in s]
    [[[1, 2], [3, 4]], [[5], [6]]]
    """

    def __init__(self, directory: Path | None):
        self._file = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115 (unlinked; closed after the pass)
        self._shapes: list[tuple[int, int]] = []

    def append(self, block: np.ndarray) -> None:
        np.ascontiguousarray(block, np.int64).tofile(self._file)
        self._shapes.append(block.shape)

    def __iter__(self) -> Iterator[np.ndarray]:
        self._file.seek(0)
        for f, n in self._shapes:
            yield np.fromfile(self._file, np.int64, count=f * n).reshape(f, n)
        self._file.close()


def _decoded_chunks(stream: BinaryIO, first_line: int, fmt: TextFormat, where: str) -> Iterator[tuple[Parsed, Block]]:
    """Parse and decode chunks one ahead on a worker thread, overlapping the caller's encoding/writing.

    Arrow's parser and numpy's bulk operations release the GIL, so on 2 cores this nearly halves
    the wall time of a ``prepare_*`` call.
    """
    chunks = iter_chunks(stream)
    line = first_line

    def work(part: memoryview) -> tuple[Parsed, Block]:
        parsed = parse_chunk(part, fmt.names, fmt.delimiter, fmt.include)
        return parsed, fmt.decode(parsed.table)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="crossrec-parse") as pool:

        def submit() -> Future[tuple[Parsed, Block]] | None:
            part = next(chunks, None)
            return None if part is None else pool.submit(work, part)

        pending = submit()
        while pending is not None:
            parsed, block = pending.result()
            pending = submit()
            parsed.first_line = line
            if parsed.error is not None:
                raise DataError(f"{where}: lines {line}..{line + parsed.num_lines}: cannot parse: {parsed.error}")
            line += parsed.num_lines
            yield parsed, block


class _Encoder:
    """Encodes raw id blocks ``(F, n)`` into the sink, batching lookups in big vocabularies.

    Arrow builds a hash table over a feature's vocabulary on every lookup call. With a
    Kaggle-scale vocabulary (~1M values) that costs more than looking up one chunk's 17k rows, so
    rows are batched until there are 4x as many as the largest vocabulary (capped at
    ``ENCODE_ROWS``); small vocabularies are encoded chunk by chunk, while the chunk is in cache.
    """

    def __init__(self, fmt: TextFormat, encoding: CategoricalEncoding, sink: NpySink | MemorySink):
        self.fmt, self.encoding, self.sink = fmt, encoding, sink
        self.pending: list[np.ndarray] = []

    def add(self, ids: np.ndarray, vocab: Vocabulary | None) -> None:
        self.pending.append(ids)
        largest = max((len(v) for v in vocab.values.values()), default=0) if vocab is not None else 0
        if sum(b.shape[1] for b in self.pending) >= min(4 * largest, ENCODE_ROWS):
            self.flush(vocab)

    def flush(self, vocab: Vocabulary | None) -> None:
        if not self.pending:
            return
        ids = np.concatenate(self.pending, axis=1) if len(self.pending) > 1 else self.pending[0]
        self.pending = []
        x = self.fmt.num_fixed
        ids[x:] = encode_keys(ids[x:], self.fmt.key_names, self.encoding, vocab)
        self.sink.append_ids(ids)


def run(stream: BinaryIO, first_line: int, fmt: TextFormat, encoding: CategoricalEncoding, vocab: Vocabulary | None,
        bad: BadRows, sink: NpySink | MemorySink, scratch_dir: Path | None = None) -> tuple[int, Vocabulary | None]:
    """Stream every chunk through decode -> bad-row policy -> encode -> sink; returns (rows, vocab).

    Learning a vocabulary needs a second pass: raw keys wait in a :class:`KeyScratch` meanwhile.
    """
    learn = encoding.mode == "vocab" and vocab is None
    counter = VocabCounter(fmt.key_names, fmt.key_dtype) if learn else None
    scratch = KeyScratch(scratch_dir) if learn else None
    encoder = _Encoder(fmt, encoding, sink)
    rows = 0
    for parsed, block in _decoded_chunks(stream, first_line, fmt, bad.where):
        keep = bad.handle(parsed, block.checks, len(fmt.names), fmt.sep_name)
        if keep is not None:
            block = block.select(keep)
        sink.append(block.dense, block.labels)
        ids = np.concatenate([block.fixed, block.keys])  # (F, n), keys still raw
        if counter is not None and scratch is not None:
            counter.update(block.keys)
            scratch.append(ids)
        else:
            encoder.add(ids, vocab)
        rows += len(block.labels)
    if counter is not None and scratch is not None:
        vocab = counter.build(encoding.min_count)
        for ids in scratch:
            encoder.add(ids, vocab)
    encoder.flush(vocab)
    sink.finish()
    return rows, vocab


def _check_vocab(fmt: TextFormat, encoding: CategoricalEncoding, vocab: Vocabulary | None, verb: str) -> None:
    if vocab is None:
        return
    if encoding.mode != "vocab":
        raise ConfigError(f"{verb}: a vocabulary was given but encoding.mode = {encoding.mode!r}; "
                          "use CategoricalEncoding(mode='vocab') or drop the vocabulary")
    for name in fmt.key_names:
        if vocab[name].dtype != np.dtype(fmt.key_dtype):
            raise DataError(f"{verb}: vocabulary of {name} holds {vocab[name].dtype}, a {fmt.reader} vocabulary "
                            f"holds {np.dtype(fmt.key_dtype)}; was it built from another data set?")


def _warn_skipped(bad: BadRows) -> None:
    if bad.skipped:
        first = bad.examples[0] if bad.examples else {}
        log.warning("%s: skipped %d bad rows (first: line %s, field %s: %s)", bad.where, bad.skipped,
                    first.get("line"), first.get("field"), first.get("problem"))


def read_text(source: str | Path | BinaryIO, opener: Opener, encoding: CategoricalEncoding,
              vocab: Vocabulary | None, on_bad_row: OnBadRow, verb: str, missing_hint: str = "") -> CTRData:
    """In-memory read with a fixed encoding (hash, or a given vocabulary)."""
    if encoding.mode == "vocab" and vocab is None:
        raise ConfigError(f"{verb}: vocab = None is invalid for encoding mode='vocab': pass the training data's "
                          "Vocabulary (Vocabulary.load(cache_dir)), or learn one with the prepare_* function")
    stream, where = open_source(source, missing_hint)
    bad = BadRows(where, on_bad_row)
    with stream:
        first_line, fmt = opener(stream, where)
        _check_vocab(fmt, encoding, vocab, verb)
        sink = MemorySink(fmt.num_dense, fmt.num_fixed + len(fmt.key_names))
        run(stream, first_line, fmt, encoding, vocab, bad, sink)
    _warn_skipped(bad)
    a = sink.arrays
    return CTRData.from_one_hot(fmt.schema(vocab), a["dense"], a["ids"], a["labels"])


def prepare_text(path: str | Path, cache_dir: str | Path, opener: Opener, config: Config,
                 encoding: CategoricalEncoding, vocab: Vocabulary | None, on_bad_row: OnBadRow,
                 missing_hint: str = "", version: int = 1) -> CTRData:
    """Return the cache for (file, config, vocab) from ``cache_dir``, building it first if needed."""
    path, cache_dir = Path(path), Path(cache_dir)
    stream, where = open_source(path, missing_hint)  # raises DatasetNotFoundError with advice
    stream.close()
    if on_bad_row not in ("error", "skip"):
        raise ConfigError(f"on_bad_row = {on_bad_row!r} is invalid: 'error' or 'skip'")
    fingerprint = source_fingerprint(path)
    key = {"reader": type(config).__name__, "format_version": version, "config": config.to_dict(),
           "vocab_sha256": vocab.digest() if vocab is not None else None, "source": fingerprint}
    cached = load_if_valid(cache_dir, key, on_bad_row)
    if cached is not None:
        return cached

    def fill(tmp: Path) -> None:
        t0 = time.perf_counter()
        stream, _ = open_source(path)
        bad = BadRows(where, on_bad_row)
        with stream:
            first_line, fmt = opener(stream, where)
            _check_vocab(fmt, encoding, vocab, f"prepare_{fmt.reader}")
            sink = NpySink(tmp, fmt.num_dense, fmt.num_fixed + len(fmt.key_names))
            rows, used_vocab = run(stream, first_line, fmt, encoding, vocab, bad, sink, scratch_dir=tmp)
        if used_vocab is not None:  # learned here, or given: either way the cache is self-contained
            used_vocab.save(tmp)
        _warn_skipped(bad)
        extra = {"key": key, "source": {"path": str(path.resolve()), **fingerprint},
                 "bad_rows": {"policy": on_bad_row, "skipped": bad.skipped, "examples": bad.examples},
                 "seconds": round(time.perf_counter() - t0, 3)}
        write_manifest(tmp, rows, fmt.schema(used_vocab), extra)

    build_atomically(cache_dir, fill)
    return load_cache(cache_dir)
