"""Triton's ``perf_analyzer`` against mlplat serving, unchanged: HTTP (binary and JSON tensors)
and gRPC, one-row requests, 8 requests in flight.

perf_analyzer reads the model's configuration (``GET /v2/models/{name}/config``, Triton's model
configuration extension) before it sends a request, then drives the server with random inputs
of that shape. This script builds the benchmark's logistic regression bundle, serves it with
``python -m mlplat_runtime.serving --grpc-port``, runs perf_analyzer three times and prints its
figures, then stops the server. Only 127.0.0.1.

Getting perf_analyzer (``--setup`` does both steps into ``bench/.venv-perf-analyzer``, which is
gitignored; without it the script says what is missing and exits 2):
- PyPI's ``perf-analyzer`` wheels (2.58 and later) are tagged ``manylinux_2_38``: on a system
  with an older glibc (Debian 12 has 2.36) ``pip install perf-analyzer`` silently picks the
  empty 0.1.0 placeholder instead. ``--setup`` installs the real wheel with ``pip install
  --target ... --platform manylinux_2_38_x86_64 --only-binary=:all: --no-deps perf-analyzer``.
- Its binary needs glibc 2.38 and libstdc++ from GCC 13 (GLIBCXX_3.4.32). Where the system has
  older ones, ``--setup`` fetches Debian 13's ``libc6``, ``libstdc++6``, ``libgcc-s1``,
  ``zlib1g`` and ``libssl3t64`` with ``apt-get download`` (a private apt state under the folder;
  the system's apt and libraries are not touched), unpacks them with ``dpkg-deb -x``, and the
  binary is then started through that glibc's own loader (``ld-linux-x86-64.so.2
  --library-path``). On Debian 13 or Ubuntu 24.04 neither step is needed.

    .venv/bin/python bench/perf_analyzer.py --setup      # once
    .venv/bin/python bench/perf_analyzer.py [--concurrency 8] [--interval-ms 3000]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HOME = REPO / "bench" / ".venv-perf-analyzer"
WHEEL_DIR = HOME / "wheel"
GLIBC_DIR = HOME / "glibc"
LIBS = HOME / "glibc" / "usr" / "lib" / "x86_64-linux-gnu"
DEBIAN_13_PACKAGES = ["libc6", "libstdc++6", "libgcc-s1", "zlib1g", "libssl3t64"]
sys.path.insert(0, str(REPO / "bench"))


def binary() -> Path | None:
    on_path = shutil.which("perf_analyzer")
    candidates = [WHEEL_DIR / "perf_analyzer" / "bin" / "perf_analyzer"]
    if on_path:
        candidates.insert(0, Path(on_path))
    return next((c for c in candidates if c.exists()), None)


def command(exe: Path) -> list[str]:
    """How to start ``exe``: directly, or through the newer glibc's loader when it was fetched."""
    loader = LIBS / "ld-linux-x86-64.so.2"
    if loader.exists():
        return [str(loader), "--library-path", str(LIBS), str(exe)]
    return [str(exe)]


def runs(cmd: list[str]) -> tuple[bool, str]:
    """Does the binary start here? perf_analyzer has no --help; an unknown option is a clean exit."""
    out = subprocess.run([*cmd, "--version"], capture_output=True, text=True, timeout=30)
    text = out.stdout + out.stderr
    return "not found (required by" not in text and "No such file" not in text, text.strip()


def setup() -> int:
    if platform.machine() != "x86_64":
        print(f"--setup knows x86_64 only (this is {platform.machine()}); pip install perf-analyzer")
        return 2
    pip = [sys.executable, "-m", "pip"]
    if not (WHEEL_DIR / "perf_analyzer" / "bin" / "perf_analyzer").exists():
        subprocess.run(
            [
                *pip,
                "install",
                "--quiet",
                "--target",
                str(WHEEL_DIR),
                "--platform",
                "manylinux_2_38_x86_64",
                "--only-binary=:all:",
                "--no-deps",
                "perf-analyzer",
            ],
            check=True,
        )
    exe = WHEEL_DIR / "perf_analyzer" / "bin" / "perf_analyzer"
    exe.chmod(0o755)
    ok, text = runs([str(exe)])
    if ok or (LIBS / "ld-linux-x86-64.so.2").exists():
        print(f"perf_analyzer ready: {' '.join(command(exe))}")
        return 0
    print(
        f"perf_analyzer needs a newer glibc than this system's:\n{text}\nfetching Debian 13's libraries ..."
    )
    apt = HOME / "apt"
    parts = apt / "sources.list.d"
    for d in (parts, apt / "lists" / "partial", apt / "cache" / "archives" / "partial", apt / "debs"):
        d.mkdir(parents=True, exist_ok=True)
    (parts / "trixie.sources").write_text(
        "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: trixie\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )
    opts = [
        "-oDir::Etc::sourcelist=/dev/null",
        f"-oDir::Etc::sourceparts={parts}",
        f"-oDir::State::Lists={apt / 'lists'}",
        f"-oDir::Cache={apt / 'cache'}",
        "-oDir::State::status=/dev/null",
    ]
    subprocess.run(["apt-get", *opts, "update"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", *opts, "download", *DEBIAN_13_PACKAGES], check=True, cwd=apt / "debs")
    for deb in sorted((apt / "debs").glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(GLIBC_DIR)], check=True)
    ok, text = runs(command(exe))
    if not ok:
        print(f"perf_analyzer still does not start:\n{text}")
        return 1
    print(f"perf_analyzer ready: {' '.join(command(exe))}")
    return 0


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def analyse(cmd: list[str], args: list[str]) -> str:
    out = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=600)
    text = out.stdout + out.stderr
    m = re.search(
        r"Throughput: ([\d.]+) infer/sec.*?p50 latency: (\d+) usec.*?p99 latency: (\d+) usec", text, re.S
    )
    if out.returncode != 0 or not m:
        return "failed: " + " | ".join(text.strip().splitlines()[-3:])
    return f"{float(m[1]):,.0f} infer/s, p50 {int(m[2]) / 1e3:.2f} ms, p99 {int(m[3]) / 1e3:.2f} ms"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setup", action="store_true", help="fetch perf_analyzer (and a glibc for it) and exit")
    ap.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    ap.add_argument(
        "--interval-ms", type=int, default=3000, help="perf_analyzer's measurement window (default 3000)"
    )
    ap.add_argument(
        "--stability",
        type=int,
        default=50,
        help="perf_analyzer's --stability-percentage (default 50: this is a shared machine)",
    )
    a = ap.parse_args()
    if a.setup:
        return setup()
    exe = binary()
    if exe is None:
        print("missing: perf_analyzer (run: .venv/bin/python bench/perf_analyzer.py --setup)")
        return 2
    cmd = command(exe)
    ok, text = runs(cmd)
    if not ok:
        print(
            f"perf_analyzer does not start here:\n{text}\n"
            "run: .venv/bin/python bench/perf_analyzer.py --setup"
        )
        return 2

    from serving import NAME, build_models  # the benchmark's model and bundle

    work = Path(tempfile.mkdtemp(prefix="mlplat-perf-analyzer-"))
    proc = None
    try:
        (v1, _, _), _, _ = build_models(work)
        port, admin, grpc = free_port(), free_port(), free_port()
        serve = [
            sys.executable,
            "-m",
            "mlplat_runtime.serving",
            str(v1),
            "--port",
            str(port),
            "--admin-port",
            str(admin),
            "--admin-token-file",
            str(work / "admin.token"),
            "--grpc-port",
            str(grpc),
        ]
        env = {**os.environ, "MLPLAT_PROVIDERS": "CPUExecutionProvider"}
        with open(work / "serving.log", "wb") as log:
            proc = subprocess.Popen(
                serve, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        import httpx

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/models/{NAME}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        else:
            print((work / "serving.log").read_text()[-2000:])
            return 1
        common = [
            "-m",
            NAME,
            "--concurrency-range",
            str(a.concurrency),
            "--measurement-interval",
            str(a.interval_ms),
            "--stability-percentage",
            str(a.stability),
        ]
        load = os.getloadavg()
        print(
            f"perf_analyzer ({' '.join(cmd[-1:])}) against mlplat serving, one row per request, "
            f"concurrency {a.concurrency}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
        )
        points = {
            "HTTP, binary tensors": ["-i", "http", "-u", f"127.0.0.1:{port}"],
            "HTTP, JSON tensors": [
                "-i",
                "http",
                "-u",
                f"127.0.0.1:{port}",
                "--input-tensor-format",
                "json",
                "--output-tensor-format",
                "json",
            ],
            "gRPC": ["-i", "grpc", "-u", f"127.0.0.1:{grpc}"],
        }
        for label, extra in points.items():
            print(f"  {label:<22} {analyse(cmd, [*common, *extra])}", flush=True)
        return 0
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
