"""OIP v2 over gRPC: tritonclient's gRPC client, unchanged, against a real serving process
started with ``--grpc-port``; answers compared with the source model and with REST."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as tgrpc

from tests.runtime.serving.conftest import build_version, logreg_expected, sample

pytestmark = pytest.mark.integration


def test_tritonclient_grpc_works_unchanged(tmp_path: Path, serving_factory: Any) -> None:
    s = serving_factory(build_version(tmp_path, "3", seed=7), "--grpc-port", "0")
    assert s.grpc is not None
    client = tgrpc.InferenceServerClient(url=s.grpc)
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("m") and client.is_model_ready("m", "3")
        assert not client.is_model_ready("m", "4") and not client.is_model_ready("nope")
        server = client.get_server_metadata(as_json=True)
        assert server["name"] == "mlplat" and "model_configuration" in server["extensions"]
        meta = client.get_model_metadata("m", as_json=True)
        assert meta["versions"] == ["3"] and meta["platform"] == "onnxruntime_onnx"
        assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": ["-1", "4"]}]
        config = client.get_model_config("m", as_json=True)["config"]
        assert config["max_batch_size"] == 1024 and config["input"][0]["dims"] == ["4"]

        x = np.random.default_rng(3).normal(size=(16, 4)).astype(np.float32)
        label, probs = logreg_expected(x, seed=7)
        inp = tgrpc.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        result = client.infer("m", [inp], request_id="g-1")
        assert result.get_response().id == "g-1"
        assert np.array_equal(result.as_numpy("label"), label)
        assert np.allclose(result.as_numpy("probabilities"), probs, atol=1e-6)
        # one output asked for, a version named
        out = [tgrpc.InferRequestedOutput("probabilities")]
        result = client.infer("m", [inp], outputs=out, model_version="3")
        assert result.as_numpy("label") is None
        assert np.allclose(result.as_numpy("probabilities"), probs, atol=1e-6)
        # errors are the client's exception with our message and the right status
        bad = tgrpc.InferInput("input", [1, 3], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 3), np.float32))
        with pytest.raises(tgrpc.InferenceServerException, match="does not fit the model's") as info:
            client.infer("m", [bad])
        assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
        with pytest.raises(tgrpc.InferenceServerException, match="not loaded") as info:
            client.infer("nope", [inp])
        assert info.value.status() == "StatusCode.NOT_FOUND"
    finally:
        client.close()
    import httpx

    text = httpx.get(f"{s.url}/metrics").text
    assert (
        sample(text, "mlplat_requests_total", model="m", version="3", endpoint="grpc_infer", code="200") == 2
    )
    assert (
        sample(text, "mlplat_requests_total", model="m", version="3", endpoint="grpc_infer", code="400") == 1
    )


def test_grpc_shares_the_dynamic_batcher(tmp_path: Path, serving_factory: Any) -> None:
    s = serving_factory(build_version(tmp_path, "1"), "--grpc-port", "0", "--max-batch-size", "64")
    client = tgrpc.InferenceServerClient(url=s.grpc)
    x = np.random.default_rng(5).normal(size=(8, 4)).astype(np.float32)
    try:
        config = client.get_model_config("m", as_json=True)["config"]
        assert config["max_batch_size"] == 64 and "dynamic_batching" in config
        inp = tgrpc.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        assert np.array_equal(client.infer("m", [inp]).as_numpy("label"), logreg_expected(x, 0)[0])
    finally:
        client.close()
    import httpx

    text = httpx.get(f"{s.url}/metrics").text
    assert sample(text, "mlplat_batch_size_sum", model="m", version="1") == 8


def test_serving_imports_and_refuses_grpc_clearly_without_grpcio() -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['grpc'] = None\n"
        "import mlplat_runtime.serving.__main__, mlplat_runtime.serving.server as s\n"
        "assert 'grpc' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "print(s.grpc_missing())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "install the grpc extra" in out


class _GrpcServers:
    """The inference and admin gRPC servers over one repository, on an event loop of their own
    (a thread: tritonclient's client is blocking)."""

    def __init__(self, repo: Any, token: str) -> None:
        import asyncio
        import threading

        from mlplat_runtime.serving.app import InferenceHandler
        from mlplat_runtime.serving.grpc_service import start_admin_grpc, start_grpc

        self.loop = asyncio.new_event_loop()
        self.servers: list[Any] = []
        started = threading.Event()

        async def start() -> tuple[int, int]:
            handler = InferenceHandler(repo)
            infer, infer_port = await start_grpc(handler, "127.0.0.1", 0)
            admin, admin_port = await start_admin_grpc(repo, token, "127.0.0.1", 0)
            self.servers = [infer, admin]
            return infer_port, admin_port

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        started.wait()
        ports = asyncio.run_coroutine_threadsafe(start(), self.loop).result(timeout=30)
        self.infer = f"127.0.0.1:{ports[0]}"
        self.admin = f"127.0.0.1:{ports[1]}"

    def close(self) -> None:
        import asyncio

        async def stop() -> None:
            for server in self.servers:
                await server.stop(grace=1.0)

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


def test_the_repository_extension_over_grpc_on_the_admin_side_with_the_token(tmp_path: Path) -> None:
    import json

    from mlplat_runtime.serving.repository import Repository

    token = "t0ken-" + "x" * 40
    auth = {"authorization": f"Bearer {token}"}
    repo = Repository(providers=["CPUExecutionProvider"])
    servers = _GrpcServers(repo, token)
    admin = tgrpc.InferenceServerClient(url=servers.admin)
    infer = tgrpc.InferenceServerClient(url=servers.infer)
    x = np.random.default_rng(8).normal(size=(4, 4)).astype(np.float32)
    inp = tgrpc.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    try:
        # no token, a wrong one: refused, nothing loaded
        for headers in (None, {"authorization": "Bearer nope"}):
            with pytest.raises(tgrpc.InferenceServerException, match="admin token") as info:
                admin.get_model_repository_index(headers=headers)
            assert info.value.status() == "StatusCode.UNAUTHENTICATED"
        v1 = build_version(tmp_path, "1", seed=3)
        with pytest.raises(tgrpc.InferenceServerException, match="admin token"):
            admin.load_model("m", config=json.dumps({"parameters": {"bundle": {"string_value": str(v1)}}}))
        assert repo.find("m") is None
        # the inference port has no repository extension at all
        with pytest.raises(tgrpc.InferenceServerException) as info:
            infer.get_model_repository_index(headers=auth)
        assert info.value.status() == "StatusCode.UNIMPLEMENTED"

        # tritonclient's load_model, unchanged: a Triton config naming the bundle, batching on
        config = {
            "parameters": {"bundle": {"string_value": str(v1)}},
            "max_batch_size": 16,
            "dynamic_batching": {"preferred_batch_size": [4], "max_queue_delay_microseconds": "100"},
        }
        admin.load_model("m", headers=auth, config=json.dumps(config))
        assert repo.get("m").batching is not None and repo.get("m").batching.max_batch_size == 16
        index = admin.get_model_repository_index(headers=auth, as_json=True)["models"]
        assert index == [{"name": "m", "version": "1", "state": "READY"}]
        assert np.array_equal(infer.infer("m", [inp]).as_numpy("label"), logreg_expected(x, 3)[0])

        # a bad bundle is refused with the reason, the old version keeps serving
        with pytest.raises(tgrpc.InferenceServerException, match="bundle not found") as info:
            admin.load_model(
                "m", headers=auth, config=json.dumps({"parameters": {"bundle": {"string_value": "/no"}}})
            )
        assert info.value.status() == "StatusCode.NOT_FOUND"
        with pytest.raises(tgrpc.InferenceServerException, match="file overrides are not supported"):
            admin.load_model("m", headers=auth, config="{}", files={"file:1/model.onnx": b"x"})
        assert infer.is_model_ready("m", "1")

        # a swap to v2 through the same call, then an unload
        v2 = build_version(tmp_path, "2", seed=4)
        admin.load_model(
            "m", headers=auth, config=json.dumps({"parameters": {"bundle": {"string_value": str(v2)}}})
        )
        assert np.array_equal(infer.infer("m", [inp]).as_numpy("label"), logreg_expected(x, 4)[0])
        assert repo.get("m").batching is None  # the new load asked for none
        admin.unload_model("m", headers=auth)
        assert not infer.is_model_ready("m")
        index = admin.get_model_repository_index(headers=auth, as_json=True)["models"]
        assert index == [{"name": "m", "version": "2", "state": "UNAVAILABLE", "reason": "unloaded"}]
        ready = admin.get_model_repository_index(headers=auth, as_json=True).get("models", [])
        assert [m for m in ready if m.get("state") == "READY"] == []
    finally:
        admin.close()
        infer.close()
        servers.close()
        repo.close()


def test_load_parameters_name_what_is_wrong() -> None:
    from tritonclient.grpc import service_pb2

    from mlplat_runtime.errors import RequestError
    from mlplat_runtime.serving.grpc_service import load_parameters

    def params(**kw: Any) -> Any:
        req = service_pb2.RepositoryModelLoadRequest(model_name="m")
        for key, value in kw.items():
            field = {bool: "bool_param", str: "string_param", int: "int64_param"}[type(value)]
            setattr(req.parameters[key], field, value)
        return req.parameters

    assert load_parameters(params(bundle="/b", allow_signature_change=True)) == ("/b", True, None)
    assert load_parameters(params(bundle="/b", dynamic_batching=False)) == ("/b", False, False)
    got = load_parameters(params(bundle="/b", dynamic_batching='{"max_batch_size": 8, "instances": 2}'))
    assert got[2] is not None and got[2] is not False and got[2].instances == 2  # type: ignore[union-attr]
    for bad, why in (
        (params(), "no bundle given"),
        (params(bundle="/b", batch=3), "unknown or mistyped load parameter 'batch'"),
        (params(bundle=3), "unknown or mistyped load parameter 'bundle'"),
        (params(bundle="/b", dynamic_batching="[1]"), "must be a JSON object"),
        (params(bundle="/b", dynamic_batching='{"size": 1}'), "unknown key"),
        (params(config="{nope"), "config is not valid JSON"),
    ):
        with pytest.raises(RequestError, match=why):
            load_parameters(bad)


def _start_with_admin_grpc(tmp_path: Path, bundle: Path, *extra: str) -> tuple[Any, dict[str, str], str]:
    """A serving process with --grpc-port and --admin-grpc-port: (process, addresses, token)."""
    import os
    import subprocess
    import sys
    import time

    from tests.runtime.serving.conftest import ROOT

    token_file = tmp_path / "state" / "admin.token"
    ports = ["--port", "0", "--admin-port", "0", "--grpc-port", "0", "--admin-grpc-port", "0"]
    args = [sys.executable, "-m", "mlplat_runtime.serving", str(bundle), *ports]
    args += ["--admin-token-file", str(token_file), *extra]
    log = (tmp_path / "serving.log").open("w")
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True,
                            env={**os.environ, "MLPLAT_PROVIDERS": "CPUExecutionProvider"})  # fmt: skip
    assert proc.stdout is not None
    found: dict[str, str] = {}
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = proc.stdout.readline().strip()
        if not line:
            break
        if line.startswith("mlplat serving grpc="):
            found["grpc"] = line.split("=", 1)[1]
        if line.startswith("mlplat serving url="):  # the admin gRPC line comes right after it
            after = proc.stdout.readline().strip()
            assert after.startswith("mlplat serving admin_grpc="), after
            found["admin_grpc"] = after.split("=", 1)[1]
            return proc, found, token_file.read_text().strip()
    proc.kill()
    proc.wait()
    raise AssertionError((tmp_path / "serving.log").read_text()[-2000:])


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_serving_process_serves_the_repository_extension_on_its_admin_grpc_port(
    tmp_path: Path, workers: str
) -> None:
    import json
    import signal

    proc, found, token = _start_with_admin_grpc(
        tmp_path, build_version(tmp_path, "1", seed=1), "--workers", workers
    )
    auth = {"authorization": f"Bearer {token}"}
    admin = tgrpc.InferenceServerClient(url=found["admin_grpc"])
    infer = tgrpc.InferenceServerClient(url=found["grpc"])
    x = np.random.default_rng(2).normal(size=(3, 4)).astype(np.float32)
    inp = tgrpc.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    try:
        assert found["admin_grpc"].startswith("127.0.0.1:")  # bound like the admin port: loopback
        with pytest.raises(tgrpc.InferenceServerException, match="admin token"):
            admin.get_model_repository_index()
        assert admin.get_model_repository_index(headers=auth, as_json=True)["models"][0]["version"] == "1"
        v2 = build_version(tmp_path, "2", seed=2)
        admin.load_model(
            "m", headers=auth, config=json.dumps({"parameters": {"bundle": {"string_value": str(v2)}}})
        )
        for _ in range(int(workers) * 4):  # every worker serves v2 once the load is acknowledged
            result = infer.infer("m", [inp])
            assert result.get_response().model_version == "2"
            assert np.array_equal(result.as_numpy("label"), logreg_expected(x, 2)[0])
    finally:
        admin.close()
        infer.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
