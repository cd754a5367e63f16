"""Fixtures for the serving tests: versions of a small model as bundles, broken bundles, and a
real serving process on free ports (``--port 0``; the start-up line says which)."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from mlplat_runtime.bundle.hashing import bundle_id, file_digest
from tests.helpers.models import logreg_weights, make_bundle, make_logreg_onnx, write_corrupt_onnx

ROOT = Path(__file__).resolve().parents[3]
LINE = re.compile(
    r"^mlplat serving url=(?P<url>\S+) model=(?P<model>\S+) version=(?P<version>\S+) "
    r"provider=(?P<provider>\S+) admin=(?P<admin>\S+) admin_token=(?P<token>.+)$"
)


def logreg_expected(x: np.ndarray, seed: int, n_features: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """What ``make_logreg_onnx(seed=...)`` computes, in numpy: (label, probabilities)."""
    w, b = logreg_weights(n_features, seed)
    p1 = 1.0 / (1.0 + np.exp(-(x.astype(np.float64) @ w.astype(np.float64) + b)))
    probs = np.concatenate([1.0 - p1, p1], axis=1)
    return probs.argmax(axis=1), probs


def build_version(root: Path, version: str, *, seed: int = 0, name: str = "m", **kw: object) -> Path:
    """Bundle ``version`` of model ``name``: a logistic regression whose weights come from ``seed``."""
    src = make_logreg_onnx(root / f"src-{name}-{version}" / "model.onnx", seed=seed)
    return make_bundle(root, name=name, version=version, model=src, out=root / f"{name}-v{version}", **kw)


def rehash(bundle_dir: Path) -> None:
    """Recompute the manifest's checksums and id after editing content files (as a buggy tool would)."""
    path = bundle_dir / "manifest.json"
    doc = json.loads(path.read_text())
    doc["files"] = {rel: file_digest(bundle_dir / rel) for rel in doc["files"]}
    doc["bundle_id"] = bundle_id(doc["files"])
    path.write_text(json.dumps(doc))


def corrupt_onnx_bundle(root: Path, version: str) -> Path:
    """Checksums consistent, but model.onnx is not a model."""
    out = build_version(root, version)
    write_corrupt_onnx(out / "model.onnx")
    rehash(out)
    return out


def wrong_signature_bundle(root: Path, version: str) -> Path:
    """Checksums consistent, but the manifest says the input has 4 features; the graph has 6.

    (The manifest claims the serving signature, so only the graph check can catch it.)
    """
    src = make_logreg_onnx(root / f"src-wide-{version}" / "model.onnx", n_features=6)
    out = make_bundle(root, name="m", version=version, model=src, out=root / f"m-wide-v{version}")
    path = out / "manifest.json"
    doc = json.loads(path.read_text())
    doc["signature"]["inputs"][0]["shape"] = [-1, 4]
    path.write_text(json.dumps(doc))
    return out


def tampered_bundle(root: Path, version: str) -> Path:
    """model.onnx changed after the bundle was built: its checksum no longer matches."""
    out = build_version(root, version)
    make_logreg_onnx(out / "model.onnx", seed=99)
    return out


def scrape(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Parse Prometheus text with prometheus_client's own parser: {(sample, labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample (labels must match exactly), or None when absent."""
    return scrape(text).get((name, frozenset(labels.items())))


@dataclass
class Serving:
    proc: subprocess.Popen[str]
    url: str
    admin: str
    token: str
    line: str
    grpc: str | None = None  # host:port of the gRPC API, when started with --grpc-port

    @property
    def pid(self) -> int:
        return self.proc.pid

    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def load(self, bundle: Path, name: str = "m", timeout: float = 60.0, **params: object) -> httpx.Response:
        body = {"parameters": {"bundle": str(bundle), **params}}
        return httpx.post(
            f"{self.admin}/v2/repository/models/{name}/load",
            json=body,
            headers=self.admin_headers(),
            timeout=timeout,
        )

    def index(self) -> list[dict[str, str]]:
        r = httpx.post(f"{self.admin}/v2/repository/index", headers=self.admin_headers(), timeout=10)
        r.raise_for_status()
        return r.json()  # type: ignore[no-any-return]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        return self.proc.returncode


def start_serving(tmp_path: Path, bundle: Path | None = None, *extra: str) -> Serving:
    """Start ``python -m mlplat_runtime.serving`` on free ports and wait for its start-up line."""
    token_file = tmp_path / "state" / "admin.token"
    args = [sys.executable, "-m", "mlplat_runtime.serving"]
    if bundle is not None:
        args.append(str(bundle))
    args += ["--port", "0", "--admin-port", "0", "--admin-token-file", str(token_file), *extra]
    proc = subprocess.Popen(
        args, cwd=ROOT, stdout=subprocess.PIPE, stderr=open(tmp_path / "serving.log", "w"), text=True,  # noqa: SIM115
        env={**os.environ, "MLPLAT_PROVIDERS": "CPUExecutionProvider"},
    )  # fmt: skip
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    grpc: str | None = None
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("mlplat serving grpc="):
                grpc = line.strip().removeprefix("mlplat serving grpc=")
            m = LINE.match(line.strip())
            if m:
                token = token_file.read_text().strip()
                return Serving(proc, m["url"], m["admin"], token, line.strip(), grpc)
        if proc.poll() is not None:
            break
    proc.kill()
    proc.wait()
    raise AssertionError(f"serving did not start: {(tmp_path / 'serving.log').read_text()[-2000:]}")


@pytest.fixture
def serving_factory(tmp_path: Path) -> Iterator[object]:
    started: list[Serving] = []

    def factory(bundle: Path | None = None, *extra: str) -> Serving:
        s = start_serving(tmp_path, bundle, *extra)
        started.append(s)
        return s

    yield factory
    for s in started:
        s.stop()


def make_slow_logreg_onnx(path: Path, iterations: int = 3_000_000) -> Path:
    """The logistic regression of ``make_logreg_onnx`` (same signature, same outputs) that first
    spins a Loop ``iterations`` times (~0.7 µs each): a model that keeps the check busy."""
    from onnx import TensorProto, helper, numpy_helper

    from tests.helpers.models import _save

    w, b = logreg_weights(4, 0)
    f32 = TensorProto.FLOAT
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["c_in"], ["c_out"]),
            helper.make_node("Add", ["v_in", "one_b"], ["v_out"]),
        ],
        "spin",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_in", f32, [1]),
        ],
        [
            helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_out", f32, [1]),
        ],
        initializer=[numpy_helper.from_array(np.array([1.0], np.float32), "one_b")],
    )
    nodes = [
        helper.make_node("Loop", ["M", "cond", "v0"], ["v_final"], body=body),
        helper.make_node("Mul", ["v_final", "zero"], ["nothing"]),
        helper.make_node("MatMul", ["input", "W"], ["z0"]),
        helper.make_node("Add", ["z0", "b"], ["z1"]),
        helper.make_node("Add", ["z1", "nothing"], ["z"]),
        helper.make_node("Sigmoid", ["z"], ["p1"]),
        helper.make_node("Sub", ["one", "p1"], ["p0"]),
        helper.make_node("Concat", ["p0", "p1"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
    ]
    consts = {
        "W": w,
        "b": b,
        "one": np.array([1.0], np.float32),
        "zero": np.array([0.0], np.float32),
        "M": np.array(iterations, np.int64),
        "cond": np.array(True),
        "v0": np.array([0.0], np.float32),
    }
    graph = helper.make_graph(
        nodes,
        "slow_logreg",
        [helper.make_tensor_value_info("input", f32, ["batch", 4])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
            helper.make_tensor_value_info("probabilities", f32, ["batch", 2]),
        ],
        initializer=[numpy_helper.from_array(v, k) for k, v in consts.items()],
    )
    return _save(graph, path)


def slow_bundle(root: Path, version: str) -> Path:
    """A bundle (checksums consistent) whose model keeps the checker busy for a few seconds."""
    out = build_version(root, version)
    make_slow_logreg_onnx(out / "model.onnx")
    rehash(out)
    return out


def check_processes(pid: int) -> list[object]:
    """The serving process's check children (its other child is the body decoder)."""
    import psutil

    return [c for c in psutil.Process(pid).children() if "serving.checker" in " ".join(c.cmdline())]


def kill_when_busy(pid: int, timeout: float = 30.0) -> bool:
    """SIGKILL ``pid`` once it has burned CPU on a check (so the kill lands mid-check)."""
    import psutil

    proc = psutil.Process(pid)
    start = sum(proc.cpu_times()[:2])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(proc.cpu_times()[:2]) - start > 0.1:
            proc.kill()
            return True
        time.sleep(0.02)
    return False
