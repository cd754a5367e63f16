"""The inference API: OIP v2 REST routes and ``/metrics`` as one plain request handler.

Thin on purpose: routing is a few string operations; the logic lives in ``protocol`` (JSON
<-> numpy), ``model`` (run) and ``repository`` (which model). The handler answers inline
(no task, no await) for models that run in microseconds, and returns a coroutine that runs
the model in a worker thread for slow ones, so the event loop keeps serving meanwhile. It is
served by ``http.HttpProtocol`` and, through ``http.as_asgi``, by any ASGI server.

Routes (KServe / Triton REST):
    GET  /v2/health/live | /v2/health/ready | /v2        GET /metrics   GET /identity
    GET  /v2/models/{name}[/versions/{v}]                GET  .../ready    GET .../config (Triton)
    POST /v2/models/{name}[/versions/{v}]/infer

Must not import textual, mlflow, docker or mlplat_tui.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np
import orjson

from mlplat_runtime import __version__
from mlplat_runtime.errors import MlplatError, NotFoundError, RequestError
from mlplat_runtime.identity import IDENTITY_PATH, StackIdentity
from mlplat_runtime.serving import protocol
from mlplat_runtime.serving.batching import Batcher
from mlplat_runtime.serving.bounded import remember
from mlplat_runtime.serving.decoder import CHILD_BYTES, DecoderProcess
from mlplat_runtime.serving.http import (
    JSON,
    MAX_BODY,
    PATH_CACHE_URL,
    BadEncoding,
    BodyTooLarge,
    Request,
    Response,
    inflate,
    json_error,
)
from mlplat_runtime.serving.metrics import CONTENT_TYPE, ServingMetrics
from mlplat_runtime.serving.model import LoadedModel
from mlplat_runtime.serving.modelconfig import model_config
from mlplat_runtime.serving.repository import Repository

if TYPE_CHECKING:
    from mlplat_runtime.monitoring.predlog import PredictionLog

log = logging.getLogger("mlplat.serving")

_MODELS = "/v2/models/"
FEEDBACK_PATH = "/v2/feedback"  # ground truth for logged predictions (with the prediction log on)
_MODEL_ENDPOINTS = {"": "metadata", "infer": "infer", "ready": "model_ready", "config": "config"}
# path -> endpoint label; any other path is counted as "other" (bounded label values)
_SERVER_ROUTES = {
    "/v2/health/live": "live",
    "/v2/health/ready": "ready",
    "/v2": "server",
    "/metrics": "metrics",
    IDENTITY_PATH: "identity",
}
SERVER_METADATA = orjson.dumps(
    {
        "name": "mlplat",
        "version": __version__,
        "extensions": ["binary_tensor_data", "model_repository", "model_configuration"],
    }
)
_OCTET = b"application/octet-stream"
_new = tuple.__new__
_METRICS_TYPE = CONTENT_TYPE.encode()
# A body this large, or any compressed one, is decoded in a worker thread, not on the loop:
# parsing 60 MB of JSON takes over a second, and every other client would wait for it.
OFFLOAD_BYTES = 256 * 1024


class HttpError(MlplatError):
    """A transport-level error (405, 415) that is neither a bad request body nor a missing model."""

    def __init__(self, status: int, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        super().__init__(message)
        self.http_status = status
        self.headers = headers


def method_not_allowed(method: str, path: str, allowed: str) -> HttpError:
    return HttpError(
        405, f"{method} is not allowed on {path}; use {allowed}", ((b"allow", allowed.encode()),)
    )


def error_response(exc: MlplatError) -> Response:
    return json_error(exc.http_status, exc.message, exc.headers if isinstance(exc, HttpError) else ())


def decode_content(body: bytes, encoding: bytes | None, limit: int = MAX_BODY) -> bytes:
    """The body without its Content-Encoding, inflated to at most ``limit`` bytes (413 beyond)."""
    if not encoding or encoding == b"identity":
        return body
    try:
        return inflate(body, encoding, limit)
    except BodyTooLarge as exc:
        raise HttpError(413, str(exc)) from None
    except BadEncoding as exc:
        raise RequestError(str(exc)) from None
    except KeyError:
        raise HttpError(
            415, f"Content-Encoding {encoding.decode(errors='replace')} is not supported; use gzip or deflate"
        ) from None


# /v2/models/... paths seen recently -> (name, version or None, action): bounded as http's
# path cache is (dropped at the cap; paths over PATH_CACHE_URL characters are never kept).
_ROUTES: dict[str, tuple[str, str | None, str]] = {}
ROUTE_CACHE = 1024


def _model_route(path: str) -> tuple[str, str | None, str] | None:
    """``/v2/models/{name}[/versions/{v}][/action]`` split; None when it is no model route."""
    parts = path[len(_MODELS) :].split("/")
    name = parts[0]
    version: str | None = None
    rest = parts[1:]
    if len(rest) >= 2 and rest[0] == "versions":
        version, rest = rest[1], rest[2:]
    action = rest[0] if len(rest) == 1 else ("" if not rest else None)
    if not name or action is None or action not in _MODEL_ENDPOINTS:
        return None
    route = (name, version, action)
    return remember(_ROUTES, path, route, ROUTE_CACHE) if len(path) <= PATH_CACHE_URL else route


def _heavy(req: Request) -> bool:
    """Whether decoding this request could hold the event loop up (see ``OFFLOAD_BYTES``)."""
    return len(req.body) > OFFLOAD_BYTES or req.encoding is not None


def model_config_of(m: LoadedModel) -> dict[str, object]:
    """Triton's model configuration of a loaded model (``GET .../config``, gRPC ModelConfig)."""
    return model_config(
        m.name, m.inputs.values(), m.outputs, provider=m.provider, batching=m.batching,
        parameters=m.parameters(),
    )  # fmt: skip


class InferenceHandler:
    """The public port's handler: ``handler(request) -> Response | Awaitable[Response]``."""

    def __init__(
        self,
        repo: Repository,
        metrics: ServingMetrics | None = None,
        *,
        executor: ThreadPoolExecutor | None = None,
        decode_executor: ThreadPoolExecutor | None = None,
        decoder: DecoderProcess | None = None,
        identity: StackIdentity | None = None,
        predlog: PredictionLog | None = None,
    ) -> None:
        self.repo = repo
        self.predlog = predlog  # the prediction log (``--log-dir``), None when off
        self.identity = identity  # which project this process serves (``GET /identity``)
        self.metrics = metrics or repo.metrics
        self.executor = executor
        # heavy decodes (inflating, big JSON) queue here: one at a time, at a lower CPU priority
        self.decode_executor = decode_executor or executor
        self.decoder = decoder  # a child process for JSON too large to parse under the GIL here
        self.max_body = MAX_BODY  # the inflated size a compressed body may reach
        self._batchers: dict[int, Batcher] = {}  # id(LoadedModel) -> its batcher

    def __call__(self, req: Request) -> Response | Awaitable[Response]:
        t0 = time.perf_counter()
        path = req.path
        model_label = version_label = ""
        endpoint = "other"
        try:
            if path.startswith(_MODELS):
                route = _ROUTES.get(path) or _model_route(path)
                if route is None:
                    raise NotFoundError(f"no route for {path}")
                name, version, action = route
                endpoint = _MODEL_ENDPOINTS[action]
                model = self.repo.find(name)
                if model is not None:
                    model_label, version_label = name, model.version
                if action == "infer":
                    if req.method != "POST":
                        raise method_not_allowed(req.method, path, "POST")
                    # the version this request runs on, whatever swaps in next
                    if model is None or (version is not None and version != model.version):
                        model = self.repo.get(name, version)  # says why not
                    if model.batching is not None and self.executor is not None:
                        return self._infer_batched(req, model, t0)
                    if self.executor is not None and (not model.inline or _heavy(req)):
                        return self._infer_in_thread(req, model, t0)
                    return self._infer(req, model, t0)
                elif req.method != "GET":
                    raise method_not_allowed(req.method, path, "GET")
                elif action == "ready":
                    self.repo.get(name, version)  # 404 unless loaded (loaded = warmed up = ready)
                    resp = Response(200, orjson.dumps({"name": name, "ready": True}))
                elif action == "config":
                    m = self.repo.get(name, version)
                    resp = Response(200, orjson.dumps(model_config_of(m)))
                else:
                    m = self.repo.get(name, version)
                    doc = protocol.model_metadata(
                        m.name, [m.version], m.inputs.values(), m.outputs, m.parameters()
                    )
                    resp = Response(200, orjson.dumps(doc))
            elif path == FEEDBACK_PATH and self.predlog is not None:
                endpoint = "feedback"
                if req.method != "POST":
                    raise method_not_allowed(req.method, path, "POST")
                resp = Response(200, self.predlog.feedback(req.body))
            else:
                endpoint = _SERVER_ROUTES.get(path, "other")
                resp = self._server_route(req.method, path)
        except MlplatError as exc:
            resp = error_response(exc)
        except Exception as exc:
            log.exception("internal error on %s %s", req.method, path)
            resp = json_error(500, f"internal error: {type(exc).__name__}: {exc}")
        self.metrics.observe_request(
            model_label, version_label, endpoint, resp.status, time.perf_counter() - t0
        )
        return resp

    def _server_route(self, method: str, path: str) -> Response:
        if path not in _SERVER_ROUTES:
            raise NotFoundError(f"no route for {path}")
        if method != "GET":
            raise method_not_allowed(method, path, "GET")
        if path == "/v2/health/live":
            return Response(200, b'{"live":true}')
        if path == "/v2/health/ready":
            ok = self.repo.ready()
            return Response(200, b'{"ready":true}') if ok else Response(503, b'{"ready":false}')
        if path == "/v2":
            return Response(200, SERVER_METADATA)
        if path == IDENTITY_PATH:
            if self.identity is None:
                raise NotFoundError("this serving process was started without --project")
            return Response(200, self.identity.body())
        return Response(200, self.metrics.render(), _METRICS_TYPE)

    def _decode(self, req: Request, model: LoadedModel) -> protocol.InferRequest:
        header_len: int | None = None
        for key, value in req.headers:
            if key == b"inference-header-content-length":
                try:
                    header_len = int(value)
                except ValueError:
                    raise RequestError(
                        f"Inference-Header-Content-Length is not an integer: {value!r}"
                    ) from None
        encoding = req.encoding
        body = decode_content(req.body, encoding, self.max_body) if encoding is not None else req.body
        if self.decoder is not None and (len(body) if header_len is None else header_len) > CHILD_BYTES:
            return self.decoder.decode(body, model.inputs, model.outputs, header_length=header_len)
        return protocol.decode_infer_request(
            body, model.inputs, model.outputs, header_length=header_len, output_names=model.output_names
        )

    def _encode(
        self,
        model: LoadedModel,
        decoded: protocol.InferRequest,
        arrays: list[np.ndarray],
        request_id: str | None,
    ) -> Response:
        out, json_len = protocol.encode_infer_response(
            model.name, model.version, request_id, decoded.outputs, arrays, decoded.binary
        )
        if json_len is None:
            return _new(Response, (200, out, JSON, ()))  # Response(200, out), without its Python __new__
        return Response(200, out, _OCTET, ((b"inference-header-content-length", str(json_len).encode()),))

    def _infer(self, req: Request, model: LoadedModel, t0: float = 0.0) -> Response:
        """A model that runs inline, answered here: decode, run, encode, and both metrics in one
        call (the path of a microsecond model, where each call counts)."""
        decoded: protocol.InferRequest | None = None
        ran: float | None = None
        try:
            try:
                decoded = self._decode(req, model)
                t = time.perf_counter()
                arrays = model.predict(decoded.inputs, decoded.outputs)
                ran = time.perf_counter() - t
            except MlplatError as exc:
                self._log_failure(model, decoded, exc, t0)
                raise
            resp = self._encode_logged(model, decoded, arrays, t0)
        except MlplatError as exc:
            resp = error_response(exc)
        except Exception as exc:
            log.exception("internal error on %s %s", req.method, req.path)
            resp = json_error(500, f"internal error: {type(exc).__name__}: {exc}")
        self.metrics.observe_infer(model.name, model.version, resp.status, time.perf_counter() - t0, ran)
        return resp

    def _log_failure(
        self, model: LoadedModel, decoded: protocol.InferRequest | None, exc: MlplatError, t0: float
    ) -> None:
        if self.predlog is not None:
            inputs = decoded.inputs if decoded is not None else None
            rid = decoded.id if decoded is not None else None
            self.predlog.capture_failure(model, rid, inputs, exc.http_status, exc.message, t0)

    async def _infer_via(
        self,
        req: Request,
        model: LoadedModel,
        t0: float,
        execute: Callable[[protocol.InferRequest], Awaitable[list[np.ndarray]]],
    ) -> Response:
        """Decode (in a worker thread when the body is heavy), ``execute``, encode: the one
        error handling and request metric of the paths that leave the loop."""
        decoded: protocol.InferRequest | None = None
        try:
            if _heavy(req):
                loop = asyncio.get_running_loop()
                decoded = await loop.run_in_executor(self.decode_executor, self._decode, req, model)
            else:
                decoded = self._decode(req, model)
            arrays = await execute(decoded)
            resp = self._encode_logged(model, decoded, arrays, t0)
        except MlplatError as exc:
            resp = error_response(exc)
            self._log_failure(model, decoded, exc, t0)
        except Exception as exc:
            log.exception("internal error on %s %s", req.method, req.path)
            resp = json_error(500, f"internal error: {type(exc).__name__}: {exc}")
        self.metrics.observe_request(
            model.name, model.version, "infer", resp.status, time.perf_counter() - t0
        )
        return resp

    async def _infer_in_thread(self, req: Request, model: LoadedModel, t0: float) -> Response:
        """A slow model runs in a worker thread (ORT releases the GIL), the loop serves on."""

        async def in_thread(decoded: protocol.InferRequest) -> list[np.ndarray]:
            t = time.perf_counter()
            loop = asyncio.get_running_loop()
            arrays = await loop.run_in_executor(self.executor, model.predict, decoded.inputs, decoded.outputs)
            self.metrics.observe_inference(model.name, model.version, time.perf_counter() - t)
            return arrays

        return await self._infer_via(req, model, t0, in_thread)

    def batcher(self, model: LoadedModel) -> Batcher:
        """The dynamic batcher of this model version (made on its first request)."""
        found = self._batchers.get(id(model))
        if found is not None and found.model is model:
            return found
        assert model.batching is not None and self.executor is not None
        # versions swapped out whose last requests have finished: forget their batchers
        for key, old in list(self._batchers.items()):
            if old.idle and self.repo.find(old.model.name) is not old.model:
                del self._batchers[key]
        made = self._batchers[id(model)] = Batcher(model, model.batching, self.executor, self.metrics)
        return made

    def _infer_batched(self, req: Request, model: LoadedModel, t0: float) -> Response | Awaitable[Response]:
        """A model with dynamic batching: decode here, run in a batch with concurrent requests.

        A normal body is decoded at once and answered from the batcher's callback through a
        future the connection waits on: no task, no extra turn of the loop per request (with
        batching on, one client is as fast as without). A heavy body is decoded off the loop.
        """

        batcher = self.batcher(model)
        if batcher.claim_solo():  # a lone request of a slow model: the unbatched path exactly
            return self._infer_solo(req, model, t0, batcher)
        if _heavy(req):

            def in_batch(decoded: protocol.InferRequest) -> Awaitable[list[np.ndarray]]:
                return self.batcher(model).submit(decoded.inputs, decoded.outputs)

            return self._infer_via(req, model, t0, in_batch)
        try:
            decoded = self._decode(req, model)
        except MlplatError as exc:
            self._log_failure(model, None, exc, t0)
            return self._answered(model, t0, error_response(exc))
        try:
            alone = batcher.run_now(decoded.inputs, decoded.outputs)
            if alone is not None:
                return self._answered(model, t0, self._encode_logged(model, decoded, alone, t0))
        except Exception as exc:
            return self._answered(model, t0, self._failure(req, exc, model, decoded, t0))
        answer: asyncio.Future[Response] = asyncio.get_running_loop().create_future()

        def done(outcome: list[np.ndarray] | BaseException) -> None:
            if isinstance(outcome, BaseException):
                resp = self._failure(req, outcome, model, decoded, t0)
            else:
                try:
                    resp = self._encode_logged(model, decoded, outcome, t0)
                except Exception as exc:
                    resp = self._failure(req, exc, model, decoded, t0)
            if not answer.done():
                answer.set_result(self._answered(model, t0, resp))

        batcher.submit_then(decoded.inputs, decoded.outputs, done)
        return answer

    async def _infer_solo(self, req: Request, model: LoadedModel, t0: float, batcher: Batcher) -> Response:
        """A lone request the batcher let go (``Batcher.claim_solo``): decoded, run in a worker
        thread and answered as without batching; the batcher takes its queue back after."""
        rows: int | None = None

        async def in_thread(decoded: protocol.InferRequest) -> list[np.ndarray]:
            nonlocal rows
            t = time.perf_counter()
            loop = asyncio.get_running_loop()
            arrays = await loop.run_in_executor(self.executor, model.predict, decoded.inputs, decoded.outputs)
            self.metrics.observe_inference(model.name, model.version, time.perf_counter() - t)
            rows = int(next(iter(decoded.inputs.values())).shape[0])
            return arrays

        try:
            return await self._infer_via(req, model, t0, in_thread)
        finally:
            batcher.release_solo(rows)

    def _encode_logged(
        self, model: LoadedModel, decoded: protocol.InferRequest, arrays: list[np.ndarray], t0: float
    ) -> Response:
        """Hand a served request to the prediction log (when on) and encode its response, which
        echoes the request id: the client's, else the one the log gave it."""
        predlog = self.predlog
        if predlog is None:
            return self._encode(model, decoded, arrays, decoded.id)
        rid = predlog.capture(model, decoded.id, decoded.inputs, decoded.outputs, arrays, t0)
        return self._encode(model, decoded, arrays, rid)

    def _failure(
        self,
        req: Request,
        exc: BaseException,
        model: LoadedModel | None = None,
        decoded: protocol.InferRequest | None = None,
        t0: float = 0.0,
    ) -> Response:
        if isinstance(exc, MlplatError):
            if model is not None:
                self._log_failure(model, decoded, exc, t0)
            return error_response(exc)
        log.error("internal error on %s %s", req.method, req.path, exc_info=exc)
        return json_error(500, f"internal error: {type(exc).__name__}: {exc}")

    def _answered(self, model: LoadedModel, t0: float, resp: Response) -> Response:
        """Count an answered inference request (the paths that leave ``__call__``)."""
        self.metrics.observe_request(
            model.name, model.version, "infer", resp.status, time.perf_counter() - t0
        )
        return resp

    async def run(
        self, model: LoadedModel, inputs: dict[str, np.ndarray], names: tuple[str, ...]
    ) -> list[np.ndarray]:
        """Run decoded inputs the way the model is served (in a batch, in a worker thread, or
        inline): the path the gRPC port shares with REST."""
        solo: Batcher | None = None
        if model.batching is not None and self.executor is not None:
            batcher = self.batcher(model)
            if not batcher.claim_solo():
                alone = batcher.run_now(inputs, names)
                return alone if alone is not None else await batcher.submit(inputs, names)
            solo = batcher  # a lone request of a slow model: the unbatched path, below
        t = time.perf_counter()
        if solo is not None:
            ran = False
            try:
                loop = asyncio.get_running_loop()
                arrays = await loop.run_in_executor(self.executor, model.predict, inputs, names)
                ran = True
            finally:
                solo.release_solo(int(next(iter(inputs.values())).shape[0]) if ran else None)
            self.metrics.observe_inference(model.name, model.version, time.perf_counter() - t)
            return arrays
        if self.executor is not None and not model.inline:
            loop = asyncio.get_running_loop()
            arrays = await loop.run_in_executor(self.executor, model.predict, inputs, names)
        else:
            arrays = model.predict(inputs, names)
        self.metrics.observe_inference(model.name, model.version, time.perf_counter() - t)
        return arrays
