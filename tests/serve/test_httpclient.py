"""The load generator's lean HTTP/1.1 client (crossrec.serve.httpclient) against small scripted servers:
keep-alive reuse, chunked and Connection: close answers, a server dropping an idle connection, timeouts,
refused connections and garbage."""

from __future__ import annotations

import asyncio

import pytest

from crossrec.serve.httpclient import NoAnswer, RawHttpClient, usable


async def serve(handler):
    """A TCP server on a free loopback port running ``handler(reader, writer, connection_number)``."""
    count = [0]

    async def on_connect(reader, writer):
        count[0] += 1
        try:
            await handler(reader, writer, count[0])
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}", count


async def read_request(reader) -> tuple[bytes, bytes]:
    """One request's head and body (Content-Length bodies only)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head, await reader.readexactly(length)


def answer(body: bytes, *, extra: bytes = b"") -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body)


def test_requests_reuse_one_keep_alive_connection_and_carry_body_and_headers():
    heads = []

    async def echo(reader, writer, _):
        while True:
            try:
                head, body = await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            heads.append(head)
            writer.write(answer(body[::-1], extra=b"X-Crossrec-Replica: m/cpu#0\r\n"))
            await writer.drain()

    async def main():
        server, url, count = await serve(echo)
        client = RawHttpClient(5.0, 4)
        target = client.target(url + "/v1/predict?model=m")
        answers = [await client.request("POST", target, b"abc%d" % i, {"Content-Type": "x/y"}) for i in range(5)]
        await client.close()
        server.close()
        return answers, count[0]

    answers, connections = asyncio.run(asyncio.wait_for(main(), 10))
    assert [a.body for a in answers] == [b"%dcba" % i for i in range(5)]
    assert answers[0].status == 200 and answers[0].content_type == "application/octet-stream"
    assert answers[0].headers["x-crossrec-replica"] == "m/cpu#0"  # names lower-cased
    assert connections == 1  # kept alive
    assert heads[0].startswith(b"POST /v1/predict?model=m HTTP/1.1\r\n")
    assert b"Content-Type: x/y\r\n" in heads[0] and b"Content-Length: 4\r\n" in heads[0]


def test_chunked_and_connection_close_answers_are_read_whole_and_the_connection_not_reused():
    async def chunked_then_close(reader, writer, _):
        await read_request(reader)
        writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n5\r\n{\"det\r\n9\r\nail\": 1}\n\r\n0\r\n\r\n")
        await writer.drain()

    async def main():
        server, url, count = await serve(chunked_then_close)
        client = RawHttpClient(5.0, 4)
        first = await client.request("GET", client.target(url + "/x"), None, {})
        second = await client.request("GET", client.target(url + "/x"), None, {})
        await client.close()
        server.close()
        return first, second, count[0]

    first, second, connections = asyncio.run(asyncio.wait_for(main(), 10))
    assert first.status == 503 and first.body == b'{"detail": 1}\n' and second.body == first.body
    assert connections == 2  # the server said close: a new connection for the next request


def test_a_connection_dropped_while_idle_is_replaced_and_the_request_sent_once_more():
    async def one_answer_per_connection(reader, writer, _):
        _, body = await read_request(reader)
        writer.write(answer(body))  # keep-alive advertised, but the server closes right after (idle timeout)
        await writer.drain()

    async def main():
        server, url, count = await serve(one_answer_per_connection)
        client = RawHttpClient(5.0, 4)
        target = client.target(url + "/")
        bodies = []
        for i in range(3):
            bodies.append((await client.request("POST", target, b"r%d" % i, {})).body)
            await asyncio.sleep(0.05)  # the close reaches the client
        await client.close()
        server.close()
        return bodies, count[0]

    bodies, connections = asyncio.run(asyncio.wait_for(main(), 10))
    assert bodies == [b"r0", b"r1", b"r2"] and connections == 3


def test_timeouts_refusals_and_garbage_are_reported_not_hidden():
    async def silent(reader, writer, _):
        await read_request(reader)
        await asyncio.sleep(5)

    async def garbage(reader, writer, _):
        await read_request(reader)
        writer.write(b"this is not HTTP\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    async def main():
        out = {}
        for name, handler in (("silent", silent), ("garbage", garbage)):
            server, url, _ = await serve(handler)
            client = RawHttpClient(0.3, 4)
            try:
                await client.request("GET", client.target(url + "/"), None, {})
            except NoAnswer as exc:
                out[name] = exc
            server.close()
        closed = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = closed.sockets[0].getsockname()[1]
        closed.close()
        await closed.wait_closed()
        try:
            await RawHttpClient(1.0, 1).request("GET", RawHttpClient.target(f"http://127.0.0.1:{port}/"), None, {})
        except NoAnswer as exc:
            out["refused"] = exc
        return out

    out = asyncio.run(asyncio.wait_for(main(), 10))
    assert out["silent"].kind == "timeout" and "client timeout" in str(out["silent"])
    assert out["garbage"].kind == "connect_error" and "unparsable HTTP answer" in str(out["garbage"])
    assert out["refused"].kind == "connect_error" and "cannot connect" in str(out["refused"])


def test_only_plain_http_urls_are_taken():
    assert usable("http://localhost:8000/v1") and not usable("https://localhost") and not usable("ftp://x")
    target = RawHttpClient.target("http://example.org/v1/predict?model=a%20b")
    assert (target.host, target.port, target.path, target.host_header) == \
        ("example.org", 80, "/v1/predict?model=a%20b", "example.org")
    with pytest.raises(ValueError, match="plain http:// only"):
        RawHttpClient.target("https://example.org")


def test_without_httptools_the_load_generator_falls_back_to_aiohttp(monkeypatch):
    import importlib

    from crossrec.errors import ConfigError
    from crossrec.serve import httpclient

    loadgen_module = importlib.import_module("crossrec.serve.loadgen")
    monkeypatch.setattr(httpclient, "httptools", None)
    assert not usable("http://127.0.0.1:8000")
    assert loadgen_module._client_kind(None, "http://127.0.0.1:8000") == "aiohttp"
    with pytest.raises(ConfigError, match="needs httptools"):
        loadgen_module._client_kind(None, "http://127.0.0.1:8000", "raw")
