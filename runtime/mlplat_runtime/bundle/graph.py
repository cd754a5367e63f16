"""What a bundle reads from the ONNX graph: the signature and the external-data references.

The model proto is always parsed with ``load_external_data=False``: reading a hostile model
must not open the files its tensors point at. Every tensor ``location`` is checked against
the bundle folder before ONNX Runtime (which follows them) ever sees the model.

Imports ``onnx`` inside functions (it is slow to import and the CLI's help must stay fast).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlplat_runtime.bundle.manifest import Signature, TensorSpec
from mlplat_runtime.bundle.safety import path_problem
from mlplat_runtime.errors import BundleError

if TYPE_CHECKING:
    import onnx

# ONNX TensorProto element type -> OIP datatype (only those our manifest can carry).
_ONNX_TO_OIP: dict[int, str] = {
    1: "FP32",  # FLOAT
    2: "UINT8",
    3: "INT8",
    5: "INT16",
    6: "INT32",
    7: "INT64",
    8: "BYTES",  # STRING
    9: "BOOL",
    10: "FP16",
    11: "FP64",  # DOUBLE
}


def load_proto(model_path: Path) -> onnx.ModelProto:
    """Parse the model without touching its external data; BundleError if it is not ONNX."""
    import onnx

    try:
        return onnx.load(str(model_path), load_external_data=False)
    except Exception as exc:  # protobuf raises its own DecodeError and friends
        raise BundleError(
            f"'{model_path.name}' is not a readable ONNX model: {exc}",
            hint="export the model again (e.g. torch.onnx.export or skl2onnx) and check it "
            "with onnx.checker.check_model",
        ) from exc


def _spec(value: Any, role: str) -> TensorSpec:
    import onnx

    ttype = value.type
    if ttype.WhichOneof("value") != "tensor_type":
        kind = (ttype.WhichOneof("value") or "unknown").removesuffix("_type")
        raise BundleError(
            f"{role} '{value.name}' is a {kind}, not a tensor: the Open Inference Protocol serves tensors",
            hint="export plain tensors (for skl2onnx classifiers pass options={'zipmap': False})",
        )
    elem = ttype.tensor_type.elem_type
    datatype = _ONNX_TO_OIP.get(elem)
    if datatype is None:
        raise BundleError(
            f"{role} '{value.name}' has element type "
            f"{onnx.TensorProto.DataType.Name(elem)}, which bundles do not support",
            hint="cast it in the graph to one of: " + ", ".join(sorted(set(_ONNX_TO_OIP.values()))),
        )
    if not ttype.tensor_type.HasField("shape"):
        raise BundleError(
            f"{role} '{value.name}' has no shape in the graph (its rank is unknown)",
            hint="export with a declared shape, using a named dimension for what varies "
            "(e.g. dynamic_axes={'input': {0: 'batch'}})",
        )
    shape = tuple(dim.dim_value if dim.HasField("dim_value") else -1 for dim in ttype.tensor_type.shape.dim)
    return TensorSpec(name=value.name, datatype=datatype, shape=shape)  # type: ignore[arg-type]


def signature_of(model: onnx.ModelProto) -> Signature:
    """Inputs and outputs as OIP tensor specs; dynamic dimensions become -1.

    Graph inputs that are also initializers (older exporters list weights as inputs) are not
    part of what a caller sends, so they are left out.
    """
    initializers = {t.name for t in model.graph.initializer}
    inputs = tuple(_spec(v, "input") for v in model.graph.input if v.name not in initializers)
    outputs = tuple(_spec(v, "output") for v in model.graph.output)
    if not inputs or not outputs:
        raise BundleError(
            "the model has no inputs or no outputs", hint="export a graph with at least one of each"
        )
    return Signature(inputs=inputs, outputs=outputs)


def read_signature(model_path: Path) -> Signature:
    return signature_of(load_proto(model_path))


def _graph_tensors(graph: Any) -> Iterator[Any]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        yield from _attribute_tensors(node.attribute)


def _attribute_tensors(attributes: Any) -> Iterator[Any]:
    for attr in attributes:
        if attr.HasField("t"):
            yield attr.t
        yield from attr.tensors
        if attr.HasField("sparse_tensor"):
            yield attr.sparse_tensor.values
            yield attr.sparse_tensor.indices
        for sparse in attr.sparse_tensors:
            yield sparse.values
            yield sparse.indices
        if attr.HasField("g"):
            yield from _graph_tensors(attr.g)
        for sub in attr.graphs:
            yield from _graph_tensors(sub)


def _all_tensors(model: onnx.ModelProto) -> Iterator[Any]:
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from _attribute_tensors(node.attribute)


def external_locations(model: onnx.ModelProto) -> list[tuple[str, str]]:
    """``(tensor name, location)`` for every tensor stored as external data, subgraphs included."""
    found: list[tuple[str, str]] = []
    for tensor in _all_tensors(model):
        if tensor.data_location != 1:  # TensorProto.EXTERNAL
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        found.append((tensor.name, location))
    return found


def external_data_problems(model: onnx.ModelProto, model_rel: str, files: set[str]) -> list[str]:
    """Every external-data reference that is not a listed file inside the bundle.

    ``model_rel`` is the model's path in the bundle (locations are relative to its folder);
    ``files`` the bundle's content files. A location must be a plain relative path with no
    ``..``, and name a file of the bundle: anything else would make ONNX Runtime read
    outside it.
    """
    problems: list[str] = []
    folder = str(Path(model_rel).parent).replace("\\", "/")
    for tensor_name, location in external_locations(model):
        problem = path_problem(location)
        if problem:
            problems.append(
                f"bundle member '{model_rel}': tensor '{tensor_name}' keeps its data at "
                f"'{location}': {problem} (rule: ONNX external data must stay inside the bundle)"
            )
            continue
        rel = location if folder in ("", ".") else f"{folder}/{location}"
        rel = "/".join(p for p in rel.split("/") if p not in ("", "."))
        if rel not in files:
            problems.append(
                f"bundle member '{model_rel}': tensor '{tensor_name}' keeps its data at "
                f"'{location}', which is not a file of the bundle "
                "(rule: ONNX external data must stay inside the bundle)"
            )
    return problems
