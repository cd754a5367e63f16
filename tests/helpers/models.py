"""Tiny ONNX models for tests, built with ``onnx.helper`` (no sklearn, no torch: fast and exact).

Every builder writes one ``.onnx`` file and returns its path. The graphs are valid for
ONNX Runtime 1.18+ (opset 17, IR version 8), so tests run real sessions on them.

- ``make_logreg_onnx``: the one-row logistic regression the serving benchmark uses
  (input ``input`` FP32 [-1, n]; outputs ``label`` INT64 [-1], ``probabilities`` FP32 [-1, 2]).
- ``make_identity_onnx``: ``output = input`` for one OIP datatype.
- ``make_multi_io_onnx``: two inputs, two outputs, a dynamic non-batch dimension.
- ``make_unknown_op_onnx``: a well-formed proto that ONNX Runtime refuses to load.
- ``make_external_data_onnx``: a weight stored as ONNX external data at a chosen ``location``.
- ``write_corrupt_onnx``: bytes that are not a protobuf at all.
- ``make_bundle``: a bundle directory built by ``mlplat_runtime.bundle.build_bundle``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8

OIP_TO_ONNX: dict[str, int] = {
    "BOOL": TensorProto.BOOL,
    "UINT8": TensorProto.UINT8,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
}


def _dims(shape: tuple[int | str, ...]) -> list[int | str | None]:
    # -1 in our shapes means "dynamic": name it so the graph carries a symbolic dimension.
    return [f"d{i}" if d == -1 else d for i, d in enumerate(shape)]


def _save(graph: onnx.GraphProto, path: Path | str, opset: int = OPSET) -> Path:
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="mlplat-tests"
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    return out


def logreg_weights(n_features: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The weights ``make_logreg_onnx`` bakes in: (W [n, 1] float32, b [1] float32)."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(n_features, 1)).astype(np.float32)
    b = rng.normal(size=(1,)).astype(np.float32)
    return w, b


def make_logreg_onnx(path: Path | str, n_features: int = 4, seed: int = 0) -> Path:
    """Logistic regression: p1 = sigmoid(x @ W + b); probabilities = [1 - p1, p1]; label = argmax."""
    w, b = logreg_weights(n_features, seed)
    nodes = [
        helper.make_node("MatMul", ["input", "W"], ["z0"]),
        helper.make_node("Add", ["z0", "b"], ["z"]),
        helper.make_node("Sigmoid", ["z"], ["p1"]),
        helper.make_node("Sub", ["one", "p1"], ["p0"]),
        helper.make_node("Concat", ["p0", "p1"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "logreg",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", n_features])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2]),
        ],
        initializer=[
            numpy_helper.from_array(w, "W"),
            numpy_helper.from_array(b, "b"),
            numpy_helper.from_array(np.array([1.0], dtype=np.float32), "one"),
        ],
    )
    return _save(graph, path)


def make_identity_onnx(path: Path | str, dtype: str = "FP32", shape: tuple[int, ...] = (-1, 4)) -> Path:
    """``output = input`` for one OIP datatype (FP32, FP64, INT32, INT64, BOOL, ...)."""
    elem = OIP_TO_ONNX[dtype]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["output"])],
        f"identity_{dtype.lower()}",
        [helper.make_tensor_value_info("input", elem, _dims(shape))],
        [helper.make_tensor_value_info("output", elem, _dims(shape))],
    )
    return _save(graph, path)


def make_multi_io_onnx(path: Path | str) -> Path:
    """Inputs ``a`` FP32 [-1, -1] and ``b`` INT64 [-1, 3]; outputs ``sum`` = a + a, ``b2`` = b * 2."""
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["a", "a"], ["sum"]),
            helper.make_node("Mul", ["b", "two"], ["b2"]),
        ],
        "multi_io",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", "width"]),
            helper.make_tensor_value_info("b", TensorProto.INT64, ["batch", 3]),
        ],
        [
            helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["batch", "width"]),
            helper.make_tensor_value_info("b2", TensorProto.INT64, ["batch", 3]),
        ],
        initializer=[numpy_helper.from_array(np.array(2, dtype=np.int64), "two")],
    )
    return _save(graph, path)


def make_unknown_op_onnx(path: Path | str) -> Path:
    """A well-formed model whose only node is an op no runtime knows: ONNX Runtime refuses it."""
    graph = helper.make_graph(
        [helper.make_node("NoSuchOp", ["input"], ["output"], domain="mlplat.tests")],
        "unknown_op",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 4])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("mlplat.tests", 1)],
    )
    model.ir_version = IR_VERSION
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    return out


def make_external_data_onnx(path: Path | str, location: str = "weights.bin", n_features: int = 4) -> Path:
    """``output = input + W`` where W (FP32 [n]) lives in external data at ``location``.

    The data file is written next to the model only when ``location`` is a plain relative name
    inside the model's folder; for crafted locations (``../x``, ``/etc/x``) only the proto
    records the path, which is what a hostile bundle would carry.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    w = np.arange(n_features, dtype=np.float32)
    tensor = numpy_helper.from_array(w, "W")
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(w.nbytes))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("Add", ["input", "W"], ["output"])],
        "external",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", n_features])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", n_features])],
        initializer=[tensor],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    safe = not Path(location).is_absolute() and ".." not in Path(location).parts
    if safe:
        (out.parent / location).parent.mkdir(parents=True, exist_ok=True)
        (out.parent / location).write_bytes(w.tobytes())
    onnx.save(model, str(out))
    return out


def write_corrupt_onnx(path: Path | str) -> Path:
    """A file named ``.onnx`` that is not a model at all."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(b"\x08\x07not-a-model\xff\xfe" * 8)
    return out


def make_bundle(tmp_path: Path, name: str = "m", version: str | None = None, **kw: Any) -> Path:
    """Build a bundle directory ``tmp_path/<name>-bundle`` from a fresh logistic regression.

    ``model=`` passes a model file instead; ``n_features=`` sizes the default model; other
    keywords go to ``build_bundle`` (``samples``, ``metrics``, ``params``, ``lineage``,
    ``reference``, ``archive``, ``out``).
    """
    from mlplat_runtime.bundle import build_bundle

    model = kw.pop("model", None)
    n_features = kw.pop("n_features", 4)
    if model is None:
        model = make_logreg_onnx(tmp_path / f"{name}-src" / "model.onnx", n_features=n_features)
    out = kw.pop("out", None) or tmp_path / f"{name}-bundle"
    return build_bundle(Path(model), name, Path(out), version=version, **kw)
