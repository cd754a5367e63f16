"""The serving HTTP layer against hostile clients: caps on the request target and head, header
and body deadlines, the connection cap, the shared body budget, the listen backlog and bounded
inflation of compressed bodies. Real loopback sockets, a real ``serve_http``."""

from __future__ import annotations

import asyncio
import gzip
import socket
import threading
import time
import zlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from mlplat_runtime.serving.http import (
    BadEncoding,
    BodyTooLarge,
    HttpLimits,
    Request,
    Response,
    ServerState,
    inflate,
    serve_http,
)

pytestmark = pytest.mark.integration


class Handler:
    def __init__(self) -> None:
        self.release = asyncio.Event()

    def __call__(self, req: Request) -> Any:
        if req.path == "/slow":
            return self._slow()
        if req.path == "/block":
            time.sleep(3.0)  # holds the event loop: nothing is accepted meanwhile
        return Response(200, f"{req.method} {req.path} {len(req.body)}".encode(), b"text/plain")

    async def _slow(self) -> Response:
        await self.release.wait()
        return Response(200, b"slow", b"text/plain")


class Server:
    def __init__(self, limits: HttpLimits, **kw: Any) -> None:
        self.limits = limits
        self.kw = kw
        self.handler = Handler()
        self.state = ServerState(limits)
        self.stop = asyncio.Event()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]

    async def __aenter__(self) -> Server:
        self.task = asyncio.ensure_future(
            serve_http(
                self.handler, self.sock, stop=self.stop, limits=self.limits, state=self.state,
                sweep_s=0.05, grace_s=1, **self.kw,
            )
        )  # fmt: skip
        await asyncio.sleep(0.05)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        self.handler.release.set()
        await asyncio.wait_for(self.task, 10)
        self.sock.close()

    async def get(self, path: str = "/ok") -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        out = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        return out


@pytest.fixture
async def small() -> AsyncIterator[Server]:
    limits = HttpLimits(
        max_body=100_000, max_url=1000, max_head=4000, header_timeout_s=0.5, body_timeout_s=0.5,
        max_connections=20, body_budget=150_000,
    )  # fmt: skip
    async with Server(limits) as server:
        yield server


async def read_all(reader: asyncio.StreamReader, timeout: float = 5) -> bytes:
    return await asyncio.wait_for(reader.read(), timeout)


async def test_a_long_request_target_is_refused_with_414(small: Server) -> None:
    out = await small.get("/" + "a" * 5000)
    assert out.startswith(b"HTTP/1.1 414 ") and b"request target over 1000 bytes" in out
    assert (await small.get("/" + "a" * 900)).startswith(b"HTTP/1.1 200 ")


async def stream_until_answered(
    port: int, head: bytes, chunk: bytes, most: int, pause: float = 0.0
) -> tuple[bytes, int]:
    """Send ``head`` then ``chunk`` after ``chunk`` until the server answers; (answer, bytes sent)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = asyncio.ensure_future(reader.read(200))
    writer.write(head)
    sent = 0
    try:
        while not answer.done() and sent < most:
            writer.write(chunk)
            await writer.drain()
            sent += len(chunk)
            await asyncio.sleep(pause)
    except (ConnectionError, OSError):
        pass
    out = await asyncio.wait_for(answer, 5)
    writer.close()
    return out, sent


async def test_a_huge_request_target_is_refused_while_it_arrives(small: Server) -> None:
    t0 = time.monotonic()
    out, sent = await stream_until_answered(small.port, b"GET /", b"a" * 65536, 64 * 1024 * 1024)
    assert out.startswith(b"HTTP/1.1 414 "), out[:100]
    assert sent < 8 * 1024 * 1024 and time.monotonic() - t0 < 5


async def test_an_endless_header_line_is_refused_while_it_arrives(small: Server) -> None:
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Endless: "
    out, sent = await stream_until_answered(small.port, head, b"v" * 65536, 64 * 1024 * 1024)
    assert out.startswith(b"HTTP/1.1 431 "), out[:100]
    assert sent < 8 * 1024 * 1024


async def test_many_headers_over_the_total_are_refused(small: Server) -> None:
    headers = "".join(f"X-H{i}: {'v' * 40}\r\n" for i in range(200))
    reader, writer = await asyncio.open_connection("127.0.0.1", small.port)
    writer.write(f"GET / HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
    out = await read_all(reader)
    assert out.startswith(b"HTTP/1.1 431 ")
    writer.close()


async def test_a_slowloris_head_meets_its_deadline(small: Server) -> None:
    t0 = time.monotonic()
    # a header line every 50 ms keeps the connection "active", but the head never ends
    out, _ = await stream_until_answered(small.port, b"GET / HTTP/1.1\r\n", b"X-Slow: 1\r\n", 10_000, 0.05)
    assert out.startswith(b"HTTP/1.1 408 ") and b"request headers not complete" in out
    assert time.monotonic() - t0 < 1.5
    assert small.state.timed_out == 1


async def test_a_dribbled_body_meets_its_deadline(small: Server) -> None:
    head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
    out, _ = await stream_until_answered(small.port, head, b"x", 1000, 0.05)
    assert out.startswith(b"HTTP/1.1 408 ") and b"request body not complete" in out


async def test_a_silent_connection_is_closed_after_the_header_deadline(small: Server) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", small.port)
    t0 = time.monotonic()
    await read_all(reader)
    assert time.monotonic() - t0 < 1.5
    writer.close()


async def test_at_the_connection_cap_the_stalest_unfinished_head_makes_room(small: Server) -> None:
    idle = [await asyncio.open_connection("127.0.0.1", small.port) for _ in range(60)]
    for _, writer in idle:
        writer.write(b"GET / HTTP/1.1\r\n")  # never finished
    await asyncio.sleep(0.05)
    for _ in range(5):  # a well-behaved client still gets answers, every time
        assert (await small.get()).startswith(b"HTTP/1.1 200 ")
    assert len(small.state.connections) <= small.limits.max_connections
    assert small.state.dropped >= 40 and small.state.refused == 0
    for _, writer in idle:
        writer.close()


async def test_when_every_connection_is_busy_a_new_one_is_refused_with_503() -> None:
    async with Server(HttpLimits(max_connections=2)) as server:
        busy = []
        for _ in range(2):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            busy.append((reader, writer))
        await asyncio.sleep(0.1)
        out = await server.get()
        assert out.startswith(b"HTTP/1.1 503 ") and b"too many connections" in out
        assert b"retry-after: 1" in out
        server.handler.release.set()
        for reader, writer in busy:
            assert (await asyncio.wait_for(reader.readuntil(b"slow"), 5)).startswith(b"HTTP/1.1 200 ")
            writer.close()
        assert (await server.get()).startswith(b"HTTP/1.1 200 ")


async def test_bodies_in_flight_share_one_budget(small: Server) -> None:
    first_r, first_w = await asyncio.open_connection("127.0.0.1", small.port)
    first_w.write(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 90000\r\n\r\n" + b"x" * 80000)
    await first_w.drain()
    await asyncio.sleep(0.1)
    assert small.state.buffered == 80000
    reader, writer = await asyncio.open_connection("127.0.0.1", small.port)
    writer.write(b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 90000\r\n\r\n" + b"y" * 90000)
    out = await read_all(reader)
    assert out.startswith(b"HTTP/1.1 503 ") and b"too many request bodies" in out
    first_w.write(b"x" * 10000)  # the first upload finishes and is answered
    assert b"POST /a 90000" in await asyncio.wait_for(first_r.readuntil(b"90000"), 5)
    await asyncio.sleep(0.05)
    assert small.state.buffered == 0
    first_w.close()
    writer.close()


async def test_the_listen_backlog_is_the_configured_one() -> None:
    """With the loop held up, connections wait in the kernel's accept queue: all 300 fit in a
    backlog of 2048; with asyncio's default of 100 most of them would not."""
    async with Server(HttpLimits(), backlog=2048) as server:
        connected: list[int] = []

        def flood() -> None:
            time.sleep(0.5)  # the /block request is holding the loop by now
            socks = []
            for _ in range(300):
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", server.port))
                socks.append(s)
            time.sleep(1.0)
            ok = 0
            for s in socks:
                try:
                    s.getpeername()
                    ok += 1
                except OSError:
                    pass
                s.close()
            connected.append(ok)

        blocker = socket.create_connection(("127.0.0.1", server.port))
        thread = threading.Thread(target=flood)
        thread.start()
        blocker.sendall(b"GET /block HTTP/1.1\r\nHost: x\r\n\r\n")
        while thread.is_alive():
            await asyncio.sleep(0.1)
        blocker.close()
        assert connected == [300]


def test_inflate_stops_at_the_limit_whatever_the_bomb_claims() -> None:
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9)  # 64 MiB from ~64 KB
    assert len(bomb) < 200_000
    with pytest.raises(BodyTooLarge, match="inflates to over 1048576 bytes"):
        inflate(bomb, b"gzip", 1024 * 1024)
    assert inflate(gzip.compress(b"abc") + gzip.compress(b"def"), b"gzip", 100) == b"abcdef"
    assert inflate(zlib.compress(b"x" * 100), b"deflate", 100) == b"x" * 100
    with pytest.raises(BodyTooLarge):
        inflate(zlib.compress(b"x" * 101), b"deflate", 100)
    with pytest.raises(BadEncoding, match="truncated"):
        inflate(gzip.compress(b"abc" * 100)[:-12], b"gzip", 1000)
    with pytest.raises(BadEncoding, match="not valid gzip"):
        inflate(b"not gzip at all", b"gzip", 1000)
