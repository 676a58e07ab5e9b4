"""MovieLens-100K as a CTR task: label = rating ≥ 4, ten sparse features, one dense.

Sparse features, in order (row ids local to each table; vocabularies come from u.user, u.item,
u.genre and u.occupation, never from a split, so every split shares one encoding):

============  ====  ==========================================================================
feature       rows  encoding
============  ====  ==========================================================================
user_id        943  row of the user in u.user
item_id       1682  row of the movie in u.item
age_bucket       7  MovieLens-1M's brackets: <18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+
gender           2  F, M
occupation      21  index in u.occupation
zip_prefix     ~1+  row 0 = non-numeric zip (17 Canadian/foreign codes, too sparse to learn),
                    then the sorted first-3-digit US prefixes seen in u.user
genres          19  **multi-hot bag** of the u.item genre flags (a movie with none: empty bag)
release_year    17  row 0 = missing date (e.g. item 267 "unknown"); then <1930, the decades to
                    the 1980s, and single years 1990..1998 (most movies are from the 1990s)
hour            24  hour of the rating timestamp, UTC
weekday          7  Monday = 0, UTC
============  ====  ==========================================================================

Dense: ``age``, z-scored with the mean/std over u.user (recorded in the schema), so a model
with a bottom MLP always has one input. :class:`MovieLens100K` reads the vocabulary once and
encodes any ratings file; :func:`load_movielens` gives train/val/test for the seeded random
80/10/10 split or the official u1 split. Files: see ../shared/data/README.md; get them with
``crossrec datasets fetch movielens-100k`` (:mod:`crossrec.data.fetch`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from crossrec.data._delimited import Rows
from crossrec.data.dataset import CTRData
from crossrec.data.schema import FeatureSchema, SparseFeature
from crossrec.errors import ConfigError, DatasetNotFoundError

OnBadRow = Literal["error", "skip"]
SPARSE_FEATURES = ("user_id", "item_id", "age_bucket", "gender", "occupation", "zip_prefix", "genres",
                   "release_year", "hour", "weekday")
AGE_EDGES = (18, 25, 35, 45, 50, 56)
YEAR_EDGES = (1930, 1940, 1950, 1960, 1970, 1980, 1990, 1991, 1992, 1993, 1994, 1995, 1996, 1997, 1998)
GENDERS = ("F", "M")
ZIP_PREFIX_LEN = 3
_BAG = SPARSE_FEATURES.index("genres")  # 6 one-id features come before the genre bag, 3 after it
_VOCAB_FILES = ("u.user", "u.item", "u.genre", "u.occupation")
_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
                                       "Nov", "Dec"), 1)}


def _resolve(root: str | Path, ratings_file: str) -> Path:
    """The folder holding the files (``root`` itself or ``root/ml-100k``); absent files: a how-to error."""
    root = Path(root)
    folder = root / "ml-100k" if not (root / "u.user").is_file() and (root / "ml-100k").is_dir() else root
    missing = [n for n in dict.fromkeys((*_VOCAB_FILES, ratings_file)) if not (folder / n).is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"MovieLens-100K not found in {folder} (missing {', '.join(missing)}); run "
            "`crossrec datasets fetch movielens-100k`, or pass the folder that holds u.data "
            "(e.g. ../shared/data/ml-100k)")
    return folder


def _years(rows: Rows) -> np.ndarray:
    """Release year per item, 0 when the date is empty; a non-empty unparsable date is a bad row."""
    dates = rows.col("release_date")
    years = np.zeros(len(dates), np.int64)
    for k, raw in enumerate(dates):  # 1,682 short strings: a loop is clearer than vector tricks
        if not raw:
            continue
        day, _, rest = raw.partition(b"-")
        month, _, year = rest.partition(b"-")
        if day.isdigit() and month.decode("latin-1") in _MONTHS and year.isdigit() and len(year) == 4:
            years[k] = int(year)
        else:
            rows.reject_one(k, "release_date", f"{raw.decode('latin-1')!r} is not a dd-Mon-yyyy date")
    return years


@dataclass
class _Items:
    ids: np.ndarray  # (I,) sorted movie ids
    year_row: np.ndarray  # (I,) release_year row
    genre_ptr: np.ndarray  # (I+1,) CSR into genre_ids
    genre_ids: np.ndarray  # (nnz,) genre rows


def _read_items(folder: Path, genres: list[str], on_bad_row: OnBadRow) -> tuple[_Items, int]:
    head = ["movie_id", "title", "release_date", "video_release_date", "imdb_url"]
    rows = Rows(folder / "u.item", b"|", [*head, *(f"genre:{g}" for g in genres)], on_bad_row)
    ids = rows.ints("movie_id", 1)
    rows.reject_duplicates("movie_id", ids)
    years = _years(rows)
    flags = np.stack([rows.ints(f"genre:{g}", 0, 1) for g in genres], axis=1) if genres else np.zeros((len(ids), 0))
    keep = rows.kept()
    ids, years, flags = ids[keep], years[keep], flags[keep].astype(bool)
    order = np.argsort(ids)
    ids, years, flags = ids[order], years[order], flags[order]
    year_row = np.where(years > 0, np.searchsorted(YEAR_EDGES, years, side="right") + 1, 0)
    genre_ptr = np.r_[0, np.cumsum(flags.sum(axis=1))].astype(np.int64)
    genre_ids = np.nonzero(flags)[1].astype(np.int64)  # row-major: each movie's genres in u.genre order
    return _Items(ids, year_row, genre_ptr, genre_ids), rows.skipped


@dataclass
class _Users:
    ids: np.ndarray  # (U,) sorted user ids
    codes: np.ndarray  # (U, 4) age_bucket, gender, occupation, zip_prefix rows
    age: np.ndarray  # (U,) raw age
    zip_prefixes: list[str]


def _read_users(folder: Path, occupations: list[str], on_bad_row: OnBadRow) -> tuple[_Users, int]:
    rows = Rows(folder / "u.user", b"|", ["user_id", "age", "gender", "occupation", "zip_code"], on_bad_row)
    ids = rows.ints("user_id", 1)
    rows.reject_duplicates("user_id", ids)
    age = rows.ints("age", 0, 150)
    gender = rows.lookup("gender", {g.encode(): i for i, g in enumerate(GENDERS)})
    occupation = rows.lookup("occupation", {o.encode(): i for i, o in enumerate(occupations)})
    zips = [z.decode("latin-1").strip() for z in rows.col("zip_code")]
    # Why one shared row for non-numeric zips: the 17 foreign codes are unique, one user each.
    prefix = [z[:ZIP_PREFIX_LEN] if z.isdigit() and len(z) >= ZIP_PREFIX_LEN else "" for z in zips]
    keep = rows.kept()
    vocab = sorted({p for p, k in zip(prefix, keep, strict=True) if k and p})
    row_of = {p: i for i, p in enumerate(vocab, 1)}
    zip_row = np.array([row_of.get(p, 0) for p in prefix], np.int64)
    age_row = np.searchsorted(AGE_EDGES, age, side="right")
    codes = np.stack([age_row, gender, occupation, zip_row], axis=1).astype(np.int64)[keep]
    order = np.argsort(ids[keep])
    return _Users(ids[keep][order], codes[order], age[keep][order], vocab), rows.skipped


def _row_of(known: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row of each id in the sorted ``known`` ids, and whether it was found."""
    pos = np.clip(np.searchsorted(known, ids), 0, max(len(known) - 1, 0))
    found = known[pos] == ids if len(known) else np.zeros(len(ids), bool)
    return pos, found


@dataclass(frozen=True)
class MovieLensSplits:
    """train/val/test of one split; unpacks as ``train, val, test = splits``."""

    train: CTRData
    val: CTRData
    test: CTRData
    split: str
    seed: int
    skipped: dict[str, int] = field(default_factory=dict)  # file name -> malformed rows skipped

    def __iter__(self) -> Iterator[CTRData]:
        return iter((self.train, self.val, self.test))


class MovieLens100K:
    """The ml-100k vocabulary (users, items, genres, occupations) and an encoder for ratings files.

    >>> import tempfile
    >>> ml = MovieLens100K(_tiny_example(tempfile.mkdtemp()))
    >>> data = ml.read("u.data")
    >>> len(data), data.schema.cardinalities[:2], data.lengths[:, 6].tolist()
    (3, (2, 2), [2, 0, 0])
    >>> data.labels.tolist()
    [1.0, 0.0, 1.0]
    """

    def __init__(self, root: str | Path, *, on_bad_row: OnBadRow = "error", positive_rating: int = 4):
        if on_bad_row not in ("error", "skip"):
            raise ConfigError(f"on_bad_row = {on_bad_row!r} is invalid: 'error' or 'skip'")
        if not 1 <= positive_rating <= 5:
            raise ConfigError(f"positive_rating = {positive_rating!r} is invalid: a rating in 1..5 (default 4)")
        self.folder = _resolve(root, "u.user")
        self.on_bad_row, self.positive_rating = on_bad_row, positive_rating
        self.skipped: dict[str, int] = {}
        genre_rows = Rows(self.folder / "u.genre", b"|", ["name", "index"], on_bad_row)
        genre_index = genre_rows.ints("index", 0)
        named = zip(genre_index.tolist(), genre_rows.col("name"), genre_rows.kept(), strict=True)
        self.genres = [g.decode("latin-1") for _, g, ok in sorted(named) if ok]  # in u.genre's index order
        occ_rows = Rows(self.folder / "u.occupation", b"|", ["occupation"], on_bad_row)
        self.occupations = [o.decode("latin-1").strip() for o in occ_rows.col("occupation")]
        self.users, self.skipped["u.user"] = _read_users(self.folder, self.occupations, on_bad_row)
        self.items, self.skipped["u.item"] = _read_items(self.folder, self.genres, on_bad_row)
        self.skipped.update({"u.genre": genre_rows.skipped, "u.occupation": occ_rows.skipped})
        ages = self.users.age.astype(np.float64)
        self.age_mean = float(ages.mean()) if len(ages) else 0.0
        self.age_std = float(ages.std()) if len(ages) and ages.std() > 0 else 1.0
        self.schema = self._schema()

    def _schema(self) -> FeatureSchema:
        rows = (len(self.users.ids), len(self.items.ids), len(AGE_EDGES) + 1, len(GENDERS), len(self.occupations),
                len(self.users.zip_prefixes) + 1, len(self.genres), len(YEAR_EDGES) + 2, 24, 7)
        sparse = tuple(SparseFeature(name=n, num_embeddings=max(r, 1), multi_hot=n == "genres")
                       for n, r in zip(SPARSE_FEATURES, rows, strict=True))
        digests = {n: hashlib.sha256((self.folder / n).read_bytes()).hexdigest() for n in _VOCAB_FILES}
        return FeatureSchema(dense=("age",), sparse=sparse, preprocessing={
            "reader": "movielens-100k", "version": 1, "label": "rating >= positive_rating",
            "positive_rating": self.positive_rating, "age_edges": list(AGE_EDGES), "year_edges": list(YEAR_EDGES),
            "genders": list(GENDERS), "zip_prefix_len": ZIP_PREFIX_LEN, "time_zone": "UTC",
            "dense": {"age": {"mean": self.age_mean, "std": self.age_std}}, "vocabulary_sha256": digests})

    def read(self, ratings_file: str = "u.data") -> CTRData:
        """Encode one ratings file (``user \\t item \\t rating \\t timestamp``) of the same folder."""
        path = _resolve(self.folder, ratings_file) / ratings_file
        rows = Rows(path, b"\t", ["user_id", "item_id", "rating", "timestamp"], self.on_bad_row)
        user_row, found = _row_of(self.users.ids, rows.ints("user_id", 1))
        rows.reject(~found, "user_id", lambda k: f"user {rows.col('user_id')[k].decode()} is not in u.user")
        item_row, found = _row_of(self.items.ids, rows.ints("item_id", 1))
        rows.reject(~found, "item_id", lambda k: f"item {rows.col('item_id')[k].decode()} is not in u.item")
        rating = rows.ints("rating", 1, 5)
        stamp = rows.ints("timestamp", 0)
        keep = rows.kept()
        self.skipped[ratings_file] = rows.skipped
        return self._encode(user_row[keep], item_row[keep], rating[keep], stamp[keep])

    def _encode(self, user: np.ndarray, item: np.ndarray, rating: np.ndarray, stamp: np.ndarray) -> CTRData:
        n = len(user)
        seconds = stamp % 86_400
        weekday = (stamp // 86_400 + 3) % 7  # 1970-01-01 was a Thursday (Monday = 0)
        before = np.column_stack([user, item, self.users.codes[user]])  # (N, 6): features ahead of the bag
        after = np.column_stack([self.items.year_row[item], seconds // 3_600, weekday])  # (N, 3)
        bag = np.diff(self.items.genre_ptr)[item]  # (N,) genres per sample, may be 0
        lengths = np.ones((n, len(SPARSE_FEATURES)), np.int32)
        lengths[:, _BAG] = bag
        singles = len(SPARSE_FEATURES) - 1
        start = np.zeros(n, np.int64)
        np.cumsum(singles + bag[:-1], out=start[1:])  # where each sample's ids begin (sample-major)
        ids = np.empty(int(singles * n + bag.sum()), np.int64)
        ids[start[:, None] + np.arange(_BAG)] = before
        ids[(start + _BAG + bag)[:, None] + np.arange(singles - _BAG)] = after
        within = np.arange(int(bag.sum())) - np.repeat(np.cumsum(bag) - bag, bag)  # position inside each bag
        ids[np.repeat(start + _BAG, bag) + within] = self.items.genre_ids[np.repeat(self.items.genre_ptr[item], bag)
                                                                        + within]
        dense = ((self.users.age[user] - self.age_mean) / self.age_std).astype(np.float32).reshape(n, 1)
        labels = (rating >= self.positive_rating).astype(np.float32)
        return CTRData(schema=self.schema, dense=dense, labels=labels, ids=ids, lengths=lengths)


def load_movielens(root: str | Path, *, split: Literal["random", "u1"] = "random", seed: int = 0,
                   on_bad_row: OnBadRow = "error", positive_rating: int = 4) -> MovieLensSplits:
    """Train/val/test: ``"random"`` = seeded 80/10/10 of u.data; ``"u1"`` = u1.base (val: a seeded
    10% of it) and u1.test. Malformed rows raise :class:`~crossrec.errors.BadRowError` or, with
    ``on_bad_row="skip"``, are dropped and counted in ``skipped``.

    >>> import tempfile
    >>> train, val, test = load_movielens(_tiny_example(tempfile.mkdtemp()), split="u1")
    >>> len(train) + len(val), len(test)
    (2, 1)
    """
    if split not in ("random", "u1"):
        raise ConfigError(f"split = {split!r} is invalid: 'random' (seeded 80/10/10 of u.data) or 'u1'")
    ml = MovieLens100K(root, on_bad_row=on_bad_row, positive_rating=positive_rating)
    if split == "random":
        train, val, test = ml.read("u.data").split((0.8, 0.1, 0.1), seed=seed)
    else:
        train, val = ml.read("u1.base").split((0.9, 0.1), seed=seed)
        test = ml.read("u1.test")
    return MovieLensSplits(train=train, val=val, test=test, split=split, seed=seed, skipped=dict(ml.skipped))


def _tiny_example(directory: str | Path) -> Path:
    """Write a 2-user, 2-movie ml-100k look-alike (for doctests and tests); returns the folder."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    genres = ["unknown", "Action", "Comedy"]
    (folder / "u.genre").write_text("".join(f"{g}|{i}\n" for i, g in enumerate(genres)) + "\n")
    (folder / "u.occupation").write_text("artist\nwriter\n")
    (folder / "u.user").write_text("1|24|M|writer|85711\n2|53|F|artist|T8H1N\n")
    (folder / "u.item").write_bytes("1|Amélie (2001)|01-Jan-2001||http://x|0|1|1\n"
                                    "2|unknown||||0|0|0\n".encode("latin-1"))
    ratings = "1\t1\t5\t881250949\n2\t2\t3\t891717742\n1\t2\t4\t878887116\n"
    (folder / "u.data").write_text(ratings)
    lines = ratings.splitlines(keepends=True)
    (folder / "u1.base").write_text("".join(lines[:2]))
    (folder / "u1.test").write_text(lines[2])
    return folder
