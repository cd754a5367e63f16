"""A small HTTP/1.1 server protocol (httptools parser, uvloop transport) for the serving ports.

Why not uvicorn + ASGI: for a one-row tabular model the inference itself takes ~7 µs, and
uvicorn's per-request machinery (a scope dict, a task, an Event, header regexes, two writes
per response) cost several times that; this protocol halves the CPU per request, which is
what the serving throughput target is about. It handles exactly what the serving API needs:
keep-alive and pipelining (responses in request order), ``Expect: 100-continue``, bounded
request bodies (413) and headers (431), HEAD, malformed requests (400 and close), write
back-pressure, idle keep-alive timeouts and a graceful close.

A handler is a plain callable ``Request -> Response | Awaitable[Response]``: fast handlers
answer inline (no task is created), slow ones (a model load, a big model) return a coroutine
and the connection waits for it, keeping later pipelined requests queued in order.
``as_asgi`` adapts a handler to ASGI, so the same handlers run under any ASGI server and in
tests through httpx's ASGI transport.

Must not import textual, mlflow, docker or mlplat_tui.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from http import HTTPStatus
from typing import Any, NamedTuple
from urllib.parse import unquote

import httptools
import orjson

log = logging.getLogger("mlplat.serving")

MAX_BODY = 64 * 1024 * 1024
MAX_HEADER_BYTES = 64 * 1024
KEEP_ALIVE_S = 15.0
LINGER_S = 2.0
JSON = b"application/json"
_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}


class Request:
    """One parsed request. ``headers``: (lower-cased name, value) pairs as bytes."""

    __slots__ = ("body", "headers", "method", "path")

    def __init__(self, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


class Response(NamedTuple):
    status: int
    body: bytes
    content_type: bytes = JSON
    headers: tuple[tuple[bytes, bytes], ...] = ()


Handler = Callable[[Request], "Response | Awaitable[Response]"]


def json_error(status: int, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> Response:
    return Response(status, orjson.dumps({"error": message}), JSON, headers)


def encode_response(resp: Response, keep_alive: bool, head_only: bool = False) -> bytes:
    reason = _REASONS.get(resp.status, b"Unknown")
    parts = [
        b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n"
        % (resp.status, reason, resp.content_type, len(resp.body))
    ]
    for name, value in resp.headers:
        parts.append(b"%s: %s\r\n" % (name, value))
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    if not head_only:
        parts.append(resp.body)
    return b"".join(parts)


class ServerState:
    """The connections of one listening socket, for idle sweeps and the graceful close."""

    def __init__(self) -> None:
        self.connections: set[HttpProtocol] = set()

    def sweep(self, now: float, idle_s: float = KEEP_ALIVE_S) -> None:
        for conn in list(self.connections):
            if not conn.busy and now - conn.last_active > idle_s:
                conn.close()

    def close_idle(self) -> None:
        for conn in list(self.connections):
            if not conn.busy:
                conn.close()

    @property
    def busy(self) -> bool:
        return any(c.busy for c in self.connections)


class HttpProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, handler: Handler, state: ServerState, *, max_body: int = MAX_BODY) -> None:
        self.handler = handler
        self.state = state
        self.max_body = max_body
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.last_active = self.loop.time()
        self.busy = False  # a coroutine handler is running for this connection
        self.queue: deque[tuple[Request, bool]] = deque()
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._body: list[bytes] = []
        self._body_size = 0
        self._error: Response | None = None
        self._reading_paused = False
        self._discarding = False  # after a refused request: drop input until the client closes

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.state.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.connections.discard(self)
        self.transport = None
        self.queue.clear()

    def data_received(self, data: bytes) -> None:
        self.last_active = self.loop.time()
        if self._discarding:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(json_error(400, "protocol upgrades are not supported"))
        except httptools.HttpParserError as exc:
            self._fail(json_error(400, f"malformed HTTP request: {exc}"))

    def pause_writing(self) -> None:  # the client reads slower than we answer
        self._pause_reading()

    def resume_writing(self) -> None:
        if not self.busy:
            self._resume_reading()

    # -- httptools callbacks ---------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._header_bytes = 0
        self._body = []
        self._body_size = 0
        self._error = None

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > MAX_HEADER_BYTES:
            self._error = json_error(431, f"request headers over {MAX_HEADER_BYTES} bytes")
            return
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        if self.parser.should_upgrade():
            self._error = json_error(400, "protocol upgrades are not supported")
        expect_continue = False
        for name, value in self._headers:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body:
                self._error = json_error(413, f"request body over {self.max_body} bytes")
            elif name == b"expect" and value.lower() == b"100-continue":
                expect_continue = True
        if self._error is not None:
            self._fail(self._error)  # answer now: do not read a body we will refuse
        elif expect_continue and self._error is None and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self.max_body:
            self._error = self._error or json_error(413, f"request body over {self.max_body} bytes")
            self._body = []
        elif self._error is None:
            self._body.append(body)

    def on_message_complete(self) -> None:
        if self._error is not None:
            self._fail(self._error)
            return
        method = self.parser.get_method().decode("ascii", "replace")
        try:
            raw_path = httptools.parse_url(self._url).path or b"/"
        except httptools.HttpParserInvalidURLError:
            self._fail(json_error(400, f"malformed request target {self._url[:200]!r}"))
            return
        path = raw_path.decode("latin-1")
        if "%" in path:
            path = unquote(path)
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        req = Request(method, path, self._headers, body)
        keep_alive = self.parser.should_keep_alive()
        if self.busy or self.queue:
            self.queue.append((req, keep_alive))
            self._pause_reading()  # let pipelined requests wait in the socket, not in memory
        else:
            self._dispatch(req, keep_alive)

    # -- dispatch --------------------------------------------------------------------------
    def _dispatch(self, req: Request, keep_alive: bool) -> None:
        try:
            result = self.handler(req)
        except Exception:
            log.exception("handler failed on %s %s", req.method, req.path)
            result = json_error(500, "internal error")
        if isinstance(result, Response):
            self._send(result, keep_alive, req.method == "HEAD")
            return
        self.busy = True
        self._pause_reading()
        self.loop.create_task(self._finish(result, req, keep_alive))

    async def _finish(self, pending: Awaitable[Response], req: Request, keep_alive: bool) -> None:
        try:
            resp = await pending
        except Exception:
            log.exception("handler failed on %s %s", req.method, req.path)
            resp = json_error(500, "internal error")
        self.busy = False
        self.last_active = self.loop.time()
        self._send(resp, keep_alive, req.method == "HEAD")
        while self.queue and not self.busy and self.transport is not None:
            nxt, ka = self.queue.popleft()
            self._dispatch(nxt, ka)
        if not self.busy:
            self._resume_reading()

    def _send(self, resp: Response, keep_alive: bool, head_only: bool) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(encode_response(resp, keep_alive, head_only))
        if not keep_alive:
            transport.close()

    def _fail(self, resp: Response) -> None:
        """Answer a request we cannot parse or accept, then close: the stream is unusable.

        A lingering close: send the answer, shut our side, and read (and drop) what the
        client is still sending until it closes or ``LINGER_S`` pass. Closing at once with
        unread data would reset the connection, and the client would lose the answer.
        """
        self.queue.clear()
        transport = self.transport
        if self._discarding or transport is None or transport.is_closing():
            return
        self._discarding = True
        transport.write(encode_response(resp, keep_alive=False))
        self._resume_reading()
        if transport.can_write_eof():
            transport.write_eof()
            self.loop.call_later(LINGER_S, self.close)
        else:
            transport.close()

    def _pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


async def serve_http(
    handler: Handler,
    sock: Any,
    *,
    stop: asyncio.Event,
    max_body: int = MAX_BODY,
    grace_s: float = 5.0,
    idle_s: float = KEEP_ALIVE_S,
    sweep_s: float = 1.0,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Serve ``handler`` on a bound, listening socket until ``stop`` is set, then close gracefully:
    stop accepting, close idle connections, give in-flight requests ``grace_s`` to finish."""
    loop = asyncio.get_running_loop()
    state = ServerState()
    server = await loop.create_server(lambda: HttpProtocol(handler, state, max_body=max_body), sock=sock)
    if on_ready is not None:
        on_ready()
    try:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=sweep_s)
            except TimeoutError:
                state.sweep(loop.time(), idle_s)
    finally:
        server.close()
        state.close_idle()
        deadline = time.monotonic() + grace_s
        while state.busy and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(state.connections):
            conn.close()
        await server.wait_closed()


# -- ASGI adapter ------------------------------------------------------------------------------

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def as_asgi(
    handler: Handler, *, max_body: int = MAX_BODY
) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """The same handler as an ASGI app (any ASGI server; httpx's ASGI transport in tests)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        parts, size, more = [], 0, True
        while more:
            msg = await receive()
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > max_body:
                resp = json_error(413, f"request body over {max_body} bytes")
                break
            parts.append(chunk)
            more = bool(msg.get("more_body"))
        else:
            req = Request(
                scope["method"], scope["path"], [(k.lower(), v) for k, v in scope["headers"]], b"".join(parts)
            )
            result = handler(req)
            resp = await result if inspect.isawaitable(result) else result
        headers = [(b"content-type", resp.content_type), (b"content-length", str(len(resp.body)).encode())]
        headers.extend(resp.headers)
        await send({"type": "http.response.start", "status": resp.status, "headers": headers})
        await send({"type": "http.response.body", "body": resp.body})

    return app
