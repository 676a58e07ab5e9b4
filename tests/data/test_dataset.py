"""CTRData: jagged storage, take/slice/split/batches and the on-disk cache."""

import numpy as np
import pytest
import torch

from crossrec.data import Batch, CTRData, FeatureSchema, SparseFeature, load_cache, save_cache
from crossrec.errors import DataError, DatasetNotFoundError


def _jagged(n=7):
    schema = FeatureSchema(dense=("x",), sparse=(SparseFeature(name="a", num_embeddings=9),
                                                 SparseFeature(name="g", num_embeddings=9, multi_hot=True)))
    lengths = np.array([[1, (i % 3)] for i in range(n)], np.int32)  # bags of 0, 1, 2 ids
    ids = np.arange(int(lengths.sum()), dtype=np.int64) % 9
    return CTRData(schema=schema, dense=np.arange(n, dtype=np.float32)[:, None], labels=(np.arange(n) % 2).astype(
        np.float32), ids=ids, lengths=lengths)


def _rows(d):
    """Python view of every sample: (dense, [ids per bag])."""
    out, pos = [], 0
    for i in range(len(d)):
        bags = []
        for n in d.lengths[i]:
            bags.append(list(d.ids[pos : pos + n]))
            pos += n
        out.append((float(d.dense[i, 0]), bags))
    return out


def test_take_keeps_rows_intact():
    d = _jagged()
    idx = np.array([5, 0, 3])
    assert _rows(d.take(idx)) == [_rows(d)[i] for i in idx]
    assert _rows(d.slice(2, 5)) == _rows(d)[2:5]


def test_batches_cover_everything_once_and_match_offsets():
    d = _jagged(10)
    seen = []
    for b in d.batches(4, shuffle=True, seed=1):
        assert isinstance(b, Batch) and b.offsets.shape == (b.batch_size * 2 + 1,)
        b.validate((9, 9), 1)
        seen += b.dense[:, 0].tolist()
    assert sorted(seen) == list(range(10))


def test_split_is_seeded_partition():
    d = _jagged(100)
    a = [s.dense[:, 0].tolist() for s in d.split((0.8, 0.1, 0.1), seed=3)]
    b = [s.dense[:, 0].tolist() for s in d.split((0.8, 0.1, 0.1), seed=3)]
    assert a == b and [len(x) for x in a] == [80, 10, 10]
    assert sorted(sum(a, [])) == list(range(100))
    with pytest.raises(DataError, match="sum to 1"):
        d.split((0.5, 0.2))


def test_cache_round_trip_and_errors(tmp_path):
    d = _jagged()
    save_cache(d, tmp_path / "c")
    back = load_cache(tmp_path / "c")
    assert _rows(back) == _rows(d) and back.schema == d.schema
    (tmp_path / "c" / "ids.npy").unlink()
    with pytest.raises(DataError, match="ids.npy is missing"):
        load_cache(tmp_path / "c")
    with pytest.raises(DatasetNotFoundError, match="not a crossrec data cache"):
        load_cache(tmp_path / "nothing")


def test_batch_validate_catches_out_of_range_ids():
    b = Batch.from_one_hot(torch.zeros(2, 1), torch.tensor([[1, 2], [3, 9]]))
    with pytest.raises(DataError, match="sparse id 9 of feature #1 is outside"):
        b.validate((9, 9), 1)
    with pytest.raises(DataError, match="dense features have shape"):
        b.validate((9, 9), 2)
