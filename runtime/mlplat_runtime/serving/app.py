"""The inference API: a hand-written ASGI app over the repository (OIP v2 REST + /metrics).

Thin on purpose: routing is a few string operations, not a framework's router and middleware
stack, because at ~60 µs per request the framework would be most of the cost. All logic is in
``protocol`` (JSON <-> numpy), ``model`` (run) and ``repository`` (which model).

Routes (KServe / Triton REST):
    GET  /v2/health/live | /v2/health/ready | /v2        GET /metrics
    GET  /v2/models/{name}[/versions/{v}]                GET  .../ready
    POST /v2/models/{name}[/versions/{v}]/infer

Must not import textual, mlflow, docker or mlplat_tui.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from mlplat_runtime import __version__
from mlplat_runtime.errors import MlplatError, NotFoundError, RequestError
from mlplat_runtime.serving import protocol
from mlplat_runtime.serving.metrics import CONTENT_TYPE, ServingMetrics
from mlplat_runtime.serving.repository import Repository

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

log = logging.getLogger("mlplat.serving")

MAX_BODY = 64 * 1024 * 1024
JSON = b"application/json"
_MODELS = "/v2/models/"
# path -> endpoint label; any other path is counted as "other" (bounded label values)
_SERVER_ROUTES = {
    "/v2/health/live": "live",
    "/v2/health/ready": "ready",
    "/v2": "server",
    "/metrics": "metrics",
}
_MODEL_ENDPOINTS = {"": "metadata", "infer": "infer", "ready": "model_ready"}
SERVER_METADATA = orjson.dumps(
    {"name": "mlplat", "version": __version__, "extensions": ["binary_tensor_data", "model_repository"]}
)


class HttpError(MlplatError):
    """A transport-level error (405, 413) that is neither a bad request body nor a missing model."""

    def __init__(self, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(message)
        self.http_status = status
        self.headers = headers or []


async def read_body(receive: Receive, limit: int = MAX_BODY) -> bytes:
    msg = await receive()
    body = msg.get("body", b"")
    if not msg.get("more_body"):
        return body  # type: ignore[no-any-return]
    parts = [body]
    size = len(body)
    while msg.get("more_body"):
        msg = await receive()
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise HttpError(413, f"request body over {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


async def respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = JSON,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def method_not_allowed(method: str, path: str, allowed: str) -> HttpError:
    return HttpError(405, f"{method} is not allowed on {path}; use {allowed}", [(b"allow", allowed.encode())])


def decode_content(body: bytes, encoding: bytes | None) -> bytes:
    if not encoding or encoding == b"identity":
        return body
    try:
        if encoding == b"gzip":
            return zlib.decompress(body, wbits=zlib.MAX_WBITS | 16)
        if encoding == b"deflate":
            return zlib.decompress(body)
    except zlib.error as exc:
        raise RequestError(f"request body is not valid {encoding.decode()}: {exc}") from None
    raise HttpError(
        415, f"Content-Encoding {encoding.decode(errors='replace')} is not supported; use gzip or deflate"
    )


class InferenceApp:
    """ASGI callable for the public port."""

    def __init__(
        self,
        repo: Repository,
        metrics: ServingMetrics | None = None,
        *,
        executor: ThreadPoolExecutor | None = None,
        max_body: int = MAX_BODY,
    ) -> None:
        self.repo = repo
        self.metrics = metrics or repo.metrics
        self.executor = executor
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # no websockets; lifespan is off
        t0 = time.perf_counter()
        path: str = scope["path"]
        method: str = scope["method"]
        model_label = version_label = ""
        endpoint = "other"
        status = 500
        try:
            if path.startswith(_MODELS):
                parts = path[len(_MODELS) :].split("/")
                name = parts[0]
                version: str | None = None
                rest = parts[1:]
                if len(rest) >= 2 and rest[0] == "versions":
                    version, rest = rest[1], rest[2:]
                action = rest[0] if len(rest) == 1 else ("" if not rest else None)
                if not name or action is None or action not in ("", "infer", "ready"):
                    raise NotFoundError(f"no route for {path}")
                endpoint = _MODEL_ENDPOINTS[action]
                model = self.repo.find(name)
                if model is not None:
                    model_label, version_label = name, model.version
                if action == "infer":
                    if method != "POST":
                        raise method_not_allowed(method, path, "POST")
                    status = await self._infer(scope, receive, send, name, version)
                elif method != "GET":
                    raise method_not_allowed(method, path, "GET")
                elif action == "ready":
                    status = await self._model_ready(send, name, version)
                else:
                    m = self.repo.get(name, version)
                    doc = protocol.model_metadata(
                        m.name, [m.version], m.inputs.values(), m.outputs, m.parameters()
                    )
                    status = 200
                    await respond(send, 200, orjson.dumps(doc))
            else:
                endpoint = _SERVER_ROUTES.get(path, "other")
                status = await self._server_route(method, path, send)
        except MlplatError as exc:
            status = exc.http_status
            extra = exc.headers if isinstance(exc, HttpError) else None
            await respond(send, status, protocol.error_body(exc.message), extra=extra)
        except Exception as exc:
            log.exception("internal error on %s %s", method, path)
            status = 500
            await respond(send, 500, protocol.error_body(f"internal error: {type(exc).__name__}: {exc}"))
        finally:
            self.metrics.observe_request(
                model_label, version_label, endpoint, status, time.perf_counter() - t0
            )

    async def _server_route(self, method: str, path: str, send: Send) -> int:
        if path not in _SERVER_ROUTES:
            raise NotFoundError(f"no route for {path}")
        if method != "GET":
            raise method_not_allowed(method, path, "GET")
        if path == "/v2/health/live":
            await respond(send, 200, b'{"live":true}')
            return 200
        if path == "/v2/health/ready":
            ok = self.repo.ready()
            await respond(send, 200 if ok else 503, b'{"ready":true}' if ok else b'{"ready":false}')
            return 200 if ok else 503
        if path == "/v2":
            await respond(send, 200, SERVER_METADATA)
            return 200
        await respond(send, 200, self.metrics.render(), content_type=CONTENT_TYPE.encode())
        return 200

    async def _model_ready(self, send: Send, name: str, version: str | None) -> int:
        model = self.repo.find(name)
        if model is None or (version is not None and version != model.version):
            self.repo.get(name, version)  # raises the right 404
        await respond(send, 200, orjson.dumps({"name": name, "ready": True}))
        return 200

    async def _infer(self, scope: Scope, receive: Receive, send: Send, name: str, version: str | None) -> int:
        model = self.repo.get(name, version)  # the version this request runs on, whatever swaps next
        header_len: int | None = None
        encoding: bytes | None = None
        for key, value in scope["headers"]:
            if key == b"inference-header-content-length":
                try:
                    header_len = int(value)
                except ValueError:
                    raise RequestError(
                        f"Inference-Header-Content-Length is not an integer: {value!r}"
                    ) from None
            elif key == b"content-encoding":
                encoding = value.lower()
        body = decode_content(await read_body(receive, self.max_body), encoding)
        req = protocol.decode_infer_request(
            body, model.inputs, model.outputs, header_length=header_len, output_names=model.output_names
        )
        t = time.perf_counter()
        if model.inline or self.executor is None:
            arrays = model.predict(req.inputs, req.outputs)
        else:
            loop = asyncio.get_running_loop()
            arrays = await loop.run_in_executor(self.executor, model.predict, req.inputs, req.outputs)
        self.metrics.observe_inference(model.name, model.version, time.perf_counter() - t)
        out, json_len = protocol.encode_infer_response(
            model.name, model.version, req.id, req.outputs, arrays, req.binary
        )
        if json_len is None:
            await respond(send, 200, out)
        else:
            await respond(
                send,
                200,
                out,
                b"application/octet-stream",
                [(b"inference-header-content-length", str(json_len).encode())],
            )
        return 200
