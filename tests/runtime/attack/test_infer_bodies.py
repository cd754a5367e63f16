"""Hypothesis-generated inference bodies against the real inference handler and model: valid
bodies (JSON flat or nested, binary tensor data) must answer what numpy computes; every other
body, however broken, must be a 4xx with an ``error`` - never a 500, never a traceback."""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlplat_runtime.serving.app import InferenceHandler
from mlplat_runtime.serving.http import Request, Response
from mlplat_runtime.serving.repository import Repository
from tests.runtime.serving.conftest import build_version, logreg_expected

CPU = ["CPUExecutionProvider"]
SETTINGS = settings(
    max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
)


@pytest.fixture(scope="module")
def handler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InferenceHandler]:
    root: Path = tmp_path_factory.mktemp("bodies")
    repo = Repository(providers=CPU)
    repo.load(build_version(root, "1", seed=3))
    yield InferenceHandler(repo)
    repo.close()


def call(
    handler: InferenceHandler, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> Response:
    result = handler(Request("POST", "/v2/models/m/infer", headers or [], body))
    assert not inspect.isawaitable(result)  # no executor: the inline path answers
    return result  # type: ignore[return-value]


finite = st.floats(-1e6, 1e6, allow_nan=False, width=32)
rows = st.integers(0, 6).flatmap(
    lambda n: st.lists(st.lists(finite, min_size=4, max_size=4), min_size=n, max_size=n)
)


@SETTINGS
@given(
    x=rows,
    nested=st.booleans(),
    binary=st.booleans(),
    want_binary=st.booleans(),
    rid=st.none() | st.text(max_size=20),
)
def test_valid_bodies_answer_what_the_model_computes(
    handler: InferenceHandler,
    x: list[list[float]],
    nested: bool,
    binary: bool,
    want_binary: bool,
    rid: str | None,
) -> None:
    arr = np.array(x, dtype=np.float32).reshape(len(x), 4)
    item: dict[str, Any] = {"name": "input", "shape": [len(x), 4], "datatype": "FP32"}
    doc: dict[str, Any] = {"inputs": [item]}
    if rid is not None:
        doc["id"] = rid
    headers: list[tuple[bytes, bytes]] = []
    tail = b""
    if binary:
        tail = arr.astype("<f4").tobytes()
        item["parameters"] = {"binary_data_size": len(tail)}
    else:
        item["data"] = arr.tolist() if nested else arr.reshape(-1).tolist()
    if want_binary:
        doc["parameters"] = {"binary_data_output": True}
    head = orjson.dumps(doc)
    if binary or want_binary:
        headers.append((b"inference-header-content-length", str(len(head)).encode()))
    resp = call(handler, head + tail, headers)
    assert resp.status == 200, resp.body[:300]
    with np.errstate(over="ignore"):
        label, probs = logreg_expected(arr, seed=3)
    if want_binary:
        json_len = int(dict(resp.headers)[b"inference-header-content-length"])
        meta = orjson.loads(resp.body[:json_len])
        blob = resp.body[json_len:]
        sizes = [o["parameters"]["binary_data_size"] for o in meta["outputs"]]
        got_label = np.frombuffer(blob[: sizes[0]], "<i8")
        got_probs = np.frombuffer(blob[sizes[0] :], "<f4").reshape(-1, 2)
    else:
        meta = orjson.loads(resp.body)
        got_label = np.array(meta["outputs"][0]["data"], np.int64)
        got_probs = np.array(meta["outputs"][1]["data"], np.float32).reshape(-1, 2)
    assert meta.get("id") == rid
    np.testing.assert_allclose(got_probs, probs, rtol=1e-4, atol=1e-5)
    agree = (got_label == label) | np.isclose(probs[:, 0], probs[:, 1], atol=1e-5)
    assert agree.all()


json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
)
json_any = st.recursive(
    json_leaf,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
    max_leaves=20,
)
broken_input = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["input", "nope"]) | json_any,
        "shape": st.lists(st.integers(-3, 2**40), max_size=4) | json_any,
        "datatype": st.sampled_from(["FP32", "FP64", "INT64", "BYTES", "fp32", "BOOL"]) | json_any,
        "data": json_any,
        "parameters": st.dictionaries(st.sampled_from(["binary_data_size", "x"]), json_any, max_size=2)
        | json_any,
    },
)
broken_body = st.fixed_dictionaries(
    {},
    optional={
        "inputs": st.lists(broken_input, max_size=3) | json_any,
        "outputs": st.lists(
            st.fixed_dictionaries({}, optional={"name": json_any, "parameters": json_any}), max_size=3
        )
        | json_any,
        "id": json_any,
        "parameters": json_any,
    },
)


@SETTINGS
@given(
    doc=broken_body | json_any, header_len=st.none() | st.integers(-5, 400), garbage=st.binary(max_size=40)
)
def test_any_other_body_is_a_4xx_with_an_error(
    handler: InferenceHandler, doc: Any, header_len: int | None, garbage: bytes
) -> None:
    body = json.dumps(doc).encode() + (garbage if header_len is not None else b"")
    headers = [] if header_len is None else [(b"inference-header-content-length", str(header_len).encode())]
    resp = call(handler, body, headers)
    assert resp.status in (200, 400, 404, 413, 415), (resp.status, resp.body[:300])
    if resp.status != 200:
        assert isinstance(orjson.loads(resp.body)["error"], str)


@SETTINGS
@given(raw=st.binary(max_size=200))
def test_bytes_that_are_not_json_are_a_400(handler: InferenceHandler, raw: bytes) -> None:
    resp = call(handler, raw)
    assert resp.status in (200, 400), resp.body[:200]
