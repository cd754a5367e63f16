"""OIP v2 over gRPC (``inference.GRPCInferenceService``) on its own port, opt-in (``--grpc-port``).

KServe's and Triton's clients and Triton's ``perf_analyzer`` speak gRPC by default. The
service definitions are the generated modules Triton's client package ships
(``tritonclient.grpc.service_pb2`` / ``service_pb2_grpc``, generated from the protocol's
``grpc_service.proto``): no ``.proto`` is copied into this repository. They and ``grpcio``
come with the optional ``grpc`` extra (``pip install mlplat[grpc]``); serving imports this
module only when a gRPC port is asked for, so it starts and serves REST without them.

Thin like the REST layer: each call looks the model up in the same ``Repository`` and runs
through ``InferenceHandler.run``, so batching, worker threads and metrics are shared with
REST. The server runs on serving's own event loop (``grpc.aio``). Tensors come in as
``raw_input_contents`` (what tritonclient sends) or the typed ``contents`` fields, and go out
as ``raw_output_contents``. Errors map to gRPC codes: 400 -> INVALID_ARGUMENT, 404 ->
NOT_FOUND, 503 -> UNAVAILABLE, anything else -> INTERNAL. With the prediction log on
(``--log-dir``) a ModelInfer is captured as on REST: served requests after ``handler.run``
(the response's ``id`` is the request id logged: the client's, else ``<boot>-<seq>``) and
failures of a known model (status, error, no outputs).

Served: ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata, ModelConfig,
ModelInfer on the inference side (``start_grpc``). The repository extension (RepositoryIndex,
RepositoryModelLoad, RepositoryModelUnload) is served only on the admin side
(``start_admin_grpc``: its own port, bound like the REST admin port, the same bearer token in
the ``authorization`` metadata), never on the inference port. A load takes its parameters as
the REST admin's do (``bundle``: string; ``allow_signature_change``: bool;
``dynamic_batching``: a JSON object as a string, or the bool false), or a Triton model config
in ``config`` (what ``tritonclient``'s ``load_model(name, config=...)`` sends): its
``parameters.bundle.string_value`` names the bundle; ``max_batch_size`` with
``dynamic_batching`` and ``instance_group[0].count`` turn dynamic batching on.

Must not import textual, mlflow, docker or mlplat_tui.
"""

from __future__ import annotations

import hmac
import logging
import time
from typing import Any

import grpc
import numpy as np
import orjson
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

from mlplat_runtime.errors import AuthError, MlplatError, RequestError, ServiceError
from mlplat_runtime.serving import protocol
from mlplat_runtime.serving.admin import LocalControl, ModelControl
from mlplat_runtime.serving.app import SERVER_METADATA, InferenceHandler, model_config_of
from mlplat_runtime.serving.batching import BatchingConfig
from mlplat_runtime.serving.http import MAX_BODY
from mlplat_runtime.serving.repository import Repository

log = logging.getLogger("mlplat.serving")

_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED, 404:
          grpc.StatusCode.NOT_FOUND, 413: grpc.StatusCode.RESOURCE_EXHAUSTED, 503:
          grpc.StatusCode.UNAVAILABLE}  # fmt: skip
_CONTENTS = {  # OIP datatype -> the typed field of InferTensorContents
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "UINT8": "uint_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}
_EXTENSIONS: list[str] = orjson.loads(SERVER_METADATA)["extensions"]


async def _abort(context: grpc.aio.ServicerContext, exc: MlplatError) -> None:
    await context.abort(_CODES.get(exc.http_status, grpc.StatusCode.INTERNAL), exc.message)


class InferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """The gRPC face of ``InferenceHandler``."""

    def __init__(self, handler: InferenceHandler) -> None:
        self.handler = handler
        self.repo = handler.repo

    async def ServerLive(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerReadyResponse(ready=self.repo.ready())

    async def ModelReady(self, request: Any, context: Any) -> Any:
        model = self.repo.find(request.name)
        ready = model is not None and request.version in ("", model.version)
        return service_pb2.ModelReadyResponse(ready=ready)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        from mlplat_runtime import __version__

        return service_pb2.ServerMetadataResponse(name="mlplat", version=__version__, extensions=_EXTENSIONS)

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        try:
            m = self.repo.get(request.name, request.version or None)
        except MlplatError as exc:
            await _abort(context, exc)
        tensor = service_pb2.ModelMetadataResponse.TensorMetadata
        return service_pb2.ModelMetadataResponse(
            name=m.name,
            versions=[m.version],
            platform=protocol.PLATFORM,
            inputs=[tensor(name=s.name, datatype=s.datatype, shape=s.shape) for s in m.inputs.values()],
            outputs=[tensor(name=s.name, datatype=s.datatype, shape=s.shape) for s in m.outputs],
        )

    async def ModelConfig(self, request: Any, context: Any) -> Any:
        try:
            m = self.repo.get(request.name, request.version or None)
        except MlplatError as exc:
            await _abort(context, exc)
        config = json_format.ParseDict(
            model_config_of(m), model_config_pb2.ModelConfig(), ignore_unknown_fields=True
        )
        return service_pb2.ModelConfigResponse(config=config)

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        t0 = time.perf_counter()
        name, version, code = request.model_name, "", 200
        model: Any = None
        inputs: dict[str, np.ndarray] | None = None
        predlog = self.handler.predlog
        try:
            model = self.repo.get(name, request.model_version or None)
            version = model.version
            inputs = decode_inputs(request, model.inputs)
            known = model.output_names
            names = tuple(o.name for o in request.outputs) or known
            for n in names:
                if n not in known:
                    raise RequestError(f"unknown output '{n}'; the model's outputs are {list(known)}")
            arrays = await self.handler.run(model, inputs, names)
            rid = request.id
            if predlog is not None:  # the prediction log, as on REST; the response echoes its id
                rid = predlog.capture(model, request.id or None, inputs, names, arrays, t0)
            return encode_response(model.name, model.version, rid, names, arrays)
        except MlplatError as exc:
            code = exc.http_status
            if predlog is not None and model is not None:  # a failure of a known model is logged
                predlog.capture_failure(model, request.id or None, inputs, code, exc.message, t0)
            await _abort(context, exc)
        except Exception as exc:
            code = 500
            log.exception("internal error on gRPC ModelInfer %s", name)
            if predlog is not None and model is not None:
                error = f"internal error: {type(exc).__name__}: {exc}"
                predlog.capture_failure(model, request.id or None, inputs, code, error, t0)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")
        finally:
            found = self.repo.find(name) is not None
            self.handler.metrics.observe_request(
                name if found else "", version, "grpc_infer", code, time.perf_counter() - t0
            )


def decode_inputs(request: Any, slots: Any) -> dict[str, np.ndarray]:
    """The request's tensors as arrays in the signature's order, each checked against it."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise RequestError(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs")
    arrays: dict[str, np.ndarray] = {}
    for i, tensor in enumerate(request.inputs):
        slot = slots.get(tensor.name)
        if slot is None:
            raise RequestError(f"unknown input '{tensor.name}'; the model expects {sorted(slots)}")
        if tensor.name in arrays:
            raise RequestError(f"input '{tensor.name}' appears twice")
        if raw:
            data: Any = raw[i]
        else:
            field = _CONTENTS.get(tensor.datatype)
            if field is None:
                raise RequestError(f"input '{tensor.name}': send {tensor.datatype} as raw_input_contents")
            data = getattr(tensor.contents, field)
        arrays[tensor.name] = protocol.tensor_from_parts(slot, tensor.datatype, tensor.shape, data)
    if len(arrays) != len(slots):
        missing = [n for n in slots if n not in arrays]
        raise RequestError(f"missing input(s) {missing}; the model expects {list(slots)}")
    return {n: arrays[n] for n in slots}


def encode_response(name: str, version: str, req_id: str, names: Any, arrays: list[np.ndarray]) -> Any:
    out = service_pb2.ModelInferResponse(model_name=name, model_version=version, id=req_id)
    for n, arr in zip(names, arrays, strict=True):
        datatype = protocol._DTYPE_TO_OIP.get(arr.dtype)
        if datatype is None:
            raise RequestError(f"output '{n}' has dtype {arr.dtype}, which OIP cannot carry")
        out.outputs.add(name=n, datatype=datatype, shape=arr.shape)
        flat = np.ascontiguousarray(arr)
        out.raw_output_contents.append(flat.astype(flat.dtype.newbyteorder("<"), copy=False).tobytes())
    return out


class RepositoryServicer(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """The admin side's gRPC face: the repository extension over ``Repository``, with the
    admin bearer token. Every other method answers UNIMPLEMENTED (the base class)."""

    def __init__(self, control: Repository | ModelControl, token: str) -> None:
        if not token:
            raise ServiceError("the admin token is empty")
        # this process's repository, or (--workers N) the supervisor's pool of workers
        self.control: ModelControl = LocalControl(control) if isinstance(control, Repository) else control
        self._expected = f"Bearer {token}".encode()

    async def _check(self, context: Any) -> None:
        got = b""
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                got = value.encode() if isinstance(value, str) else bytes(value)
        if not hmac.compare_digest(got, self._expected):
            await _abort(
                context,
                AuthError(
                    "missing or wrong admin token", hint="send metadata 'authorization: Bearer <token>'"
                ),
            )

    async def RepositoryIndex(self, request: Any, context: Any) -> Any:
        await self._check(context)
        index = service_pb2.RepositoryIndexResponse
        models = [
            index.ModelIndex(name=e.name, version=e.version, state=str(e.state), reason=e.reason)
            for e in await self.control.index()
            if not request.ready or str(e.state) == "READY"
        ]
        return index(models=models)

    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:
        await self._check(context)
        try:
            bundle, allow, batching = load_parameters(request.parameters)
            # as on the REST admin port (a worker thread, or the workers' two-phase swap): the
            # loop keeps serving meanwhile
            await self.control.load(
                bundle, name=request.model_name, allow_signature_change=allow, batching=batching
            )
        except MlplatError as exc:
            await _abort(context, exc)
        return service_pb2.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:
        await self._check(context)
        try:
            await self.control.unload(request.model_name)
        except MlplatError as exc:
            await _abort(context, exc)
        return service_pb2.RepositoryModelUnloadResponse()


def load_parameters(params: Any) -> tuple[str, bool, BatchingConfig | bool | None]:
    """(bundle, allow_signature_change, batching) from a RepositoryModelLoad's parameters."""
    bundle: str | None = None
    allow = False
    batching: BatchingConfig | bool | None = None
    for key in params:
        value = params[key]
        kind = value.WhichOneof("parameter_choice")
        if key == "bundle" and kind == "string_param":
            bundle = value.string_param
        elif key == "allow_signature_change" and kind == "bool_param":
            allow = value.bool_param
        elif key == "dynamic_batching" and kind == "bool_param" and not value.bool_param:
            batching = False
        elif key == "dynamic_batching" and kind == "string_param":
            try:
                raw = orjson.loads(value.string_param)
            except orjson.JSONDecodeError:
                raise RequestError("dynamic_batching must be a JSON object, or the bool false") from None
            if not isinstance(raw, dict):
                raise RequestError("dynamic_batching must be a JSON object, or the bool false")
            batching = BatchingConfig.parse(raw)
        elif key == "config" and kind == "string_param":
            bundle, config_batching = _from_triton_config(value.string_param, bundle)
            batching = config_batching if batching is None else batching
        elif key.startswith("file:"):
            raise RequestError(
                "file overrides are not supported: mlplat loads a bundle by path",
                hint="send the parameter bundle (a string) with the path the serving process sees",
            )
        else:
            raise RequestError(
                f"unknown or mistyped load parameter '{key}' ({kind})",
                hint="known: bundle (string), allow_signature_change (bool), dynamic_batching "
                "(JSON object as a string, or false), config (a Triton model config as JSON)",
            )
    if not bundle:
        raise RequestError(
            "bad load request: no bundle given",
            hint="send the parameter bundle (a string), or a config whose parameters.bundle"
            ".string_value is the bundle's path",
        )
    return bundle, allow, batching


def _from_triton_config(text: str, bundle: str | None) -> tuple[str | None, BatchingConfig | None]:
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise RequestError(f"config is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise RequestError("config must be a JSON object (a Triton model config)")
    params = doc.get("parameters") or {}
    named = params.get("bundle") if isinstance(params, dict) else None
    if isinstance(named, dict) and isinstance(named.get("string_value"), str):
        bundle = named["string_value"]
    if "dynamic_batching" not in doc:
        return bundle, None
    dyn = doc.get("dynamic_batching") or {}
    groups = doc.get("instance_group") or [{}]
    raw: dict[str, Any] = {"max_batch_size": doc.get("max_batch_size", 32)}
    if isinstance(dyn, dict):
        if "preferred_batch_size" in dyn:
            raw["preferred_batch_sizes"] = dyn["preferred_batch_size"]
        if "max_queue_delay_microseconds" in dyn:  # int64: a string in protobuf's JSON
            delay = dyn["max_queue_delay_microseconds"]
            if not (isinstance(delay, int) or (isinstance(delay, str) and delay.isdigit())):
                raise RequestError(f"config.dynamic_batching.max_queue_delay_microseconds: {delay!r}")
            raw["max_queue_delay_us"] = int(delay)
    if isinstance(groups, list) and groups and isinstance(groups[0], dict) and "count" in groups[0]:
        raw["instances"] = groups[0]["count"]
    return bundle, BatchingConfig.parse(raw)


async def start_admin_grpc(
    control: Repository | ModelControl, token: str, host: str, port: int
) -> tuple[Any, int]:
    """Start the admin side's gRPC server (the repository extension) on this event loop;
    (server, the port it listens on). Bind it like the REST admin port (loopback by default)."""
    options = [
        ("grpc.max_receive_message_length", 1024 * 1024),
        ("grpc.max_send_message_length", 16 * 1024 * 1024),
        ("grpc.so_reuseport", 0),
    ]
    server = grpc.aio.server(options=options)
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(RepositoryServicer(control, token), server)
    return server, await _listen(server, host, port, "admin gRPC API")


async def _listen(server: Any, host: str, port: int, what: str) -> int:
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise ServiceError(f"cannot listen on {address} for the {what}: {exc}") from None
    if not bound:
        raise ServiceError(
            f"cannot listen on {address} for the {what}",
            hint="another process holds the port; stop it or pick another port",
        )
    await server.start()
    return int(bound)


async def start_grpc(
    handler: InferenceHandler, host: str, port: int, *, reuse_port: bool = False
) -> tuple[Any, int]:
    """Start the gRPC server on this event loop; (server, the port it listens on).

    ``reuse_port``: several worker processes serve one port (SO_REUSEPORT; the supervisor
    holds the port), else a port in use is an error here, as on the REST ports."""
    options = [
        ("grpc.max_receive_message_length", MAX_BODY),
        ("grpc.max_send_message_length", MAX_BODY),
        ("grpc.so_reuseport", 1 if reuse_port else 0),
    ]
    server = grpc.aio.server(options=options)
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(handler), server)
    return server, await _listen(server, host, port, "gRPC API")
