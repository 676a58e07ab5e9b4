"""Avazu reader: the real sample, hour features, stable string hashing, bad rows, the cache."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from crossrec.data.avazu import AVAZU_COLUMNS, AVAZU_KEYED, AvazuConfig, prepare_avazu, read_avazu
from crossrec.data.categorical import CategoricalEncoding, Vocabulary
from crossrec.data.textcache import prepare_info
from crossrec.data.textreader import fnv1a_keys
from crossrec.errors import BadRowError, DatasetNotFoundError

HASH = AvazuConfig(encoding=CategoricalEncoding(mode="hash", num_embeddings=1 << 16))
HEADER = ",".join(AVAZU_COLUMNS) + "\n"


def row(click: str = "0", hour: str = "14102100", ident: str = "10000169349117863715", value: str = "1005") -> str:
    return ",".join([ident, click, hour, *[value] * len(AVAZU_KEYED)]) + "\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "train.csv"
    path.write_text(text)
    return path


def test_real_sample_rows_ctr_and_schema(shared_data: Path) -> None:
    d = read_avazu(shared_data / "avazu-sample" / "train.csv", HASH)
    assert len(d) == 9_999 and d.ctr == pytest.approx(0.1706, abs=5e-5)
    s = d.schema
    assert d.dense.shape == (9_999, 0) and s.num_dense == 0 and s.label == "click"
    assert [f.name for f in s.sparse] == ["hour_of_day", "weekday", *AVAZU_KEYED]
    assert "id" not in [f.name for f in s.sparse] and "hour" not in [f.name for f in s.sparse]
    ids = d.ids.reshape(len(d), s.num_sparse)
    assert (ids[:, 0] == 0).all() and (ids[:, 1] == 1).all()  # 2014-10-21 00h was a Tuesday
    assert (ids < np.array(s.cardinalities)).all()


def test_real_sample_matches_reference_hashing(shared_data: Path) -> None:
    path = shared_data / "avazu-sample" / "train.csv"
    d = read_avazu(path, HASH)
    ids = d.ids.reshape(len(d), -1)
    with path.open() as f:
        rows = [r for _, r in zip(range(200), csv.DictReader(f), strict=False)]
    for i, r in enumerate(rows):
        assert d.labels[i] == float(r["click"])
        for j, name in enumerate(AVAZU_KEYED):
            assert ids[i, 2 + j] == 1 + fnv1a_reference(r[name].encode()) % ((1 << 16) - 1), (i, name)


def fnv1a_reference(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) % (1 << 64)
    return h & (2**63 - 1)


def test_string_hash_is_fnv1a_and_stable() -> None:
    # Published FNV-1a 64 test vectors (top bit cleared): stable across processes, unlike hash().
    values = [b"a", b"foobar", b"ecad2386", b"-1"]
    got = fnv1a_keys(pa.array(values, pa.binary())).tolist()
    assert got[0] == 0xAF63DC4C8601EC8C & (2**63 - 1)
    assert got[1] == 0x85944171F73967E8 & (2**63 - 1)
    assert got == [fnv1a_reference(v) for v in values]


def test_vocab_learned_then_reused(shared_data: Path, tmp_path: Path) -> None:
    path = shared_data / "avazu-sample" / "train.csv"
    d = prepare_avazu(path, tmp_path / "c", AvazuConfig(encoding=CategoricalEncoding(mode="vocab", min_count=2)))
    vocab = Vocabulary.load(tmp_path / "c")
    assert vocab["site_id"].dtype == np.uint64
    assert d.schema.cardinalities[2:] == tuple(2 + len(vocab[n]) for n in AVAZU_KEYED)
    again = read_avazu(path, AvazuConfig(encoding=CategoricalEncoding(mode="vocab", min_count=2)), vocab=vocab)
    assert np.array_equal(again.ids, d.ids) and again.schema == d.schema
    info = prepare_info(tmp_path / "c")
    assert info.rows == 9_999 and info.skipped_rows == 0
    stamp = (tmp_path / "c" / "manifest.json").stat().st_mtime_ns
    prepare_avazu(path, tmp_path / "c", AvazuConfig(encoding=CategoricalEncoding(mode="vocab", min_count=2)))
    assert (tmp_path / "c" / "manifest.json").stat().st_mtime_ns == stamp


def test_unlabelled_layout_and_huge_ids(tmp_path: Path) -> None:
    header = ",".join(c for c in AVAZU_COLUMNS if c != "click") + "\n"
    line = ",".join(["99999999999999999999999", "14102815", *["x"] * len(AVAZU_KEYED)]) + "\n"
    d = read_avazu(write(tmp_path, header + line), HASH)
    assert len(d) == 1 and bool(np.isnan(d.labels).all())
    assert d.ids[:2].tolist() == [15, 1]  # 2014-10-28 15h: a Tuesday


def test_weekdays_and_empty_field_is_missing(tmp_path: Path) -> None:
    days = ["14102000", "14102623", "16022900"]  # Mon, Sun, leap day 2016 (Mon)
    text = HEADER + "".join(row(hour=h) for h in days) + row(value="")
    d = read_avazu(write(tmp_path, text), HASH)
    ids = d.ids.reshape(len(d), -1)
    assert ids[:3, :2].tolist() == [[0, 0], [23, 6], [0, 0]]
    assert (ids[3, 2:] == 0).all() and (ids[0, 2:] > 0).all()


@pytest.mark.parametrize(("bad", "field", "problem"), [
    (row(click="2"), "click", "'2' is not a label"),
    (row(hour="14023000"), "hour", "'14023000' is not a valid YYMMDDHH hour"),
    (row(hour="1410210"), "hour", "'1410210' is not a valid YYMMDDHH hour"),
    (row(hour="14102124"), "hour", "is not a valid"),
    (row()[:-1] + ",extra\n", None, "expected 24 comma-separated fields, got 25"),
    ("\n", None, "empty line"),
])
def test_bad_rows_error_and_skip(tmp_path: Path, bad: str, field: str | None, problem: str) -> None:
    path = write(tmp_path, HEADER + row() + bad + row(click="1"))
    with pytest.raises(BadRowError) as err:
        read_avazu(path, HASH)
    assert (err.value.line, err.value.field) == (3, field)
    assert str(err.value).startswith(f"{path}:3:") and problem in str(err.value)
    d = prepare_avazu(path, tmp_path / "cache", HASH, on_bad_row="skip")
    assert d.labels.tolist() == [0, 1]
    info = prepare_info(tmp_path / "cache")
    assert info.skipped_rows == 1 and info.bad_row_examples[0]["line"] == 3


def test_wrong_header_and_missing_file(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER.replace("click", "clicked") + row())
    with pytest.raises(BadRowError, match=r"train\.csv:1: header .* is not Avazu's"):
        read_avazu(path, HASH, on_bad_row="skip")  # a header cannot be skipped
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        prepare_avazu(tmp_path / "absent.csv", tmp_path / "cache", HASH)


def test_recorded_transform_reapplies(shared_data: Path, tmp_path: Path) -> None:
    from crossrec.data.raw import read_with_schema
    from crossrec.data.schema import FeatureSchema

    path = shared_data / "avazu-sample" / "train.csv"
    d = prepare_avazu(path, tmp_path / "c")  # default: vocabulary, min_count=2
    schema = FeatureSchema.from_dict(d.schema.to_dict())
    again = read_with_schema(path, schema, vocab=Vocabulary.load(tmp_path / "c"))
    assert np.array_equal(again.ids, d.ids) and again.schema == d.schema
