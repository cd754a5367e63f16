"""Large payloads: float data of big JSON requests takes the fast conversion and decodes to
exactly what the checked path gives (and every value the checked path refuses is still
refused, with its message); binary tensors are read in place from the body; large outputs
are written from the arrays' buffers."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
import pytest

from mlplat_runtime.bundle.manifest import TensorSpec
from mlplat_runtime.errors import RequestError
from mlplat_runtime.serving import protocol
from mlplat_runtime.serving.protocol import FAST_MIN, TensorSlot, decode_infer_request, encode_infer_response


def slot(name: str, datatype: str, shape: tuple[int, ...]) -> TensorSlot:
    return TensorSlot.from_spec(TensorSpec(name=name, datatype=datatype, shape=shape))  # type: ignore[arg-type]


def sig(datatype: str = "FP32", width: int = 4) -> tuple[dict[str, TensorSlot], list[TensorSlot]]:
    return {"x": slot("x", datatype, (-1, width))}, [slot("y", "FP32", (-1, 2))]


def request(data: Any, shape: list[int], datatype: str = "FP32") -> bytes:
    return json.dumps(
        {"inputs": [{"name": "x", "shape": shape, "datatype": datatype, "data": data}]}
    ).encode()


def checked(data: Any, dtype: str) -> np.ndarray:
    """What the checked path (np.asarray, then the cast) makes of the same values."""
    return np.asarray(data).astype(dtype)


@pytest.mark.parametrize("datatype", ["FP32", "FP64", "FP16"])
@pytest.mark.parametrize("rows", [4, 32, 1024])
def test_big_float_data_flat_or_nested_decodes_to_exactly_the_checked_paths_values(
    rows: int, datatype: str
) -> None:
    rng = np.random.default_rng(rows)
    x = rng.normal(size=(rows, 4)) * 1e3
    x[0, 0] = 7  # an integer among floats, as JSON writes it
    nested = x.tolist()
    nested[0][0] = 7
    dtype = {"FP32": "float32", "FP64": "float64", "FP16": "float16"}[datatype]
    inputs, outputs = sig(datatype)
    for data in (nested, x.ravel().tolist()):
        got = decode_infer_request(request(data, [rows, 4], datatype), inputs, outputs).inputs["x"]
        want = checked(data, dtype).reshape(rows, 4)
        assert got.dtype == np.dtype(dtype) and got.shape == (rows, 4)
        assert np.array_equal(got, want)
    assert rows * 4 < FAST_MIN or protocol._floats(nested, rows * 4) is not None  # the fast path ran


def test_one_row_of_many_features_takes_the_fast_path() -> None:
    x = np.random.default_rng(1).normal(size=(1, 784)).astype(np.float32)
    inputs, outputs = {"x": slot("x", "FP32", (-1, 784))}, [slot("y", "FP32", (-1, 10))]
    got = decode_infer_request(request(x.tolist(), [1, 784]), inputs, outputs).inputs["x"]
    assert np.array_equal(got, x)  # float32 -> JSON (shortest repr) -> float32: exact
    assert protocol._floats(x.tolist(), 784) is not None


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ([["1.5", 2.0, 3.0, 4.0]] * 8, "FP32 data must be numbers"),
        ([[None, 2.0, 3.0, 4.0]] * 8, "FP32 data must be numbers"),
        ([[True, False, True, False]] * 8, "FP32 data must be numbers"),
        ([1.0, 2.0] * 15 + ["x", 3.0], "FP32 data must be numbers"),
        ([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0, 5.0]] + [[1.0] * 4] * 6, "ragged"),
        ([[1.0] * 4] * 7, "28 data element"),
    ],
)
def test_what_the_checked_path_refuses_is_still_refused(data: Any, why: str) -> None:
    inputs, outputs = sig()
    with pytest.raises(RequestError, match=why):
        decode_infer_request(request(data, [8, 4]), inputs, outputs)


def test_deeper_nesting_takes_the_checked_path_and_is_read_row_major() -> None:
    data = [[[float(4 * r + c)] for c in range(4)] for r in range(8)]  # [8][4][1]
    assert protocol._floats(data, 32) is None
    got = decode_infer_request(request(data, [8, 4]), *sig()).inputs["x"]
    assert np.array_equal(got, np.arange(32, dtype=np.float32).reshape(8, 4))


def test_integer_data_keeps_the_checked_path_and_its_range_checks() -> None:
    inputs, outputs = sig("INT32")
    data = [[1, 2, 3, 4]] * 16
    got = decode_infer_request(request(data, [16, 4], "INT32"), inputs, outputs).inputs["x"]
    assert got.dtype == np.int32 and np.array_equal(got, np.asarray(data))
    with pytest.raises(RequestError, match="INT32 data must be integers"):
        decode_infer_request(request([[1.5, 2, 3, 4]] * 16, [16, 4], "INT32"), inputs, outputs)
    with pytest.raises(RequestError, match="does not fit INT32"):
        decode_infer_request(request([[2**40, 2, 3, 4]] * 16, [16, 4], "INT32"), inputs, outputs)


def test_binary_tensors_are_read_in_place_from_the_body() -> None:
    x = np.random.default_rng(2).normal(size=(1024, 4)).astype("<f4")
    head = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [1024, 4],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ]
        }
    )
    body = head + x.tobytes()
    inputs, outputs = sig()
    got = decode_infer_request(body, inputs, outputs, header_length=len(head)).inputs["x"]
    assert np.array_equal(got, x)
    assert np.shares_memory(got, np.frombuffer(body, np.uint8))  # a view of the body: no copy


def test_large_outputs_are_written_from_the_arrays_and_read_back_equal() -> None:
    rng = np.random.default_rng(3)
    probs = rng.random((1024, 2)).astype(np.float32)
    labels = rng.integers(0, 2, size=1024)
    out, json_len = encode_infer_response("m", "1", None, ["p", "l"], [probs, labels])
    assert json_len is None
    doc = orjson.loads(out)
    assert np.array_equal(np.asarray(doc["outputs"][0]["data"], np.float32).reshape(1024, 2), probs)
    assert doc["outputs"][1]["data"] == labels.tolist()
    out, json_len = encode_infer_response("m", "1", "r", ["p", "l"], [probs, labels], frozenset({"p", "l"}))
    assert json_len is not None
    head = orjson.loads(out[:json_len])
    sizes = [o["parameters"]["binary_data_size"] for o in head["outputs"]]
    assert sizes == [probs.nbytes, labels.nbytes] and len(out) == json_len + sum(sizes)
    tail = memoryview(out)[json_len:]
    assert np.array_equal(np.frombuffer(tail[: sizes[0]], "<f4").reshape(1024, 2), probs)
    assert np.array_equal(np.frombuffer(tail[sizes[0] :], "<i8"), labels)


def test_a_big_json_body_pauses_the_garbage_collector_only_while_it_decodes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import gc

    inputs, outputs = sig()
    x = np.random.default_rng(7).normal(size=(2048, 4)).astype(np.float32)
    body = request(x.tolist(), [2048, 4])
    assert len(body) >= protocol.GC_PAUSE_BYTES
    seen: list[bool] = []
    real = protocol._floats
    monkeypatch.setattr(
        protocol,
        "_floats",
        lambda *args: (seen.append(gc.isenabled()), real(*args))[1],
    )
    got = decode_infer_request(body, inputs, outputs)
    assert np.array_equal(got.inputs["x"], x) and seen == [False] and gc.isenabled()
    # a refused body resumes collection too
    bad = request([*x.tolist()[:-1], [1.0, 2.0, "3", 4.0]], [2048, 4])
    with pytest.raises(RequestError, match="must be numbers"):
        decode_infer_request(bad, inputs, outputs)
    assert gc.isenabled()
    # a small body never touches it
    seen.clear()
    decode_infer_request(request(x[:1].tolist(), [1, 4]), inputs, outputs)
    assert seen == [True]
