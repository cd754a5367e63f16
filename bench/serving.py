"""Benchmark: mlplat serving beside its peers, shapes and modes, all in one interleaved run.

One run, one machine, every server measured the same way (``bench/peers/load.py``):

Servers (all on 127.0.0.1, all serving the same ONNX files with the same ONNX Runtime settings:
one intra-op thread, no spinning):
- ``mlplat``: ``python -m mlplat_runtime.serving`` on a bundle of the model (REST and gRPC);
- ``mlplat-w2``: the same with ``--workers 2``, when this serving has the flag;
- ``starlette``: a hand-written Starlette + uvicorn (uvloop, httptools) + ONNX Runtime app
  (``bench/peers/starlette_app.py``);
- ``mlserver``: MLServer in its own virtualenv (``bash bench/peers/mlserver/setup.sh`` makes
  ``bench/.venv-mlserver``) with a small ONNX Runtime runtime, tuned as its docs advise
  (``bench/peers/mlserver/config.py``: a parallel worker per core, no debug log, no gzip, no
  metrics server) (REST and gRPC);
- ``mlflow``: ``mlflow models serve --env-manager local`` on the same model as an MLflow
  sklearn model;
- an MLP (64 -> 2048 -> 2048 -> 10, ReLU, softmax: 17 MB of weights, more than this machine's
  L3 cache, so a one-row call is memory-bound (~1.7 ms here) while a 32-row call costs about 3x
  one row, and the JSON of one row is small: the case dynamic batching is for):
  ``mlplat-mlp`` (one ONNX Runtime call per request), ``mlplat-mlp-batch``
  (``--max-batch-size 32``) and ``mlserver-mlp-batch`` (adaptive batching,
  ``max_batch_size`` 32, ``max_batch_time`` from ``--mlserver-batch-time``).

Points (each 3 runs of 3 s, round-robin over all points per repeat so drifting machine load
hits every server alike; medians shown with the spread min-max; server CPU µs per request from
``/proc`` over the server's whole process tree):
- one-row JSON at 1/8/32 connections: mlplat, starlette, mlserver, mlflow (and mlplat-w2 at 8);
- 1/32/1,024 rows per request, JSON and the binary tensor extension, 8 connections (mlplat),
  against in-process ONNX Runtime rows/s at the same batch sizes (measured in every repeat,
  medians); 1,024 rows also with
  mlplat-w2 (the issue fixes no worker count: the 1,024-row checks take the better of 1 and 2
  workers, say which, and show the 1-worker figure beside it);
- the MLP, one row per request, at 32 connections: without batching, with batching, MLServer
  with adaptive batching; and at 1 connection;
- gRPC one-row at 8 requests in flight: mlplat and MLServer (the same client for both);
- time to ready (``mlplat serve``, median of 5, the project's bytecode compiled first, as an
  installed package has it) and hot-swap time through the admin API.

Targets, PASS/FAIL each; exits 1 when one is missed:
- one-row JSON at 8 connections: req/s >= 1.5x the best peer in the same run, server CPU per
  request <= 0.6x that peer's; >= 10x mlflow; p99 <= 3 ms; no failed mlplat request;
- binary at 1,024 rows >= 30% of in-process ONNX Runtime rows/s; JSON at 1,024 rows >= 3x 0.62M
  rows/s (the figure before this benchmark grew);
- the MLP at 32 connections with batching >= 4x without and >= 2.5x MLServer's adaptive batching,
  p99 no worse than MLServer's; with batching on, one connection at least as fast as without;
- gRPC one-row req/s >= MLServer's gRPC;
- time to ready <= 0.5 s, swap <= 50 ms.

Prerequisites (the benchmark installs nothing; it says what is missing and measures the rest):
``wrk`` (``apt-get install -y wrk``; else a slower asyncio client, figures are lower bounds),
``bash bench/peers/mlserver/setup.sh`` (else no MLServer points, and its targets FAIL), the
project venv (mlflow, skl2onnx, uvicorn[standard], grpcio, tritonclient). Only 127.0.0.1.

    .venv/bin/python bench/serving.py [--quick] [--duration 3] [--repeats 3] [--starts 5]
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import http.client
import importlib.util
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

# No usage telemetry from MLflow (here or in the server it starts): no internet here, and its
# background sender would only add noise to both sides of the comparison.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# The CPU path, for mlplat as for the peers (which run ONNX Runtime on CPU); a GPU machine's
# CUDA provider is scripts/gpu-check.py's to measure. Set it to measure something else.
os.environ.setdefault("MLPLAT_PROVIDERS", "CPUExecutionProvider")
REPO = Path(__file__).resolve().parents[1]
PEERS = REPO / "bench" / "peers"
sys.path.insert(0, str(REPO / "runtime"))
sys.path.insert(0, str(PEERS))
import load as L  # noqa: E402  (bench/peers/load.py)

BIN = Path(sys.executable).parent
HOST = L.HOST
NAME = "bench-logreg"
MLP_NAME = "bench-mlp"
MLP_IN, MLP_HIDDEN, MLP_OUT = 64, (2048, 2048), 10
ROW = [0.1, -0.2, 0.3, 0.4]
MLFLOW_BODY = json.dumps({"inputs": [ROW]}).encode()
JSON_1024_BEFORE = 0.62e6  # rows/s, JSON at 1,024 rows, before this benchmark grew (issue 13)
TARGETS = {
    "ratio_8": 10.0,
    "p99_8_ms": 3.0,
    "ready_s": 0.5,
    "swap_ms": 50.0,
    "peer_rps": 1.5,
    "peer_cpu": 0.6,
    "binary_1024_of_ort": 0.30,
    "json_1024_x": 3.0,
    "mlp_batch_x": 4.0,
    "mlp_vs_mlserver": 2.5,
}
ROWS = (1, 32, 1024)


def _import_file(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mlserver_cfg = _import_file("mlserver_peer_config", PEERS / "mlserver" / "config.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def http_status(port: int, method: str, path: str) -> int:
    try:
        conn = http.client.HTTPConnection(HOST, port, timeout=2)
        conn.request(method, path)
        status = conn.getresponse().status
        conn.close()
        return status
    except OSError:
        return 0


def post(port: int, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=120)
    conn.request("POST", path, body=body, headers=headers or {"Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, data


def post_json(port: int, path: str, body: object, token: str | None = None) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    status, data = post(port, path, json.dumps(body).encode(), headers)
    return status, json.loads(data or b"{}")


LOGS: dict[int, Path] = {}  # server pid -> its log, for the reason a start failed


def log_tail(proc: subprocess.Popen[bytes]) -> str:
    log = LOGS.get(proc.pid)
    return log.read_text(errors="replace")[-1500:] if log and log.exists() else ""


def wait_ready(proc: subprocess.Popen[bytes], ready: Callable[[], bool], timeout: float, what: str) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if ready():
            return time.perf_counter() - t0
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode} before it was ready:\n{log_tail(proc)}")
        time.sleep(0.002)
    stop(proc)
    raise SystemExit(f"{what} not ready after {timeout} s:\n{log_tail(proc)}")


def model_ready(port: int, name: str = NAME) -> Callable[[], bool]:
    return lambda: http_status(port, "GET", f"/v2/models/{name}/ready") == 200


def spawn(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    base = env or {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }  # mlflow execs uvicorn
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=base, start_new_session=True)
    LOGS[proc.pid] = log
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # our own session: the server and what it started
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# -- models and bodies -----------------------------------------------------------------------


def build_models(work: Path) -> tuple[list[Path], Any, np.ndarray]:
    """Train; export ONNX bundles (v1, and v2/v3 for swaps). Returns (bundles, v1 model, X)."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression

    from mlplat_runtime.bundle import build_bundle

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 4)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5, 1.5]) + rng.normal(scale=0.3, size=2000) > 0).astype(np.int64)
    bundles, first = [], None
    for version, c in (("1", 1.0), ("2", 0.5), ("3", 0.25)):
        clf = LogisticRegression(C=c).fit(x, y)
        first = first or clf
        onx = convert_sklearn(
            clf, initial_types=[("input", FloatTensorType([None, 4]))], options={id(clf): {"zipmap": False}}
        )
        path = work / f"model-{version}.onnx"
        path.write_bytes(onx.SerializeToString())
        bundles.append(build_bundle(path, NAME, work / f"bundle-v{version}", version=version))
    return bundles, first, x


def build_mlp(work: Path) -> tuple[Path, Path]:
    """The MLP as ONNX (fixed random weights: serving speed does not depend on training) and its bundle."""
    from onnx import TensorProto, helper, numpy_helper

    from mlplat_runtime.bundle import build_bundle

    rng = np.random.default_rng(13)
    nodes, inits, prev, width = [], [], "input", MLP_IN
    for i, out in enumerate((*MLP_HIDDEN, MLP_OUT)):
        w = (rng.normal(size=(width, out)) / np.sqrt(width)).astype(np.float32)
        inits += [
            numpy_helper.from_array(w, f"W{i}"),
            numpy_helper.from_array(np.zeros(out, np.float32), f"b{i}"),
        ]
        nodes += [
            helper.make_node("MatMul", [prev, f"W{i}"], [f"m{i}"]),
            helper.make_node("Add", [f"m{i}", f"b{i}"], [f"z{i}"]),
        ]
        prev = f"z{i}"
        if i < len(MLP_HIDDEN):
            nodes.append(helper.make_node("Relu", [prev], [f"h{i}"]))
            prev = f"h{i}"
        width = out
    nodes.append(helper.make_node("Softmax", [prev], ["probabilities"], axis=1))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", MLP_IN])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", MLP_OUT])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = work / "mlp.onnx"
    path.write_bytes(model.SerializeToString())
    return path, build_bundle(path, MLP_NAME, work / "bundle-mlp", version="1")


def save_mlflow_model(clf: Any, x: np.ndarray, out: Path) -> Path:
    """The same v1 model as an MLflow sklearn model (what `mlflow models serve` loads)."""
    import mlflow.sklearn

    # pip_requirements given: skips MLflow's slow requirement inference, changes nothing served
    mlflow.sklearn.save_model(clf, str(out), input_example=x[:2], pip_requirements=["scikit-learn"])
    return out


def oip_json(x: np.ndarray) -> bytes:
    doc = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.tolist()}]}
    return json.dumps(doc).encode()


def oip_binary(x: np.ndarray) -> tuple[bytes, tuple[tuple[str, str], ...]]:
    """The binary tensor extension: a JSON header, then the raw tensor; outputs asked in binary too."""
    blob = np.ascontiguousarray(x, dtype="<f4").tobytes()
    doc = {
        "inputs": [
            {
                "name": "input",
                "shape": list(x.shape),
                "datatype": "FP32",
                "parameters": {"binary_data_size": len(blob)},
            }
        ],
        "parameters": {"binary_data_output": True},
    }
    header = json.dumps(doc).encode()
    headers = (
        ("Content-Type", "application/octet-stream"),
        ("Inference-Header-Content-Length", str(len(header))),
    )
    return header + blob, headers


def grpc_request(name: str, x: np.ndarray) -> bytes:
    """A serialised ``ModelInferRequest`` as tritonclient sends it (raw_input_contents)."""
    from tritonclient.grpc import service_pb2

    req = service_pb2.ModelInferRequest(model_name=name)
    t = req.inputs.add()
    t.name, t.datatype = "input", "FP32"
    t.shape.extend(x.shape)
    req.raw_input_contents.append(np.ascontiguousarray(x, dtype="<f4").tobytes())
    return bytes(req.SerializeToString())


def grpc_check(port: int, request: bytes) -> dict[str, np.ndarray]:
    """One call through grpcio; the outputs decoded (to check the servers agree before loading them)."""
    import grpc
    from tritonclient.grpc import service_pb2

    with grpc.insecure_channel(f"{HOST}:{port}") as ch:
        raw = ch.unary_unary(L.INFER_METHOD)(request, timeout=30)
    resp = service_pb2.ModelInferResponse.FromString(raw)
    dtypes = {"FP32": np.float32, "INT64": np.int64}
    out = {}
    for i, o in enumerate(resp.outputs):
        if resp.raw_output_contents:
            out[o.name] = np.frombuffer(resp.raw_output_contents[i], dtypes[o.datatype]).reshape(
                tuple(o.shape)
            )
        else:
            contents = o.contents.fp32_contents if o.datatype == "FP32" else o.contents.int64_contents
            out[o.name] = np.asarray(contents, dtypes[o.datatype]).reshape(tuple(o.shape))
    return out


def ort_rows_per_s(model: Path, x: np.ndarray, seconds: float = 1.0) -> float:
    """In-process ONNX Runtime rows/s on this batch (mlplat's session settings): the floor under serving."""
    from mlplat_runtime.providers import make_session

    sess = make_session(model, ["CPUExecutionProvider"])
    feed = {"input": x}
    for _ in range(20):
        sess.run(None, feed)
    runs = []
    for _ in range(3):
        n, t = 0, time.perf_counter()
        while time.perf_counter() - t < seconds / 3:
            sess.run(None, feed)
            n += 1
        runs.append(n * len(x) / (time.perf_counter() - t))
    return statistics.median(runs)


# -- servers -----------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    grpc_port: int | None = None
    admin_port: int | None = None
    token: str | None = None
    ready_s: float = 0.0


def start_mlplat(
    name: str, bundle: Path, work: Path, *extra: str, model: str = NAME, grpc: bool = False
) -> Server:
    port, admin, token_file = free_port(), free_port(), work / f"{name}.token"
    grpc_port = free_port() if grpc else None
    cmd = [
        sys.executable,
        "-m",
        "mlplat_runtime.serving",
        str(bundle),
        "--port",
        str(port),
        "--admin-port",
        str(admin),
        "--admin-token-file",
        str(token_file),
        *extra,
    ]
    if grpc_port:
        cmd += ["--grpc-port", str(grpc_port)]
    proc = spawn(cmd, work / f"{name}.log", dict(os.environ))
    ready = wait_ready(proc, model_ready(port, model), 120, name)
    return Server(name, proc, port, grpc_port, admin, token_file.read_text().strip(), ready)


def start_starlette(model: Path, work: Path) -> Server:
    port = free_port()
    cmd = [sys.executable, str(PEERS / "starlette_app.py"), str(model), "--name", NAME, "--port", str(port)]
    proc = spawn(cmd, work / "starlette.log")
    return Server("starlette", proc, port, ready_s=wait_ready(proc, model_ready(port), 60, "starlette"))


def start_mlserver(name: str, model: Path, model_name: str, work: Path, **settings: Any) -> Server:
    port, grpc_port = free_port(), free_port()
    root = mlserver_cfg.write_repository(
        work / name, model, model_name, http_port=port, grpc_port=grpc_port, **settings
    )
    proc = spawn(mlserver_cfg.command(root), work / f"{name}.log", mlserver_cfg.env())
    ready = wait_ready(proc, model_ready(port, model_name), 300, name)
    return Server(name, proc, port, grpc_port, ready_s=ready)


def start_mlflow(model_dir: Path, work: Path) -> Server:
    port = free_port()
    cmd = [
        str(BIN / "mlflow"),
        "models",
        "serve",
        "-m",
        str(model_dir),
        "--env-manager",
        "local",
        "-p",
        str(port),
        "-h",
        HOST,
    ]
    proc = spawn(cmd, work / "mlflow.log")
    ready = wait_ready(proc, lambda: http_status(port, "GET", "/ping") == 200, 300, "mlflow")
    return Server("mlflow", proc, port, ready_s=ready)


def serving_has_flag(flag: str) -> bool:
    out = subprocess.run(
        [sys.executable, "-m", "mlplat_runtime.serving", "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    return flag in out


# -- points ------------------------------------------------------------------------------------


@dataclass
class Spec:
    """One load point: a server, how to load it, and the runs measured so far."""

    key: str
    server: Server
    conns: int
    http: L.HttpLoad | None = None
    grpc: bytes | None = None
    rows: int = 1
    runs: list[L.Point] = field(default_factory=list)

    def run(self, duration: float, work: Path) -> None:
        if self.grpc is not None:
            assert self.server.grpc_port is not None
            port, request = self.server.grpc_port, self.grpc
            fn = lambda: L.grpc_point(port, request, self.conns, duration)  # noqa: E731
        else:
            assert self.http is not None
            load = self.http
            fn = lambda: L.http_point(load, self.conns, duration, work)  # noqa: E731
        self.runs.append(L.with_cpu(self.server.proc.pid, fn))

    def med(self, attr: str) -> float:
        vals = [getattr(p, attr) for p in self.runs if not math.isnan(getattr(p, attr))]
        return statistics.median(vals) if vals else float("nan")

    def spread(self, attr: str) -> tuple[float, float]:
        vals = [getattr(p, attr) for p in self.runs if not math.isnan(getattr(p, attr))]
        return (min(vals), max(vals)) if vals else (float("nan"), float("nan"))

    @property
    def errors(self) -> int:
        return sum(p.errors for p in self.runs)


def fmt(v: float, digits: int = 0) -> str:
    if math.isnan(v):
        return "-"
    if abs(v) >= 1e6:
        return f"{v / 1e6:.2f}M"
    if abs(v) >= 1e4:
        return f"{v / 1e3:.1f}k"
    return f"{v:.{digits}f}"


HEADER = (
    f"{'point':<38} {'':<4} {'conns':>5} | {'req/s [min–max]':<25} {'rows/s':>7} | {'p50':>6} {'p99 ms':>7}"
    f" | {'CPU µs/req [min–max]':<20} {'err':>4}"
)


def row(spec: Spec) -> str:
    lo, hi = spec.spread("rps")
    clo, chi = spec.spread("cpu_us")
    transport = "gRPC" if spec.grpc is not None else "REST"
    rps = f"{fmt(spec.med('rps')):>7} [{fmt(lo)}–{fmt(hi)}]"
    cpu = f"{fmt(spec.med('cpu_us')):>5} [{fmt(clo)}–{fmt(chi)}]"
    rows = fmt(spec.med("rps") * spec.rows)
    lat = f"{spec.med('p50_ms'):>6.2f} {spec.med('p99_ms'):>7.2f}"
    point = f"{spec.key:<38} {transport:<4} {spec.conns:>5}"
    return f"{point} | {rps:<25} {rows:>7} | {lat} | {cpu:<20} {spec.errors:>4}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=3, help="seconds per load run (default 3)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per load point (medians; default 3)")
    ap.add_argument("--starts", type=int, default=5, help="mlplat start-ups to time (median; default 5)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 repeat of 1 s, 1 start")
    ap.add_argument(
        "--mlserver-workers",
        type=int,
        default=None,
        help="MLServer parallel_workers (default: one per CPU, as its docs advise)",
    )
    ap.add_argument(
        "--mlserver-batch-time",
        type=float,
        default=0.005,
        help="MLServer max_batch_time in seconds for the MLP (default 0.005; 1-20 ms measured here"
        " were within noise of each other at 32 connections)",
    )
    ap.add_argument(
        "--mlplat-batching",
        default="--max-batch-size 32",
        help="mlplat's batching flags for the MLP (default '--max-batch-size 32')",
    )
    ap.add_argument(
        "--skip", default="", help="comma list of servers not to start: mlserver,mlflow,starlette"
    )
    args = ap.parse_args()
    if args.quick:
        args.duration, args.repeats, args.starts = 1, 1, 1
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    load_before = os.getloadavg()
    print(
        f"load average at start: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}"
        f" ({os.cpu_count()} CPUs)",
        flush=True,
    )
    missing = []
    if not L.have_wrk():
        missing.append(
            "wrk (apt-get install -y wrk): HTTP load from the asyncio client, figures are lower bounds"
        )
    if mlserver_cfg.mlserver_binary() is None and "mlserver" not in skip:
        missing.append("MLServer (bash bench/peers/mlserver/setup.sh): its points are not measured")
        skip.add("mlserver")
    has_workers = serving_has_flag("--workers")
    if not has_workers:
        missing.append("mlplat serving --workers: not available in this serving, 2-worker point skipped")
    for m in missing:
        print(f"missing: {m}", flush=True)
    # An installed package has its bytecode (pip compiles it, in the images too); a checkout has
    # it only where Python could write it, never under PYTHONDONTWRITEBYTECODE (which this
    # machine sets): compile it once, so time to ready is the start, not compiling the sources.
    for package in (REPO / "runtime" / "mlplat_runtime", REPO / "mlplat_tui"):
        compileall.compile_dir(package, quiet=1)
    work = Path(tempfile.mkdtemp(prefix="mlplat-bench-"))
    servers: list[Server] = []
    try:
        print(f"building models in {work} ...", flush=True)
        (v1, v2, v3), clf, x = build_models(work)
        mlp_model, mlp_bundle = build_mlp(work)
        rng = np.random.default_rng(1)
        batches = {n: rng.normal(size=(n, 4)).astype(np.float32) for n in ROWS}
        batches[1] = np.asarray([ROW], np.float32)
        mlp_row = rng.normal(size=(1, MLP_IN)).astype(np.float32)
        # In-process ONNX Runtime, the floor under serving: measured in every repeat beside the
        # load points (this machine's speed drifts), medians.
        ort_runs: dict[int, list[float]] = {n: [] for n in batches}
        ort_mlp_runs: dict[int, list[float]] = {1: [], 32: []}

        def measure_in_process() -> None:
            for n, b in batches.items():
                ort_runs[n].append(ort_rows_per_s(v1 / "model.onnx", b))
            for n in ort_mlp_runs:
                ort_mlp_runs[n].append(ort_rows_per_s(mlp_model, np.repeat(mlp_row, n, 0)))

        ready_times = []
        token_file = work / "admin.token"
        for i in range(max(1, args.starts)):
            port, admin = free_port(), free_port()
            cmd = [
                str(BIN / "mlplat"),
                "serve",
                str(v1),
                "--port",
                str(port),
                "--admin-port",
                str(admin),
                "--admin-token-file",
                str(token_file),
            ]
            proc = spawn(cmd, work / f"mlplat-start-{i}.log")
            try:
                ready_times.append(wait_ready(proc, model_ready(port), 60, "mlplat serve"))
            finally:
                stop(proc)

        print("starting servers ...", flush=True)
        mlplat = start_mlplat("mlplat", v1, work, grpc=True)
        servers.append(mlplat)
        w2 = start_mlplat("mlplat-w2", v1, work, "--workers", "2") if has_workers else None
        servers += [w2] if w2 else []
        star = None if "starlette" in skip else start_starlette(v1 / "model.onnx", work)
        servers += [star] if star else []
        mls = mls_mlp = None
        if "mlserver" not in skip:
            workers = {"parallel_workers": args.mlserver_workers}
            mls = start_mlserver("mlserver", v1 / "model.onnx", NAME, work, **workers)
            mls_mlp = start_mlserver(
                "mlserver-mlp-batch",
                mlp_model,
                MLP_NAME,
                work,
                **workers,
                max_batch_size=32,
                max_batch_time=args.mlserver_batch_time,
            )
            servers += [mls, mls_mlp]
        mlf = None
        if "mlflow" not in skip:
            mlf = start_mlflow(save_mlflow_model(clf, x, work / "mlflow-model"), work)
            servers.append(mlf)
        mlp = start_mlplat("mlplat-mlp", mlp_bundle, work, model=MLP_NAME)
        mlp_b = start_mlplat(
            "mlplat-mlp-batch", mlp_bundle, work, *args.mlplat_batching.split(), model=MLP_NAME
        )
        servers += [mlp, mlp_b]

        # Same model, same answers (a benchmark of servers computing different things is moot).
        rows64 = rng.normal(size=(64, 4)).astype(np.float32)
        truth = clf.predict(rows64)
        agree: dict[str, float] = {}
        for s in (mlplat, w2, star, mls):
            if s is not None:
                status, raw = post(s.port, f"/v2/models/{NAME}/infer", oip_json(rows64))
                doc = json.loads(raw)
                label = next(o["data"] for o in doc["outputs"] if o["name"] == "label")
                agree[s.name] = float(np.mean(np.ravel(label) == truth)) if status == 200 else 0.0
        if mlf is not None:
            _, raw = post(mlf.port, "/invocations", json.dumps({"inputs": rows64.tolist()}).encode())
            agree["mlflow"] = float(np.mean(np.asarray(json.loads(raw)["predictions"]) == truth))
        mlp_x = rng.normal(size=(4, MLP_IN)).astype(np.float32)
        from mlplat_runtime.providers import make_session

        mlp_truth = make_session(mlp_model, ["CPUExecutionProvider"]).run(None, {"input": mlp_x})[0]
        for s in (mlp, mlp_b, mls_mlp):
            if s is not None:
                _, raw = post(s.port, f"/v2/models/{MLP_NAME}/infer", oip_json(mlp_x))
                got = np.asarray(json.loads(raw)["outputs"][0]["data"], np.float32).reshape(mlp_truth.shape)
                agree[s.name] = float(np.allclose(got, mlp_truth, atol=1e-5))
        one_grpc = grpc_request(NAME, batches[1])
        expected_label = clf.predict(batches[1])
        for s in (mlplat, mls):
            if s is not None:
                out = grpc_check(s.grpc_port, one_grpc)  # type: ignore[arg-type]
                agree[f"{s.name} gRPC"] = float(np.array_equal(np.ravel(out["label"]), expected_label))

        # The points, round-robin per repeat.
        path = f"/v2/models/{NAME}/infer"
        one = L.HttpLoad(mlplat.port, path, oip_json(batches[1]))
        specs: list[Spec] = []
        for c in (1, 8, 32):
            specs.append(Spec("one-row JSON: mlplat", mlplat, c, one))
            for s in (star, mls):
                if s is not None:
                    specs.append(Spec(f"one-row JSON: {s.name}", s, c, L.HttpLoad(s.port, path, one.body)))
            if mlf is not None:
                specs.append(
                    Spec("one-row JSON: mlflow", mlf, c, L.HttpLoad(mlf.port, "/invocations", MLFLOW_BODY))
                )
        if w2 is not None:
            for c in (8, 32):
                specs.append(
                    Spec("one-row JSON: mlplat-w2 (--workers 2)", w2, c, L.HttpLoad(w2.port, path, one.body))
                )
        for n in ROWS:
            if n != 1:
                specs.append(
                    Spec(
                        f"{n} rows JSON: mlplat",
                        mlplat,
                        8,
                        L.HttpLoad(mlplat.port, path, oip_json(batches[n])),
                        rows=n,
                    )
                )
            body, headers = oip_binary(batches[n])
            specs.append(
                Spec(
                    f"{n} rows binary: mlplat",
                    mlplat,
                    8,
                    L.HttpLoad(mlplat.port, path, body, headers),
                    rows=n,
                )
            )
        if w2 is not None:  # the 1,024-row points with 2 workers too (the issue fixes no count)
            body, headers = oip_binary(batches[1024])
            specs.append(
                Spec(
                    "1024 rows JSON: mlplat-w2 (--workers 2)",
                    w2,
                    8,
                    L.HttpLoad(w2.port, path, oip_json(batches[1024])),
                    rows=1024,
                )
            )
            specs.append(
                Spec(
                    "1024 rows binary: mlplat-w2 (--workers 2)",
                    w2,
                    8,
                    L.HttpLoad(w2.port, path, body, headers),
                    rows=1024,
                )
            )
        mlp_path = f"/v2/models/{MLP_NAME}/infer"
        mlp_body = oip_json(mlp_row)
        for c in (32, 1):
            for s in (mlp, mlp_b, mls_mlp):
                if s is not None:
                    specs.append(Spec(f"MLP one row: {s.name}", s, c, L.HttpLoad(s.port, mlp_path, mlp_body)))
        for s in (mlplat, mls):
            if s is not None:
                specs.append(Spec(f"one-row gRPC: {s.name}", s, 8, grpc=one_grpc))
        minutes = len(specs) * args.repeats * (args.duration + 0.6) / 60
        print(
            f"{len(specs)} points x {args.repeats} x {args.duration} s (about {minutes:.0f} min) ...",
            flush=True,
        )
        for r in range(max(1, args.repeats)):
            measure_in_process()
            for spec in specs:
                spec.run(args.duration, work)
            print(f"  repeat {r + 1} done", flush=True)
        ort_rows = {n: statistics.median(v) for n, v in ort_runs.items()}
        ort_mlp = {n: statistics.median(v) for n, v in ort_mlp_runs.items()}

        swaps, rtts = [], []
        for i in range(6):
            bundle = (v2, v3)[i % 2]
            t = time.perf_counter()
            status, doc = post_json(
                mlplat.admin_port or 0,
                f"/v2/repository/models/{NAME}/load",
                {"parameters": {"bundle": str(bundle)}},
                mlplat.token,
            )
            rtts.append((time.perf_counter() - t) * 1e3)
            if status != 200:
                raise SystemExit(f"swap failed: {doc}")
            swaps.append(float(doc["swap_ms"]))
    finally:
        for s in servers:
            stop(s.proc)
        shutil.rmtree(work, ignore_errors=True)

    load_after = os.getloadavg()
    gen = "wrk (1 thread)" if L.have_wrk() else "asyncio keep-alive client (no wrk installed)"
    print(
        f"\nHTTP load: {gen}; gRPC load: {L.grpc_processes()} grpc.aio client processes;"
        f" {args.repeats} x {args.duration} s per point, round-robin, medians [min–max];"
        f" {os.cpu_count()} CPUs"
    )
    print(
        f"load average at start {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
        f"at end {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}"
    )
    print("answers agree with the source model: " + ", ".join(f"{k} {v:.0%}" for k, v in agree.items()))
    print(
        "in-process ONNX Runtime rows/s (logreg, medians of each repeat [min-max]): "
        + ", ".join(
            f"{n} rows {fmt(v)} [{fmt(min(ort_runs[n]))}-{fmt(max(ort_runs[n]))}]"
            for n, v in ort_rows.items()
        )
    )
    print(
        "in-process ONNX Runtime rows/s (MLP): "
        + ", ".join(
            f"{n} rows {fmt(v)} [{fmt(min(ort_mlp_runs[n]))}-{fmt(max(ort_mlp_runs[n]))}]"
            for n, v in ort_mlp.items()
        )
    )
    ready = statistics.median(ready_times)
    starts = ", ".join(f"{t:.3f}" for t in ready_times)
    print(
        f"time to ready: mlplat serve {ready:.3f} s (median of {starts}); "
        + ", ".join(f"{s.name} {s.ready_s:.2f} s" for s in servers)
    )
    swap = statistics.median(rtts)
    print(
        f"hot swap: median {statistics.median(swaps):.1f} ms server-side, {swap:.1f} ms round trip"
        f" (max {max(rtts):.1f} ms)"
    )
    print(f"\n{HEADER}")
    for spec in specs:
        print(row(spec))

    by = {(s.key, s.conns): s for s in specs}
    checks: list[tuple[str, bool, str]] = []

    def get(key: str, conns: int) -> Spec | None:
        return by.get((key, conns))

    ours8 = get("one-row JSON: mlplat", 8)
    assert ours8 is not None
    peers8 = [p for n in ("starlette", "mlserver", "mlflow") if (p := get(f"one-row JSON: {n}", 8))]
    if peers8:
        best = max(peers8, key=lambda p: p.med("rps"))
        ratio = ours8.med("rps") / best.med("rps")
        cpu = ours8.med("cpu_us") / best.med("cpu_us")
        peer = best.server.name
        checks.append(
            (
                f"one-row JSON at 8 conns >= 1.5x the best peer ({peer})",
                ratio >= TARGETS["peer_rps"],
                f"{ratio:.2f}x ({fmt(ours8.med('rps'))} vs {fmt(best.med('rps'))} req/s)",
            )
        )
        checks.append(
            (
                f"server CPU per request <= 0.6x {peer}'s",
                cpu <= TARGETS["peer_cpu"],
                f"{cpu:.2f}x ({ours8.med('cpu_us'):.0f} vs {best.med('cpu_us'):.0f} µs)",
            )
        )
    else:
        checks.append(("one-row JSON at 8 conns against a peer", False, "no peer measured"))
    mf8 = get("one-row JSON: mlflow", 8)
    if mf8 is not None:
        ratio = ours8.med("rps") / mf8.med("rps")
        checks.append(("req/s at 8 connections >= 10x mlflow", ratio >= TARGETS["ratio_8"], f"{ratio:.1f}x"))
    checks.append(
        (
            "p99 at 8 connections <= 3 ms",
            ours8.med("p99_ms") <= TARGETS["p99_8_ms"],
            f"{ours8.med('p99_ms'):.2f} ms",
        )
    )
    b1024, j1024 = get("1024 rows binary: mlplat", 8), get("1024 rows JSON: mlplat", 8)
    assert b1024 is not None and j1024 is not None
    # the 1,024-row targets: the better of 1 and 2 workers (the configuration is in the line),
    # with the 1-worker figure beside it
    b1024_w2 = get("1024 rows binary: mlplat-w2 (--workers 2)", 8)
    j1024_w2 = get("1024 rows JSON: mlplat-w2 (--workers 2)", 8)

    def best_of(w1: Spec, w2s: Spec | None) -> tuple[Spec, str]:
        if w2s is not None and w2s.med("rps") > w1.med("rps"):
            return w2s, "--workers 2"
        return w1, "1 worker"

    bb, bcfg = best_of(b1024, b1024_w2)
    share = bb.med("rps") * 1024 / ort_rows[1024]
    share1 = b1024.med("rps") * 1024 / ort_rows[1024]
    checks.append(
        (
            f"binary at 1,024 rows >= 30% of in-process ONNX Runtime rows/s ({bcfg})",
            share >= TARGETS["binary_1024_of_ort"],
            f"{share:.0%} ({fmt(bb.med('rps') * 1024)} vs {fmt(ort_rows[1024])} rows/s)"
            + (f"; 1 worker {share1:.0%} ({fmt(b1024.med('rps') * 1024)} rows/s)" if bb is not b1024 else ""),
        )
    )
    jb, jcfg = best_of(j1024, j1024_w2)
    jx = jb.med("rps") * 1024 / JSON_1024_BEFORE
    jx1 = j1024.med("rps") * 1024 / JSON_1024_BEFORE
    checks.append(
        (
            f"JSON at 1,024 rows >= 3x 0.62M rows/s ({jcfg})",
            jx >= TARGETS["json_1024_x"],
            f"{jx:.1f}x ({fmt(jb.med('rps') * 1024)} rows/s)"
            + (f"; 1 worker {jx1:.1f}x ({fmt(j1024.med('rps') * 1024)} rows/s)" if jb is not j1024 else ""),
        )
    )
    nb32, b32 = get("MLP one row: mlplat-mlp", 32), get("MLP one row: mlplat-mlp-batch", 32)
    nb1, b1 = get("MLP one row: mlplat-mlp", 1), get("MLP one row: mlplat-mlp-batch", 1)
    assert nb32 and b32 and nb1 and b1
    x_nb = b32.med("rps") / nb32.med("rps")
    checks.append(
        (
            "MLP at 32 conns: batching >= 4x without",
            x_nb >= TARGETS["mlp_batch_x"],
            f"{x_nb:.1f}x ({fmt(b32.med('rps'))} vs {fmt(nb32.med('rps'))} req/s)",
        )
    )
    mb32 = get("MLP one row: mlserver-mlp-batch", 32)
    if mb32 is not None:
        x_ms = b32.med("rps") / mb32.med("rps")
        checks.append(
            (
                "MLP at 32 conns: batching >= 2.5x MLServer's adaptive batching",
                x_ms >= TARGETS["mlp_vs_mlserver"],
                f"{x_ms:.1f}x ({fmt(mb32.med('rps'))} req/s)",
            )
        )
        checks.append(
            (
                "MLP at 32 conns: p99 no worse than MLServer's",
                b32.med("p99_ms") <= mb32.med("p99_ms"),
                f"{b32.med('p99_ms'):.1f} vs {mb32.med('p99_ms'):.1f} ms",
            )
        )
    else:
        checks.append(
            ("MLP at 32 conns against MLServer's adaptive batching", False, "MLServer not measured")
        )
    checks.append(
        (
            "MLP, 1 connection: batching on at least as fast as off",
            b1.med("rps") >= nb1.med("rps"),
            f"{fmt(b1.med('rps'))} vs {fmt(nb1.med('rps'))} req/s",
        )
    )
    g_ours, g_ms = get("one-row gRPC: mlplat", 8), get("one-row gRPC: mlserver", 8)
    if g_ours is not None and g_ms is not None:
        checks.append(
            (
                "gRPC one-row req/s >= MLServer's gRPC",
                g_ours.med("rps") >= g_ms.med("rps"),
                f"{g_ours.med('rps') / g_ms.med('rps'):.1f}x ({fmt(g_ours.med('rps'))} vs"
                f" {fmt(g_ms.med('rps'))} req/s)",
            )
        )
    else:
        checks.append(("gRPC one-row against MLServer's gRPC", False, "MLServer not measured"))
    if w2 is not None:
        print()
        for c in (8, 32):
            w2p, w1p = get("one-row JSON: mlplat-w2 (--workers 2)", c), get("one-row JSON: mlplat", c)
            assert w2p is not None and w1p is not None
            print(f"2 workers vs 1 at {c} connections: {w2p.med('rps') / w1p.med('rps'):.2f}x req/s")
    else:
        print("\n2 workers vs 1: not available (this serving has no --workers)")
    wrong = [k for k, v in agree.items() if v < 1.0]
    checks.append(("every server's answers equal the source model's", not wrong, ", ".join(wrong) or "all"))
    checks.append(("time to ready <= 0.5 s", ready <= TARGETS["ready_s"], f"{ready:.3f} s"))
    checks.append(("swap <= 50 ms (median round trip)", swap <= TARGETS["swap_ms"], f"{swap:.1f} ms"))
    errors = sum(s.errors for s in specs if s.server.name.startswith("mlplat"))
    checks.append(("no failed mlplat requests under load", errors == 0, str(errors)))
    print()
    for label, ok, value in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {label}: {value}")
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
