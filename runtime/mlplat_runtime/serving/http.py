"""A small HTTP/1.1 server protocol (httptools parser, uvloop transport) for the serving ports.

Why not uvicorn + ASGI: for a one-row tabular model the inference itself takes ~7 µs, and
uvicorn's per-request machinery (a scope dict, a task, an Event, header regexes, two writes
per response) cost several times that; this protocol halves the CPU per request, which is
what the serving throughput target is about. It handles exactly what the serving API needs:
keep-alive and pipelining (responses in request order), ``Expect: 100-continue``, bounded
request bodies (413) and headers (431), HEAD, malformed requests (400 and close), write
back-pressure, idle keep-alive timeouts and a graceful close.

Hostile clients are bounded here, before any handler runs (``HttpLimits``; docs/security.md):
the request target (414) and the whole request head (431) are capped while they arrive, not
after httptools has assembled them; a request head and a body each have a deadline (408), so
a slowloris client cannot hold a connection by dribbling bytes; the connections of a port are
capped below the process's descriptor limit, and at the cap the connection stuck longest in
an unfinished request head is dropped for the new one (a refusal, 503, only when every
connection is busy answering); the bodies buffered by all connections together share one
budget (503 beyond it), so a flood of large uploads cannot grow memory without bound; and a
compressed body is inflated (``inflate``) with the same limit as a plain one.

A handler is a plain callable ``Request -> Response | Awaitable[Response]``: fast handlers
answer inline (no task is created), slow ones (a model load, a big model) return a coroutine
and the connection waits for it, keeping later pipelined requests queued in order. A handler
may also return an ``asyncio.Future`` (the dynamic batcher's answers): the response is written
from its done callback, without a task.
``as_asgi`` adapts a handler to ASGI, so the same handlers run under any ASGI server and in
tests through httpx's ASGI transport.

Must not import textual, mlflow, docker or mlplat_tui.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, replace
from http import HTTPStatus
from typing import Any, NamedTuple
from urllib.parse import unquote

import httptools
import orjson

from mlplat_runtime.serving.bounded import remember

log = logging.getLogger("mlplat.serving")

MAX_BODY = 64 * 1024 * 1024
MAX_HEADER_BYTES = 64 * 1024
MAX_URL_BYTES = 8 * 1024
HEADER_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 60.0
MAX_CONNECTIONS = 1024
BODY_BUDGET = 256 * 1024 * 1024
BACKLOG = 2048
ROOM_SCAN = 64
PIPELINE_BURST = 16  # pipelined requests answered per turn of the event loop
KEEP_ALIVE_S = 15.0
BIG_BODY = 256 * 1024  # a response body this large is written beside its head, not copied into it
LINGER_S = 2.0
JSON = b"application/json"
_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}


@dataclass(frozen=True)
class HttpLimits:
    """What one listening port accepts from its clients (defaults: the module constants)."""

    max_body: int = MAX_BODY  # bytes of one request body, after inflating a compressed one
    max_url: int = MAX_URL_BYTES  # bytes of the request target (414 beyond)
    max_head: int = MAX_HEADER_BYTES  # bytes of the request line and headers together (431)
    header_timeout_s: float = HEADER_TIMEOUT_S  # first byte of a request -> end of its headers
    body_timeout_s: float = BODY_TIMEOUT_S  # end of the headers -> end of the body
    max_connections: int = MAX_CONNECTIONS  # open connections on the port
    body_budget: int = BODY_BUDGET  # bytes of request bodies buffered by all connections at once


class _Refused(Exception):
    """Raised from a parser callback to stop reading a request we have already refused."""


_SCAN: Any = object()


class Request:
    """One parsed request. ``headers``: (lower-cased name, value) pairs as bytes; ``encoding``:
    the Content-Encoding, lower-cased (None without one), found in ``headers`` unless given."""

    __slots__ = ("body", "encoding", "headers", "method", "path")

    def __init__(
        self,
        method: str,
        path: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        encoding: bytes | None = _SCAN,
    ) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        if encoding is _SCAN:  # the last one counts, as when the connection notes them
            encoding = None
            for key, value in headers:
                if key == b"content-encoding":
                    encoding = value.lower()
        self.encoding = encoding

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


class BodyTooLarge(Exception):
    """An inflated body went over its limit (HTTP 413)."""


class BadEncoding(Exception):
    """A body that does not inflate (HTTP 400)."""


_WBITS = {b"gzip": zlib.MAX_WBITS | 16, b"x-gzip": zlib.MAX_WBITS | 16, b"deflate": zlib.MAX_WBITS}


def inflate(body: bytes, encoding: bytes, limit: int, step: int = 1 << 20) -> bytes:
    """A gzip or deflate body inflated, never to more than ``limit`` bytes.

    Inflated ``step`` bytes at a time (``max_length``), so a 2 MB bomb costs at most the limit
    in memory, never the gigabytes it claims, and no single call holds the GIL for long (zlib
    releases it while it works; one big call would copy its whole output under it at the end).
    Concatenated gzip members are allowed. Callers run large ones in a worker thread.
    Raises BodyTooLarge, BadEncoding, or KeyError for an encoding other than gzip/deflate.
    """
    wbits = _WBITS[encoding]
    parts: list[bytes] = []
    size = 0
    data = body
    try:
        while data:
            d = zlib.decompressobj(wbits)
            while True:
                out = d.decompress(data, step)
                size += len(out)
                if size > limit:
                    raise BodyTooLarge(f"request body inflates to over {limit} bytes")
                parts.append(out)
                data = d.unconsumed_tail
                if d.eof or not (data or out):
                    break
            if not d.eof:
                raise BadEncoding(f"request body is truncated {encoding.decode()} data")
            data = d.unused_data
            if data and wbits == zlib.MAX_WBITS:
                raise BadEncoding("request body has data after the end of the deflate stream")
    except zlib.error as exc:
        raise BadEncoding(f"request body is not valid {encoding.decode()}: {exc}") from None
    return parts[0] if len(parts) == 1 else b"".join(parts)  # no parts: an empty body


_OK_JSON = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"


def encode_response(
    resp: Response, keep_alive: bool, head_only: bool = False, length: int | None = None
) -> bytes:
    """The response's bytes (only its head with ``head_only``; ``length``: the content-length
    to announce when the body is written separately)."""
    if (
        resp.status == 200 and keep_alive and not head_only and length is None
        and not resp.headers and resp.content_type is JSON
    ):  # fmt: skip
        return _OK_JSON % (len(resp.body), resp.body)  # most answers: one format, no list
    reason = _REASONS.get(resp.status, b"Unknown")
    parts = [
        b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n"
        % (resp.status, reason, resp.content_type, len(resp.body) if length is None else length)
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
    """The connections of one listening socket, for idle sweeps, deadlines, the connection cap,
    the shared body budget and the graceful close."""

    def __init__(self, limits: HttpLimits | None = None) -> None:
        self.limits = limits or HttpLimits()
        # insertion-ordered (a dict used as an ordered set): the oldest connections come first
        self.connections: dict[HttpProtocol, None] = {}
        self.buffered = 0  # request-body bytes held by all connections together
        self.dropped = 0  # connections closed to make room at the cap
        self.refused = 0  # connections refused (503) because every connection was busy
        self.timed_out = 0  # requests ended by a header or body deadline (408)

    def sweep(self, now: float, idle_s: float = KEEP_ALIVE_S) -> None:
        limits = self.limits
        for conn in list(self.connections):
            if conn.busy or conn.queue:
                continue
            if conn.head_started is not None and now - conn.head_started > limits.header_timeout_s:
                self.timed_out += 1
                conn.timeout(f"request headers not complete within {limits.header_timeout_s:g} s")
            elif conn.body_started is not None and now - conn.body_started > limits.body_timeout_s:
                self.timed_out += 1
                conn.timeout(f"request body not complete within {limits.body_timeout_s:g} s")
            elif now - conn.last_active > idle_s:
                conn.close()

    def make_room(self) -> bool:
        """At the connection cap: drop the connection that has waited longest on an unfinished
        request head (then the longest idle one); False when every connection is busy.

        Connections are kept oldest first, so the first unfinished head found is the stalest one
        (a full scan per new connection would make a flood of thousands quadratic); an idle one
        is taken from the oldest ``ROOM_SCAN`` when no head is unfinished.
        """
        victim: HttpProtocol | None = None
        best = (3, 0.0)
        for seen, conn in enumerate(self.connections):
            if seen >= ROOM_SCAN and victim is not None:
                break
            if conn.busy or conn.queue:
                continue
            if conn.discarding:
                rank = (0, conn.last_active)
            elif conn.head_started is not None:
                rank = (1, conn.head_started)
            elif conn.body_started is None:
                rank = (2, conn.last_active)
            else:
                continue  # receiving a body: a client at work
            if rank < best:
                victim, best = conn, rank
                if rank[0] <= 1:
                    break
        if victim is None:
            return False
        self.dropped += 1
        self.connections.pop(victim, None)  # now: its connection_lost comes a loop turn later
        victim.abort()
        return True

    def close_idle(self) -> None:
        for conn in list(self.connections):
            if not conn.in_request:
                conn.close()

    @property
    def busy(self) -> bool:
        """A connection is in a request: its body still arriving, queued, or being answered
        (a graceful stop waits for them, up to its grace)."""
        return any(c.in_request for c in self.connections)


def request_path(url: bytes) -> str:
    """The path of a request target, percent-decoded (its query and fragment dropped)."""
    path = (httptools.parse_url(url).path or b"/").decode("latin-1")
    return unquote(path) if "%" in path else path


# Request targets seen recently -> their paths: a server's clients ask for a few routes, and
# parsing and decoding one costs more than the rest of reading a request's head. Bounded (at
# the cap it is dropped and filled again): a client sending random targets costs its parsing,
# as without the cache, and memory stays under ~0.5 MB.
_PATHS: dict[bytes, str] = {}
PATH_CACHE = 1024
PATH_CACHE_URL = 256  # longer targets are parsed every time
_NOTED = frozenset((b"content-length", b"expect", b"content-encoding"))
_METHODS = {m.encode(): m for m in ("GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH")}


class HttpProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, handler: Handler, state: ServerState) -> None:
        self.handler = handler
        self.state = state
        self.limits = state.limits
        self.max_body = state.limits.max_body
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser: httptools.HttpRequestParser | None = None  # made on the first byte
        self.last_active = self.loop.time()
        self.busy = False  # a coroutine handler is running for this connection
        self.queue: deque[tuple[Request, bool]] = deque()
        # deadlines: when the current request's head began (None once its headers are in, or
        # between requests on a kept-alive connection) and when its body began
        self.head_started: float | None = self.last_active
        self.body_started: float | None = None
        self.discarding = False  # after a refused request: drop input until the client closes
        self._url: list[bytes] = []
        self._url_size = 0
        self._head_size = 0  # bytes received while the current request head is unfinished
        self._in_head = True
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._body: list[bytes] = []
        self._body_size = 0
        self._held = 0  # body bytes this connection counts against the shared budget
        self._error: Response | None = None
        self._too_big = False  # a Content-Length over max_body (413 once the head is in)
        self._expect_continue = False
        self._encoding: bytes | None = None  # the request's Content-Encoding, lower-cased
        self._reading_paused = False
        self._burst = 0  # requests answered inline during the current read
        self._drain_scheduled = False

    @property
    def in_request(self) -> bool:
        """Answering, with requests queued, or between a request's headers and its last body byte."""
        return self.busy or bool(self.queue) or (self.body_started is not None and not self.discarding)

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        state = self.state
        if len(state.connections) >= self.limits.max_connections and not state.make_room():
            state.refused += 1
            self.discarding = True
            resp = json_error(503, "too many connections; retry shortly", ((b"retry-after", b"1"),))
            transport.write(encode_response(resp, keep_alive=False))  # type: ignore[attr-defined]
            transport.close()
            return
        state.connections[self] = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.connections.pop(self, None)
        self._release(self._held)
        self.transport = None
        self.queue.clear()

    def data_received(self, data: bytes) -> None:
        self.last_active = self.loop.time()
        if self.discarding:
            return
        if self._in_head:
            self._head_size += len(data)
        self._burst = 0
        try:
            parser = self.parser
            if parser is None:
                parser = self.parser = httptools.HttpRequestParser(self)
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(json_error(400, "protocol upgrades are not supported"))
            return
        except httptools.HttpParserError as exc:
            if self._error is not None:  # a refusal raised from a callback stops the parser
                self._fail(self._error)
            else:
                self._fail(json_error(400, f"malformed HTTP request: {exc}"))
            return
        if self._in_head and self._head_size > self.limits.max_head + self.limits.max_url:
            # httptools keeps an unfinished header in memory: refuse before it grows further
            self._fail(json_error(431, f"request headers over {self.limits.max_head} bytes"))

    def pause_writing(self) -> None:  # the client reads slower than we answer
        self._pause_reading()

    def resume_writing(self) -> None:
        if not self.busy and not self.queue:
            self._resume_reading()

    # -- httptools callbacks ---------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = []
        self._url_size = 0
        self._head_size = 0
        self._in_head = True
        self.head_started = self.last_active  # when the bytes that begin it arrived
        self.body_started = None
        self._headers = []
        self._header_bytes = 0
        self._body = []
        self._body_size = 0
        self._error = None
        self._too_big = False
        self._expect_continue = False
        self._encoding = None

    def on_url(self, url: bytes) -> None:
        # fragments are joined once at the end: joining them as they come is quadratic
        self._url_size += len(url)
        if self._url_size > self.limits.max_url:
            self._refuse(json_error(414, f"request target over {self.limits.max_url} bytes"))
        self._url.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > self.limits.max_head:
            self._refuse(json_error(431, f"request headers over {self.limits.max_head} bytes"))
        name = name.lower()
        self._headers.append((name, value))
        if name in _NOTED:  # the few headers this layer acts on, noted as they come
            if name == b"content-length":
                # refused once the head is in (a head the parser rejects gets its own 400)
                self._too_big = self._too_big or (value.isdigit() and int(value) > self.max_body)
            elif name == b"expect":
                self._expect_continue = self._expect_continue or value.lower() == b"100-continue"
            else:
                self._encoding = value.lower()

    def _refuse(self, resp: Response) -> None:
        """Stop parsing this request now: an exception raised in a callback stops httptools."""
        self._error = resp
        raise _Refused

    def on_headers_complete(self) -> None:
        self._in_head = False
        self.head_started = None
        self.body_started = self.last_active
        assert self.parser is not None
        if self.parser.should_upgrade():
            self._error = json_error(400, "protocol upgrades are not supported")
        if self._too_big:
            self._error = json_error(413, f"request body over {self.max_body} bytes")
        if self._error is not None:
            self._fail(self._error)  # answer now: do not read a body we will refuse
        elif self._expect_continue and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self._error is not None:
            return
        self._body_size += len(body)
        if self._body_size > self.max_body:
            self._error = json_error(413, f"request body over {self.max_body} bytes")
            self._drop_body()
            return
        state = self.state
        if state.buffered + len(body) > self.limits.body_budget:
            self._error = json_error(
                503, "the server holds too many request bodies right now; retry shortly",
                ((b"retry-after", b"1"),),
            )  # fmt: skip
            self._drop_body()
            return
        state.buffered += len(body)
        self._held += len(body)
        self._body.append(body)

    def _drop_body(self) -> None:
        self._release(sum(len(b) for b in self._body))
        self._body = []

    def _release(self, size: int) -> None:
        size = min(size, self._held)
        self._held -= size
        self.state.buffered -= size

    def on_message_complete(self) -> None:
        self.body_started = None
        if self._error is not None:
            self._fail(self._error)
            return
        assert self.parser is not None
        raw_method = self.parser.get_method()
        method = _METHODS.get(raw_method) or raw_method.decode("ascii", "replace")
        url = self._url[0] if len(self._url) == 1 else b"".join(self._url)
        path = _PATHS.get(url)
        if path is None:
            try:
                path = request_path(url)
            except httptools.HttpParserInvalidURLError:
                self._fail(json_error(400, f"malformed request target {url[:200]!r}"))
                return
            if len(url) <= PATH_CACHE_URL:
                remember(_PATHS, url, path, PATH_CACHE)
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        req = Request(method, path, self._headers, body, self._encoding)
        keep_alive = self.parser.should_keep_alive()
        self._in_head = True  # until the next request's headers are in (pipelined or kept alive)
        self._head_size = 0
        if self.busy or self.queue or self._burst >= PIPELINE_BURST:
            self.queue.append((req, keep_alive))
            self._pause_reading()  # let pipelined requests wait in the socket, not in memory
            if not self.busy:
                self._schedule_drain()
        else:
            self._burst += 1
            self._dispatch(req, keep_alive)

    # -- dispatch --------------------------------------------------------------------------
    def _dispatch(self, req: Request, keep_alive: bool) -> None:
        try:
            result = self.handler(req)
        except Exception:
            log.exception("handler failed on %s %s", req.method, req.path)
            result = json_error(500, "internal error")
        if isinstance(result, Response):
            self._release(len(req.body))
            self._send(result, keep_alive, req.method == "HEAD")
            return
        self.busy = True
        # Reading goes on while the handler works (pausing and resuming would be two epoll_ctl
        # calls per request): a client that pipelines its next request meanwhile is paused in
        # ``on_message_complete``, with that one request queued.
        if isinstance(result, asyncio.Future):  # no task: the answer is written when it is set
            result.add_done_callback(functools.partial(self._future_done, req, keep_alive))
        else:
            self.loop.create_task(self._finish(result, req, keep_alive))

    def _future_done(self, req: Request, keep_alive: bool, future: asyncio.Future[Response]) -> None:
        if future.cancelled():
            resp = json_error(503, "the request was cancelled; retry")
        elif future.exception() is not None:
            log.error("handler failed on %s %s", req.method, req.path, exc_info=future.exception())
            resp = json_error(500, "internal error")
        else:
            resp = future.result()
        self._complete(resp, req, keep_alive)

    async def _finish(self, pending: Awaitable[Response], req: Request, keep_alive: bool) -> None:
        try:
            resp = await pending
        except Exception:
            log.exception("handler failed on %s %s", req.method, req.path)
            resp = json_error(500, "internal error")
        self._complete(resp, req, keep_alive)

    def _complete(self, resp: Response, req: Request, keep_alive: bool) -> None:
        self.busy = False
        self.last_active = self.loop.time()
        self._release(len(req.body))
        self._send(resp, keep_alive, req.method == "HEAD")
        self._drain()

    def _schedule_drain(self) -> None:
        if not self._drain_scheduled:
            self._drain_scheduled = True
            self.loop.call_soon(self._drain)

    def _drain(self) -> None:
        """Answer queued pipelined requests, ``PIPELINE_BURST`` per turn of the loop: 500 of
        them arriving in one read must not hold every other connection up for their total."""
        self._drain_scheduled = False
        done = 0
        while self.queue and not self.busy and self.transport is not None and done < PIPELINE_BURST:
            nxt, ka = self.queue.popleft()
            self._dispatch(nxt, ka)
            done += 1
        if self.busy or self.transport is None:
            return
        if self.queue:
            self._schedule_drain()
            return
        if self.head_started is not None:  # the deadline counts from when we read again
            self.head_started = self.loop.time()
        self._resume_reading()

    def _send(self, resp: Response, keep_alive: bool, head_only: bool) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if len(resp.body) < BIG_BODY or head_only:
            transport.write(encode_response(resp, keep_alive, head_only))
        else:  # the head and the body as they are: no copy of a big body into one buffer
            transport.writelines(
                (encode_response(resp._replace(body=b""), keep_alive, True, len(resp.body)), resp.body)
            )
        if not keep_alive:
            transport.close()

    def _fail(self, resp: Response) -> None:
        """Answer a request we cannot parse or accept, then close: the stream is unusable.

        A lingering close: send the answer, shut our side, and read (and drop) what the
        client is still sending until it closes or ``LINGER_S`` pass. Closing at once with
        unread data would reset the connection, and the client would lose the answer.
        """
        self.queue.clear()
        self.head_started = self.body_started = None
        self._drop_body()
        transport = self.transport
        if self.discarding or transport is None or transport.is_closing():
            return
        self.discarding = True
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

    def timeout(self, why: str) -> None:
        """A deadline passed: answer 408 if the client can still read it, then close."""
        self._fail(json_error(408, why))

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        """Close now, without flushing: frees the descriptor for the connection that needs it."""
        if self.transport is not None:
            self.transport.abort()


async def serve_http(
    handler: Handler,
    sock: Any,
    *,
    stop: asyncio.Event,
    max_body: int | None = None,
    limits: HttpLimits | None = None,
    grace_s: float = 5.0,
    idle_s: float = KEEP_ALIVE_S,
    sweep_s: float = 1.0,
    backlog: int = BACKLOG,
    on_ready: Callable[[], None] | None = None,
    state: ServerState | None = None,
) -> None:
    """Serve ``handler`` on a bound, listening socket until ``stop`` is set, then close gracefully:
    stop accepting, close idle connections, give in-flight requests ``grace_s`` to finish.

    ``backlog`` is passed on: ``create_server`` would otherwise listen again with its own 100.
    """
    loop = asyncio.get_running_loop()
    limits = limits or HttpLimits()
    if max_body is not None:
        limits = replace(limits, max_body=max_body)
    state = state or ServerState(limits)
    state.limits = limits
    server = await loop.create_server(lambda: HttpProtocol(handler, state), sock=sock, backlog=backlog)
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
