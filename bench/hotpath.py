"""Benchmark: the CPU instructions of one one-row JSON request through serving's own code.

``bench/serving.py`` measures req/s and CPU per request under load, which on a shared machine
move with its neighbours (the same code measured 10.3k and 7.8k req/s on two days here). This
counts instructions instead, with valgrind's callgrind: the same code gives the same count on
any day, to a fraction of a percent, so a change of 2% can be seen and a change can be judged
on its own.

What runs, in process, no sockets: the logistic regression of ``bench/serving.py`` (4 features,
two outputs) loaded by serving's ``Repository``; the request wrk sends there (the same head and
body) fed to serving's ``HttpProtocol.data_received`` with a transport that discards what it is
written (a stand-in for the socket, named as such: the count is serving's code alone, without
uvloop and the kernel, which under load add a fixed ~30% here); 300 requests to warm up
uninstrumented, then ``--requests`` counted. The figure: instructions inside the HTTP parser's
``feed_data`` (every callback, the handler, ONNX Runtime, the response's bytes) per request.

Both the working tree and ``--baseline`` (a git revision, default ``HEAD``, checked out in a
temporary worktree) are counted in the same run. Target: the working tree takes no more than
the baseline (+0.5% for interpreter noise). Needs valgrind (``apt-get install -y valgrind``).

    .venv/bin/python bench/hotpath.py [--baseline REV] [--requests 2000]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = 1.005
NAME = "bench-logreg"  # bench/serving.py's logistic regression
TOOLS = ("valgrind", "callgrind_control", "callgrind_annotate")
WORKTREE = ["git", "-C", str(REPO), "worktree"]


def child(root: Path, bundle: Path, body: Path, requests: int, signals: Path) -> None:
    """Runs under valgrind: serve ``requests`` requests once ``signals/go`` exists."""
    sys.path.insert(0, str(root / "runtime"))
    import asyncio

    from mlplat_runtime.serving.app import InferenceHandler
    from mlplat_runtime.serving.http import HttpProtocol, ServerState
    from mlplat_runtime.serving.repository import Repository

    repo = Repository(providers=["CPUExecutionProvider"])
    repo.load(bundle)
    handler = InferenceHandler(repo)
    data = body.read_bytes()
    head = (
        f"POST /v2/models/{NAME}/infer HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    raw = head.encode() + data
    answers: list[bytes] = []

    class DiscardingTransport:  # a stand-in for the socket: keeps the first answer, drops the rest
        def write(self, out: bytes) -> None:
            if not answers:
                answers.append(out)

        def is_closing(self) -> bool:
            return False

        def pause_reading(self) -> None: ...

        def resume_reading(self) -> None: ...

    async def main() -> None:
        conn = HttpProtocol(handler, ServerState())
        conn.connection_made(DiscardingTransport())  # type: ignore[arg-type]
        for _ in range(300):
            conn.data_received(raw)
        if not answers or not answers[0].startswith(b"HTTP/1.1 200 OK"):
            raise SystemExit(f"serving did not answer 200: {answers[:1]!r}")
        (signals / "ready").touch()
        while not (signals / "go").exists():
            time.sleep(0.02)
        for _ in range(requests):
            conn.data_received(raw)
        (signals / "done").touch()
        deadline = time.monotonic() + 120
        while not (signals / "dumped").exists() and time.monotonic() < deadline:
            time.sleep(0.02)  # short sleeps: the dump request reaches a process between them

    try:  # serving's own loop, as `python -m mlplat_runtime.serving` runs it
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())


def count(root: Path, bundle: Path, body: Path, requests: int, work: Path) -> float:
    """Instructions per request of serving's code at ``root`` (one valgrind run)."""
    signals = Path(tempfile.mkdtemp(dir=work))
    out = signals / "callgrind.out"
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=str(root / "runtime"))
    cmd = [
        "valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
        sys.executable, __file__, "--child", str(root), str(bundle), str(body), str(requests), str(signals),
    ]  # fmt: skip
    log = (signals / "valgrind.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 600
        while not (signals / "ready").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (signals / "valgrind.log").read_text()[-2000:]
                raise SystemExit(f"the counted process did not start:\n{tail}")
            time.sleep(0.2)
        subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], check=True, capture_output=True)
        (signals / "go").touch()
        deadline = time.monotonic() + 600
        while not (signals / "done").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the counted process ended (or hung) before it was done")
            time.sleep(0.1)
        subprocess.run(
            ["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True, timeout=120
        )
        (signals / "dumped").touch()
    finally:
        proc.kill()
        proc.wait()
        log.close()
    dumps = sorted(signals.glob("callgrind.out*"), key=lambda p: p.stat().st_size)
    if not dumps:
        raise SystemExit(f"callgrind wrote no counts in {signals}")
    text = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", str(dumps[-1])], check=True, capture_output=True, text=True
    ).stdout
    found = re.search(r"^\s*([\d,]+) .*?:llhttp_execute \[", text, re.MULTILINE)
    if found is None:
        raise SystemExit("no llhttp_execute in the counts: is httptools built with symbols?")
    return int(found.group(1).replace(",", "")) / requests


def build(work: Path) -> tuple[Path, Path]:
    """The logistic regression bundle of bench/serving.py and its one-row JSON body."""
    spec = importlib.util.spec_from_file_location("bench_serving", REPO / "bench" / "serving.py")
    assert spec is not None and spec.loader is not None
    serving: Any = importlib.util.module_from_spec(spec)
    sys.modules["bench_serving"] = serving
    saved = sys.argv
    sys.argv = [saved[0]]
    try:
        spec.loader.exec_module(serving)
    finally:
        sys.argv = saved
    assert serving.NAME == NAME
    bundles, _, x = serving.build_models(work)
    body = work / "body.json"
    body.write_bytes(serving.oip_json(x[:1]))
    return bundles[0], body


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        root, bundle, body, requests, signals = sys.argv[2:7]
        child(Path(root), Path(bundle), Path(body), int(requests), Path(signals))
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--baseline",
        default="HEAD",
        help="git revision to compare with (default HEAD: the uncommitted change)",
    )
    ap.add_argument("--requests", type=int, default=2000, help="requests counted per tree (default 2000)")
    args = ap.parse_args()
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        print(f"needs {', '.join(missing)}: apt-get install -y valgrind", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="mlplat-hotpath-"))
    base = work / "baseline"
    try:
        rev = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", args.baseline],
            check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        subprocess.run([*WORKTREE, "add", "--detach", str(base), rev], check=True, capture_output=True)
        bundle, body = build(work)
        print(f"one-row JSON request, {args.requests} counted per tree (callgrind, in process)")
        figures = {}
        for label, root in ((f"baseline {rev}", base), ("working tree", REPO)):
            figures[label] = count(root, bundle, body, args.requests, work)
            print(f"  {label:22s} {figures[label]:10,.0f} instructions per request", flush=True)
        old, new = figures.values()
        ok = new <= old * TOLERANCE
        verdict = "PASS" if ok else "FAIL"
        print(f"  working tree / baseline: {new / old:.3f}  (target <= {TOLERANCE})  {verdict}")
        return 0 if ok else 1
    finally:
        subprocess.run([*WORKTREE, "remove", "--force", str(base)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
