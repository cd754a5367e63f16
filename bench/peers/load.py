"""Load generators and server CPU accounting, the same for every server the benchmark runs.

- HTTP: ``wrk`` (one thread, keep-alive connections, a Lua script that POSTs a body read from
  a file, so binary bodies go as they are) when it is installed, else a bounded asyncio
  keep-alive client (slower: its figures are lower bounds, and it says so).
- gRPC: a few processes, each one ``grpc.aio`` channel with its share of the requests in
  flight, sending one pre-serialised ``ModelInferRequest`` and reading raw response bytes
  (no protobuf work in the client's loop), so what limits it is the server and the transport.
- Server CPU per request: utime + stime (+ those of reaped children) of the server's whole
  process tree (MLServer's inference workers, mlflow's uvicorn, mlplat's helpers), read from
  ``/proc/<pid>/stat`` before and after each run, divided by the requests that run answered.

Every run is bounded in time and talks to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HOST = "127.0.0.1"
TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Point:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    cpu_us: float  # server CPU per answered request (all its processes), µs; nan if unknown


# -- CPU accounting ----------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, float] | None:
    """(ppid, CPU seconds incl. reaped children) of one process, None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) "; comm may hold spaces
    ppid = int(fields[1])
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return ppid, (utime + stime + cutime + cstime) / TICK


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds used so far by ``root`` and every process below it."""
    stats: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            s = _stat(int(entry))
            if s is not None:
                stats[int(entry)] = s
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += stats[pid][1]
            todo.extend(children.get(pid, []))
    return total


def with_cpu(pid: int, run: Callable[[], Point]) -> Point:
    """Run one load point and fill in the server's CPU per answered request."""
    before = tree_cpu_seconds(pid)
    p = run()
    used = tree_cpu_seconds(pid) - before
    cpu_us = used / p.requests * 1e6 if p.requests else float("nan")
    return Point(p.rps, p.p50_ms, p.p99_ms, p.errors, p.requests, cpu_us)


# -- HTTP --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HttpLoad:
    port: int
    path: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),)


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if not m:
        raise ValueError(f"cannot read wrk latency {text!r}")
    return float(m[1]) * _UNITS[m[2]]


def wrk_point(load: HttpLoad, conns: int, duration: float, work: Path) -> Point:
    key = abs(hash((load.body, load.headers)))
    body_file = work / f"body-{key}.bin"
    if not body_file.exists():
        body_file.write_bytes(load.body)
    script = work / f"post-{key}.lua"
    headers = "".join(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}\n" for k, v in load.headers)
    script.write_text(
        f'wrk.method = "POST"\n{headers}'
        f'local f = assert(io.open({json.dumps(str(body_file))}, "rb"))\n'
        'wrk.body = f:read("*a")\nf:close()\n'
    )
    url = f"http://{HOST}:{load.port}{load.path}"
    out = subprocess.run(
        ["wrk", "-t1", f"-c{conns}", f"-d{max(1, round(duration))}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M)[1])  # type: ignore[index]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M)[1])  # type: ignore[index]
    total = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx[1]) if non2xx else 0) + (sum(int(g) for g in sock.groups()) if sock else 0)
    return Point(rps, p50, p99, errors, total, float("nan"))


async def _client(load: HttpLoad, stop_at: float, lat: list[float], errs: list[int]) -> None:
    reader, writer = await asyncio.open_connection(HOST, load.port)
    head = "".join(f"{k}: {v}\r\n" for k, v in load.headers)
    req = (
        f"POST {load.path} HTTP/1.1\r\nHost: {HOST}\r\n{head}Content-Length: {len(load.body)}\r\n\r\n"
    ).encode() + load.body
    while time.perf_counter() < stop_at:
        t = time.perf_counter()
        writer.write(req)
        resp = await reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length:\s*(\d+)", resp)[1])  # type: ignore[index]
        await reader.readexactly(length)
        lat.append(time.perf_counter() - t)
        if not resp.startswith(b"HTTP/1.1 200"):
            errs.append(1)
    writer.close()


def asyncio_point(load: HttpLoad, conns: int, duration: float) -> Point:
    lat: list[float] = []
    errs: list[int] = []

    async def main() -> None:
        stop_at = time.perf_counter() + duration
        await asyncio.gather(*(_client(load, stop_at, lat, errs) for _ in range(conns)))

    t = time.perf_counter()
    asyncio.run(main())
    elapsed = time.perf_counter() - t
    ms = np.asarray(lat) * 1e3
    p50, p99 = (float(np.percentile(ms, q)) for q in (50, 99))
    return Point(len(lat) / elapsed, p50, p99, len(errs), len(lat), float("nan"))


def http_point(load: HttpLoad, conns: int, duration: float, work: Path) -> Point:
    if have_wrk():
        return wrk_point(load, conns, duration, work)
    return asyncio_point(load, conns, duration)


# -- gRPC --------------------------------------------------------------------------------------

INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"


def _grpc_worker(
    target: str, request: bytes, inflight: int, duration: float, go: object, out: object
) -> None:
    """One load process: ``inflight`` loops on one channel; puts (latencies, errors, elapsed)."""
    import grpc

    async def main() -> tuple[list[float], int, float]:
        lat: list[float] = []
        errors = 0
        async with grpc.aio.insecure_channel(target) as channel:
            call = channel.unary_unary(INFER_METHOD)  # no serialisers: bytes in, bytes out
            await call(request, timeout=30)  # connected and warm before the clock starts
            out.put("ready")  # type: ignore[attr-defined]
            await asyncio.get_running_loop().run_in_executor(None, go.wait)  # type: ignore[attr-defined]
            stop_at = time.perf_counter() + duration

            async def loop() -> None:
                nonlocal errors
                while time.perf_counter() < stop_at:
                    t = time.perf_counter()
                    try:
                        await call(request, timeout=30)
                    except grpc.aio.AioRpcError:
                        errors += 1
                        continue
                    lat.append(time.perf_counter() - t)

            t0 = time.perf_counter()
            await asyncio.gather(*(loop() for _ in range(inflight)))
            return lat, errors, time.perf_counter() - t0

    out.put(asyncio.run(main()))  # type: ignore[attr-defined]


def grpc_processes() -> int:
    """Client processes for gRPC load: 2 on a small machine, a quarter of the cores on a big one."""
    return max(2, min(8, (os.cpu_count() or 2) // 4))


def grpc_point(port: int, request: bytes, conns: int, duration: float, processes: int = 0) -> Point:
    """``conns`` requests in flight, spread over ``processes`` client processes (one channel each)."""
    processes = processes or grpc_processes()
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: grpc must not be forked
    processes = max(1, min(processes, conns))
    shares = [conns // processes + (1 if i < conns % processes else 0) for i in range(processes)]
    go, out = ctx.Event(), ctx.Queue()
    target = f"{HOST}:{port}"
    procs = [
        ctx.Process(target=_grpc_worker, args=(target, request, n, duration, go, out), daemon=True)
        for n in shares
    ]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            if out.get(timeout=60) != "ready":
                raise RuntimeError("a gRPC load process failed to start")
        go.set()
        results = [out.get(timeout=duration + 60) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    lat = [x for r in results for x in r[0]]
    errors = sum(r[1] for r in results)
    elapsed = max(r[2] for r in results)
    ms = np.asarray(lat) * 1e3 if lat else np.asarray([float("nan")])
    p50, p99 = (float(np.percentile(ms, q)) for q in (50, 99))
    return Point(len(lat) / elapsed, p50, p99, errors, len(lat), float("nan"))
