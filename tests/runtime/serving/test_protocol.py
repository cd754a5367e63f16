"""OIP v2 JSON <-> numpy: every datatype, flat and nested data, binary tensors, and the 400s."""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import numpy as np
import orjson
import pytest

from mlplat_runtime.bundle.manifest import OIP_TO_NUMPY, TensorSpec
from mlplat_runtime.errors import RequestError
from mlplat_runtime.serving import protocol
from mlplat_runtime.serving.protocol import (
    TensorSlot,
    decode_infer_request,
    encode_infer_response,
    model_metadata,
)


def slot(name: str, datatype: str, shape: tuple[int, ...]) -> TensorSlot:
    return TensorSlot.from_spec(TensorSpec(name=name, datatype=datatype, shape=shape))  # type: ignore[arg-type]


def sig(
    datatype: str = "FP32", shape: tuple[int, ...] = (-1, 3)
) -> tuple[dict[str, TensorSlot], list[TensorSlot]]:
    return {"x": slot("x", datatype, shape)}, [slot("y", datatype, shape), slot("z", "INT64", (-1,))]


def body(**doc: Any) -> bytes:
    return json.dumps(doc).encode()  # stdlib: it writes integers beyond 64 bits, as a client might


def tensor(data: Any, shape: Any, datatype: str = "FP32", name: str = "x") -> dict[str, Any]:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


VALUES: dict[str, list[Any]] = {
    "BOOL": [True, False, True, True, False, False],
    "UINT8": [0, 1, 2, 250, 255, 7],
    "INT8": [-128, -1, 0, 1, 127, 5],
    "INT16": [-32768, -2, 0, 2, 32767, 9],
    "INT32": [-(2**31), -3, 0, 3, 2**31 - 1, 11],
    "INT64": [-(2**63), -4, 0, 4, 2**63 - 1, 13],
    "FP16": [0.5, -1.25, 0.0, 2.0, 65504.0, 1.0],
    "FP32": [0.1, -2.5, 0.0, 3.25, 1e30, 7.0],
    "FP64": [0.1, -2.5, 0.0, 3.25, 1e300, 7.0],
}


@pytest.mark.parametrize("datatype", sorted(OIP_TO_NUMPY))
@pytest.mark.parametrize("nested", [False, True])
def test_decode_every_datatype_flat_and_nested(datatype: str, nested: bool) -> None:
    values = VALUES[datatype]
    data = [values[:3], values[3:]] if nested else values
    inputs, outputs = sig(datatype)
    req = decode_infer_request(body(inputs=[tensor(data, [2, 3], datatype)]), inputs, outputs)
    arr = req.inputs["x"]
    assert arr.dtype == np.dtype(OIP_TO_NUMPY[datatype])
    assert arr.shape == (2, 3)
    assert arr.reshape(-1).tolist() == np.asarray(values, dtype=arr.dtype).tolist()
    assert req.outputs == ("y", "z")
    assert req.binary == frozenset()


@pytest.mark.parametrize("datatype", sorted(OIP_TO_NUMPY))
def test_encode_every_datatype_round_trips(datatype: str) -> None:
    arr = np.asarray(VALUES[datatype], dtype=OIP_TO_NUMPY[datatype]).reshape(2, 3)
    out, json_len = encode_infer_response("m", "3", "req-1", ["y"], [arr])
    assert json_len is None
    doc = orjson.loads(out)
    assert doc["model_name"] == "m" and doc["model_version"] == "3" and doc["id"] == "req-1"
    (o,) = doc["outputs"]
    assert o["name"] == "y" and o["datatype"] == datatype and o["shape"] == [2, 3]
    assert np.array_equal(np.asarray(o["data"], dtype=arr.dtype), arr.reshape(-1))


def test_binary_request_and_response_round_trip() -> None:
    inputs, outputs = sig("FP32", (-1, 3))
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    head = body(
        inputs=[
            {"name": "x", "shape": [2, 3], "datatype": "FP32", "parameters": {"binary_data_size": x.nbytes}}
        ],
        parameters={"binary_data_output": True},
    )
    req = decode_infer_request(head + x.tobytes(), inputs, outputs, header_length=len(head))
    assert np.array_equal(req.inputs["x"], x)
    assert req.binary == frozenset({"y", "z"})
    z = np.array([1, 2], dtype=np.int64)
    out, json_len = encode_infer_response("m", "1", None, req.outputs, [x, z], req.binary)
    assert json_len is not None
    doc = orjson.loads(out[:json_len])
    assert "id" not in doc
    sizes = [o["parameters"]["binary_data_size"] for o in doc["outputs"]]
    assert sizes == [24, 16]
    tail = out[json_len:]
    assert np.array_equal(np.frombuffer(tail[:24], dtype="<f4").reshape(2, 3), x)
    assert struct.unpack("<2q", tail[24:]) == (1, 2)


def test_outputs_subset_in_requested_order_with_mixed_binary() -> None:
    inputs, outputs = sig()
    req = decode_infer_request(
        body(
            inputs=[tensor([1, 2, 3], [1, 3])],
            outputs=[{"name": "z", "parameters": {"binary_data": True}}, {"name": "y"}],
        ),
        inputs,
        outputs,
    )
    assert req.outputs == ("z", "y")
    assert req.binary == frozenset({"z"})


def test_model_metadata_shape() -> None:
    inputs, outputs = sig()
    doc = model_metadata("m", ["2"], inputs.values(), outputs, {"execution_provider": "CPUExecutionProvider"})
    assert doc["platform"] == "onnxruntime_onnx"
    assert doc["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]
    assert doc["parameters"]["execution_provider"] == "CPUExecutionProvider"


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({}, "'inputs' must be a non-empty list"),
        ({"inputs": []}, "'inputs' must be a non-empty list"),
        ({"inputs": [tensor([1, 2, 3], [1, 3], name="w")]}, "unknown input 'w'; the model expects ['x']"),
        ({"inputs": [tensor([1, 2, 3], [1, 3]), tensor([1, 2, 3], [1, 3])]}, "input 'x' appears twice"),
        ({"inputs": [tensor([1, 2, 3], [1, 3], "FP64")]}, "datatype FP64 does not match the model's FP32"),
        ({"inputs": [tensor([1, 2, 3], [1, 3], "FLOAT")]}, "unknown datatype 'FLOAT'"),
        ({"inputs": [tensor([1, 2, 3], [3])]}, "shape [3] does not fit the model's [-1, 3]"),
        ({"inputs": [tensor([1, 2, 3, 4], [1, 4])]}, "shape [1, 4] does not fit the model's [-1, 3]"),
        ({"inputs": [tensor([1, 2, 3], [1, -3])]}, "'shape' must be a list of non-negative integers"),
        ({"inputs": [tensor([1, 2, 3], "1,3")]}, "'shape' must be a list of non-negative integers"),
        ({"inputs": [tensor([1, 2], [1, 3])]}, "2 data element(s), but shape [1, 3] needs 3"),
        ({"inputs": [tensor([[1, 2, 3], [4, 5]], [2, 3])]}, "nested 'data' is ragged"),
        ({"inputs": [tensor(["a", "b", "c"], [1, 3])]}, "FP32 data must be numbers"),
        ({"inputs": [tensor([1, None, 3], [1, 3])]}, "FP32 data must be numbers"),
        ({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32"}]}, "no 'data'"),
        ({"inputs": [tensor([1, 2, 3], [1, 3])], "outputs": [{"name": "nope"}]}, "unknown output 'nope'"),
        ({"inputs": [tensor([1, 2, 3], [1, 3])], "outputs": "y"}, "'outputs' must be a list"),
        ({"inputs": [tensor([1, 2, 3], [1, 3])], "id": 7}, "'id' must be a string"),
        ({"inputs": ["x"]}, "inputs[0] must be an object"),
    ],
)
def test_bad_requests_name_what_is_wrong(doc: dict[str, Any], message: str) -> None:
    inputs, outputs = sig()
    with pytest.raises(RequestError) as err:
        decode_infer_request(body(**doc), inputs, outputs)
    assert message in err.value.message
    assert err.value.http_status == 400


@pytest.mark.parametrize(
    ("datatype", "data", "message"),
    [
        ("INT32", [1.5, 2, 3], "INT32 data must be integers"),
        ("INT8", [1, 300, 3], "value 300 does not fit INT8 (-128..127)"),
        ("UINT8", [-1, 0, 3], "value -1 does not fit UINT8"),
        ("INT64", [2**64 - 1, 0, 0], "INT64 data must be integers in range"),
        ("INT64", [2**70, 0, 0], "INT64 data must be integers"),
        ("BOOL", [1, 0, 1], "BOOL data must be true/false"),
    ],
)
def test_values_that_do_not_fit_the_datatype(datatype: str, data: list[Any], message: str) -> None:
    inputs, outputs = sig(datatype)
    with pytest.raises(
        RequestError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")
    ):
        decode_infer_request(body(inputs=[tensor(data, [1, 3], datatype)]), inputs, outputs)


def test_body_that_is_not_json_or_not_an_object() -> None:
    inputs, outputs = sig()
    with pytest.raises(RequestError, match="not valid JSON"):
        decode_infer_request(b"{nope", inputs, outputs)
    with pytest.raises(RequestError, match="must be a JSON object, got list"):
        decode_infer_request(b"[1]", inputs, outputs)
    with pytest.raises(RequestError, match="empty request body"):
        decode_infer_request(b"", inputs, outputs)


def test_binary_sizes_are_checked() -> None:
    inputs, outputs = sig()
    head = body(
        inputs=[{"name": "x", "shape": [1, 3], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]
    )
    with pytest.raises(RequestError, match="8 bytes of binary data, but shape \\[1, 3\\] of FP32 needs 12"):
        decode_infer_request(head + b"\0" * 8, inputs, outputs, header_length=len(head))
    head = body(
        inputs=[{"name": "x", "shape": [1, 3], "datatype": "FP32", "parameters": {"binary_data_size": 12}}]
    )
    with pytest.raises(RequestError, match="runs past the end"):
        decode_infer_request(head + b"\0" * 4, inputs, outputs, header_length=len(head))
    with pytest.raises(RequestError, match="4 bytes of binary data after the last tensor"):
        decode_infer_request(head + b"\0" * 16, inputs, outputs, header_length=len(head))
    with pytest.raises(RequestError, match="Inference-Header-Content-Length is 999"):
        decode_infer_request(head, inputs, outputs, header_length=999)


def test_missing_input_of_a_multi_input_model() -> None:
    inputs = {"a": slot("a", "FP32", (-1, -1)), "b": slot("b", "INT64", (-1, 3))}
    with pytest.raises(RequestError, match=r"missing input\(s\) \['b'\]"):
        decode_infer_request(body(inputs=[tensor([1.0], [1, 1], name="a")]), inputs, [])
    req = decode_infer_request(
        body(inputs=[tensor([1, 2, 3], [1, 3], "INT64", name="b"), tensor([[1.0, 2.0]], [1, 2], name="a")]),
        inputs,
        [],
    )
    assert list(req.inputs) == ["a", "b"]  # signature order
    assert req.inputs["a"].shape == (1, 2)


def test_empty_batch_is_accepted() -> None:
    inputs, outputs = sig()
    req = decode_infer_request(body(inputs=[tensor([], [0, 3])]), inputs, outputs)
    assert req.inputs["x"].shape == (0, 3) and req.inputs["x"].dtype == np.float32


def _document(name: str, version: str, rid: str | None, names: list[str], arrays: list[np.ndarray]) -> bytes:
    """The response as a document, written by orjson: what the template encoder must match."""
    spelled = {"inf": "Infinity", "-inf": "-Infinity", "nan": "NaN"}
    outs = []
    for n, a in zip(names, arrays, strict=True):
        flat = a.ravel()
        data: Any = flat
        if a.dtype.kind == "f" and not np.isfinite(flat).all():
            data = [v if math.isfinite(v) else spelled[repr(v)] for v in flat.tolist()]
        datatype = {v: k for k, v in OIP_TO_NUMPY.items()}[a.dtype.name]
        outs.append({"name": n, "datatype": datatype, "shape": list(a.shape), "data": data})
    doc: dict[str, Any] = {"model_name": name, "model_version": version}
    if rid is not None:
        doc["id"] = rid
    doc["outputs"] = outs
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)


def test_json_responses_are_the_document_byte_for_byte(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every datatype, 0-3 outputs of 0-3 dimensions, ids or none, transposed arrays, inf and
    NaN, names holding quotes, '%' or "null": the same bytes as the document; at the template
    cap the templates are dropped, never grown."""
    monkeypatch.setattr(protocol, "TEMPLATE_CAP", 16)
    monkeypatch.setattr(protocol, "_TEMPLATES", {})
    rng = np.random.default_rng(11)
    dtypes = [np.dtype(v) for v in OIP_TO_NUMPY.values()]
    odd = ['q"uote', "per%scent", "100%", "null", "é"]
    for trial in range(400):
        k = int(rng.integers(0, 4))
        names = [
            odd[int(rng.integers(len(odd)))] + str(i) if rng.random() < 0.3 else f"o{i}" for i in range(k)
        ]
        arrays = []
        for _ in range(k):
            shape = tuple(int(d) for d in rng.integers(0, 4, size=int(rng.integers(0, 4))))
            a = (rng.normal(size=shape) * 100).astype(dtypes[int(rng.integers(len(dtypes)))])
            if a.dtype.kind == "f" and a.size and rng.random() < 0.3:
                a.flat[0] = [np.inf, -np.inf, np.nan][int(rng.integers(3))]
            arrays.append(a.T if a.ndim == 2 and rng.random() < 0.3 else a)
        rid = [None, "r-1", 'a"b'][trial % 3]
        version = ["1", "v%d"][trial % 2]
        for _ in range(2):  # made, then from the template
            out, json_len = encode_infer_response("m", version, rid, names, arrays)
            assert json_len is None
            assert out == _document("m", version, rid, names, arrays)
    assert 0 < len(protocol._TEMPLATES) <= 16


def test_fp32_json_values_round_as_numpy_casts_them() -> None:
    values = [0.1, 1e39, -1e39, 3.4028235e38, 1e-45, 1e-50, 16777217.0, 2**70, -0.0, 5e-324]
    inputs, outputs = sig("FP32", (-1, 5))
    req = decode_infer_request(body(inputs=[tensor([values[:5], values[5:]], [2, 5])]), inputs, outputs)
    arr = req.inputs["x"]
    with np.errstate(over="ignore"):
        want = np.asarray(values, dtype=np.float64).astype(np.float32).reshape(2, 5)
    assert arr.dtype == np.float32 and arr.shape == (2, 5)
    assert arr.view(np.int32).tolist() == want.view(np.int32).tolist()  # bit for bit: -0.0, inf


def test_the_packers_of_float_data_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """One packer per row count is kept (at most ``PACKER_CAP``); strings and nulls still get
    the checked path's error."""
    monkeypatch.setattr(protocol, "PACKER_CAP", 4)
    monkeypatch.setattr(protocol, "_PACKERS", {})
    inputs, outputs = sig("FP32", (-1, 3))
    for rows in range(1, 12):
        data = [[float(r * 3 + c) for c in range(3)] for r in range(rows)]
        req = decode_infer_request(body(inputs=[tensor(data, [rows, 3])]), inputs, outputs)
        assert req.inputs["x"].ravel().tolist() == [float(v) for v in range(rows * 3)]
    assert 0 < len(protocol._PACKERS) <= 4
    assert req.inputs["x"].flags.writeable  # a tensor of its own, as np.asarray's would be
    for bad in ([[1.0, "2", 3.0]], [[1.0, None, 3.0]]):
        with pytest.raises(RequestError, match="must be numbers"):
            decode_infer_request(body(inputs=[tensor(bad, [1, 3])]), inputs, outputs)
