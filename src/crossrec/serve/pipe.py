"""The wire format between the server and its worker processes (:mod:`crossrec.serve.worker`), blocking
(:func:`send_message`, :func:`recv_message`) and on an event loop (:class:`AsyncPipe`).

Our own processes only, but still no pickle: a message is data, never code.
A message is one ``send_bytes`` frame holding a small JSON header, then one raw frame per
array, in the order the header lists them as ``[name, dtype, shape]``. Arrays go out straight
from their buffers and come in through ``recv_bytes_into`` a fresh, writable array, so a
``(1024, 26, 64)`` float32 block of pooled embeddings costs one copy each way. Only the dtypes
of :data:`DTYPES` cross the pipe. A 1-D integer array equal to ``arange(n)`` — the offsets of a
one-id-per-bag batch, half the bytes of a request — is listed as ``[name, dtype, [n], "arange"]``
and sent as no frame at all; the receiver rebuilds it.

The sender writes a whole message with one ``writev`` (frames as ``Connection.send_bytes`` writes
them: a 4-byte big-endian length, or -1 and an 8-byte length beyond 2 GiB), so the receiver, woken
once, finds all of it there instead of waking per frame (issue #5: each wake-up is CPU taken from
the replicas on a 2-core machine).

This module imports only the standard library and numpy (a worker imports it before torch).

>>> from multiprocessing import Pipe
>>> import numpy as np
>>> a, b = Pipe()
>>> send_message(a, {"op": "ping", "id": 1}, {"x": np.arange(6, dtype=np.float32).reshape(2, 3)})
81
>>> header, arrays = recv_message(b)
>>> header["op"], arrays["x"].shape, float(arrays["x"].sum())
('ping', (2, 3), 15.0)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import multiprocessing.connection
import os
import select
import struct
from collections.abc import Callable
from typing import Any

import numpy as np

# dtypes allowed on the wire (little-endian): inputs are float32 dense / int64 ids and offsets,
# outputs float32 probabilities and pooled embeddings.
DTYPES: frozenset[str] = frozenset({"<f4", "<f8", "<f2", "<i8", "<i4", "|u1", "|b1"})
MAX_HEADER_BYTES = 1 << 16


class ProtocolError(RuntimeError):
    """A frame on the pipe does not follow the wire format (a bug or a corrupted stream)."""


_ARANGE = np.arange(1 << 16, dtype=np.int64)  # compared against to spot arange arrays (longer ones are just sent)
_MAX_FRAME = 0x7FFFFFFF


def _is_arange(a: np.ndarray) -> bool:
    n = a.shape[0] if a.ndim == 1 else -1
    return (0 < n <= _ARANGE.shape[0] and a.dtype.kind in "iu" and a[0] == 0 and a[-1] == n - 1
            and np.array_equal(a, _ARANGE[:n]))


def send_message(conn: Any, header: dict[str, Any], arrays: dict[str, np.ndarray] | None = None) -> int:
    """Send ``header`` and ``arrays`` as one message; returns the payload bytes (header + arrays as
    they are, even where fewer cross the pipe: see the wire format in the module docstring)."""
    frames, sent = _encode(header, arrays or {})
    _write_frames(conn, frames)
    return sent


def _encode(header: dict[str, Any], arrays: dict[str, np.ndarray]) -> tuple[list[Any], int]:
    """(frames: the JSON header, then one byte view per array that crosses, payload bytes)."""
    layout, frames = [], []
    sent = 0
    for k, v in arrays.items():
        a = np.ascontiguousarray(v)
        if a.dtype.str not in DTYPES:
            raise ProtocolError(f"array {k!r} has dtype {a.dtype.str}; the worker pipe carries {sorted(DTYPES)}")
        sent += a.nbytes
        if _is_arange(a):
            layout.append([k, a.dtype.str, list(a.shape), "arange"])
            continue
        layout.append([k, a.dtype.str, list(a.shape)])
        if a.nbytes:  # an empty frame is legal, but skip the bytes
            frames.append(a.reshape(-1).view(np.uint8))
    head = json.dumps({**header, "arrays": layout}).encode()
    return [head, *frames], sent + len(head)


def _with_lengths(frames: list[Any]) -> list[Any]:
    """Each frame preceded by its length as ``Connection.send_bytes`` writes it."""
    buffers: list[Any] = []
    for frame in frames:
        n = memoryview(frame).nbytes
        buffers.append(struct.pack("!i", n) if n <= _MAX_FRAME else struct.pack("!iQ", -1, n))
        buffers.append(frame)
    return buffers


def _write_frames(conn: Any, frames: list[Any]) -> None:
    """Each frame as ``send_bytes`` would write it, all in one ``writev`` where the connection is a
    plain file descriptor (one syscall, one wake-up of the reader); ``send_bytes`` per frame elsewhere."""
    if not (hasattr(os, "writev") and type(conn) is multiprocessing.connection.Connection):
        for frame in frames:
            conn.send_bytes(frame)
        return
    buffers = _with_lengths(frames)
    fd = conn.fileno()
    while buffers:
        _writev_some(fd, buffers)


def _writev_some(fd: int, buffers: list[Any]) -> None:
    """One ``writev`` of ``buffers``; drops from the list what went out (a partial write keeps the rest)."""
    written = os.writev(fd, buffers)
    while buffers and written >= memoryview(buffers[0]).nbytes:
        written -= memoryview(buffers.pop(0)).nbytes
    if buffers and written:
        buffers[0] = memoryview(buffers[0]).cast("B")[written:]


def recv_message(conn: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Receive one message sent by :func:`send_message`; raises EOFError when the other end closed."""
    header, arrays, pending = _decode_header(conn.recv_bytes(MAX_HEADER_BYTES))
    for name, out in pending:
        n = conn.recv_bytes_into(out.reshape(-1).view(np.uint8))
        if n != out.nbytes:
            raise ProtocolError(f"array {name!r}: expected {out.nbytes} bytes, got {n}")
    return header, arrays


def _decode_header(head: bytes | bytearray | memoryview
                   ) -> tuple[dict[str, Any], dict[str, np.ndarray], list[tuple[str, np.ndarray]]]:
    """A message's header frame -> (header, arrays, [(name, array) still to fill from one frame each]).
    The arrays are allocated here (writable, so ``torch.from_numpy`` needs no copy); arange-encoded and
    empty ones are complete already."""
    try:
        header = json.loads(head)
        layout = header.pop("arrays")
        arrays, pending = {}, []
        for name, dtype, shape, *encoding in layout:
            if dtype not in DTYPES:
                raise ProtocolError(f"array {name!r} has dtype {dtype!r}")
            if encoding:
                if encoding != ["arange"] or len(shape) != 1 or np.dtype(dtype).kind not in "iu":
                    raise ProtocolError(f"array {name!r}: unknown encoding {encoding!r} for {dtype} {shape}")
                arrays[name] = np.arange(int(shape[0]), dtype=np.dtype(dtype))
                continue
            out = np.empty(tuple(int(s) for s in shape), dtype=np.dtype(dtype))
            if out.nbytes:
                pending.append((name, out))
            arrays[name] = out
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ProtocolError(f"malformed message on the worker pipe: {exc}") from None
    return header, arrays, pending


class AsyncPipe:
    """Non-blocking, event-loop I/O on a worker pipe's socket: the wire format of :func:`send_message`
    and :func:`recv_message` without a thread per call. ``asyncio.to_thread(client.call, ...)`` costs a
    thread hand-off, two GIL switches and a futex wake-up per request: ~12% of the front's busy time
    (issue #5). Reads go through a 64 KiB buffer (an answer — length, header, length, probabilities —
    usually arrives whole in one ``read``); an array larger than what is buffered is read straight
    into its destination, so a big block still costs one copy. The socket stays non-blocking while
    the client is in async mode; :class:`~crossrec.serve.worker.WorkerClient` switches it back before a
    blocking exchange; it builds one per event loop (``acall``), which is how this class is meant to be used.

    >>> import asyncio, socket
    >>> a, b = socket.socketpair()
    >>> a.setblocking(False); b.setblocking(False)
    >>> async def echo():
    ...     loop = asyncio.get_running_loop()
    ...     left, right = (AsyncPipe(s.fileno(), loop, lambda: True, 0.05) for s in (a, b))
    ...     await left.send({"op": "x"}, {"v": np.array([1.5], np.float32)})
    ...     return await right.recv()
    >>> header, arrays = asyncio.run(echo())
    >>> header["op"], arrays["v"].tolist()
    ('x', [1.5])
    """

    CHUNK = 1 << 16

    def __init__(self, fd: int, loop: asyncio.AbstractEventLoop, is_alive: Callable[[], bool], poll_s: float):
        self.fd, self.loop, self._is_alive, self._poll_s = fd, loop, is_alive, poll_s
        self._buf = bytearray(self.CHUNK)
        self._view = memoryview(self._buf)
        self._lo = self._hi = 0  # buffered, unread bytes: _buf[_lo:_hi]

    async def send(self, header: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        buffers = _with_lengths(_encode(header, arrays)[0])
        while True:
            with contextlib.suppress(BlockingIOError):
                _writev_some(self.fd, buffers)
            if not buffers:
                return
            if not await self._wait(writable=True):  # a big request, the worker still draining the socket
                raise EOFError("the worker died (no EOF on its pipe)")

    async def recv(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        header, arrays, pending = _decode_header(await self._frame(MAX_HEADER_BYTES))
        for name, out in pending:
            n = await self._frame_length()
            if n != out.nbytes:
                raise ProtocolError(f"array {name!r}: expected {out.nbytes} bytes, got {n}")
            await self._read_into(memoryview(out.reshape(-1).view(np.uint8)))
        return header, arrays

    async def _frame_length(self) -> int:
        (n,) = struct.unpack("!i", await self._take(4))
        if n == -1:
            (n,) = struct.unpack("!Q", await self._take(8))
        if n < 0:
            raise ProtocolError(f"bad frame length {n} on the worker pipe")
        return n

    async def _frame(self, limit: int) -> bytes:
        n = await self._frame_length()
        if n > limit:
            raise ProtocolError(f"a {n}-byte header frame exceeds {limit} bytes")
        return await self._take(n)

    async def _take(self, n: int) -> bytes:
        """The next ``n`` (<= CHUNK) bytes."""
        while self._hi - self._lo < n:
            if self._lo:  # compact, so the read below has room
                self._buf[: self._hi - self._lo] = self._buf[self._lo:self._hi]
                self._lo, self._hi = 0, self._hi - self._lo
            self._hi += await self._read_some(self._view[self._hi:])
        out = bytes(self._view[self._lo:self._lo + n])
        self._lo += n
        return out

    async def _read_into(self, dest: memoryview) -> None:
        pos = min(self._hi - self._lo, len(dest))
        dest[:pos] = self._view[self._lo:self._lo + pos]
        self._lo += pos
        while pos < len(dest):  # the buffer is empty: read the rest straight into the array
            pos += await self._read_some(dest[pos:])

    async def _read_some(self, into: memoryview) -> int:
        while True:
            try:
                n = os.readv(self.fd, [into])
            except BlockingIOError:
                if not await self._wait(writable=False):
                    raise EOFError("the worker died (no EOF on its pipe)") from None
                continue
            if n == 0:
                raise EOFError("the worker closed its pipe")
            return n

    async def _wait(self, *, writable: bool) -> bool:
        """Until the socket is ready; False if the worker died meanwhile without the socket showing it.
        A liveness check every ``poll_s`` mirrors the blocking path's ``poll`` loop (death shows as EOF
        at once; this covers a pipe end that outlived its process)."""
        fut = self.loop.create_future()

        def ready() -> None:
            if not fut.done():
                fut.set_result(True)

        def check() -> None:
            nonlocal timer
            if fut.done():
                return
            if not self._is_alive():
                fut.set_result(False)
            else:
                timer = self.loop.call_later(self._poll_s, check)

        add, remove = (self.loop.add_writer, self.loop.remove_writer) if writable else \
            (self.loop.add_reader, self.loop.remove_reader)
        add(self.fd, ready)
        timer = self.loop.call_later(self._poll_s, check)
        try:
            if await fut:
                return True
        finally:
            timer.cancel()
            remove(self.fd)
        if writable:
            return False
        try:  # dead: whatever it wrote before dying is still readable
            return bool(select.select([self.fd], [], [], 0)[0])
        except (OSError, ValueError):
            return False
