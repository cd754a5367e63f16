"""A hand-written inference app: Starlette + uvicorn (uvloop, httptools) + ONNX Runtime.

The peer a team writes when it does not take an inference server: one route per Open
Inference Protocol v2 call it needs (``/v2/health/ready``, ``/v2/models/{name}/ready``,
``POST /v2/models/{name}/infer``, JSON tensors only), orjson for the body, the ONNX Runtime
call made straight in the handler (a microsecond model gains nothing from a thread hop), no
access log. The session uses the settings mlplat's serving uses (one intra-op thread, no
spinning), so the two differ only in what surrounds the model call.

Runs in the project's virtualenv, which has what ``uvicorn[standard]`` adds for speed (uvloop,
httptools); without them uvicorn falls back to asyncio and h11, and this script says so.

    .venv/bin/python bench/peers/starlette_app.py MODEL.onnx --name NAME --port PORT
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32, "BOOL": np.bool_}
NAMES = {np.dtype(v): k for k, v in DTYPES.items()}


def make_app(model_path: str, name: str) -> Starlette:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(model_path, sess_options=opts, providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs()]

    def error(status: int, message: str) -> Response:
        return Response(orjson.dumps({"error": message}), status, media_type="application/json")

    async def ready(request: Request) -> Response:
        if request.path_params.get("model", name) != name:
            return error(404, "model not found")
        return Response(b"", 200)

    async def infer(request: Request) -> Response:
        if request.path_params["model"] != name:
            return error(404, "model not found")
        try:
            doc: dict[str, Any] = orjson.loads(await request.body())
            feed = {
                t["name"]: np.asarray(t["data"], dtype=DTYPES[t["datatype"]]).reshape(t["shape"])
                for t in doc["inputs"]
            }
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            return error(400, f"bad request: {exc}")
        results = session.run(outputs, feed)
        body = {
            "model_name": name,
            "outputs": [
                {"name": n, "datatype": NAMES[r.dtype], "shape": list(r.shape), "data": r.ravel()}
                for n, r in zip(outputs, results, strict=True)
            ],
        }
        return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")

    return Starlette(
        routes=[
            Route("/v2/health/ready", ready),
            Route("/v2/models/{model}/ready", ready),
            Route("/v2/models/{model}/infer", infer, methods=["POST"]),
        ]
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="the ONNX model file")
    ap.add_argument("--name", required=True, help="the model name in the URL")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    a = ap.parse_args()
    fast = all(importlib.util.find_spec(m) for m in ("uvloop", "httptools"))
    if not fast:
        print("uvloop/httptools missing: install uvicorn[standard] for the fast stack", file=sys.stderr)
    uvicorn.run(
        make_app(a.model, a.name),
        host=a.host,
        port=a.port,
        loop="uvloop" if fast else "asyncio",
        http="httptools" if fast else "h11",
        access_log=False,
        log_level="warning",
        lifespan="off",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
