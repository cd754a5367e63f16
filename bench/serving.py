"""Benchmark: ``mlplat serve`` against ``mlflow models serve`` on the same logistic regression.

One run, one machine, both servers measured the same way: a scikit-learn LogisticRegression
(4 features, one row per request) is exported twice, as ONNX (skl2onnx, served by mlplat from
a bundle) and as an MLflow sklearn model (``mlflow.sklearn.save_model``, served by
``mlflow models serve --env-manager local``). The script measures:

- in-process ONNX Runtime time per call (the floor under any server),
- time to ready of each server (spawn -> ready endpoint answers 200; mlplat: median of 5),
- a bounded load at 1, 8 and 32 keep-alive connections against each (req/s, p50, p99;
  3 runs of 3 s per point, interleaved between the servers, medians reported),
- hot-swap time through the admin API (median of 6 loads alternating two versions),

prints a table with the ratios, and PASS/FAIL per target; exits 1 when one is missed.
Targets: req/s at 8 connections >= 10x mlflow, p99 at 8 connections <= 3 ms, time to ready
<= 0.5 s, swap <= 50 ms.

Load generator: ``wrk`` with a Lua POST script when installed (``apt-get install -y wrk``),
else a bounded asyncio keep-alive client (slower, so its figures are lower bounds). Only
127.0.0.1 is used.

    .venv/bin/python bench/serving.py [--duration 3] [--repeats 3] [--connections 1,8,32] [--starts 5]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# No usage telemetry from MLflow (here or in the server it starts): no internet here, and its
# background sender would only add noise to both sides of the comparison.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "runtime"))
BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
NAME = "bench-logreg"
ROW = [0.1, -0.2, 0.3, 0.4]
MLPLAT_BODY = json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [ROW]}]})
MLFLOW_BODY = json.dumps({"inputs": [ROW]})
TARGETS = {"ratio_8": 10.0, "p99_8_ms": 3.0, "ready_s": 0.5, "swap_ms": 50.0}


@dataclass(frozen=True)
class Point:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def median_point(points: list[Point]) -> Point:
    """Field-wise median over repeated runs (errors: the total)."""
    return Point(
        statistics.median(p.rps for p in points),
        statistics.median(p.p50_ms for p in points),
        statistics.median(p.p99_ms for p in points),
        sum(p.errors for p in points),
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def http_status(
    port: int, method: str, path: str, body: str | None = None, headers: dict[str, str] | None = None
) -> int:
    try:
        conn = http.client.HTTPConnection(HOST, port, timeout=2)
        conn.request(method, path, body=body, headers=headers or {})
        status = conn.getresponse().status
        conn.close()
        return status
    except OSError:
        return 0


def post_json(port: int, path: str, body: object, token: str | None = None) -> tuple[int, dict[str, object]]:
    conn = http.client.HTTPConnection(HOST, port, timeout=120)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    conn.request("POST", path, body=json.dumps(body), headers=headers)
    r = conn.getresponse()
    doc = json.loads(r.read() or b"{}")
    conn.close()
    return r.status, doc


def wait_ready(proc: subprocess.Popen[bytes], ready: Callable[[], bool], timeout: float) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if ready():
            return time.perf_counter() - t0
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode} before it was ready")
        time.sleep(0.002)
    raise SystemExit(f"server not ready after {timeout} s")


def model_ready(port: int) -> Callable[[], bool]:
    return lambda: http_status(port, "GET", f"/v2/models/{NAME}/ready") == 200


def spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}  # mlflow execs `uvicorn`
    with open(log, "wb") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # our own session: the server and what it started
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# -- models ----------------------------------------------------------------------------------


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


def save_mlflow_model(clf: Any, x: np.ndarray, out: Path) -> Path:
    """The same v1 model as an MLflow sklearn model (what `mlflow models serve` loads)."""
    import mlflow.sklearn

    # pip_requirements given: skips MLflow's slow requirement inference, changes nothing served
    mlflow.sklearn.save_model(clf, str(out), input_example=x[:2], pip_requirements=["scikit-learn"])
    return out


def ort_call_us(model: Path) -> float:
    from mlplat_runtime.providers import make_session

    sess = make_session(model)
    feed = {"input": np.asarray([ROW], dtype=np.float32)}
    for _ in range(200):
        sess.run(None, feed)
    runs = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(2000):
            sess.run(None, feed)
        runs.append((time.perf_counter() - t) / 2000 * 1e6)
    return statistics.median(runs)


# -- load --------------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if not m:
        raise ValueError(f"cannot read wrk latency {text!r}")
    return float(m[1]) * _UNITS[m[2]]


def wrk_point(url: str, body: str, conns: int, duration: float, work: Path) -> Point:
    script = work / f"post-{abs(hash(body))}.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(body)}\n"
    )
    out = subprocess.run(
        ["wrk", "-t1", f"-c{conns}", f"-d{max(1, round(duration))}s", "--latency", "-s", str(script), url],
        capture_output=True, text=True, timeout=duration + 60, check=True,
    ).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M)[1])  # type: ignore[index]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M)[1])  # type: ignore[index]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx[1]) if non2xx else 0) + (sum(int(g) for g in sock.groups()) if sock else 0)
    return Point(rps, p50, p99, errors)


async def _client(
    port: int, path: str, body: bytes, stop_at: float, lat: list[float], errs: list[int]
) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    req = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    while time.perf_counter() < stop_at:
        t = time.perf_counter()
        writer.write(req)
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length:\s*(\d+)", head)[1])  # type: ignore[index]
        await reader.readexactly(length)
        lat.append(time.perf_counter() - t)
        if not head.startswith(b"HTTP/1.1 200"):
            errs.append(1)
    writer.close()


def asyncio_point(url: str, body: str, conns: int, duration: float) -> Point:
    port = int(url.split(":")[2].split("/")[0])
    path = "/" + url.split("/", 3)[3]
    lat: list[float] = []
    errs: list[int] = []

    async def main() -> None:
        stop_at = time.perf_counter() + duration
        await asyncio.gather(*(_client(port, path, body.encode(), stop_at, lat, errs) for _ in range(conns)))

    t = time.perf_counter()
    asyncio.run(main())
    elapsed = time.perf_counter() - t
    ms = np.asarray(lat) * 1e3
    return Point(len(lat) / elapsed, float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), len(errs))


# -- main --------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=3, help="seconds per load run (default 3)")
    ap.add_argument("--connections", default="1,8,32", help="connection counts (default 1,8,32)")
    ap.add_argument("--starts", type=int, default=5, help="mlplat start-ups to time (median; default 5)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per load point (medians; default 3)")
    args = ap.parse_args()
    conns = [int(c) for c in args.connections.split(",")]
    use_wrk = shutil.which("wrk") is not None
    work = Path(tempfile.mkdtemp(prefix="mlplat-bench-"))
    load_before = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    procs: list[subprocess.Popen[bytes]] = []
    try:
        print(f"building models in {work} ...", flush=True)
        (v1, v2, v3), clf, x = build_models(work)
        reference = clf.predict
        call_us = ort_call_us(v1 / "model.onnx")

        token_file = work / "admin.token"
        ready_times = []
        for i in range(max(1, args.starts)):
            port, admin = free_port(), free_port()
            cmd = [str(BIN / "mlplat"), "serve", str(v1), "--port", str(port), "--admin-port", str(admin)]
            proc = spawn([*cmd, "--admin-token-file", str(token_file)], work / f"mlplat-{i}.log")
            ready_times.append(wait_ready(proc, model_ready(port), 60))
            if i < args.starts - 1:
                stop(proc)
        procs.append(proc)
        mlplat_port, admin_port, token = port, admin, token_file.read_text().strip()

        mlflow_dir = save_mlflow_model(clf, x, work / "mlflow-model")  # after the timings above
        mf_port = free_port()
        mf = spawn([str(BIN / "mlflow"), "models", "serve", "-m", str(mlflow_dir), "--env-manager", "local",
                    "-p", str(mf_port), "-h", HOST], work / "mlflow.log")  # fmt: skip
        procs.append(mf)
        mf_ready = wait_ready(mf, lambda: http_status(mf_port, "GET", "/ping") == 200, 300)

        # Same model, same answers (a benchmark of two servers computing different things is moot).
        rows = np.random.default_rng(1).normal(size=(64, 4)).astype(np.float32)
        _, ours = post_json(mlplat_port, f"/v2/models/{NAME}/infer", {"inputs": [
            {"name": "input", "shape": [64, 4], "datatype": "FP32", "data": rows.tolist()}]})  # fmt: skip
        _, theirs = post_json(mf_port, "/invocations", {"inputs": rows.tolist()})
        ours_label = next(o["data"] for o in ours["outputs"] if o["name"] == "label")  # type: ignore[attr-defined]
        truth = reference(rows)
        agree = (
            float(np.mean(np.asarray(ours_label) == truth)),
            float(np.mean(np.asarray(theirs["predictions"]) == truth)),
        )

        point = (lambda u, b, c: wrk_point(u, b, c, args.duration, work)) if use_wrk else (
            lambda u, b, c: asyncio_point(u, b, c, args.duration))  # fmt: skip
        runs: dict[tuple[str, int], list[Point]] = {}
        for _ in range(max(1, args.repeats)):
            for c in conns:  # interleaved, so drifting machine load hits both servers alike
                mlplat_url = f"http://{HOST}:{mlplat_port}/v2/models/{NAME}/infer"
                runs.setdefault(("mlplat", c), []).append(point(mlplat_url, MLPLAT_BODY, c))
                mlflow_url = f"http://{HOST}:{mf_port}/invocations"
                runs.setdefault(("mlflow", c), []).append(point(mlflow_url, MLFLOW_BODY, c))
        results = {key: median_point(points) for key, points in runs.items()}
        stop(mf)

        swaps, rtts = [], []
        for i in range(6):
            bundle = (v2, v3)[i % 2]
            t = time.perf_counter()
            status, doc = post_json(admin_port, f"/v2/repository/models/{NAME}/load",
                                    {"parameters": {"bundle": str(bundle)}}, token)  # fmt: skip
            rtts.append((time.perf_counter() - t) * 1e3)
            if status != 200:
                raise SystemExit(f"swap failed: {doc}")
            swaps.append(float(doc["swap_ms"]))  # type: ignore[arg-type]
    finally:
        for p in procs:
            stop(p)
        shutil.rmtree(work, ignore_errors=True)

    gen = "wrk (1 thread)" if use_wrk else "asyncio keep-alive client (no wrk installed)"
    ready = statistics.median(ready_times)
    print(
        f"\nload generator: {gen}; {args.repeats} x {args.duration} s per point (medians shown); "
        f"{os.cpu_count()} CPUs; one-row requests; load average before: {load_before}"
    )
    print(f"in-process ONNX Runtime call: {call_us:.1f} µs")
    print(f"labels equal to sklearn's on 64 rows: mlplat {agree[0]:.0%}, mlflow {agree[1]:.0%}")
    starts = ", ".join(f"{t:.3f}" for t in ready_times)
    print(f"time to ready: mlplat {ready:.3f} s (median of {starts}), mlflow {mf_ready:.2f} s")
    print(
        f"hot swap (admin load of a new version): median {statistics.median(swaps):.1f} ms server-side, "
        f"{statistics.median(rtts):.1f} ms round trip (max {max(rtts):.1f} ms)"
    )
    print(f"\n{'conns':>5} | {'mlplat req/s':>12} {'p50 ms':>7} {'p99 ms':>7} {'err':>4} | ", end="")
    print(f"{'mlflow req/s':>12} {'p50 ms':>7} {'p99 ms':>7} {'err':>4} | {'ratio':>6}")
    for c in conns:
        a, b = results[("mlplat", c)], results[("mlflow", c)]
        print(f"{c:>5} | {a.rps:>12.0f} {a.p50_ms:>7.2f} {a.p99_ms:>7.2f} {a.errors:>4} | ", end="")
        print(f"{b.rps:>12.0f} {b.p50_ms:>7.2f} {b.p99_ms:>7.2f} {b.errors:>4} | {a.rps / b.rps:>5.1f}x")

    ours8, theirs8 = results.get(("mlplat", 8)), results.get(("mlflow", 8))
    mlplat_errors = sum(p.errors for (server, _), p in results.items() if server == "mlplat")
    checks: list[tuple[str, bool, str]] = []
    if ours8 is not None and theirs8 is not None:
        ratio = ours8.rps / theirs8.rps
        checks.append(("req/s at 8 connections >= 10x mlflow", ratio >= TARGETS["ratio_8"], f"{ratio:.1f}x"))
        checks.append(
            ("p99 at 8 connections <= 3 ms", ours8.p99_ms <= TARGETS["p99_8_ms"], f"{ours8.p99_ms:.2f} ms")
        )
    else:
        checks.append(("8 connections measured", False, "add 8 to --connections"))
    checks.append(("time to ready <= 0.5 s", ready <= TARGETS["ready_s"], f"{ready:.3f} s"))
    swap = statistics.median(rtts)
    checks.append(("swap <= 50 ms (median round trip)", swap <= TARGETS["swap_ms"], f"{swap:.1f} ms"))
    checks.append(("no failed mlplat requests under load", mlplat_errors == 0, str(mlplat_errors)))
    print()
    for label, ok, value in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {label}: {value}")
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
