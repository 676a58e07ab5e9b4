"""Categorical encodings, vocabulary counting and the column decoders under the text readers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from crossrec.data.categorical import CategoricalEncoding, VocabCounter, Vocabulary, encode_keys
from crossrec.data.textreader import decode_hex8, parse_ints
from crossrec.errors import DataError, DatasetNotFoundError


def test_counter_merges_many_blocks_like_one_big_count() -> None:
    rng = np.random.default_rng(0)
    blocks = [rng.integers(-1, 5000, size=(2, 3000)) for _ in range(40)]  # forces several lazy merges
    counter = VocabCounter(("a", "b"), np.uint32)
    for block in blocks:
        counter.update(block)
    vocab = counter.build(min_count=30)
    every = np.concatenate(blocks, axis=1)
    for f, name in enumerate(("a", "b")):
        values, counts = np.unique(every[f][every[f] >= 0], return_counts=True)
        assert vocab[name].tolist() == values[counts >= 30].tolist()


def test_vocab_encoding_rows_and_unseen_values() -> None:
    vocab = Vocabulary({"a": np.array([3, 9, 12], np.uint32)})
    keys = np.array([[12, 3, -1, 4, 9]])
    assert encode_keys(keys, ("a",), CategoricalEncoding(mode="vocab"), vocab).tolist() == [[4, 2, 1, 0, 3]]


def test_vocabulary_validation_and_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not strictly increasing"):
        Vocabulary({"a": np.array([3, 3], np.uint32)})
    with pytest.raises(DataError, match="uint32/uint64"):
        Vocabulary({"a": np.array([1.0])})
    with pytest.raises(DataError, match="no feature 'b'"):
        Vocabulary({"a": np.array([1], np.uint64)})["b"]
    with pytest.raises(DatasetNotFoundError, match="holds no vocabulary"):
        Vocabulary.load(tmp_path)
    v = Vocabulary({"a": np.array([1, 5], np.uint64), "b": np.array([], np.uint64)})
    v.save(tmp_path)
    assert Vocabulary.load(tmp_path).digest() == v.digest()
    assert Vocabulary.load(tmp_path, ("b",)).values.keys() == {"b"}


def test_hex_and_int_decoders_on_sliced_arrays() -> None:
    # Arrow arrays can be slices with a non-zero offset: the buffer views must honour it.
    hexes = pa.array([b"zz", b"00000010", b"", b"0000000F"], pa.binary()).slice(1)
    keys, bad = decode_hex8(hexes)
    assert keys.tolist() == [16, -1, 15] and bad is None
    ints = pa.array([b"x", b"-12", b"", b"7", b"--1", b"-"], pa.binary()).slice(1)
    values, bad = parse_ints(ints)
    assert values.tolist() == [-12, 0, 7, 0, 0] and bad.tolist() == [False, False, False, True, True]
    long = pa.array([b"1" * 18, b"1" * 19], pa.binary())
    values, bad = parse_ints(long)
    assert values[0] == int("1" * 18) and bad.tolist() == [False, True]
