"""Large JSON inference bodies are decoded in a child process, so they cannot stall the loop.

Parsing JSON (orjson) and turning nested lists into arrays (numpy) hold the GIL for the whole
call: measured, a 13 MB body held every other client up for ~250 ms even from a worker thread,
and a 60 MB one for 1.4 s. In a child process the parse costs the server only the pipe copies,
which release the GIL. Bodies under ``CHILD_BYTES`` of JSON (every normal request, and binary
tensor bodies whose JSON header is small) never come here.

Wire format (like ``checker``): frames of a 4-byte big-endian length and a payload. The parent
sends a JSON header (the signature, the header length) and the body; the child answers a JSON
frame (the decoded request's fields, or the error and its status) and, on success, one frame
with the input arrays' bytes back to back. No pickle: arrays travel as raw bytes with their
dtype and shape. One child, one request at a time; a child that dies is replaced on the next use.

Run as ``python -m mlplat_runtime.serving.decoder`` (the parent does that). Imports numpy and
orjson only in the child; must not import onnxruntime, textual, mlflow, docker or mlplat_tui.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import IO, Any

import numpy as np

from mlplat_runtime.bundle.manifest import TensorSpec
from mlplat_runtime.errors import MlplatError, RequestError, ServiceError
from mlplat_runtime.serving.checker import _read_child_frame, _write_frame
from mlplat_runtime.serving.protocol import InferRequest, TensorSlot, decode_infer_request

CHILD_BYTES = 1024 * 1024  # JSON bytes above which a body is decoded in the child


def _spec(slot: TensorSlot) -> dict[str, Any]:
    return {"name": slot.name, "datatype": slot.datatype, "shape": list(slot.shape)}


class DecoderProcess:
    """The parent's handle on the decode child. Thread-safe (calls are serialized)."""

    def __init__(self, *, python: str = sys.executable) -> None:
        self.python = python
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            self._start()

    def _start(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        self._stop()
        self._proc = subprocess.Popen(
            [self.python, "-m", "mlplat_runtime.serving.decoder"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
            start_new_session=True,
        )

    def decode(
        self,
        body: bytes | memoryview,
        inputs: Mapping[str, TensorSlot],
        outputs: Sequence[TensorSlot],
        *,
        header_length: int | None,
    ) -> InferRequest:
        header = json.dumps(
            {
                "header_length": header_length,
                "inputs": [_spec(s) for s in inputs.values()],
                "outputs": [_spec(s) for s in outputs],
            }
        ).encode()
        with self._lock:
            self._start()
            proc = self._proc
            assert proc is not None and proc.stdin is not None and proc.stdout is not None
            try:
                _write_frame(proc.stdin, header)
                _write_frame(proc.stdin, bytes(body))
                proc.stdin.flush()
                reply_raw = _read_child_frame(proc.stdout)
                if reply_raw is None:
                    raise EOFError
                reply = json.loads(reply_raw)
                blob = _read_child_frame(proc.stdout) if reply.get("ok") else b""
                if blob is None:
                    raise EOFError
            except (BrokenPipeError, EOFError, ConnectionError, OSError, ValueError):
                self._stop()
                raise ServiceError("the body decoder stopped while decoding this request; retry") from None
        if not reply.get("ok"):
            err = RequestError(str(reply.get("error")))
            err.http_status = int(reply.get("status", 400))
            raise err
        arrays: dict[str, np.ndarray] = {}
        offset = 0
        view = memoryview(blob)
        for item in reply["arrays"]:
            size = int(item["size"])
            arrays[item["name"]] = np.frombuffer(
                view[offset : offset + size], dtype=np.dtype(item["dtype"])
            ).reshape(item["shape"])
            offset += size
        return InferRequest(reply["id"], arrays, tuple(reply["outputs"]), frozenset(reply["binary"]))

    def _stop(self) -> None:
        proc = self._proc
        self._proc = None
        if proc is None:
            return
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)

    def close(self) -> None:
        with self._lock:
            self._stop()


def _answer(out: IO[bytes], reply: dict[str, Any], blob: bytes | None = None) -> None:
    _write_frame(out, json.dumps(reply).encode())
    if blob is not None:
        _write_frame(out, blob)
    out.flush()


def child_main() -> int:
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    while True:
        header = _read_child_frame(inp)
        body = _read_child_frame(inp) if header is not None else None
        if header is None or body is None:
            return 0
        try:
            req = json.loads(header)
            inputs = {s["name"]: TensorSlot.from_spec(TensorSpec.model_validate(s)) for s in req["inputs"]}
            outs = [TensorSlot.from_spec(TensorSpec.model_validate(s)) for s in req["outputs"]]
            decoded = decode_infer_request(body, inputs, outs, header_length=req["header_length"])
        except MlplatError as exc:
            _answer(out, {"ok": False, "error": exc.message, "status": exc.http_status})
            continue
        except Exception as exc:  # a bug, not the client's fault: say so, keep the loop alive
            _answer(out, {"ok": False, "error": f"decoding failed: {type(exc).__name__}", "status": 500})
            continue
        parts = []
        meta = []
        for name, arr in decoded.inputs.items():
            arr = np.ascontiguousarray(arr)
            raw = arr.tobytes()
            parts.append(raw)
            meta.append({"name": name, "dtype": arr.dtype.str, "shape": list(arr.shape), "size": len(raw)})
        reply = {
            "ok": True,
            "id": decoded.id,
            "outputs": list(decoded.outputs),
            "binary": sorted(decoded.binary),
            "arrays": meta,
        }
        _answer(out, reply, b"".join(parts))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(child_main())
