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
