"""Triton's model configuration extension (``GET /v2/models/{name}/config``): what
perf_analyzer reads before it sends a request, asked through tritonclient's HTTP client from
a real serving process, and through the handler for models with and without a batch dimension."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import tritonclient.http as triton

from mlplat_runtime.serving.app import InferenceHandler
from mlplat_runtime.serving.http import as_asgi
from mlplat_runtime.serving.modelconfig import UNBATCHED_MAX_BATCH_SIZE
from mlplat_runtime.serving.repository import Repository
from tests.helpers.models import make_bundle, make_identity_onnx
from tests.runtime.serving.conftest import build_version

CPU = ["CPUExecutionProvider"]


@pytest.mark.integration
def test_tritonclient_reads_the_model_config(tmp_path: Path, serving_factory: Any) -> None:
    s = serving_factory(build_version(tmp_path, "2", seed=1))
    client = triton.InferenceServerClient(url=s.url.removeprefix("http://"))
    try:
        assert "model_configuration" in client.get_server_metadata()["extensions"]
        for version in ("", "2"):
            config = client.get_model_config("m", model_version=version)
            assert config["name"] == "m" and config["platform"] == "onnxruntime_onnx"
            assert config["max_batch_size"] == UNBATCHED_MAX_BATCH_SIZE
            assert config["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": [4]}]
            assert config["output"] == [
                {"name": "label", "data_type": "TYPE_INT64", "dims": [1], "reshape": {"shape": []}},
                {"name": "probabilities", "data_type": "TYPE_FP32", "dims": [2]},
            ]
            assert config["instance_group"][0]["kind"] == "KIND_CPU"
            assert "dynamic_batching" not in config
        with pytest.raises(triton.InferenceServerException, match="version '9' is not loaded"):
            client.get_model_config("m", model_version="9")
        with pytest.raises(triton.InferenceServerException, match="not loaded"):
            client.get_model_config("nope")
    finally:
        client.close()


@pytest.fixture
async def fixed_shape(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A model with a fixed first dimension (2 rows, always): no batch dimension."""
    src = make_identity_onnx(tmp_path / "src" / "model.onnx", "INT32", shape=(2, 3))
    repo = Repository(providers=CPU)
    repo.load(make_bundle(tmp_path, name="fixed", version="1", model=src))
    transport = httpx.ASGITransport(app=as_asgi(InferenceHandler(repo)))
    async with httpx.AsyncClient(transport=transport, base_url="http://serving") as c:
        yield c
    repo.close()


async def test_a_model_without_a_batch_dimension_reports_full_shapes(fixed_shape: httpx.AsyncClient) -> None:
    r = await fixed_shape.get("/v2/models/fixed/config")
    assert r.status_code == 200
    config = r.json()
    assert config["max_batch_size"] == 0
    assert config["input"] == [{"name": "input", "data_type": "TYPE_INT32", "dims": [2, 3]}]
    assert config["output"] == [{"name": "output", "data_type": "TYPE_INT32", "dims": [2, 3]}]
    assert (await fixed_shape.post("/v2/models/fixed/config")).status_code == 405
