"""Criteo reader: the real Kaggle sample, a slow reference decoder, bad rows, the cache."""

from __future__ import annotations

import gzip
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy

from crossrec.data import textreader
from crossrec.data.categorical import CategoricalEncoding, Vocabulary
from crossrec.data.criteo import CRITEO_SPARSE, CriteoConfig, prepare_criteo, read_criteo
from crossrec.data.textcache import prepare_info
from crossrec.errors import BadRowError, ConfigError, DatasetNotFoundError

HASH = CriteoConfig(encoding=CategoricalEncoding(mode="hash", num_embeddings=1 << 20))
VOCAB2 = CriteoConfig(encoding=CategoricalEncoding(mode="vocab", min_count=2))


def row(label: str = "0", ints: list[str] | None = None, cats: list[str] | None = None) -> str:
    ints = ints if ints is not None else [str(i) for i in range(13)]
    cats = cats if cats is not None else [f"{i:08x}" for i in range(26)]
    return "\t".join([label, *ints, *cats]) + "\n"


def write(tmp_path: Path, text: str, name: str = "day_0") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def reference(line: str, has_label: bool, rows: int) -> tuple[float, list[float], list[int]]:
    """A deliberately slow, obvious per-line decoder to check the vectorized one against."""
    fields = line.rstrip("\n").split("\t")
    label = float(fields.pop(0)) if has_label else math.nan
    dense = [math.log1p(max(int(x), 0)) if x else 0.0 for x in fields[:13]]
    ids = [1 + int(c, 16) % (rows - 1) if c else 0 for c in fields[13:]]
    return label, dense, ids


# --- the real sample -----------------------------------------------------------------------------

def test_real_train_sample_rows_ctr_and_schema(shared_data: Path) -> None:
    d = read_criteo(shared_data / "criteo-sample" / "train.txt", HASH)
    assert len(d) == 10_000
    assert int(d.labels.sum()) == 2182 and d.ctr == pytest.approx(0.2182)
    assert d.schema.num_dense == 13 and d.schema.cardinalities == (1 << 20,) * 26
    assert d.dense.dtype == np.float32 and float(d.dense.min()) >= 0.0
    assert int(d.ids.min()) >= 0 and int(d.ids.max()) < 1 << 20
    json.dumps(d.schema.to_dict())  # preprocessing holds JSON types only


def test_real_sample_matches_slow_reference(shared_data: Path) -> None:
    path = shared_data / "criteo-sample" / "train.txt"
    d = read_criteo(path, HASH)
    ids = d.ids.reshape(len(d), 26)
    with path.open() as f:
        for i, line in zip(range(300), f, strict=False):
            label, dense, want_ids = reference(line, True, 1 << 20)
            assert d.labels[i] == label
            np.testing.assert_allclose(d.dense[i], dense, rtol=1e-6)
            assert ids[i].tolist() == want_ids, f"line {i + 1}"


def test_real_test_sample_unlabelled(shared_data: Path) -> None:
    d = read_criteo(shared_data / "criteo-sample" / "test.txt", CriteoConfig(has_label=False, encoding=HASH.encoding))
    assert len(d) == 10_000 and bool(np.isnan(d.labels).all())
    first = (shared_data / "criteo-sample" / "test.txt").open().readline()
    _, dense, ids = reference(first, False, 1 << 20)
    np.testing.assert_allclose(d.dense[0], dense, rtol=1e-6)
    assert d.ids[:26].tolist() == ids


def test_labelled_file_read_as_unlabelled_is_a_bad_row(shared_data: Path) -> None:
    cfg = CriteoConfig(has_label=False, encoding=HASH.encoding)
    with pytest.raises(BadRowError, match=r"train\.txt:1: expected 39 tab-separated fields, got 40"):
        read_criteo(shared_data / "criteo-sample" / "train.txt", cfg)


def test_vocab_learned_on_train_encodes_test(shared_data: Path, tmp_path: Path) -> None:
    train = prepare_criteo(shared_data / "criteo-sample" / "train.txt", tmp_path / "train", VOCAB2)
    vocab = Vocabulary.load(tmp_path / "train")
    assert train.schema.cardinalities == tuple(2 + len(vocab[c]) for c in CRITEO_SPARSE)
    ids = train.ids.reshape(len(train), 26)
    assert (ids.max(axis=0) < np.array(train.schema.cardinalities)).all()
    assert (ids == 0).any() and (ids == 1).any()  # singletons -> OOV; empty fields -> missing

    test_cfg = CriteoConfig(has_label=False, encoding=VOCAB2.encoding)
    test = prepare_criteo(shared_data / "criteo-sample" / "test.txt", tmp_path / "test", test_cfg, vocab=vocab)
    assert test.schema.cardinalities == train.schema.cardinalities
    assert Vocabulary.load(tmp_path / "test").digest() == vocab.digest()  # the cache is self-contained
    # The same rows through the in-memory reader (prediction-time path) encode identically.
    again = read_criteo(shared_data / "criteo-sample" / "test.txt", test_cfg, vocab=vocab)
    assert np.array_equal(again.ids, test.ids) and np.array_equal(again.dense, test.dense)


def test_vocab_round_trips_through_safetensors(tmp_path: Path) -> None:
    path = write(tmp_path, row(cats=["0000000a"] * 26) * 2 + row(cats=["ffffffff"] + [""] * 25))
    data = prepare_criteo(path, tmp_path / "c", CriteoConfig(encoding=CategoricalEncoding(mode="vocab")))
    vocab = Vocabulary.load(tmp_path / "c")
    assert vocab["C1"].dtype == np.uint32 and vocab["C1"].tolist() == [10, 0xFFFFFFFF]
    safetensors.numpy.save_file(vocab.to_arrays(), str(tmp_path / "v.safetensors"))
    loaded = Vocabulary.from_arrays(safetensors.numpy.load_file(str(tmp_path / "v.safetensors")))
    again = read_criteo(path, CriteoConfig(encoding=CategoricalEncoding(mode="vocab")), vocab=loaded)
    assert np.array_equal(again.ids, data.ids)
    assert again.ids.reshape(3, 26)[:, :2].tolist() == [[2, 2], [2, 2], [3, 1]]


def test_min_count_sends_rare_values_to_oov(tmp_path: Path) -> None:
    path = write(tmp_path, row(cats=["0000000a"] * 26) * 3 + row(cats=["0000000b"] * 26))
    d = read_criteo(path, VOCAB2, vocab=Vocabulary({c: np.array([10], np.uint32) for c in CRITEO_SPARSE}))
    assert d.ids.reshape(4, 26)[:, 0].tolist() == [2, 2, 2, 0]


# --- bad rows ------------------------------------------------------------------------------------

BAD_ROWS = [  # (line 3's text, field, problem fragment)
    (row(label="2"), "label", "'2' is not a label"),
    (row(ints=["1"] * 5 + ["x1"] + ["1"] * 7), "I6", "'x1' is not an integer"),
    (row(ints=["1"] * 12 + ["0x10"]), "I13", "'0x10' is not an integer"),
    (row(ints=["1.5"] + ["1"] * 12), "I1", "'1.5' is not an integer"),
    (row(cats=["0000000a"] * 25 + ["abc"]), "C26", "'abc' is not 8 hex digits"),
    (row(cats=["zzzzzzzz"] * 26), "C1", "'zzzzzzzz' is not 8 hex digits"),
    (row()[:-1] + "\t\n", None, "expected 40 tab-separated fields, got 41"),
    ("0\t1\t2\n", None, "expected 40 tab-separated fields, got 3"),
    ("\n", None, "empty line"),
]


@pytest.mark.parametrize(("bad", "field", "problem"), BAD_ROWS)
def test_bad_row_raises_with_file_line_and_field(tmp_path: Path, bad: str, field: str | None, problem: str) -> None:
    path = write(tmp_path, row() * 2 + bad + row() * 2)
    with pytest.raises(BadRowError) as err:
        read_criteo(path, HASH)
    assert (err.value.line, err.value.field) == (3, field)
    assert str(err.value).startswith(f"{path}:3:") and problem in str(err.value)


@pytest.mark.parametrize(("bad", "field", "problem"), BAD_ROWS)
def test_bad_row_skipped_and_counted(tmp_path: Path, bad: str, field: str | None, problem: str) -> None:
    path = write(tmp_path, row() * 2 + bad + row(label="1") * 2)
    d = prepare_criteo(path, tmp_path / "cache", HASH, on_bad_row="skip")
    assert len(d) == 4 and d.labels.tolist() == [0, 0, 1, 1]
    info = prepare_info(tmp_path / "cache")
    assert info.skipped_rows == 1
    assert info.bad_row_examples[0]["line"] == 3 and info.bad_row_examples[0]["field"] == field
    assert problem in info.bad_row_examples[0]["problem"]


def test_earliest_bad_row_wins_and_lines_stay_exact_across_chunks(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(textreader, "CHUNK_BYTES", 4096)  # ~20 lines per chunk
    lines = [row()] * 400
    lines[9] = "\n"  # line 10: empty
    lines[49] = "0\t1\n"  # line 50: 2 fields
    lines[249] = row(cats=["0000000g"] + ["0000000a"] * 25)  # line 250: C1
    lines[300] = row(label="7")  # line 301: label
    path = write(tmp_path, "".join(lines))
    with pytest.raises(BadRowError) as err:
        read_criteo(path, HASH)
    assert err.value.line == 10
    d = prepare_criteo(path, tmp_path / "cache", HASH, on_bad_row="skip")
    info = prepare_info(tmp_path / "cache")
    assert len(d) == 396 and info.skipped_rows == 4
    assert [(e["line"], e["field"]) for e in info.bad_row_examples] == [(10, None), (50, None), (250, "C1"),
                                                                       (301, "label")]
    path.write_text("".join(lines[:9] + lines[10:49] + lines[50:]))  # leave only the two decode errors
    with pytest.raises(BadRowError, match=r":248: field C1: '0000000g' is not 8 hex digits"):
        read_criteo(path, HASH)


def test_cache_built_with_skip_is_not_reused_for_error(tmp_path: Path) -> None:
    path = write(tmp_path, row() + row(label="x"))
    assert len(prepare_criteo(path, tmp_path / "c", HASH, on_bad_row="skip")) == 1
    with pytest.raises(BadRowError, match=":2: field label"):
        prepare_criteo(path, tmp_path / "c", HASH, on_bad_row="error")


# --- formats and edge cases ----------------------------------------------------------------------

def test_crlf_gzip_no_final_newline_and_empty_file(tmp_path: Path) -> None:
    text = row() + row(label="1")
    want = read_criteo(write(tmp_path, text), HASH)
    crlf = read_criteo(write(tmp_path, text.replace("\n", "\r\n"), "crlf"), HASH)
    cut = read_criteo(write(tmp_path, text[:-1], "cut"), HASH)
    gz = tmp_path / "day_0.gz"
    gz.write_bytes(gzip.compress(text.encode()))
    for other in (crlf, cut, read_criteo(gz, HASH)):
        assert np.array_equal(other.ids, want.ids) and np.array_equal(other.dense, want.dense)
    assert len(read_criteo(write(tmp_path, "", "empty"), HASH)) == 0


def test_dense_transform_negative_missing_and_large(tmp_path: Path) -> None:
    ints = ["-5", "", "0", "3", "999999999999"] + ["1"] * 8
    d = read_criteo(write(tmp_path, row(ints=ints)), HASH)
    np.testing.assert_allclose(d.dense[0, :5], [0, 0, 0, math.log(4), math.log1p(999999999999)], rtol=1e-6)


def test_missing_file_is_dataset_not_found(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"nope\.txt does not exist"):
        prepare_criteo(tmp_path / "nope.txt", tmp_path / "cache", HASH)
    with pytest.raises(DatasetNotFoundError):
        read_criteo(tmp_path / "nope.txt", HASH)


def test_config_validation_and_round_trip() -> None:
    with pytest.raises(ConfigError, match=r"CategoricalEncoding.num_embeddings = 1 is invalid"):
        CategoricalEncoding(mode="hash", num_embeddings=1)
    with pytest.raises(ConfigError, match=r"CategoricalEncoding.mode = 'lookup' is invalid"):
        CategoricalEncoding(mode="lookup")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="min_count = 0"):
        CategoricalEncoding(mode="vocab", min_count=0)
    with pytest.raises(ConfigError, match="num_embeddings = 5 is invalid: None for mode='vocab'"):
        CategoricalEncoding(mode="vocab", num_embeddings=5)
    assert CriteoConfig.from_dict(HASH.to_dict()) == HASH
    assert CriteoConfig.from_json(VOCAB2.to_json()) == VOCAB2
    with pytest.raises(ConfigError, match="read_criteo: vocab = None is invalid"):
        read_criteo("unused", VOCAB2)
    with pytest.raises(ConfigError, match="on_bad_row = 'ignore' is invalid"):
        prepare_criteo(__file__, "unused", HASH, on_bad_row="ignore")  # type: ignore[arg-type]


# --- the cache -----------------------------------------------------------------------------------

def test_cache_is_reused_then_rebuilt_when_file_or_config_change(tmp_path: Path) -> None:
    path = write(tmp_path, row() * 3)
    cache = tmp_path / "cache"
    first = prepare_criteo(path, cache, HASH)
    assert isinstance(first.ids, np.memmap)
    stamp = (cache / "manifest.json").stat().st_mtime_ns
    assert len(prepare_criteo(path, cache, HASH)) == 3
    assert (cache / "manifest.json").stat().st_mtime_ns == stamp  # reused, not rebuilt

    path.write_text(row() * 4)
    assert len(prepare_criteo(path, cache, HASH)) == 4
    other = CriteoConfig(encoding=CategoricalEncoding(mode="hash", num_embeddings=64))
    assert prepare_criteo(path, cache, other).schema.cardinalities[0] == 64
    assert prepare_info(cache).key["config"] == other.to_dict()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp folders left


def test_interrupted_build_leaves_no_trusted_cache(tmp_path: Path, monkeypatch) -> None:
    from crossrec.data import prepared

    path = write(tmp_path, row() * 3)
    cache = tmp_path / "cache"
    prepare_criteo(path, cache, HASH)
    path.write_text(row() * 5)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prepared, "write_manifest", crash)
    with pytest.raises(KeyboardInterrupt):
        prepare_criteo(path, cache, HASH)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert prepare_info(cache).rows == 3  # the old, complete cache is intact
    assert len(prepare_criteo(path, cache, HASH)) == 5  # and is seen as stale for the new file


def test_stale_temp_folder_of_a_dead_build_is_removed(tmp_path: Path) -> None:
    path = write(tmp_path, row())
    dead = tmp_path / ".cache.tmp-999999999-abcd1234"
    dead.mkdir()
    (dead / "ids.npy").write_bytes(b"half")
    prepare_criteo(path, tmp_path / "cache", HASH)
    assert not dead.exists()


def test_refuses_to_replace_a_folder_that_is_not_a_cache(tmp_path: Path) -> None:
    path = write(tmp_path, row())
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="refusing to replace"):
        prepare_criteo(path, tmp_path / "mine", HASH)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_prepared_equals_in_memory_read(shared_data: Path, tmp_path: Path) -> None:
    path = shared_data / "criteo-sample" / "train.txt"
    a, b = prepare_criteo(path, tmp_path / "c", HASH), read_criteo(path, HASH)
    for name in ("dense", "labels", "ids", "lengths"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert a.schema == b.schema
    assert next(a.batches(4)).dense.shape == (4, 13)
    assert os.path.getsize(tmp_path / "c" / "ids.npy") > 10_000 * 26 * 8


def reference_valid(line: str) -> bool:
    import re

    fields = line.rstrip("\n").split("\t")
    return (len(fields) == 40 and fields[0] in ("0", "1")
            and all(re.fullmatch(r"(-?[0-9]{1,18})?", x) for x in fields[1:14])
            and all(re.fullmatch(r"([0-9a-fA-F]{8})?", c) for c in fields[14:]))


def test_fuzzed_rows_match_a_per_line_reference(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(textreader, "CHUNK_BYTES", 2048)
    rng = np.random.default_rng(7)
    garbage = ["x", "1.5", "", "-", "0x1f", "abcdefgh", "ABCDEF01", "1234567", "123456789", "+1", " 1", "2", "-0"]
    lines = []
    for i in range(600):
        fields = row(label=str(i % 2), ints=[str(int(v)) for v in rng.integers(-3, 10**6, 13)],
                     cats=[f"{int(v):08x}" for v in rng.integers(0, 1 << 32, 26)]).rstrip("\n").split("\t")
        kind = rng.integers(0, 10)
        if kind == 0:
            fields[rng.integers(0, 40)] = str(rng.choice(garbage))
        elif kind == 1:
            fields = fields[: rng.integers(0, 40)] if rng.random() < 0.5 else [*fields, "1"]
        lines.append("\t".join(fields) + "\n")
    path = write(tmp_path, "".join(lines))
    valid = [reference_valid(line) for line in lines]
    assert 30 < valid.count(False) < 150

    with pytest.raises(BadRowError) as err:
        read_criteo(path, HASH)
    assert err.value.line == valid.index(False) + 1

    d = prepare_criteo(path, tmp_path / "c", HASH, on_bad_row="skip")
    assert prepare_info(tmp_path / "c").skipped_rows == valid.count(False)
    kept = [line for line, ok in zip(lines, valid, strict=True) if ok]
    assert len(d) == len(kept)
    ids = d.ids.reshape(len(d), 26)
    for i, line in enumerate(kept):
        label, dense, want = reference(line, True, 1 << 20)
        assert d.labels[i] == label and ids[i].tolist() == want
        np.testing.assert_allclose(d.dense[i], dense, rtol=1e-6)


def test_recorded_transform_reapplies_through_json_and_safetensors(shared_data: Path, tmp_path: Path) -> None:
    from crossrec.data.raw import read_with_schema
    from crossrec.data.schema import FeatureSchema
    from crossrec.errors import DataError

    train = prepare_criteo(shared_data / "criteo-sample" / "train.txt", tmp_path / "train", VOCAB2)
    schema = FeatureSchema.from_json(train.schema.to_json())  # as an artifact would store it
    safetensors.numpy.save_file(Vocabulary.load(tmp_path / "train").to_arrays(), str(tmp_path / "v.st"))
    vocab = Vocabulary.from_arrays(safetensors.numpy.load_file(str(tmp_path / "v.st")))
    test_path = shared_data / "criteo-sample" / "test.txt"
    got = read_with_schema(test_path, schema, vocab=vocab, has_label=False)
    want = prepare_criteo(test_path, tmp_path / "test", CriteoConfig(has_label=False, encoding=VOCAB2.encoding),
                          vocab=vocab)
    assert np.array_equal(got.ids, want.ids) and got.schema.cardinalities == schema.cardinalities
    other = Vocabulary({c: np.array([1], np.uint32) for c in CRITEO_SPARSE})
    with pytest.raises(DataError, match="built with the vocabulary sha256"):
        read_with_schema(test_path, schema, vocab=other, has_label=False)
    with pytest.raises(DataError, match="got none"):
        read_with_schema(test_path, schema, has_label=False)
