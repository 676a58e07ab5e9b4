"""Avazu click logs (Kaggle 2014 ``train.csv`` / ``test.csv``) -> :class:`CTRData`.

Layout: CSV with the header ``id,click,hour,C1,banner_pos,site_id,...,C21`` (``test.csv`` has no
``click`` column; its labels are NaN, see :mod:`crossrec.data.criteo` for why not 0).

Transform (recorded in ``FeatureSchema.preprocessing``):

* ``id`` is dropped without being parsed (it is a uint64 that overflows int64, and carries no signal).
* ``hour`` (``YYMMDDHH``) becomes two categoricals with fixed tables: ``hour_of_day`` (0..23) and
  ``weekday`` (0 = Monday .. 6), replacing the raw hour, which never repeats between train and test.
* Every other column is categorical, taken as its raw bytes: a 63-bit FNV-1a hash of the string is
  the raw key (stable across runs, processes and machines, unlike Python's salted ``hash()``), then
  :class:`~crossrec.data.categorical.CategoricalEncoding` applies (hash or frequency vocabulary).
  An empty field is a missing value. There are no dense features (``dense`` is ``(N, 0)``).
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
from crossrec.data.textreader import Check, OnBadRow, decode_binary_label, fixed_width, fnv1a_keys, show
from crossrec.errors import BadRowError

AVAZU_KEYED = ("C1", "banner_pos", "site_id", "site_domain", "site_category", "app_id", "app_domain", "app_category",
               "device_id", "device_ip", "device_model", "device_type", "device_conn_type",
               "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21")
AVAZU_COLUMNS = ("id", "click", "hour", *AVAZU_KEYED)
AVAZU_TIME = (("hour_of_day", 24), ("weekday", 7))
FORMAT_VERSION = 1  # bump when the transform changes: invalidates caches
MISSING_HINT = ("Avazu data is not fetched automatically (Kaggle login): get train.csv from "
                "https://www.kaggle.com/c/avazu-ctr-prediction/data; a 9,999-row real sample is in "
                "../shared/data/avazu-sample (see ../shared/data/README.md).")


@dataclass(frozen=True, kw_only=True)
class AvazuConfig(Config):
    """How to encode Avazu's categoricals (default: vocabulary of values seen at least twice).

    >>> AvazuConfig(encoding=CategoricalEncoding(mode="hash", num_embeddings=1 << 18)).encoding.mode
    'hash'
    """

    encoding: CategoricalEncoding = field(default_factory=lambda: CategoricalEncoding(mode="vocab", min_count=2))

    def __post_init__(self) -> None:
        check(isinstance(self.encoding, CategoricalEncoding), "AvazuConfig", "encoding", self.encoding,
              "a CategoricalEncoding")


def avazu_schema(config: AvazuConfig, vocab: Vocabulary | None = None) -> FeatureSchema:
    """The :class:`FeatureSchema` an Avazu read produces.

    >>> s = avazu_schema(AvazuConfig(encoding=CategoricalEncoding(mode="hash", num_embeddings=50)))
    >>> s.num_dense, s.num_sparse, s.cardinalities[:3], s.label
    (0, 23, (24, 7, 50), 'click')
    """
    enc = config.encoding
    sparse = (*(SparseFeature(name=n, num_embeddings=rows) for n, rows in AVAZU_TIME),
              *(SparseFeature(name=n, num_embeddings=enc.rows_for(vocab[n] if vocab is not None else None))
                for n in AVAZU_KEYED))
    preprocessing = {
        "reader": "avazu", "format_version": FORMAT_VERSION, "config": config.to_dict(),
        "dropped": ["id"], "hour": "YYMMDDHH -> hour_of_day (0..23), weekday (0 = Monday .. 6)",
        "categorical_keys": "FNV-1a 64 of the raw bytes, top bit cleared",
        "rows": ("0 = missing, 1 + key % (num_embeddings - 1)" if enc.mode == "hash"
                 else "0 = out of vocabulary, 1 = missing, 2 + index in sorted vocab/<feature>"),
        "vocab_sha256": vocab.digest() if vocab is not None else None,
        "unlabelled_labels": "nan",
    }
    return FeatureSchema(dense=(), sparse=sparse, label="click", preprocessing=preprocessing)


def decode_hour(arr: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``YYMMDDHH`` (20YY) -> (hour of day, weekday with 0 = Monday, bad-row mask or None).

    >>> hod, wd, bad = decode_hour(pa.array([b"14102100", b"14102123", b"14022900", b"1410210"], pa.binary()))
    >>> hod.tolist(), wd.tolist(), bad.tolist()
    ([0, 23, 0, 0], [1, 1, 0, 0], [False, False, True, True])
    """
    mat, ok = fixed_width(arr, 8)
    text = mat.astype(np.int64) - 48
    digits_ok = ((text >= 0) & (text <= 9)).all(axis=1) & ok
    yy, mm = text[:, 0] * 10 + text[:, 1], text[:, 2] * 10 + text[:, 3]
    dd, hh = text[:, 4] * 10 + text[:, 5], text[:, 6] * 10 + text[:, 7]
    bad = ~digits_ok | (mm < 1) | (mm > 12) | (hh > 23) | (dd < 1)
    mm, dd, hh = np.where(bad, 1, mm), np.where(bad, 1, dd), np.where(bad, 0, hh)
    month = ((2000 + yy - 1970) * 12 + mm - 1).astype("datetime64[M]")
    day = month.astype("datetime64[D]") + (dd - 1)
    bad |= day >= (month + 1).astype("datetime64[D]")  # e.g. Feb 30
    weekday = (day.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday (3 with Monday = 0)
    hh, weekday = np.where(bad, 0, hh), np.where(bad, 0, weekday)
    return hh, weekday, (bad if bad.any() else None)


def _decode(table: pa.Table, has_label: bool) -> Block:
    n = table.num_rows
    checks: list[Check] = []

    def column(name: str) -> pa.Array:
        return table.column(name).chunk(0) if n else pa.array([], pa.binary())

    if has_label:
        labels, bad = decode_binary_label(column("click"))
        if bad is not None:
            col = column("click")
            checks.append(("click", bad, lambda i: f"{show(col, i)} is not a label (expected 0 or 1)"))
    else:
        labels = np.full(n, np.nan, np.float32)
    hours = column("hour")
    hod, weekday, bad = decode_hour(hours)
    if bad is not None:
        checks.append(("hour", bad, lambda i: f"{show(hours, i)} is not a valid YYMMDDHH hour"))
    keys = np.empty((len(AVAZU_KEYED), n), np.int64)
    for j, name in enumerate(AVAZU_KEYED):
        keys[j] = fnv1a_keys(column(name))
    return Block(np.empty((n, 0), np.float32), labels, np.stack([hod, weekday]).reshape(2, n), keys, checks)


def _opener(config: AvazuConfig, stream: BinaryIO, where: str) -> tuple[int, TextFormat]:
    header = stream.readline().rstrip(b"\r\n").decode("utf-8", errors="replace").split(",")
    unlabelled = [c for c in AVAZU_COLUMNS if c != "click"]
    if header not in (list(AVAZU_COLUMNS), unlabelled):
        raise BadRowError(where, 1, None, f"header {','.join(header)[:200]!r} is not Avazu's; expected "
                          f"{','.join(AVAZU_COLUMNS)!r} (train.csv) or the same without click (test.csv)",
                          hint="is this the Avazu train.csv/test.csv, unmodified?")
    has_label = "click" in header
    include = [c for c in header if c != "id"]  # id is never parsed: it overflows int64
    fmt = TextFormat(reader="avazu", names=header, include=include, delimiter=",", sep_name="comma",
                     key_names=AVAZU_KEYED, key_dtype=np.uint64, num_fixed=len(AVAZU_TIME), num_dense=0,
                     decode=partial(_decode, has_label=has_label), schema=partial(avazu_schema, config))
    return 2, fmt


def read_avazu(source: str | Path | BinaryIO, config: AvazuConfig, *, vocab: Vocabulary | None = None,
               on_bad_row: OnBadRow = "error") -> CTRData:
    """Read an Avazu CSV (or binary stream) into memory with a fixed encoding (see :func:`prepare_avazu`).

    >>> import io
    >>> head = ",".join(AVAZU_COLUMNS) + "\\n"
    >>> row = "10000169349117863715,1,14102113," + ",".join(["1005"] * 20) + ",\\n"
    >>> enc = CategoricalEncoding(mode="hash", num_embeddings=100)
    >>> d = read_avazu(io.BytesIO((head + row).encode()), AvazuConfig(encoding=enc))
    >>> d.dense.shape, d.labels.tolist(), d.ids[:3].tolist(), int(d.ids[-1])
    ((1, 0), [1.0], [13, 1, 38], 0)
    """
    return read_text(source, partial(_opener, config), config.encoding, vocab, on_bad_row, "read_avazu",
                     MISSING_HINT)


def prepare_avazu(path: str | Path, cache_dir: str | Path, config: AvazuConfig | None = None, *,
                  vocab: Vocabulary | None = None, on_bad_row: OnBadRow = "error") -> CTRData:
    """Preprocess an Avazu CSV once into ``cache_dir`` and return it memory-mapped; reuse it next time.

    Caching, vocabulary and bad-row handling work as in :func:`crossrec.data.criteo.prepare_criteo`.

    >>> import tempfile
    >>> tmp = Path(tempfile.mkdtemp())
    >>> row = "1,0,14102100," + ",".join(["a"] * 21) + "\\n"
    >>> _ = (tmp / "train.csv").write_text(",".join(AVAZU_COLUMNS) + "\\n" + row * 2)
    >>> d = prepare_avazu(tmp / "train.csv", tmp / "cache")
    >>> len(d), d.schema.cardinalities[:3], d.ids[:3].tolist()
    (2, (24, 7, 3), [0, 1, 2])
    """
    config = config or AvazuConfig()
    return prepare_text(path, cache_dir, partial(_opener, config), config, config.encoding, vocab, on_bad_row,
                        MISSING_HINT, FORMAT_VERSION)
