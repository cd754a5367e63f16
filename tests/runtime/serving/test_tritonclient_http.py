"""Triton's HTTP client (``tritonclient.http``), unchanged, against a real serving process: the
calls a Triton user makes, each answer compared with the source model.

What ``test_server`` does not already cover: every mix of JSON and binary tensors in and out,
compressed request bodies, many requests in flight from the client's own connection pool
(``async_infer`` with ``concurrency``), a 1,024-row binary batch, the dynamic batcher behind
the same client, readiness and metadata by version, the repository extension on the admin
port through the client with the bearer token (and refused without it), and an unloaded model
seen as not ready by the client.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from tests.runtime.serving.conftest import build_version, logreg_expected, sample

pytestmark = pytest.mark.integration


def client_for(url: str, concurrency: int = 1) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url=url.removeprefix("http://"), concurrency=concurrency)


def infer_input(x: np.ndarray, binary: bool) -> triton.InferInput:
    inp = triton.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    return inp


def test_readiness_and_metadata_by_version(tmp_path: Path, serving_factory: Any) -> None:
    s = serving_factory(build_version(tmp_path, "5", seed=2))
    client = client_for(s.url)
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("m") and client.is_model_ready("m", "5")
        assert not client.is_model_ready("m", "6") and not client.is_model_ready("other")
        server = client.get_server_metadata()
        assert server["name"] == "mlplat" and "binary_tensor_data" in server["extensions"]
        meta = client.get_model_metadata("m", model_version="5")
        assert meta["name"] == "m" and meta["versions"] == ["5"]
        assert meta["outputs"] == [
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
        ]
        with pytest.raises(triton.InferenceServerException, match="not loaded"):
            client.get_model_metadata("other")
    finally:
        client.close()


def test_every_mix_of_json_and_binary_tensors(tmp_path: Path, serving_factory: Any) -> None:
    s = serving_factory(build_version(tmp_path, "1", seed=4))
    client = client_for(s.url)
    x = np.random.default_rng(8).normal(size=(7, 4)).astype(np.float32)
    label, probs = logreg_expected(x, seed=4)
    try:
        for binary_in in (False, True):
            for binary_out in (False, True):
                outs = [
                    triton.InferRequestedOutput(n, binary_data=binary_out) for n in ("label", "probabilities")
                ]
                result = client.infer("m", [infer_input(x, binary_in)], outputs=outs, request_id="mix")
                response = result.get_response()
                assert response["id"] == "mix" and response["model_name"] == "m"
                assert response["model_version"] == "1"
                # a binary output carries binary_data_size instead of data
                carried = {
                    o["name"]: ("data" in o, "binary_data_size" in o.get("parameters", {}))
                    for o in response["outputs"]
                }
                assert carried == {n: (not binary_out, binary_out) for n in ("label", "probabilities")}
                assert np.array_equal(result.as_numpy("label"), label)
                assert np.allclose(result.as_numpy("probabilities"), probs, atol=1e-6)
        # one output asked for: only that one comes back
        only = [triton.InferRequestedOutput("label", binary_data=True)]
        result = client.infer("m", [infer_input(x, True)], outputs=only)
        assert result.as_numpy("probabilities") is None
        assert np.array_equal(result.as_numpy("label"), label)
    finally:
        client.close()


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_request_bodies(tmp_path: Path, serving_factory: Any, algorithm: str) -> None:
    s = serving_factory(build_version(tmp_path, "1", seed=6))
    client = client_for(s.url)
    x = np.random.default_rng(9).normal(size=(64, 4)).astype(np.float32)
    label, probs = logreg_expected(x, seed=6)
    try:
        for binary in (False, True):
            result = client.infer("m", [infer_input(x, binary)], request_compression_algorithm=algorithm)
            assert np.array_equal(result.as_numpy("label"), label)
            assert np.allclose(result.as_numpy("probabilities"), probs, atol=1e-6)
    finally:
        client.close()


def test_many_requests_in_flight_and_a_large_binary_batch(tmp_path: Path, serving_factory: Any) -> None:
    s = serving_factory(build_version(tmp_path, "2", seed=1))
    client = client_for(s.url, concurrency=8)
    rng = np.random.default_rng(10)
    xs = [rng.normal(size=(1 + i % 5, 4)).astype(np.float32) for i in range(40)]
    try:
        pending = [
            client.async_infer("m", [infer_input(x, i % 2 == 0)], request_id=str(i)) for i, x in enumerate(xs)
        ]
        for i, (x, p) in enumerate(zip(xs, pending, strict=True)):
            result = p.get_result(timeout=60)
            assert result.get_response()["id"] == str(i)
            assert np.array_equal(result.as_numpy("label"), logreg_expected(x, seed=1)[0])
        big = rng.normal(size=(1024, 4)).astype(np.float32)
        result = client.infer("m", [infer_input(big, True)])
        label, probs = logreg_expected(big, seed=1)
        assert result.as_numpy("probabilities").shape == (1024, 2)
        assert np.array_equal(result.as_numpy("label"), label)
        assert np.allclose(result.as_numpy("probabilities"), probs, atol=1e-6)
    finally:
        client.close()
    text = httpx.get(f"{s.url}/metrics").text
    assert sample(text, "mlplat_requests_total", model="m", version="2", endpoint="infer", code="200") == 41


def test_the_dynamic_batcher_behind_the_same_client(tmp_path: Path, serving_factory: Any) -> None:
    s = serving_factory(build_version(tmp_path, "1", seed=3), "--max-batch-size", "16")
    client = client_for(s.url, concurrency=8)
    rng = np.random.default_rng(11)
    xs = [rng.normal(size=(1, 4)).astype(np.float32) for _ in range(48)]
    try:
        config = client.get_model_config("m")
        assert config["max_batch_size"] == 16 and "dynamic_batching" in config
        pending = [client.async_infer("m", [infer_input(x, True)]) for x in xs]
        for x, p in zip(xs, pending, strict=True):
            label, probs = logreg_expected(x, seed=3)
            result = p.get_result(timeout=60)
            assert np.array_equal(result.as_numpy("label"), label)
            assert np.allclose(result.as_numpy("probabilities"), probs, atol=1e-6)
    finally:
        client.close()
    text = httpx.get(f"{s.url}/metrics").text
    # every row went through the batcher (however the calls were grouped)
    assert sample(text, "mlplat_batch_size_sum", model="m", version="1") == 48


def test_repository_extension_through_the_client(tmp_path: Path, serving_factory: Any) -> None:
    s = serving_factory(build_version(tmp_path, "3", seed=5))
    admin = client_for(s.admin)
    client = client_for(s.url)
    try:
        index = admin.get_model_repository_index(headers=s.admin_headers())
        assert [(e["name"], e["version"], e["state"]) for e in index] == [("m", "3", "READY")]
        with pytest.raises(triton.InferenceServerException, match="admin token"):
            admin.get_model_repository_index()
        with pytest.raises(triton.InferenceServerException, match="admin token"):
            admin.unload_model("m", headers={"Authorization": "Bearer not-the-token"})
        assert client.is_model_ready("m")
        admin.unload_model("m", headers=s.admin_headers())
        assert not client.is_model_ready("m")
        with pytest.raises(triton.InferenceServerException, match="not loaded"):
            client.infer("m", [infer_input(np.zeros((1, 4), np.float32), True)])
        assert s.load(build_version(tmp_path, "4", seed=5)).status_code == 200
        assert client.is_model_ready("m", "4")
    finally:
        admin.close()
        client.close()
