"""The metadata HTTP API: a thin ASGI layer over ``MetadataStore``.

No web framework: a route table of (method, path pattern, handler), JSON bodies parsed into the
pydantic records, store calls run in worker threads (DuckDB blocks), and every error from the
one exception tree mapped to its ``http_status`` with ``{"error", "hint", "type"}`` so the
client can raise the same class again.

    GET   /health                        {"status": "ok", "schema_version": N}
    GET   /identity                      StackIdentity: the project it belongs to (404 without)
    POST  /runs                          RunRecord (upsert)            -> RunRecord
    PATCH /runs/{id}                     {field: value, ...}           -> RunRecord
    GET   /runs?limit&offset&search      {"runs": [RunRecord]}  newest first
    POST  /runs/query                    RunsQuery -> RunsPage (runs_query.py: search, sort, served now)
    GET   /runs/{id}                     RunDetail {"run", "bundle", "gates"}
    POST  /bundles                       BundleRecord                  -> BundleRecord
    GET   /bundles/{id}                  BundleRecord
    POST  /gates                         {"bundle_id", "run_id", "gates": [GateResult]} -> {"gates"}
    GET   /gates?bundle_id               {"gates": [GateRecord]}
    POST  /deployments                   DeploymentRecord              -> DeploymentRecord (with id)
    GET   /deployments?model&target&limit         {"deployments": [...]}  newest first
    GET   /deployments/current?model&target       {"deployment": DeploymentRecord | null}
    GET   /deployments/at?model&ts&target         {"deployment": DeploymentRecord | null}
    POST  /events                        Event.to_json() or EventRecord -> EventRecord (with id)
    GET   /events?after_id&limit         {"events": [EventRecord]}  oldest first
    GET   /events/latest?limit           {"events": [EventRecord]}  the newest `limit`, oldest first
    POST  /sql                           {"query": "..."}              -> SqlResult
    GET   /versions/next?model           {"model", "version"}

With a prediction log (``--monitor-dir``; ``monitor.py``), also:

    POST  /monitor/process               {"cut": bool} -> {"segments", "windows"}: read closed
                                         segments now; "cut" evaluates everything pending as a window
    POST  /monitor/references            {"bundle_id", "model", "version", "reference"}
    GET   /monitor/report?window&model   per version: traffic, latency, drift per feature, alerts
    GET   /monitor/alerts?open&model     {"alerts": [...]}
    GET   /monitor/history?model&feature&limit      {"windows": [...]}  oldest first
    GET   /monitor/histogram?model&version&feature&window   training vs live slot counts
    GET   /metrics                       Prometheus text: drift gauges, open alerts (also without a log)

Imports only the store, the records and the standard library; never mlplat_tui.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

from pydantic import BaseModel, ValidationError

from mlplat_runtime.errors import MlplatError, NotFoundError, RequestError
from mlplat_runtime.identity import IDENTITY_PATH, StackIdentity
from mlplat_runtime.metadata.guard import RequestGuard
from mlplat_runtime.metadata.records import (
    RUN_UPDATABLE,
    WIRE,
    BundleRecord,
    DeploymentRecord,
    GatesIn,
    RunRecord,
    dump_json,
    parse_ts,
)
from mlplat_runtime.metadata.runs_query import RunsQuery
from mlplat_runtime.metadata.sqlcaps import QueryControl
from mlplat_runtime.metadata.store import MetadataStore

if TYPE_CHECKING:
    from mlplat_runtime.metadata.monitor import Monitor

log = logging.getLogger("mlplat.metadata")

MAX_BODY = 16 * 1024 * 1024

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass(frozen=True)
class Request:
    method: str
    params: dict[str, str]  # path parameters
    query: dict[str, str]  # first value of each query parameter
    body: bytes
    control: QueryControl | None = None  # cancels a query when the client goes away

    def json(self) -> Any:
        if not self.body:
            raise RequestError("the request needs a JSON body")
        try:
            return WIRE.validate_json(self.body)
        except ValidationError as exc:
            raise RequestError(f"the body is not valid JSON: {exc.errors()[0]['msg']}") from None

    def parse(self, model: type[BaseModel]) -> Any:
        return model.model_validate(self.json())

    def text(self, name: str, default: str | None = None) -> str:
        value = self.query.get(name, default)
        if value is None:
            raise RequestError(f"query parameter {name!r} is required")
        return value

    def integer(self, name: str, default: int) -> int:
        raw = self.query.get(name)
        if raw is None:
            return default
        try:
            return int(raw)
        except ValueError:
            raise RequestError(f"query parameter {name!r} must be an integer, got {raw!r}") from None


Handler = Callable[[MetadataStore, Request], Any]
MonitorHandler = Callable[["Monitor", Request], Any]


def _health(store: MetadataStore, req: Request) -> Any:
    return {"status": "ok", "schema_version": store.schema_version}


def _update_run(store: MetadataStore, req: Request) -> Any:
    fields = req.json()
    if not isinstance(fields, dict):
        raise RequestError(
            "PATCH /runs/{id} takes a JSON object of fields", hint=", ".join(sorted(RUN_UPDATABLE))
        )
    return store.update_run(req.params["id"], fields)


def _runs(store: MetadataStore, req: Request) -> Any:
    runs = store.runs(req.integer("limit", 100), req.integer("offset", 0), req.query.get("search") or None)
    return {"runs": runs}


def _record_gates(store: MetadataStore, req: Request) -> Any:
    body: GatesIn = req.parse(GatesIn)
    return {"gates": store.record_gates(body.bundle_id, body.run_id, body.gates)}


def _deployments(store: MetadataStore, req: Request) -> Any:
    found = store.deployments(req.query.get("model"), req.integer("limit", 100), req.query.get("target"))
    return {"deployments": found}


def _deployed_at(store: MetadataStore, req: Request) -> Any:
    raw = req.text("ts")
    try:
        ts = parse_ts(raw)
    except ValueError:
        raise RequestError(f"ts must be ISO 8601 or unix seconds, got {raw!r}") from None
    return {"deployment": store.deployed_at(req.text("model"), ts, req.query.get("target"))}


def _sql(store: MetadataStore, req: Request) -> Any:
    body = req.json()
    if not isinstance(body, dict) or not isinstance(body.get("query"), str):
        raise RequestError('POST /sql takes {"query": "<one SELECT statement>"}')
    return store.sql(body["query"], req.control)


ROUTES: tuple[tuple[str, str, Handler], ...] = (
    ("GET", "/health", _health),
    ("POST", "/runs", lambda s, r: s.record_run(r.parse(RunRecord))),
    ("GET", "/runs", _runs),
    ("POST", "/runs/query", lambda s, r: s.query_runs(r.parse(RunsQuery))),
    ("GET", "/runs/{id}", lambda s, r: s.run_detail(r.params["id"])),
    ("PATCH", "/runs/{id}", _update_run),
    ("POST", "/bundles", lambda s, r: s.record_bundle(r.parse(BundleRecord))),
    ("GET", "/bundles/{id}", lambda s, r: s.bundle(r.params["id"])),
    ("POST", "/gates", _record_gates),
    ("GET", "/gates", lambda s, r: {"gates": s.gates(r.text("bundle_id"))}),
    ("POST", "/deployments", lambda s, r: s.record_deployment(r.parse(DeploymentRecord))),
    ("GET", "/deployments", _deployments),
    (
        "GET",
        "/deployments/current",
        lambda s, r: {"deployment": s.current_deployment(r.text("model"), r.query.get("target"))},
    ),
    ("GET", "/deployments/at", _deployed_at),
    ("POST", "/events", lambda s, r: s.record_event(r.json())),
    ("GET", "/events", lambda s, r: {"events": s.events(r.integer("after_id", 0), r.integer("limit", 200))}),
    ("GET", "/events/latest", lambda s, r: {"events": s.latest_events(r.integer("limit", 200))}),
    ("POST", "/sql", _sql),
    (
        "GET",
        "/versions/next",
        lambda s, r: {"model": r.text("model"), "version": s.next_version(r.text("model"))},
    ),
)


def _monitor_process(monitor: Monitor, req: Request) -> Any:
    body = req.json() if req.body else {}
    if not isinstance(body, dict):
        raise RequestError('POST /monitor/process takes {"cut": true|false}')
    return monitor.process(cut=bool(body.get("cut", False)))


def _monitor_reference(monitor: Monitor, req: Request) -> Any:
    body = req.json()
    if not isinstance(body, dict) or not all(
        isinstance(body.get(k), str) for k in ("bundle_id", "model", "version")
    ):
        raise RequestError(
            'POST /monitor/references takes {"bundle_id", "model", "version", "reference": {...}}'
        )
    ref = body.get("reference")
    if not isinstance(ref, dict):
        raise RequestError("reference must be the JSON object of the bundle's reference.json (v2)")
    monitor.register_reference(body["bundle_id"], body["model"], body["version"], ref)
    return {"bundle_id": body["bundle_id"], "features": len(ref.get("features", {}))}


def _window(req: Request, default: str = "15m") -> int:
    from mlplat_runtime.metadata.monitor import parse_duration

    return parse_duration(req.query.get("window") or default)


_NO_MONITOR = (
    "# HELP mlplat_monitor_enabled 1 when the service monitors a prediction log (--monitor-dir).\n"
    "# TYPE mlplat_monitor_enabled gauge\nmlplat_monitor_enabled 0\n"
)

MONITOR_ROUTES: dict[tuple[str, str], MonitorHandler] = {
    ("POST", "/monitor/process"): _monitor_process,
    ("POST", "/monitor/references"): _monitor_reference,
    ("GET", "/monitor/report"): lambda m, r: m.report(_window(r), r.query.get("model") or None),
    (
        "GET",
        "/monitor/alerts",
    ): lambda m, r: {
        "alerts": m.alerts(
            open_only=r.query.get("open", "") in ("1", "true"), model=r.query.get("model") or None
        )
    },
    ("GET", "/monitor/history"): lambda m, r: {
        "windows": m.history(r.text("model"), r.query.get("feature") or None, r.integer("limit", 200))
    },
    ("GET", "/monitor/histogram"): lambda m, r: m.histogram(
        r.text("model"), r.text("version"), r.text("feature"), _window(r)
    ),
}


def _compile(pattern: str) -> re.Pattern[str]:
    # Path parameters match one raw (still percent-encoded) segment, so ids may hold "/".
    return re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$")


_COMPILED = tuple((method, _compile(pattern), handler) for method, pattern, handler in ROUTES)


def _route(method: str, raw_path: str) -> tuple[Handler, dict[str, str]]:
    allowed: list[str] = []
    for route_method, regex, handler in _COMPILED:
        match = regex.match(raw_path)
        if match:
            if route_method == method:
                return handler, {k: unquote(v) for k, v in match.groupdict().items()}
            allowed.append(route_method)
    if allowed:
        raise _MethodNotAllowed(f"{method} {raw_path} is not allowed (use {', '.join(allowed)})")
    raise NotFoundError(f"no such endpoint: {method} {raw_path}", hint="see mlplat_runtime.metadata.service")


class _MethodNotAllowed(RequestError):
    http_status = 405


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return f"invalid {exc.title}: " + "; ".join(parts)


def _error_body(exc: MlplatError) -> bytes:
    # The client re-raises by class name: name the nearest public class of the tree.
    kind = next(c.__name__ for c in type(exc).__mro__ if not c.__name__.startswith("_"))
    return dump_json({"error": exc.message, "hint": exc.hint, "type": kind})


def create_app(
    store: MetadataStore,
    *,
    on_shutdown: Callable[[], None] | None = None,
    guard: RequestGuard | None = None,
    identity: StackIdentity | None = None,
    monitor: Monitor | None = None,
) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """The ASGI app over ``store``; ``on_shutdown`` runs at lifespan shutdown (closes the store).

    ``guard`` (default: loopback hosts, no browser origins, JSON bodies, no token) vets every
    request before it is routed: see ``guard.py``. ``identity`` is what ``GET /identity`` answers
    (the project this service belongs to; ``mlplat_runtime.identity``). ``monitor`` answers the
    ``/monitor/*`` routes (404 with a hint without one) and the drift gauges of ``/metrics``.
    """
    guard = guard or RequestGuard()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send, on_shutdown)
            return
        if scope["type"] != "http":
            return
        status, body = await _handle(store, scope, receive, guard, identity, monitor)
        text = body.startswith(b"# HELP")
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"text/plain; version=0.0.4" if text else b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


async def _lifespan(receive: Receive, send: Send, on_shutdown: Callable[[], None] | None) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if on_shutdown is not None:
                try:
                    await asyncio.to_thread(on_shutdown)
                except Exception as exc:  # the process is ending: report, do not hang
                    log.exception("closing the metadata store failed")
                    await send({"type": "lifespan.shutdown.failed", "message": str(exc)})
                    return
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise RequestError(f"request body over {MAX_BODY // (1024 * 1024)} MiB")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _cancel_on_disconnect(store: MetadataStore, request: Request, receive: Receive) -> Any:
    """Run a query, interrupting it when the client disconnects (Ctrl-C in ``mlplat sql``)."""
    control = QueryControl()
    request = replace(request, control=control)
    work = asyncio.ensure_future(asyncio.to_thread(_sql, store, request))
    gone = asyncio.ensure_future(receive())  # the body is read: the next message is the disconnect
    try:
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        if gone.done() and not work.done() and gone.result().get("type") == "http.disconnect":
            control.cancel()
        return await work
    finally:
        gone.cancel()


async def _handle(
    store: MetadataStore,
    scope: Scope,
    receive: Receive,
    guard: RequestGuard,
    identity: StackIdentity | None = None,
    monitor: Monitor | None = None,
) -> tuple[int, bytes]:
    method = scope["method"]
    raw_path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1").split("?", 1)[0]
    try:
        guard.check(method, scope.get("headers") or [])
        if identity is not None and method == "GET" and raw_path == IDENTITY_PATH:
            return 200, identity.body()
        path = raw_path.rstrip("/") or "/"
        if method == "GET" and path == "/metrics":
            text = await asyncio.to_thread(monitor.metrics_text) if monitor is not None else ""
            return 200, (text or _NO_MONITOR).encode()
        if path.startswith("/monitor/"):
            monitor_handler = MONITOR_ROUTES.get((method, path))
            if monitor_handler is None:
                raise NotFoundError(
                    f"no such endpoint: {method} {raw_path}", hint="see mlplat_runtime.metadata.service"
                )
            if monitor is None:
                raise NotFoundError(
                    "this metadata service has no prediction log to monitor",
                    hint="start it with --monitor-dir (the stack passes the project's .mlplat/monitoring)",
                )
            query = {k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode("latin-1")).items()}
            request = Request(method=method, params={}, query=query, body=await _read_body(receive))
            return 200, dump_json(await asyncio.to_thread(monitor_handler, monitor, request))
        handler, params = _route(method, raw_path.rstrip("/") or "/")
        query = {k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode("latin-1")).items()}
        request = Request(method=method, params=params, query=query, body=await _read_body(receive))
        if handler is _sql:
            result = await _cancel_on_disconnect(store, request, receive)
        else:
            result = await asyncio.to_thread(handler, store, request)
        return 200, dump_json(result)
    except MlplatError as exc:
        return exc.http_status, _error_body(exc)
    except ValidationError as exc:
        return 400, _error_body(RequestError(_validation_message(exc)))
    except Exception as exc:
        log.exception("%s %s failed", method, raw_path)
        return 500, dump_json(
            {"error": f"internal error: {type(exc).__name__}: {exc}", "type": "MlplatError"}
        )
