"""A lean HTTP/1.1 client for the load generator: keep-alive TCP connections on asyncio, responses parsed
by httptools (the C parser uvicorn serves with). ``crossrec loadgen`` shares the machine with the server
in our benchmarks, so every millisecond of client CPU per request is taken from the server under test
(issue #5: aiohttp cost 1.3-1.8 ms per request on the 2-core Zen 3). This client does only what a load
generator needs — plain ``http://``, one request per connection at a time, ``Content-Length`` or chunked
answers — and nothing a general client must (cookies, redirects, TLS, proxies); :mod:`crossrec.serve.
loadgen` falls back to aiohttp or httpx where it does not apply.

Connections are pooled (at most ``max_connections`` open; a request waits for one beyond that) and kept
while the server keeps them. A request on a reused connection that the server closed before answering
a byte (an idle keep-alive timeout racing the send) is sent again once on a fresh connection, as HTTP
clients do; any other failure is reported, never retried.

>>> asyncio.run(RawHttpClient(5.0, 4).request("GET", RawHttpClient.target("http://127.0.0.1:9/x"), None, {}))
Traceback (most recent call last):
...
crossrec.serve.httpclient.NoAnswer: ConnectionRefusedError: cannot connect to 127.0.0.1:9
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Mapping
from typing import NamedTuple
from urllib.parse import urlsplit

try:
    import httptools
except ImportError:  # the ``serve`` extra installs it; without it loadgen uses aiohttp or httpx
    httptools = None


class Answer(NamedTuple):
    """An HTTP answer: status, its Content-Type, all headers (names lower-cased) and the body."""

    status: int
    content_type: str
    headers: Mapping[str, str]
    body: bytes


class NoAnswer(Exception):
    """A request that got no HTTP answer; ``kind`` is ``"timeout"`` or ``"connect_error"``."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class Target(NamedTuple):
    """A parsed ``http://`` URL: where to connect and the request line's target."""

    host: str
    port: int
    path: str
    host_header: str


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one request in flight on it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future | None = None
        self.closed = False
        self.got_bytes = False
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError, AttributeError):  # one write per request: never wait for an ACK
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(NoAnswer("connect_error", f"unparsable HTTP answer: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        why = f"{type(exc).__name__}: {exc}" if exc else "the server closed the connection"
        self._fail(NoAnswer("connect_error", f"connection lost before the answer was complete ({why})"))

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._headers, self._body = {}, []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        answer = Answer(self.parser.get_status_code(), self._headers.get("content-type", ""), self._headers,
                        b"".join(self._body))
        if not self.parser.should_keep_alive():
            self.close()
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(answer)

    def _fail(self, exc: NoAnswer) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class RawHttpClient:
    """The pooled client (see the module docstring). ``timeout_s`` bounds each request, connecting included."""

    name = "raw-http"

    def __init__(self, timeout_s: float, max_connections: int):
        self.timeout_s = float(timeout_s)
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(max_connections)

    @staticmethod
    def target(url: str) -> Target:
        """Parse ``url`` once (it is used for many requests); ValueError unless it is ``http://``."""
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"RawHttpClient speaks plain http:// only, got {url!r}")
        port = parts.port or 80
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = parts.hostname if port == 80 else f"{parts.hostname}:{port}"
        return Target(parts.hostname, port, path, host)

    async def request(self, method: str, target: Target, body: bytes | None, headers: Mapping[str, str]) -> Answer:
        """Send one request and return its answer; :class:`NoAnswer` on a timeout or a connection failure."""
        head = [f"{method} {target.path} HTTP/1.1\r\nHost: {target.host_header}\r\n"]
        head += [f"{k}: {v}\r\n" for k, v in headers.items()]
        if body is not None or method in ("POST", "PUT"):
            head.append(f"Content-Length: {len(body or b'')}\r\n")
        data = ("".join(head) + "\r\n").encode("latin-1") + (body or b"")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        async with self._slots:
            for _attempt in range(2):
                conn, reused = await self._connection(target, deadline)
                try:
                    answer = await self._exchange(conn, data, deadline)
                except NoAnswer as exc:
                    conn.close()
                    if reused and exc.kind == "connect_error" and not conn.got_bytes:
                        continue  # the server dropped an idle connection as we sent: once more, on a new one
                    raise
                if not conn.closed:
                    self._idle.append(conn)
                return answer
        raise AssertionError("unreachable")  # pragma: no cover

    async def _connection(self, target: Target, deadline: float) -> tuple[_Connection, bool]:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                conn.got_bytes = False
                return conn, True
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(loop.create_connection(_Connection, target.host, target.port),
                                             max(deadline - loop.time(), 0.0))
        except asyncio.TimeoutError:
            raise NoAnswer("timeout", f"no connection to {target.host}:{target.port} within the client timeout") \
                from None
        except OSError as exc:
            raise NoAnswer("connect_error", f"{type(exc).__name__}: cannot connect to {target.host}:{target.port}") \
                from None
        return conn, False

    async def _exchange(self, conn: _Connection, data: bytes, deadline: float) -> Answer:
        loop = asyncio.get_running_loop()
        waiter = conn.waiter = loop.create_future()
        conn.transport.write(data)  # type: ignore[union-attr]
        timer = loop.call_at(deadline, _expire, conn, waiter)
        try:
            return await waiter
        finally:
            timer.cancel()

    async def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()


def _expire(conn: _Connection, waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_exception(NoAnswer("timeout", "no answer within the client timeout"))
    conn.close()


def usable(url: str) -> bool:
    """Whether :class:`RawHttpClient` can drive ``url`` (plain ``http://``, httptools installed).

    >>> usable("http://127.0.0.1:8000"), usable("https://example.com")
    (True, False)
    """
    if httptools is None:
        return False
    try:
        RawHttpClient.target(url)
    except ValueError:
        return False
    return True


__all__ = ["Answer", "NoAnswer", "RawHttpClient", "Target", "usable"]
