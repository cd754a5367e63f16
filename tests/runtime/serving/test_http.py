"""The HTTP/1.1 protocol under the serving ports, spoken to over real loopback sockets."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from mlplat_runtime.serving import http
from mlplat_runtime.serving.http import JSON, Request, Response, encode_response, serve_http

pytestmark = pytest.mark.integration


class Handler:
    """Echoes the method, path and body; ``/slow`` answers through a coroutine."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.seen: list[str] = []

    def __call__(self, req: Request) -> Any:
        self.seen.append(req.path)
        body = f"{req.method} {req.path} {len(req.body)} {req.body[:20].decode(errors='replace')}".encode()
        if req.path == "/slow":
            return self._slow(body)
        if req.path == "/boom":
            raise RuntimeError("handler bug")
        if req.path == "/big":  # over BIG_BODY: written beside its head
            return Response(200, bytes(range(256)) * 1200, b"application/octet-stream")
        return Response(200, body, b"text/plain", ((b"x-test", b"1"), (b"x-encoding", req.encoding or b"-")))

    async def _slow(self, body: bytes) -> Response:
        await self.release.wait()
        return Response(200, body, b"text/plain")


@pytest.fixture
async def server() -> AsyncIterator[tuple[int, Handler, asyncio.Event]]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.setblocking(False)
    handler = Handler()
    stop = asyncio.Event()
    task = asyncio.ensure_future(serve_http(handler, sock, stop=stop, max_body=1000, grace_s=2))
    await asyncio.sleep(0.05)
    yield sock.getsockname()[1], handler, stop
    stop.set()
    handler.release.set()
    await asyncio.wait_for(task, 10)
    sock.close()


async def exchange(port: int, data: bytes, *, until_closed: bool = False, responses: int = 1) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    out = b""
    if until_closed:
        out = await asyncio.wait_for(reader.read(), 10)
    else:
        while out.count(b"HTTP/1.1 ") < responses:
            chunk = await asyncio.wait_for(reader.read(65536), 10)
            if not chunk:
                break
            out += chunk
    writer.close()
    return out


def post(path: str, body: bytes, extra: str = "") -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


async def test_keep_alive_and_pipelined_requests_in_order(server: Any) -> None:
    port, _, _ = server
    out = await exchange(port, post("/a", b"one") + post("/b", b"two") + post("/c", b""), responses=3)
    assert out.count(b"HTTP/1.1 200 OK") == 3
    assert out.index(b"POST /a 3 one") < out.index(b"POST /b 3 two") < out.index(b"POST /c 0")
    assert b"x-test: 1" in out and b"connection: close" not in out


async def test_a_slow_handler_keeps_later_pipelined_requests_behind_it(server: Any) -> None:
    port, handler, _ = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(post("/slow", b"s") + post("/fast", b"f"))
    await asyncio.sleep(0.2)
    assert handler.seen == ["/slow"]  # /fast waits until /slow has answered
    handler.release.set()
    out = b""
    while out.count(b"HTTP/1.1 200") < 2:
        out += await asyncio.wait_for(reader.read(65536), 10)
    assert out.index(b"POST /slow") < out.index(b"POST /fast")
    writer.close()


async def test_http10_and_connection_close_end_the_connection(server: Any) -> None:
    port, _, _ = server
    out = await exchange(port, b"GET /x HTTP/1.0\r\n\r\n", until_closed=True)
    assert out.startswith(b"HTTP/1.1 200 OK") and b"connection: close" in out
    out = await exchange(port, b"GET /y HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", until_closed=True)
    assert b"GET /y 0" in out and b"connection: close" in out


async def test_expect_100_continue(server: Any) -> None:
    port, _, _ = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"hello")
    final = await asyncio.wait_for(reader.readuntil(b"hello"), 10)
    assert final.startswith(b"HTTP/1.1 200 OK") and b"POST /e 5 hello" in final
    writer.close()


async def test_chunked_request_body_and_percent_decoded_path(server: Any) -> None:
    port, _, _ = server
    req = (b"POST /a%20b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")  # fmt: skip
    out = await exchange(port, req)
    assert b"POST /a b 5 abcde" in out


async def test_limits_and_malformed_requests_get_an_error_and_a_close(server: Any) -> None:
    port, _, _ = server
    out = await exchange(port, post("/big", b"x" * 1001), until_closed=True)
    assert out.startswith(b"HTTP/1.1 413 ") and b"request body over 1000 bytes" in out
    big_header = "X-Big: " + "a" * 70000 + "\r\n"
    out = await exchange(port, post("/h", b"", big_header), until_closed=True)
    assert out.startswith(b"HTTP/1.1 431 ")
    out = await exchange(port, b"NOT HTTP AT ALL\r\n\r\n", until_closed=True)
    assert out.startswith(b"HTTP/1.1 400 ") and b"malformed HTTP request" in out
    out = await exchange(port, b"GET http://[bad/ HTTP/1.1\r\nHost: x\r\n\r\n", until_closed=True)
    assert out.startswith(b"HTTP/1.1 400 ")
    upgrade = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    out = await exchange(port, upgrade, until_closed=True)
    assert out.startswith(b"HTTP/1.1 400 ") and b"upgrades are not supported" in out


async def test_an_oversized_length_is_refused_only_for_a_head_the_parser_accepts(server: Any) -> None:
    """A Content-Length over the limit is 413 once the head is in; a head llhttp rejects
    (a second Content-Length, or Transfer-Encoding beside it: the smuggling shapes) is 400."""
    port, _, _ = server
    head = "GET /x HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000000\r\n"
    out = await exchange(port, (head + "\r\n").encode(), until_closed=True)
    assert out.startswith(b"HTTP/1.1 413 ")
    for second in ("Content-Length: 5\r\n", "Transfer-Encoding: chunked\r\n"):
        out = await exchange(port, (head + second + "\r\n").encode(), until_closed=True)
        assert out.startswith(b"HTTP/1.1 400 ") and b"malformed HTTP request" in out, out[:80]
    upgrade = head + "Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    out = await exchange(port, upgrade.encode(), until_closed=True)
    assert out.startswith(b"HTTP/1.1 413 ")  # as before: the body limit is said first


async def test_any_expect_100_continue_gets_its_interim_answer(server: Any) -> None:
    port, _, _ = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\nExpect: x\r\n\r\n"
    )
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10) == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"ok")
    assert b"POST /e 2 ok" in await asyncio.wait_for(reader.readuntil(b"ok"), 10)
    writer.close()


async def test_head_has_no_body_and_handler_errors_are_500(server: Any) -> None:
    port, _, _ = server
    out = await exchange(port, b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, rest = out.partition(b"\r\n\r\n")
    assert b"content-length: 10" in head and rest == b""  # len("HEAD /h 0 ")
    out = await exchange(port, b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 500 ") and b'{"error":"internal error"}' in out


async def test_graceful_stop_lets_an_in_flight_request_finish(server: Any) -> None:
    port, handler, stop = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(post("/slow", b"z"))
    await asyncio.sleep(0.1)
    stop.set()
    await asyncio.sleep(0.1)
    handler.release.set()
    out = await asyncio.wait_for(reader.read(), 10)
    assert out.startswith(b"HTTP/1.1 200 OK") and b"POST /slow 1 z" in out
    writer.close()


async def test_graceful_stop_lets_an_upload_in_progress_finish(server: Any) -> None:
    port, _, stop = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    whole = post("/upload", b"a" * 600)
    writer.write(whole[:-300])  # the headers and half the body
    await writer.drain()
    await asyncio.sleep(0.1)
    stop.set()  # stop while the body is still arriving: the upload is not cut
    await asyncio.sleep(0.2)
    writer.write(whole[-300:])
    await writer.drain()
    out = await asyncio.wait_for(reader.read(), 10)
    assert out.startswith(b"HTTP/1.1 200 OK") and b"POST /upload 600" in out
    writer.close()


async def test_a_big_response_body_is_written_whole_beside_its_head(server: Any) -> None:
    port, _, _ = server
    request = b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n"
    out = await exchange(port, request + b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n", responses=2)
    head, _, rest = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"content-length: 307200" in head
    assert rest[:307200] == bytes(range(256)) * 1200
    assert rest[307200:].startswith(b"HTTP/1.1 200 OK")  # the next response follows in order


async def test_idle_keep_alive_connections_are_closed() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    stop = asyncio.Event()
    task = asyncio.ensure_future(serve_http(Handler(), sock, stop=stop, idle_s=0.3, sweep_s=0.1))
    await asyncio.sleep(0.05)
    reader, writer = await asyncio.open_connection("127.0.0.1", sock.getsockname()[1])
    writer.write(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    first = await asyncio.wait_for(reader.readuntil(b"GET /a 0 "), 5)
    assert first.startswith(b"HTTP/1.1 200 OK")
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server once idle
    writer.close()
    stop.set()
    await asyncio.wait_for(task, 10)
    sock.close()


async def test_a_refused_upload_still_gets_its_answer(server: Any) -> None:
    port, _, _ = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n")
    for _ in range(20):  # the client keeps uploading after the server has refused
        writer.write(b"x" * 10000)
        await writer.drain()
    out = await asyncio.wait_for(reader.read(), 10)
    assert out.startswith(b"HTTP/1.1 413 ") and b"request body over 1000 bytes" in out
    writer.close()


async def test_request_targets_are_remembered_only_up_to_the_cap(
    server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parsed targets are kept for the next request (a percent-encoded one answers the same the
    second time), at most ``PATH_CACHE`` of them, and a long target is never kept."""
    port, handler, _ = server
    monkeypatch.setattr(http, "PATH_CACHE", 4)
    monkeypatch.setattr(http, "_PATHS", {})
    long = "/" + "x" * (http.PATH_CACHE_URL + 10)
    targets = ["/a%20b?q=1", "/a%20b?q=1", *[f"/p{i}#f" for i in range(9)], long, "/a%20b?q=1"]
    raw = b"".join(f"GET {t} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for t in targets)
    out = await exchange(port, raw, responses=len(targets))
    assert out.count(b"HTTP/1.1 200 OK") == len(targets)
    assert handler.seen == ["/a b", "/a b", *[f"/p{i}" for i in range(9)], long, "/a b"]
    assert 0 < len(http._PATHS) <= 4 and long.encode() not in http._PATHS


async def test_the_content_encoding_is_noted_as_it_arrives(server: Any) -> None:
    port, _, _ = server
    out = await exchange(
        port, post("/z", b"abc", "Content-Encoding: GZip\r\n") + post("/y", b""), responses=2
    )
    first, second = out.split(b"HTTP/1.1 200 OK")[1:]
    assert b"x-encoding: gzip" in first and b"x-encoding: -" in second  # noted per request


def test_a_request_made_without_its_encoding_finds_the_last_one() -> None:
    headers = [(b"content-encoding", b"GZIP"), (b"host", b"x"), (b"content-encoding", b"Deflate")]
    assert Request("POST", "/", headers, b"").encoding == b"deflate"
    assert Request("GET", "/", [(b"host", b"x")], b"").encoding is None


def test_a_plain_answer_is_encoded_as_any_other() -> None:
    body = b'{"ok":true}'
    want = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n" + body
    assert encode_response(Response(200, body), True) == want
    assert encode_response(Response(200, body, bytes(JSON)), True) == want  # the general path
    assert encode_response(Response(200, body), False).endswith(b"connection: close\r\n\r\n" + body)
    assert encode_response(Response(200, body), True, head_only=True) == want[: -len(body)]
    announced = encode_response(Response(200, body), True, length=99)  # the body written beside it
    assert b"content-length: 99\r\n" in announced
