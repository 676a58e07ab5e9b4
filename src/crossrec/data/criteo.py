"""Criteo display-ads logs (Kaggle DAC ``train.txt``/``test.txt``, Terabyte ``day_N``) -> :class:`CTRData`.

Layout: one row per line, tab-separated: ``label``, 13 integer features ``I1..I13`` and 26
categorical features ``C1..C26`` written as 8 hex digits (32-bit hashes); an empty field is a
missing value. ``CriteoConfig(has_label=False)`` reads the unlabelled 39-field layout of Kaggle's
``test.txt``; its labels are NaN (not 0), so an accidental training or evaluation run on it
produces NaN losses instead of silently learning "no click".

Transform (recorded in ``FeatureSchema.preprocessing``): dense ``log(1 + max(x, 0))`` with missing
-> 0, as in the DLRM reference preprocessing; categoricals decoded to uint32 keys and encoded by
:class:`~crossrec.data.categorical.CategoricalEncoding` (hash, or a frequency vocabulary).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa

from crossrec.config import Config, check
from crossrec.data.categorical import CategoricalEncoding, Vocabulary
from crossrec.data.dataset import CTRData
from crossrec.data.prepared import Block, TextFormat, prepare_text, read_text
from crossrec.data.schema import FeatureSchema, SparseFeature
from crossrec.data.textreader import Check, OnBadRow, decode_binary_label, decode_hex8, parse_ints, show

CRITEO_DENSE = tuple(f"I{i}" for i in range(1, 14))
CRITEO_SPARSE = tuple(f"C{i}" for i in range(1, 27))
FORMAT_VERSION = 1  # bump when the transform changes: invalidates caches
MISSING_HINT = ("Criteo data is not fetched automatically (its terms must be accepted): get the Kaggle DAC "
                "train.txt or the 1TB Click Logs day_N files from Criteo AI Lab's resources page; a real "
                "10k-row sample is in ../shared/data/criteo-sample (see ../shared/data/README.md).")


@dataclass(frozen=True, kw_only=True)
class CriteoConfig(Config):
    """How to read a Criteo file: labelled or not, and how to encode the categoricals.

    The default encoding is a vocabulary of values seen at least 10 times, the usual choice for
    Criteo Kaggle (rarer values share the out-of-vocabulary row).

    >>> CriteoConfig(encoding=CategoricalEncoding(mode="hash", num_embeddings=1 << 20)).has_label
    True
    >>> CriteoConfig(has_label="no")
    Traceback (most recent call last):
    ...
    crossrec.errors.ConfigError: CriteoConfig.has_label = 'no' is invalid: True or False
    """

    has_label: bool = True
    encoding: CategoricalEncoding = field(default_factory=lambda: CategoricalEncoding(mode="vocab", min_count=10))

    def __post_init__(self) -> None:
        check(isinstance(self.has_label, bool), "CriteoConfig", "has_label", self.has_label, "True or False")
        check(isinstance(self.encoding, CategoricalEncoding), "CriteoConfig", "encoding", self.encoding,
              "a CategoricalEncoding")


def criteo_schema(config: CriteoConfig, vocab: Vocabulary | None = None) -> FeatureSchema:
    """The :class:`FeatureSchema` a Criteo read produces (table sizes from the encoding/vocabulary).

    >>> s = criteo_schema(CriteoConfig(encoding=CategoricalEncoding(mode="hash", num_embeddings=100)))
    >>> s.num_dense, s.num_sparse, s.cardinalities[0], s.preprocessing["reader"]
    (13, 26, 100, 'criteo')
    """
    enc = config.encoding
    sparse = tuple(SparseFeature(name=c, num_embeddings=enc.rows_for(vocab[c] if vocab is not None else None))
                   for c in CRITEO_SPARSE)
    preprocessing = {
        "reader": "criteo", "format_version": FORMAT_VERSION, "config": config.to_dict(),
        "dense_transform": "log(1 + max(x, 0)), missing -> 0",
        "categorical_keys": "8 hex digits -> uint32",
        "rows": ("0 = missing, 1 + key % (num_embeddings - 1)" if enc.mode == "hash"
                 else "0 = out of vocabulary, 1 = missing, 2 + index in sorted vocab/<feature>"),
        "vocab_sha256": vocab.digest() if vocab is not None else None,
        "unlabelled_labels": "nan",
    }
    return FeatureSchema(dense=CRITEO_DENSE, sparse=sparse, label="label", preprocessing=preprocessing)


def _decode(table: pa.Table, has_label: bool) -> Block:
    n = table.num_rows
    checks: list[Check] = []

    def note(name: str, col: pa.Array, bad: np.ndarray | None, what: str) -> None:
        if bad is not None:
            checks.append((name, bad, lambda i: f"{show(col, i)} {what}"))

    if has_label:
        col = table.column("label").chunk(0) if n else pa.array([], pa.binary())
        labels, bad = decode_binary_label(col)
        note("label", col, bad, "is not a label (expected 0 or 1)")
    else:
        labels = np.full(n, np.nan, np.float32)
    dense = np.empty((n, len(CRITEO_DENSE)), np.float32)
    for j, name in enumerate(CRITEO_DENSE):
        col = table.column(name).chunk(0) if n else pa.array([], pa.binary())
        values, bad = parse_ints(col)
        note(name, col, bad, "is not an integer (expected an optional '-' and up to 18 digits)")
        dense[:, j] = np.log1p(np.maximum(values, 0).astype(np.float32))
    keys = np.empty((len(CRITEO_SPARSE), n), np.int64)
    for j, name in enumerate(CRITEO_SPARSE):
        col = table.column(name).chunk(0) if n else pa.array([], pa.binary())
        keys[j], bad = decode_hex8(col)
        note(name, col, bad, "is not 8 hex digits (a Criteo categorical is a 32-bit hash in hex, or empty)")
    return Block(dense, labels, np.empty((0, n), np.int64), keys, checks)


def _opener(config: CriteoConfig, stream: BinaryIO, where: str) -> tuple[int, TextFormat]:
    names = (["label"] if config.has_label else []) + [*CRITEO_DENSE, *CRITEO_SPARSE]
    fmt = TextFormat(reader="criteo", names=names, include=names, delimiter="\t", sep_name="tab",
                     key_names=CRITEO_SPARSE, key_dtype=np.uint32, num_fixed=0, num_dense=len(CRITEO_DENSE),
                     decode=partial(_decode, has_label=config.has_label), schema=partial(criteo_schema, config))
    return 1, fmt  # no header line


def read_criteo(source: str | Path | BinaryIO, config: CriteoConfig, *, vocab: Vocabulary | None = None,
                on_bad_row: OnBadRow = "error") -> CTRData:
    """Read a Criteo file (or binary stream) into memory with a fixed encoding.

    For files too large for memory, or to learn a vocabulary, use :func:`prepare_criteo`. With
    ``mode="vocab"`` pass the training data's ``vocab`` (e.g. to encode new raw rows at prediction
    time exactly as in training). Skipped rows are logged as a warning on ``crossrec.data``.

    >>> import io
    >>> row = "1\\t5\\t\\t-2" + "\\t" * 10 + "\\t68fd1e64" * 25 + "\\t\\n"
    >>> enc = CategoricalEncoding(mode="hash", num_embeddings=1000)
    >>> d = read_criteo(io.BytesIO(row.encode()), CriteoConfig(encoding=enc))
    >>> len(d), d.labels.tolist(), d.dense[0, :3].astype(float).round(3).tolist(), d.ids[:2].tolist(), int(d.ids[-1])
    (1, [1.0], [1.792, 0.0, 0.0], [35, 35], 0)
    """
    return read_text(source, partial(_opener, config), config.encoding, vocab, on_bad_row, "read_criteo",
                     MISSING_HINT)


def prepare_criteo(path: str | Path, cache_dir: str | Path, config: CriteoConfig | None = None, *,
                   vocab: Vocabulary | None = None, on_bad_row: OnBadRow = "error") -> CTRData:
    """Preprocess a Criteo file once into ``cache_dir`` and return it memory-mapped; reuse it next time.

    The cache is reused when the file's fingerprint (size, mtime, sha256 of first and last MiB),
    ``config`` and ``vocab`` all match (see :mod:`crossrec.data.textcache`); otherwise it is rebuilt
    atomically. In ``mode="vocab"`` without ``vocab`` the vocabulary is learned from this file and
    saved as ``cache_dir/vocab/C*.npy`` (load it with ``Vocabulary.load(cache_dir)`` to encode a test
    file the same way). Bad rows raise :class:`~crossrec.errors.BadRowError`, or with
    ``on_bad_row="skip"`` are skipped and counted in :func:`~crossrec.data.textcache.prepare_info`.

    >>> import tempfile
    >>> from crossrec.data.textcache import prepare_info
    >>> tmp = Path(tempfile.mkdtemp())
    >>> good = "0" + "\\t1" * 13 + "\\t0000000a" * 26 + "\\n"
    >>> _ = (tmp / "day_0").write_text(good * 3 + "2" + good[1:])
    >>> d = prepare_criteo(tmp / "day_0", tmp / "cache", CriteoConfig(encoding=CategoricalEncoding(mode="vocab")),
    ...                    on_bad_row="skip")
    >>> len(d), d.schema.cardinalities[0], Vocabulary.load(tmp / "cache")["C1"].tolist()
    (3, 3, [10])
    >>> info = prepare_info(tmp / "cache")
    >>> info.skipped_rows, info.bad_row_examples[0]["line"], info.bad_row_examples[0]["field"]
    (1, 4, 'label')
    """
    config = config or CriteoConfig()
    return prepare_text(path, cache_dir, partial(_opener, config), config, config.encoding, vocab, on_bad_row,
                        MISSING_HINT, FORMAT_VERSION)
