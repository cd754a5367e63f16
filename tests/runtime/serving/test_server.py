"""The real serving process on free loopback ports, spoken to by an independent OIP client
(Triton's ``tritonclient``) and by raw HTTP; predictions compared with the source model."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import psutil
import pytest
import tritonclient.http as triton

from tests.runtime.serving.conftest import LINE, ROOT, build_version, sample

pytestmark = pytest.mark.integration


def host_port(url: str) -> str:
    return url.removeprefix("http://")


def source_outputs(tmp_path: Path, version: str, x: np.ndarray) -> dict[str, np.ndarray]:
    """Run the model the bundle was built from, directly in ONNX Runtime."""
    src = tmp_path / f"src-m-{version}" / "model.onnx"
    sess = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, {"input": x}), strict=True))


def test_tritonclient_speaks_to_the_server(tmp_path: Path, serving_factory: Any) -> None:
    bundle = build_version(tmp_path, "3", seed=7)
    s = serving_factory(bundle)
    m = LINE.match(s.line)
    assert m is not None
    assert (m["model"], m["version"], m["provider"]) == ("m", "3", "CPUExecutionProvider")
    assert m["token"] == str(tmp_path / "state" / "admin.token")

    client = triton.InferenceServerClient(url=host_port(s.url))
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("m") and client.is_model_ready("m", "3")
        assert not client.is_model_ready("m", "4")
        meta = client.get_model_metadata("m")
        assert meta["versions"] == ["3"] and meta["platform"] == "onnxruntime_onnx"
        assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
        assert meta["parameters"]["execution_provider"] == "CPUExecutionProvider"
        assert client.get_server_metadata()["name"] == "mlplat"

        x = np.random.default_rng(3).normal(size=(16, 4)).astype(np.float32)
        want = source_outputs(tmp_path, "3", x)
        for binary in (True, False):
            inp = triton.InferInput("input", list(x.shape), "FP32")
            inp.set_data_from_numpy(x, binary_data=binary)
            outs = [triton.InferRequestedOutput(n, binary_data=binary) for n in ("label", "probabilities")]
            result = client.infer("m", [inp], outputs=outs, request_id=f"r-{binary}")
            assert result.get_response()["id"] == f"r-{binary}"
            assert np.array_equal(result.as_numpy("label"), want["label"])
            assert np.allclose(result.as_numpy("probabilities"), want["probabilities"], atol=1e-6)
        # no outputs named: the client asks for all of them as binary (binary_data_output)
        inp = triton.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        result = client.infer("m", [inp], model_version="3")
        assert np.array_equal(result.as_numpy("label"), want["label"])
        # a bad request surfaces as the client's exception with our message
        bad = triton.InferInput("input", [1, 3], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 3), np.float32), binary_data=False)
        with pytest.raises(triton.InferenceServerException, match="does not fit the model's"):
            client.infer("m", [bad])
    finally:
        client.close()


def test_starts_empty_and_takes_admin_loads(tmp_path: Path, serving_factory: Any) -> None:
    s = serving_factory()
    assert "model=- version=- provider=-" in s.line
    assert httpx.get(f"{s.url}/v2/health/ready").status_code == 200  # ready with nothing loaded
    assert httpx.get(f"{s.url}/v2/models/m").status_code == 404
    assert httpx.post(f"{s.admin}/v2/repository/index").status_code == 401
    r = s.load(build_version(tmp_path, "1"))
    assert r.status_code == 200, r.text
    assert r.json()["version"] == "1"
    body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    assert httpx.post(f"{s.url}/v2/models/m/infer", json=body).json()["model_version"] == "1"
    assert [e["state"] for e in s.index()] == ["READY"]
    metrics = httpx.get(f"{s.url}/metrics").text
    assert sample(metrics, "mlplat_model_loads_total", model="m", result="ok") == 1


def test_graceful_stop_takes_the_check_process_with_it(tmp_path: Path, serving_factory: Any) -> None:
    s = serving_factory(build_version(tmp_path, "1"))
    assert s.load(build_version(tmp_path, "2", seed=2)).status_code == 200  # the check process is up
    children = psutil.Process(s.pid).children(recursive=True)
    assert children, "the warm check process should be running"
    assert s.stop() == 0
    _gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive


def test_a_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        out = subprocess.run(
            [sys.executable, "-m", "mlplat_runtime.serving", "--port", str(port), "--admin-port", "0",
             "--admin-token-file", str(tmp_path / "t")],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert out.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port} for the inference API" in out.stderr
    assert "another process holds the port" in out.stderr


def test_a_bad_startup_bundle_fails_before_listening(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mlplat_runtime.serving", str(tmp_path / "missing"), "--port", "0",
         "--admin-port", "0", "--admin-token-file", str(tmp_path / "t")],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 1
    assert "bundle not found" in out.stderr
    assert "mlplat serving" not in out.stdout


def test_mlplat_serve_cli(tmp_path: Path) -> None:
    bundle = build_version(tmp_path, "5", seed=5)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlplat_tui", "serve", str(bundle), "--port", "0", "--admin-port", "0",
         "--admin-token-file", str(tmp_path / "tok")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "MLPLAT_PROVIDERS": "CPUExecutionProvider"},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        m = LINE.match(line)
        assert m is not None, line
        assert (m["model"], m["version"]) == ("m", "5")
        assert httpx.get(f"{m['url']}/v2/models/m/ready").status_code == 200
        assert (tmp_path / "tok").stat().st_mode & 0o777 == 0o600
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=15)
    assert proc.returncode == 0


def test_a_check_process_that_dies_while_idle_is_replaced(tmp_path: Path, serving_factory: Any) -> None:
    s = serving_factory(build_version(tmp_path, "1"))

    def checkers() -> list[psutil.Process]:  # (the other child is the body decoder)
        return [c for c in psutil.Process(s.pid).children() if "serving.checker" in " ".join(c.cmdline())]

    deadline = time.monotonic() + 30
    while not checkers() and time.monotonic() < deadline:
        time.sleep(0.05)
    (checker,) = checkers()
    checker.kill()
    checker.wait(10)
    new: list[psutil.Process] = []
    while not new and time.monotonic() < deadline:
        time.sleep(0.1)
        new = [c for c in checkers() if c.pid != checker.pid]
    assert new, "no new check process"
    assert s.load(build_version(tmp_path, "2", seed=2)).status_code == 200
