"""Data set lookup and loading by name."""

import pytest

from crossrec.data.sources import default_path, load_splits, read_for_artifact
from crossrec.data.synthetic import SyntheticConfig, generate
from crossrec.errors import DataError, DatasetNotFoundError


def test_env_var_and_missing_data(tmp_path, monkeypatch):
    (tmp_path / "criteo-sample").mkdir()
    (tmp_path / "criteo-sample" / "train.txt").write_text("")
    monkeypatch.setenv("CROSSREC_DATA", str(tmp_path))
    assert default_path("criteo") == tmp_path / "criteo-sample" / "train.txt"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CROSSREC_CACHE", str(tmp_path / "cache"))
    above = [p for p in tmp_path.parents if (p / "shared" / "data" / "ml-100k").is_dir()]
    if above:  # the lookup walks up from the working directory, and this machine has real data up there
        pytest.skip(f"{above[0] / 'shared' / 'data'} holds MovieLens above the temporary folder; nothing is missing")
    with pytest.raises(DatasetNotFoundError, match="crossrec datasets fetch movielens-100k"):
        default_path("movielens-100k")


def test_bad_names_and_splits():
    with pytest.raises(DataError, match="unknown data set 'criteo-1tb'"):
        load_splits("criteo-1tb")
    with pytest.raises(DataError, match="only defined for movielens-100k"):
        load_splits("synthetic", split="u1")


def test_movielens_both_splits(shared_data):
    random = load_splits("movielens-100k", path=shared_data / "ml-100k", seed=1)
    u1 = load_splits("movielens-100k", path=shared_data / "ml-100k", split="u1")
    assert [len(s) for s in random] == [80000, 10000, 10000]
    assert len(u1.test) == 20000 and len(u1.train) + len(u1.val) == 80000


def test_read_for_artifact_refuses_mismatched_features(tmp_path):
    from crossrec.data import save_cache

    small = generate(SyntheticConfig(rows=50, num_sparse=3, max_rows=10))
    other = generate(SyntheticConfig(rows=50, num_sparse=3, max_rows=20))
    save_cache(small, tmp_path / "c")
    assert len(read_for_artifact(tmp_path / "c", small.schema, {})) == 50
    with pytest.raises(DataError, match="do not match the model's"):
        read_for_artifact(tmp_path / "c", other.schema, {})
    with pytest.raises(DataError, match="no raw file format"):
        read_for_artifact(tmp_path / "raw.txt", small.schema, {}) if (tmp_path / "raw.txt").write_text("x") else None
