"""MovieLens-100K as CTR: real-file facts (../shared/data/ml-100k), encoding, splits, bad rows."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from crossrec.data.movielens import SPARSE_FEATURES, MovieLens100K, _tiny_example, load_movielens
from crossrec.errors import BadRowError, ConfigError, DatasetNotFoundError

GENRES = SPARSE_FEATURES.index("genres")


@pytest.fixture(scope="module")
def ml(ml100k_dir: Path) -> MovieLens100K:
    return MovieLens100K(ml100k_dir)


@pytest.fixture(scope="module")
def full(ml: MovieLens100K):
    return ml.read("u.data")


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return _tiny_example(tmp_path)


def test_real_file_counts_and_ctr(full) -> None:
    assert len(full) == 100_000
    assert int(full.labels.sum()) == 55_375  # ratings 4 and 5 in u.data
    assert full.ctr == pytest.approx(0.55375)
    card = dict(zip(SPARSE_FEATURES, full.schema.cardinalities, strict=True))
    assert card["user_id"] == 943 and card["item_id"] == 1682
    assert card["occupation"] == 21 and card["genres"] == 19 and card["hour"] == 24 and card["weekday"] == 7
    assert [f.name for f in full.schema.sparse if f.multi_hot] == ["genres"]
    assert full.schema.dense == ("age",)
    assert full.schema.preprocessing["reader"] == "movielens-100k"


def test_genre_bags_are_jagged_and_batches_validate(full) -> None:
    bag = full.lengths[:, GENRES]
    assert bag.min() == 1 and bag.max() == 6  # u.item: 1..6 genre flags per movie
    assert (np.delete(full.lengths, GENRES, axis=1) == 1).all()
    assert full.ids.shape[0] == int(full.lengths.sum())
    batch = full.slice(0, 4096).to_batch()
    batch.validate(full.schema.cardinalities, full.schema.num_dense)


def test_first_rating_is_encoded_field_by_field(ml: MovieLens100K, full) -> None:
    # u.data line 1: 196 242 3 881250949 (1997-12-04 15:55:49 UTC, a Thursday);
    # u.user 196: 49|M|writer|55105; u.item 242: Kolya (1996), released 24-Jan-1997, Comedy.
    row = full.ids[: int(full.lengths[0].sum())].tolist()
    zip_row = ml.users.zip_prefixes.index("551") + 1
    assert row == [195, 241, 4, 1, ml.occupations.index("writer"), zip_row, ml.genres.index("Comedy"), 15, 15, 3]
    assert full.labels[0] == 0.0
    assert full.dense[0, 0] == pytest.approx((49 - ml.age_mean) / ml.age_std)


def test_missing_release_date_maps_to_row_zero(ml: MovieLens100K) -> None:
    unknown = int(np.flatnonzero(ml.items.ids == 267)[0])  # u.item 267: "unknown", no date
    assert ml.items.year_row[unknown] == 0
    assert (ml.items.year_row > 0).sum() == 1681


def test_random_split_sizes_and_seed_determinism(shared_data: Path) -> None:
    a = load_movielens(shared_data / "ml-100k", split="random", seed=7)
    b = load_movielens(shared_data / "ml-100k", split="random", seed=7)
    c = load_movielens(shared_data / "ml-100k", split="random", seed=8)
    assert [len(x) for x in a] == [80_000, 10_000, 10_000]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.ids, y.ids)
        np.testing.assert_array_equal(x.labels, y.labels)
    assert not np.array_equal(a.test.ids, c.test.ids)
    assert a.train.schema == a.test.schema == c.val.schema


def test_u1_split_uses_official_files(shared_data: Path) -> None:
    splits = load_movielens(shared_data, split="u1", seed=0)  # the parent of ml-100k/ works too
    assert len(splits.train) + len(splits.val) == 80_000 and len(splits.test) == 20_000
    assert len(splits.val) == 8_000
    assert splits.skipped["u1.base"] == 0 and splits.skipped["u1.test"] == 0
    assert splits.train.schema == splits.test.schema  # one vocabulary, not the split's


def test_tiny_example_layout_is_sample_major(tiny: Path) -> None:
    data = MovieLens100K(tiny).read()
    assert data.lengths[:, GENRES].tolist() == [2, 0, 0]  # movie 2 has no genre: an empty bag
    first = data.ids[:11].tolist()  # sample 0: 6 single ids, 2 genres, year, hour, weekday
    assert first[:2] == [0, 0] and first[6:8] == [1, 2]
    assert data.ids[11:20].tolist()[6] == 0  # sample 1: movie 2 has no date -> release_year row 0
    assert data.schema.cardinalities[SPARSE_FEATURES.index("zip_prefix")] == 2  # non-numeric row + "857"


def _replace_line(path: Path, line: int, text: str) -> None:
    lines = path.read_bytes().split(b"\n")
    lines[line - 1] = text.encode("latin-1")
    path.write_bytes(b"\n".join(lines))


@pytest.mark.parametrize(("file", "line", "text", "field", "words"), [
    ("u.data", 2, "2\t2\t3", None, "expected 4"),
    ("u.data", 2, "2\t2\tfive\t891717742", "rating", "'five' is not an integer"),
    ("u.data", 3, "1\t2\t9\t878887116", "rating", "9 is not in [1, 5]"),
    ("u.data", 1, "7\t1\t5\t881250949", "user_id", "user 7 is not in u.user"),
    ("u.data", 1, "1\t99\t5\t881250949", "item_id", "item 99 is not in u.item"),
    ("u.user", 2, "2|53|X|artist|T8H1N", "gender", "'X' is not one of F, M"),
    ("u.user", 1, "1|24|M|pilot|85711", "occupation", "'pilot' is not one of"),
    ("u.item", 2, "2|unknown|32-Foo-19||x|0|0|0", "release_date", "not a dd-Mon-yyyy date"),
    ("u.item", 1, "1|Amélie (2001)|01-Jan-2001||http://x|0|2|1", "genre:Action", "2 is not in [0, 1]"),
])
def test_bad_row_names_file_line_and_field(tiny: Path, file: str, line: int, text: str, field: str | None,
                                           words: str) -> None:
    _replace_line(tiny / file, line, text)
    with pytest.raises(BadRowError) as info:
        load_movielens(tiny, split="random")
    err = info.value
    assert (Path(err.path).name, err.line, err.field) == (file, line, field)
    assert words in err.problem


def test_skip_drops_and_counts_bad_rows(tiny: Path) -> None:
    _replace_line(tiny / "u.data", 2, "2\t2\tfive\t891717742")
    with (tiny / "u.data").open("a") as fh:
        fh.write("1\t1\n")  # wrong field count on line 4
    ml = MovieLens100K(tiny, on_bad_row="skip")
    data = ml.read("u.data")
    assert len(data) == 2 and ml.skipped["u.data"] == 2


def test_skipped_item_makes_its_ratings_bad_rows(tiny: Path) -> None:
    _replace_line(tiny / "u.item", 2, "2|unknown|??||x|0|0|0")
    splits = load_movielens(tiny, split="u1", on_bad_row="skip")
    assert splits.skipped["u.item"] == 1
    assert splits.skipped["u1.base"] == 1 and splits.skipped["u1.test"] == 1  # both rated movie 2
    assert splits.train.schema.cardinalities[1] == 1


def test_missing_files_say_how_to_fetch(tmp_path: Path, tiny: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="crossrec datasets fetch movielens-100k"):
        load_movielens(tmp_path / "nowhere")
    (tiny / "u1.test").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"missing u1\.test"):
        load_movielens(tiny, split="u1")


def test_latin1_titles_and_crlf_lines_are_read(tmp_path: Path) -> None:
    folder = _tiny_example(tmp_path / "a")
    crlf = tmp_path / "b"
    shutil.copytree(folder, crlf)
    (crlf / "u.data").write_bytes((folder / "u.data").read_bytes().replace(b"\n", b"\r\n"))
    a, b = MovieLens100K(folder).read(), MovieLens100K(crlf).read()
    np.testing.assert_array_equal(a.ids, b.ids)


def test_invalid_options_are_config_errors(tiny: Path) -> None:
    with pytest.raises(ConfigError, match="split"):
        load_movielens(tiny, split="u9")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="on_bad_row"):
        MovieLens100K(tiny, on_bad_row="ignore")  # type: ignore[arg-type]
