"""`Rows`: a small delimited-file table whose errors name the file, the 1-based line and the field.

Values stay bytes until a column is converted; numeric columns convert in one numpy call and
only fall back to a per-value scan to locate a bad value, so a clean 100k-line file costs one
split per line. ``on_bad_row="error"`` raises :class:`~crossrec.errors.BadRowError` at the first
problem found; ``"skip"`` drops the row and counts it in :attr:`Rows.skipped`.

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "t.txt"
>>> _ = p.write_bytes(b"1|a\\n2|b\\nx|c\\n\\n")
>>> rows = Rows(p, b"|", ["id", "name"], "skip")
>>> rows.ints("id").tolist(), rows.kept().tolist(), rows.skipped
([1, 2, 0], [True, True, False], 1)
>>> Rows(p, b"|", ["id", "name"], "error").ints("id")
Traceback (most recent call last):
...
crossrec.errors.BadRowError: ...t.txt:3: field id: 'x' is not an integer (...)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from crossrec.errors import BadRowError


class Rows:
    """The non-blank lines of ``path`` split on ``sep`` into ``names`` columns (see module doc)."""

    def __init__(self, path: Path, sep: bytes, names: list[str], on_bad_row: str):
        self.path, self.names, self.on_bad_row = path, names, on_bad_row
        self.malformed = 0  # lines with the wrong field count (dropped before any column exists)
        fields: list[list[bytes]] = []
        lines: list[int] = []
        for number, line in enumerate(path.read_bytes().split(b"\n"), 1):
            line = line.removesuffix(b"\r")
            if not line.strip():
                continue  # blank lines carry nothing (u.genre ends with one)
            parts = line.split(sep)
            if len(parts) != len(names):
                self._bad(number, None, f"expected {len(names)} {sep.decode()!r}-separated fields, got {len(parts)}")
                self.malformed += 1
                continue
            fields.append(parts)
            lines.append(number)
        self.lines = np.asarray(lines, np.int64)
        self._columns = [list(c) for c in zip(*fields, strict=True)] if fields else [[] for _ in names]
        self._keep = np.ones(len(lines), bool)

    def __len__(self) -> int:
        return len(self.lines)

    @property
    def skipped(self) -> int:
        """Rows dropped so far (``on_bad_row="skip"``)."""
        return self.malformed + int((~self._keep).sum())

    def kept(self) -> np.ndarray:
        """(n,) bool: rows with no problem found so far."""
        return self._keep.copy()

    def col(self, name: str) -> list[bytes]:
        return self._columns[self.names.index(name)]

    def _bad(self, line: int, field: str | None, problem: str) -> None:
        if self.on_bad_row == "error":
            raise BadRowError(str(self.path), line, field, problem)

    def reject(self, bad: np.ndarray, field: str, problem: Callable[[int], str]) -> None:
        """Mark rows where ``bad`` holds; ``problem(k)`` describes row ``k`` (called only to raise)."""
        bad = bad & self._keep
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            self._bad(int(self.lines[k]), field, problem(k))
            self._keep &= ~bad

    def reject_one(self, k: int, field: str, problem: str) -> None:
        mask = np.zeros(len(self), bool)
        mask[k] = True
        self.reject(mask, field, lambda _k: problem)

    def ints(self, name: str, lo: int | None = None, hi: int | None = None) -> np.ndarray:
        """Column ``name`` as int64 (0 where rejected), each value checked to lie in ``[lo, hi]``."""
        raw = self.col(name)
        try:
            values = np.array(raw, dtype=np.bytes_).astype(np.int64) if raw else np.zeros(0, np.int64)
            ok = np.ones(len(raw), bool)
        except ValueError:  # rare: find which values are not integers
            values, ok = np.zeros(len(raw), np.int64), np.ones(len(raw), bool)
            for k, value in enumerate(raw):
                try:
                    values[k] = int(value)
                except ValueError:
                    ok[k] = False
        self.reject(~ok, name, lambda k: f"{raw[k].decode('latin-1')!r} is not an integer")
        values[~ok] = 0
        low = values < lo if lo is not None else np.zeros(len(raw), bool)
        high = values > hi if hi is not None else np.zeros(len(raw), bool)
        allowed = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
        self.reject(ok & (low | high), name, lambda k: f"{int(values[k])} is not {allowed}")
        return np.where(ok & ~low & ~high, values, 0)

    def lookup(self, name: str, vocabulary: dict[bytes, int]) -> np.ndarray:
        """Column ``name`` mapped through ``vocabulary`` (bytes -> row); unknown values are bad rows."""
        raw = self.col(name)
        values = np.array([vocabulary.get(v.strip(), -1) for v in raw], np.int64)
        known = sorted(k.decode("latin-1") for k in vocabulary)
        shown = ", ".join(known[:8]) + (", …" if len(known) > 8 else "")
        self.reject(values < 0, name, lambda k: f"{raw[k].decode('latin-1')!r} is not one of {shown}")
        return np.maximum(values, 0)

    def reject_duplicates(self, name: str, values: np.ndarray) -> None:
        """Every repeat of an id after its first (kept) occurrence is a bad row."""
        kept = np.flatnonzero(self._keep)
        _, first = np.unique(values[kept], return_index=True)
        dup = np.zeros(len(self), bool)
        dup[kept] = True
        dup[kept[first]] = False
        self.reject(dup, name, lambda k: f"duplicate id {int(values[k])}")
