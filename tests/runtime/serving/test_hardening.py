"""Small hostile inputs to the inference handler: compressed bombs, bodies decoded off the loop,
a non-string datatype, and non-finite outputs (which JSON cannot carry as numbers)."""

from __future__ import annotations

import asyncio
import gzip
import inspect
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import orjson
import pytest
from onnx import TensorProto, helper, numpy_helper

from mlplat_runtime.serving.app import OFFLOAD_BYTES, InferenceHandler
from mlplat_runtime.serving.http import Request, Response
from mlplat_runtime.serving.repository import Repository
from tests.helpers.models import _save, make_bundle
from tests.runtime.serving.conftest import build_version

CPU = ["CPUExecutionProvider"]


@pytest.fixture
def repo(tmp_path: Path) -> object:
    r = Repository(providers=CPU)
    r.load(build_version(tmp_path, "1"))
    yield r
    r.close()


def infer(body: bytes, *headers: tuple[bytes, bytes], path: str = "/v2/models/m/infer") -> Request:
    return Request("POST", path, [(b"content-type", b"application/json"), *headers], body)


def body_for(x: np.ndarray, name: str = "input") -> bytes:
    return orjson.dumps(
        {"inputs": [{"name": name, "shape": list(x.shape), "datatype": "FP32", "data": x.tolist()}]}
    )


async def answer(handler: InferenceHandler, req: Request) -> Response:
    result = handler(req)
    return await result if inspect.isawaitable(result) else result  # type: ignore[no-any-return]


async def test_a_gzip_bomb_is_refused_at_the_body_limit(repo: Repository) -> None:
    handler = InferenceHandler(repo)
    handler.max_body = 4 * 1024 * 1024
    bomb = gzip.compress(b" " * (200 * 1024 * 1024), compresslevel=9)  # 200 MiB of spaces from ~200 KB
    resp = await answer(handler, infer(bomb, (b"content-encoding", b"gzip")))
    assert resp.status == 413 and b"inflates to over 4194304 bytes" in resp.body
    deflated = zlib.compress(b" " * (8 * 1024 * 1024))
    resp = await answer(handler, infer(deflated, (b"content-encoding", b"deflate")))
    assert resp.status == 413
    ok = gzip.compress(body_for(np.zeros((2, 4), np.float32)))
    assert (await answer(handler, infer(ok, (b"content-encoding", b"gzip")))).status == 200


async def test_compressed_and_large_bodies_are_decoded_off_the_event_loop(repo: Repository) -> None:
    with ThreadPoolExecutor(2) as pool:
        handler = InferenceHandler(repo, executor=pool)
        small = body_for(np.zeros((2, 4), np.float32))
        assert isinstance(handler(infer(small)), Response)  # the fast path stays inline
        for req in (
            infer(gzip.compress(small), (b"content-encoding", b"gzip")),
            infer(body_for(np.zeros((OFFLOAD_BYTES // 8, 4), np.float32))),
        ):
            pending = handler(req)
            assert inspect.isawaitable(pending)
            beats = 0

            async def heartbeat() -> None:
                nonlocal beats
                while True:
                    beats += 1
                    await asyncio.sleep(0)

            beat = asyncio.ensure_future(heartbeat())
            resp = await pending
            beat.cancel()
            assert resp.status == 200, resp.body[:200]
            assert beats > 1  # the loop ran while the body was decoded


@pytest.mark.parametrize("datatype", [["FP32"], {"x": 1}, 32, None, True])
async def test_a_non_string_datatype_is_a_400(repo: Repository, datatype: object) -> None:
    body = orjson.dumps(
        {"inputs": [{"name": "input", "shape": [1, 4], "datatype": datatype, "data": [0, 0, 0, 0]}]}
    )
    resp = await answer(InferenceHandler(repo), infer(body))
    assert resp.status == 400, resp.body
    assert b"datatype" in resp.body


def make_div_onnx(path: Path) -> Path:
    """output = input / 0: inf, -inf and NaN from 1, -1 and 0."""
    graph = helper.make_graph(
        [helper.make_node("Div", ["input", "zero"], ["output"])],
        "div0",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 3])],
        initializer=[numpy_helper.from_array(np.array(0.0, np.float32), "zero")],
    )
    return _save(graph, path)


async def test_non_finite_outputs_are_spelled_not_sent_as_null(tmp_path: Path) -> None:
    bundle = make_bundle(
        tmp_path, name="d", version="1", model=make_div_onnx(tmp_path / "src" / "model.onnx")
    )
    repo = Repository(providers=CPU)
    try:
        repo.load(bundle)
        x = np.array([[1.0, -1.0, 0.0], [2.0, 2.0, 2.0]], np.float32)
        resp = await answer(InferenceHandler(repo), infer(body_for(x), path="/v2/models/d/infer"))
        assert resp.status == 200
        assert b"null" not in resp.body
        out = orjson.loads(resp.body)["outputs"][0]
        assert out["data"] == ["Infinity", "-Infinity", "NaN", "Infinity", "Infinity", "Infinity"]
        back = np.array(out["data"], dtype=np.float32).reshape(out["shape"])  # as tritonclient reads it
        with np.errstate(divide="ignore", invalid="ignore"):
            np.testing.assert_array_equal(back, x / np.float32(0))
    finally:
        repo.close()


async def test_large_json_bodies_are_decoded_in_a_child_process_alike(repo: Repository) -> None:
    from mlplat_runtime.serving.decoder import CHILD_BYTES, DecoderProcess

    x = np.random.default_rng(1).normal(size=(CHILD_BYTES // 40, 4)).astype(np.float32)
    body = body_for(x)
    assert len(body) > CHILD_BYTES
    decoder = DecoderProcess()
    try:
        with ThreadPoolExecutor(2) as pool:
            via_child = await answer(InferenceHandler(repo, executor=pool, decoder=decoder), infer(body))
            in_thread = await answer(InferenceHandler(repo, executor=pool), infer(body))
            assert via_child.status == in_thread.status == 200
            assert via_child.body == in_thread.body
            wrong = body.replace(b'"name":"input"', b'"name":"nope"')
            refused = await answer(InferenceHandler(repo, executor=pool, decoder=decoder), infer(wrong))
            assert refused.status == 400 and b"unknown input 'nope'" in refused.body
    finally:
        decoder.close()
