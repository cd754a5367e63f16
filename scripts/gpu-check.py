#!/usr/bin/env python3
"""Prove that serving runs on the GPU: build a small model into a bundle, serve it with
``python -m mlplat_runtime.serving`` (providers chosen the normal way, no override), and check
that the model metadata reports ``CUDAExecutionProvider`` and that its answers match ONNX
Runtime on the CPU.

Exits 0 when CUDA serves; otherwise prints why (no CUDA build of onnxruntime, no driver or
device, or CUDA libraries missing so ORT fell back to CPU) and exits 1. Loopback only.

    .venv/bin/python scripts/gpu-check.py
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "runtime"))

NAME = "gpu-check"
LINE = re.compile(r"^mlplat serving url=(\S+) model=\S+ version=\S+ provider=(\S+) admin=")


def build_model(path: Path) -> Path:
    """A two-layer MLP (64 -> 256 -> 8), big enough that a GPU kernel actually runs."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = rng.normal(scale=0.1, size=(64, 256)).astype(np.float32)
    w2 = rng.normal(scale=0.1, size=(256, 8)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "W1"], ["h0"]),
            helper.make_node("Relu", ["h0"], ["h"]),
            helper.make_node("MatMul", ["h", "W2"], ["output"]),
        ],
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 8])],
        initializer=[numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(w2, "W2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def get_json(url: str, body: object | None = None) -> dict[str, object]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def probe(url: str, model: Path) -> tuple[str, bool]:
    """(execution provider from the model metadata, whether the answers match ORT on the CPU)."""
    import onnxruntime as ort

    meta = get_json(f"{url}/v2/models/{NAME}")
    provider = str(meta["parameters"]["execution_provider"])  # type: ignore[index]
    x = np.random.default_rng(1).normal(size=(32, 64)).astype(np.float32)
    t = time.perf_counter()
    doc = get_json(
        f"{url}/v2/models/{NAME}/infer",
        {"inputs": [{"name": "input", "shape": [32, 64], "datatype": "FP32", "data": x.tolist()}]},
    )
    ms = (time.perf_counter() - t) * 1e3
    got = np.asarray(doc["outputs"][0]["data"], dtype=np.float32).reshape(32, 8)  # type: ignore[index]
    (want,) = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    close = bool(np.allclose(got, want, rtol=1e-2, atol=1e-3))  # TF32 on GPU moves low digits
    print(f"metadata execution_provider: {provider}; one request {ms:.1f} ms; matches CPU: {close}")
    return provider, close


def main() -> int:
    import onnxruntime as ort

    from mlplat_runtime.bundle import build_bundle
    from mlplat_runtime.providers import CUDA, choose_providers, cuda_device_count, gpu_info

    available = ort.get_available_providers()
    print(f"onnxruntime {ort.__version__}; providers in this build: {', '.join(available)}")
    print(f"GPU (nvidia-smi): {gpu_info() or 'none'}; CUDA driver devices: {cuda_device_count()}")
    print(f"serving would choose: {choose_providers()}")
    if os.environ.get("MLPLAT_PROVIDERS"):
        print(f"note: MLPLAT_PROVIDERS={os.environ['MLPLAT_PROVIDERS']} overrides the choice")

    work = Path(tempfile.mkdtemp(prefix="mlplat-gpu-check-"))
    bundle = build_bundle(build_model(work / "model.onnx"), NAME, work / "bundle", version="1")
    log = work / "serving.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlplat_runtime.serving", str(bundle), "--port", "0", "--admin-port", "0",
             "--admin-token-file", str(work / "admin.token")],
            stdout=subprocess.PIPE, stderr=err, text=True, cwd=REPO,
        )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        m = LINE.match(line)
        print(line or "(no start-up line)")
        provider, close = probe(m[1], work / "model.onnx") if m else ("", False)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log_tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-5:])
        shutil.rmtree(work, ignore_errors=True)

    if provider == CUDA and close:
        print("PASS: the model is served by CUDAExecutionProvider")
        return 0
    if not provider:
        print(f"FAIL: serving did not start. Serving log: {log_tail}")
    elif not close:
        print("FAIL: the served outputs differ from ONNX Runtime on the CPU")
    elif CUDA not in available:
        print("FAIL: served on CPU: this onnxruntime has no CUDA provider (install onnxruntime-gpu)")
    elif cuda_device_count() == 0:
        print(
            "FAIL: served on CPU: no usable GPU (libcuda.so.1 did not load, or the driver reports 0 devices)"
        )
    else:
        print(
            "FAIL: served on CPU although a GPU is visible: ONNX Runtime could not create the CUDA provider "
            "(CUDA/cuDNN libraries missing? try `pip install 'onnxruntime-gpu[cuda,cudnn]'`). "
            f"Serving log: {log_tail}"
        )
    return 1


if __name__ == "__main__":
    from mlplat_runtime.errors import MlplatError

    try:
        sys.exit(main())
    except MlplatError as exc:
        print(f"FAIL: {exc}")
        sys.exit(1)
