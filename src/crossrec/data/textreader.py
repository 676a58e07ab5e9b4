"""Streaming delimited-text reading with exact line numbers, and vectorized column decoders.

Files are read in chunks of whole lines (a few MiB each, so memory stays bounded whatever the file
size) and each chunk is parsed by Arrow's CSV reader with every column as raw bytes. We cut the
chunks ourselves, rather than use ``pyarrow.csv.open_csv``, because Arrow's row numbers skip empty
lines and are absent when it parses on threads; cutting here tells us the physical line of every
row, so a bad row is reported as ``file:line`` exactly. Columns are then decoded in numpy straight
from Arrow's offsets/data buffers (no per-row Python): hex via a 64 Ki-entry byte-pair table,
integers via per-digit place values, strings via a vectorized FNV-1a hash.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from crossrec.errors import BadRowError, ConfigError, DataError, DatasetNotFoundError

CHUNK_BYTES = 4 << 20  # ~17k Criteo rows: big enough to amortise Arrow's per-call cost, small enough for L2/L3
OnBadRow = Literal["error", "skip"]
# (field name, bad-row mask, describe(row index) -> problem text)
Check = tuple[str, np.ndarray, Callable[[int], str]]

_HEX = np.full(256, 255, np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _HEX[_c] = 10 + _i
# Byte pair (little-endian uint16: first char in the low byte) -> decoded byte, 0xFFFF if not hex.
_lo, _hi = np.meshgrid(np.arange(256), np.arange(256))
_HEX_PAIR = np.where((_HEX[_lo] < 16) & (_HEX[_hi] < 16), _HEX[_lo].astype(np.uint16) * 16 + _HEX[_hi], 0xFFFF)
_HEX_PAIR = _HEX_PAIR.astype(np.uint16).reshape(-1)
_INT_BYTE = np.zeros(256, bool)
_INT_BYTE[list(b"0123456789-")] = True
_FNV_OFFSET, _FNV_PRIME = np.uint64(0xCBF29CE484222325), np.uint64(0x100000001B3)


def open_source(source: str | Path | BinaryIO, missing_hint: str = "") -> tuple[BinaryIO, str]:
    """Open a path (``.gz`` decompressed on the fly) or pass a binary file object through.

    >>> import io
    >>> open_source(io.BytesIO(b"x"))[1]
    '<stream>'
    >>> open_source("nothing", "Fetch it.")
    Traceback (most recent call last):
    ...
    crossrec.errors.DatasetNotFoundError: nothing does not exist (or is not a file); check the path. Fetch it.
    """
    if not isinstance(source, (str, Path)):
        return source, str(getattr(source, "name", "<stream>"))
    path = Path(source)
    if not path.is_file():
        raise DatasetNotFoundError(f"{path} does not exist (or is not a file); check the path. {missing_hint}".strip())
    return (gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")), str(path)  # type: ignore[return-value]


def iter_chunks(stream: BinaryIO, chunk_bytes: int | None = None) -> Iterator[memoryview]:
    """Yield the stream's bytes in chunks of whole lines (the last may lack its newline).

    Each chunk is a view of its own fresh buffer (read straight into it), so a worker thread may
    still parse one chunk while the next is read.

    >>> import io
    >>> [bytes(c) for c in iter_chunks(io.BytesIO(b"ab\\ncd\\ne"), chunk_bytes=4)]
    [b'ab\\n', b'cd\\n', b'e']
    """
    chunk_bytes = chunk_bytes or CHUNK_BYTES  # read at call time, so tests can shrink it
    carry = b""
    while True:
        buf = bytearray(len(carry) + chunk_bytes)
        buf[: len(carry)] = carry
        got = _read_into(stream, memoryview(buf)[len(carry):])
        if got == 0:
            break
        end = len(carry) + got
        cut = buf.rfind(b"\n", 0, end) + 1
        if cut == 0:  # one line longer than a chunk: keep reading
            carry = bytes(buf[:end])
            continue
        carry = bytes(buf[cut:end])
        yield memoryview(buf)[:cut]
    if carry:
        yield memoryview(carry)


def _read_into(stream: BinaryIO, view: memoryview) -> int:
    """Fill ``view`` as far as the stream allows (short reads are retried); returns bytes read."""
    total = 0
    while total < len(view):
        if hasattr(stream, "readinto"):
            got = stream.readinto(view[total:])
        else:
            data = stream.read(len(view) - total)
            got = len(data)
            view[total:total + got] = data
        if not got:
            break
        total += got
    return total


def _kept_positions(k1: np.ndarray, skipped: np.ndarray) -> np.ndarray:
    """1-based position of the ``k1``-th kept item when the (sorted, 1-based) ``skipped`` are left out."""
    t = skipped - np.arange(len(skipped))  # non-decreasing
    return k1 + np.searchsorted(t, k1, side="right")


def _scan_lines(part: memoryview) -> tuple[int, np.ndarray]:
    """(newline count, 1-based offsets of empty lines): Arrow drops empty lines silently, we report them."""
    buf = np.frombuffer(part, np.uint8)
    ends = np.flatnonzero(buf == 10)
    starts = np.r_[0, ends[:-1] + 1][: len(ends)]
    width = ends - starts
    empty = (width == 0) | ((width == 1) & (buf[np.minimum(starts, len(buf) - 1)] == 13))
    return len(ends), np.flatnonzero(empty) + 1


@dataclass
class Parsed:
    """One chunk parsed to raw-bytes columns, plus where its rows and rejected lines are."""

    table: pa.Table
    num_lines: int  # newlines in the chunk
    empty: np.ndarray  # 1-based offsets (physical, in chunk) of empty lines
    invalid: np.ndarray  # 1-based logical numbers (among non-empty lines) of wrong-field-count rows
    invalid_counts: np.ndarray  # their field counts
    error: str | None = None  # an unexpected Arrow parse error
    first_line: int = 1  # physical line of the chunk's first line; set by the caller, who counts lines

    def lines(self, rows: np.ndarray) -> np.ndarray:
        """Physical 1-based file line numbers of table rows ``rows`` (0-based)."""
        logical = _kept_positions(np.asarray(rows, np.int64) + 1, self.invalid)
        return self.first_line - 1 + _kept_positions(logical, self.empty)

    def rejected(self, expected: int, sep: str) -> list[tuple[int, str | None, str]]:
        """(line, field, problem) for the first few empty and wrong-field-count lines."""
        out = [(self.first_line - 1 + int(e), None, f"empty line (expected {expected} {sep}-separated fields)")
               for e in self.empty[:5]]
        lines = self.first_line - 1 + _kept_positions(self.invalid[:5], self.empty)
        out += [(int(ln), None, f"expected {expected} {sep}-separated fields, got {int(c)}")
                for ln, c in zip(lines, self.invalid_counts[:5], strict=True)]
        return out


def parse_chunk(part: memoryview, names: list[str], delimiter: str, include: list[str]) -> Parsed:
    """Parse ``part`` (whole lines) into binary columns ``include``; wrong-width rows are set aside.

    Safe to run on a worker thread (Arrow releases the GIL while parsing).

    >>> p = parse_chunk(memoryview(b"1,a\\n\\n2\\n3,c\\n"), ["n", "s"], ",", ["s"])
    >>> p.table.column("s").to_pylist(), p.empty.tolist(), p.invalid.tolist(), p.lines([0, 1]).tolist()
    ([b'a', b'c'], [2], [2], [1, 4])
    """
    invalid: list[tuple[int, int]] = []

    def on_invalid(row: pcsv.InvalidRow) -> str:  # must never raise (Arrow would only print it); rows are
        # numbered because use_threads=False, counting non-empty lines from 1 in this chunk
        invalid.append((row.number or 0, row.actual_columns))
        return "skip"

    read = pcsv.ReadOptions(column_names=names, use_threads=False, block_size=len(part) + 1)
    parse = pcsv.ParseOptions(delimiter=delimiter, quote_char=False, escape_char=False, double_quote=False,
                              newlines_in_values=False, ignore_empty_lines=True, invalid_row_handler=on_invalid)
    convert = pcsv.ConvertOptions(column_types={n: pa.binary() for n in include}, include_columns=include,
                                  check_utf8=False)
    num_lines, empty = _scan_lines(part)
    error = None
    try:
        table = pcsv.read_csv(pa.py_buffer(part), read_options=read, parse_options=parse, convert_options=convert)
    except pa.ArrowInvalid as exc:
        error = None if "Empty CSV" in str(exc) else str(exc)
        table = pa.table({n: pa.array([], pa.binary()) for n in include})
    found = np.array(sorted(invalid), np.int64).reshape(-1, 2)
    return Parsed(table.combine_chunks(), num_lines, empty, found[:, 0], found[:, 1], error)


class BadRows:
    """Applies the ``on_bad_row`` policy: raise on the earliest bad line, or count and skip.

    >>> p = parse_chunk(memoryview(b"1,a\\n2\\n"), ["n", "s"], ",", ["n", "s"])
    >>> skip = BadRows("f.csv", "skip")
    >>> skip.handle(p, [], expected=2, sep="comma"), skip.skipped, skip.examples[0]["line"]
    (None, 1, 2)
    >>> BadRows("f.csv", "error").handle(p, [], expected=2, sep="comma")
    Traceback (most recent call last):
    ...
    crossrec.errors.BadRowError: f.csv:2: expected 2 comma-separated fields, got 1 (...)
    """

    def __init__(self, where: str, policy: OnBadRow, keep_examples: int = 5):
        if policy not in ("error", "skip"):
            raise ConfigError(f"on_bad_row = {policy!r} is invalid: 'error' or 'skip'")
        self.where, self.policy, self.keep = where, policy, keep_examples
        self.skipped = 0
        self.examples: list[dict] = []

    def handle(self, parsed: Parsed, checks: list[Check], expected: int, sep: str) -> np.ndarray | None:
        """Return the mask of table rows to keep (None = all); raise in ``error`` mode."""
        bad = None
        for _, mask, _ in checks:
            bad = mask if bad is None else bad | mask
        n_bad = (0 if bad is None else int(bad.sum())) + len(parsed.empty) + len(parsed.invalid)
        if n_bad == 0:
            return None
        found = parsed.rejected(expected, sep)
        if bad is not None and n_bad > len(parsed.empty) + len(parsed.invalid):
            rows = np.flatnonzero(bad)[:5]
            for row, line in zip(rows, parsed.lines(rows), strict=True):
                field, _, describe = next(c for c in checks if c[1][row])
                found.append((int(line), field, describe(int(row))))
        found.sort(key=lambda f: f[0])
        if self.policy == "error":
            line, field, problem = found[0]
            raise BadRowError(self.where, line, field, problem)
        self.skipped += n_bad
        room = self.keep - len(self.examples)
        self.examples += [{"line": ln, "field": fd, "problem": pr} for ln, fd, pr in found[:max(room, 0)]]
        return None if bad is None else ~bad


def show(arr: pa.Array, i: int) -> str:
    """A short printable form of raw value ``i`` for an error message."""
    raw = arr[i].as_py() or b""
    text = raw[:40].decode("utf-8", errors="replace")
    return repr(text + ("..." if len(raw) > 40 else ""))


def _buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets (n+1,) int64 rebased to 0, data uint8) of a binary array, zero-copy where possible."""
    if arr.null_count:
        raise DataError("internal: raw text columns must have no nulls")
    _, offs, data = arr.buffers()
    offsets = np.frombuffer(offs, np.int32, count=len(arr) + 1, offset=arr.offset * 4).astype(np.int64)
    bytes_ = np.frombuffer(data, np.uint8) if data is not None else np.empty(0, np.uint8)
    return offsets - offsets[0], bytes_[offsets[0]: offsets[-1]]


def decode_hex8(arr: pa.Array) -> tuple[np.ndarray, np.ndarray | None]:
    """8-hex-digit values -> (uint32 values as int64 with -1 for empty, bad-row mask or None).

    >>> keys, bad = decode_hex8(pa.array([b"0000000a", b"", b"FFFFFFFF", b"xyz"], pa.binary()))
    >>> keys.tolist(), bad.tolist()
    ([10, -1, 4294967295, -1], [False, False, False, True])
    """
    offsets, data = _buffers(arr)
    lens = np.diff(offsets)
    present = lens == 8
    bad = (lens != 0) & ~present
    # Usually the data buffer is the 8-byte values back to back; if not (bad lengths), gather them.
    mat = data[offsets[:-1][present, None] + np.arange(8)] if bad.any() else data.reshape(-1, 8)
    pairs = _HEX_PAIR[mat.view("<u2")]  # (m, 4)
    keys = np.full(len(arr), -1, np.int64)
    keys[present] = pairs.astype(np.uint8).view(">u4").reshape(-1)
    if pairs.max(initial=0) > 255:
        bad[np.flatnonzero(present)[(pairs > 255).any(axis=1)]] = True
        keys[bad] = -1
    return keys, (bad if bad.any() else None)


def parse_ints(arr: pa.Array) -> tuple[np.ndarray, np.ndarray | None]:
    """Decimal integers ``-?[0-9]{1,18}`` -> (int64 values, 0 where empty; bad-row mask or None).

    We validate the bytes ourselves (Arrow's cast alone would accept ``0x1f``), then let Arrow parse.

    >>> values, bad = parse_ints(pa.array([b"12", b"", b"-3", b"1.5", b"0x1", b"1-"], pa.binary()))
    >>> values.tolist(), bad.tolist()
    ([12, 0, -3, 0, 0, 0], [False, False, False, True, True, True])
    """
    offsets, data = _buffers(arr)
    lens = np.diff(offsets)
    bad = lens > 18
    wrong = np.flatnonzero(~_INT_BYTE[data])
    if len(wrong):
        bad[np.searchsorted(offsets, wrong, side="right") - 1] = True
    minus = np.flatnonzero(data == 45)
    if len(minus):  # '-' only first, and followed by a digit
        owner = np.searchsorted(offsets, minus, side="right") - 1
        bad[owner[(offsets[owner] != minus) | (lens[owner] < 2)]] = True
    present = np.zeros(arr.offset + len(arr), bool)  # the validity bitmap is read from bit arr.offset on
    present[arr.offset:] = (lens > 0) & ~bad
    validity = pa.py_buffer(np.packbits(present, bitorder="little"))
    _, offs, buf = arr.buffers()
    text = pa.Array.from_buffers(pa.string(), len(arr), [validity, offs, buf], offset=arr.offset)
    values = pc.fill_null(pc.cast(text, pa.int64()), 0).to_numpy()
    return values, (bad if bad.any() else None)


def fnv1a_keys(arr: pa.Array) -> np.ndarray:
    """63-bit FNV-1a hash of each value's bytes (stable across runs and machines); -1 for empty.

    >>> fnv1a_keys(pa.array([b"a", b"", b"a"], pa.binary())).tolist()
    [3414815163700866188, -1, 3414815163700866188]
    """
    offsets, data = _buffers(arr)
    lens = np.diff(offsets)
    h = np.full(len(arr), _FNV_OFFSET, np.uint64)
    starts = offsets[:-1]
    for j in range(int(lens.max(initial=0))):  # one step per byte position, vectorized over rows
        active = np.flatnonzero(lens > j)
        h[active] = (h[active] ^ data[starts[active] + j]) * _FNV_PRIME
    keys = (h & np.uint64(0x7FFF_FFFF_FFFF_FFFF)).astype(np.int64)  # 63 bits: -1 stays free for "missing"
    keys[lens == 0] = -1
    return keys


def decode_binary_label(arr: pa.Array) -> tuple[np.ndarray, np.ndarray | None]:
    """``0``/``1`` -> (float32 labels, bad-row mask or None); anything else is bad.

    >>> labels, bad = decode_binary_label(pa.array([b"1", b"0", b"", b"2"], pa.binary()))
    >>> labels.tolist(), bad.tolist()
    ([1.0, 0.0, 0.0, 0.0], [False, False, True, True])
    """
    offsets, data = _buffers(arr)
    lens = np.diff(offsets)
    if len(data) == len(arr) and bool((lens == 1).all()):  # usual: one byte per row, back to back
        digit = data - np.uint8(48)
        bad = digit > 1
    else:
        bad = lens != 1
        digit = np.full(len(arr), 2, np.uint8)
        digit[~bad] = data[offsets[:-1][~bad]] - np.uint8(48)
        bad |= digit > 1
    labels = np.where(bad, 0, digit).astype(np.float32)
    return labels, (bad if bad.any() else None)


def fixed_width(arr: pa.Array, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(bytes ``(n, width)`` uint8 of the values exactly ``width`` long, zeros elsewhere; that mask).

    >>> mat, ok = fixed_width(pa.array([b"ab", b"c"], pa.binary()), 2)
    >>> mat.tolist(), ok.tolist()
    ([[97, 98], [0, 0]], [True, False])
    """
    offsets, data = _buffers(arr)
    ok = np.diff(offsets) == width
    if ok.all():
        return data.reshape(-1, width), ok
    mat = np.zeros((len(arr), width), np.uint8)
    mat[ok] = data[offsets[:-1][ok, None] + np.arange(width)]
    return mat, ok
