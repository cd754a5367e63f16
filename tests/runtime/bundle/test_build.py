"""build_bundle -> open_bundle / verify_bundle round trips, with real ONNX Runtime sessions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from mlplat_runtime.bundle import (
    GateResult,
    Lineage,
    open_bundle,
    pack_archive,
    verify_bundle,
    with_gates,
)
from mlplat_runtime.bundle.hashing import bundle_id, file_digest
from mlplat_runtime.errors import BundleError, ModelLoadError, UsageError
from tests.helpers.models import (
    make_bundle,
    make_external_data_onnx,
    make_identity_onnx,
    make_logreg_onnx,
    make_multi_io_onnx,
    make_unknown_op_onnx,
    write_corrupt_onnx,
)


def run_cpu(model: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, inputs), strict=True))


def test_round_trip_folder(tmp_path: Path) -> None:
    lineage = Lineage(run_id="r1", git_commit="abc", data_hashes={"data/x.csv": "sha256:" + "1" * 64})
    path = make_bundle(
        tmp_path,
        "churn",
        metrics={"roc_auc": 0.91},
        params={"C": 1.0, "penalty": "l2"},
        lineage=lineage,
        reference={"features": {"f0": {"mean": 0.1}}},
    )
    bundle = open_bundle(path)
    m = bundle.manifest
    assert bundle.root == path.resolve() and bundle.model_path == path.resolve() / "model.onnx"
    assert not bundle.extracted
    assert m.model_name == "churn" and m.schema_version == 1
    assert m.bundle_id == bundle_id({rel: file_digest(path / rel) for rel in m.files})
    assert m.version == m.bundle_id.removeprefix("sha256:")[:12]
    assert sorted(m.files) == ["model.onnx", "reference.json", "samples.npz"]
    assert [(s.name, s.datatype, s.shape) for s in m.signature.inputs] == [("input", "FP32", (-1, 4))]
    assert [(s.name, s.datatype, s.shape) for s in m.signature.outputs] == [
        ("label", "INT64", (-1,)),
        ("probabilities", "FP32", (-1, 2)),
    ]
    assert m.metrics == {"roc_auc": 0.91} and m.params == {"C": "1.0", "penalty": "l2"}
    assert m.lineage == lineage
    assert m.created_at.endswith("Z")
    assert bundle.reference() == {"features": {"f0": {"mean": 0.1}}}

    inputs, outputs = bundle.samples()
    assert inputs["input"].shape == (8, 4) and inputs["input"].dtype == np.float32
    expected = run_cpu(bundle.model_path, inputs)
    np.testing.assert_array_equal(outputs["label"], expected["label"])
    np.testing.assert_allclose(outputs["probabilities"], expected["probabilities"])
    assert verify_bundle(path) == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def test_same_model_same_id_and_bytes(tmp_path: Path) -> None:
    a = open_bundle(make_bundle(tmp_path, "a")).manifest
    b = open_bundle(make_bundle(tmp_path, "b")).manifest
    assert a.bundle_id == b.bundle_id and a.files == b.files
    c = open_bundle(make_bundle(tmp_path, "c", model=make_logreg_onnx(tmp_path / "other.onnx", seed=3)))
    assert c.manifest.bundle_id != a.bundle_id


def test_round_trip_archive(tmp_path: Path) -> None:
    archive = make_bundle(tmp_path, "churn", version="7", archive=True, out=tmp_path / "churn")
    assert archive == tmp_path / "churn.mlbundle" and archive.is_file()
    assert verify_bundle(archive) == []
    opened = open_bundle(archive, extract_to=tmp_path / "x")
    assert opened.extracted and opened.root.parent == tmp_path / "x"
    assert opened.manifest.version == "7"
    assert len(list((tmp_path / "x").iterdir())) == 1
    # packing is reproducible: same bundle, same bytes
    one = pack_archive(opened.root, tmp_path / "one.mlbundle")
    two = pack_archive(opened.root, tmp_path / "two.mlbundle")
    assert one.read_bytes() == two.read_bytes()
    with pytest.raises(BundleError, match="already exists"):
        pack_archive(opened.root, one)


@pytest.mark.parametrize("dtype", ["FP32", "FP64", "INT32", "INT64", "BOOL"])
def test_every_dtype_round_trips(tmp_path: Path, dtype: str) -> None:
    model = make_identity_onnx(tmp_path / "id.onnx", dtype)
    path = make_bundle(tmp_path, "ident", model=model)
    bundle = open_bundle(path)
    assert bundle.manifest.signature.inputs[0].datatype == dtype
    inputs, outputs = bundle.samples()
    assert inputs["input"].shape == (8, 4)
    np.testing.assert_array_equal(outputs["output"], inputs["input"])
    assert verify_bundle(path) == []


def test_generated_samples_for_dynamic_dims(tmp_path: Path) -> None:
    bundle = open_bundle(make_bundle(tmp_path, "multi", model=make_multi_io_onnx(tmp_path / "mio.onnx")))
    inputs, outputs = bundle.samples()
    assert inputs["a"].shape == (8, 1) and inputs["b"].shape == (8, 3)
    assert inputs["b"].dtype == np.int64 and set(np.unique(inputs["b"])) <= {0, 1, 2, 3}
    np.testing.assert_array_equal(outputs["b2"], inputs["b"] * 2)


@pytest.mark.parametrize("prefixed", [False, True])
def test_user_samples(tmp_path: Path, prefixed: bool) -> None:
    x = np.arange(12, dtype=np.float64).reshape(3, 4)  # float64 is cast to the model's FP32
    npz = tmp_path / "inputs.npz"
    np.savez(npz, **{("input:input" if prefixed else "input"): x, "output:label": np.zeros(3)})  # type: ignore[arg-type]
    bundle = open_bundle(make_bundle(tmp_path, "m", samples=npz))
    inputs, outputs = bundle.samples()
    np.testing.assert_array_equal(inputs["input"], x.astype(np.float32))
    assert outputs["label"].shape == (3,)  # recorded by running the model, not copied
    np.testing.assert_array_equal(outputs["label"], run_cpu(bundle.model_path, inputs)["label"])


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"features": np.zeros((2, 4), np.float32)}, "input 'features' is not in the signature"),
        ({"input": np.zeros((2, 5), np.float32)}, "has shape [2, 5], the signature says [-1, 4]"),
        ({"input": np.zeros((2, 4), np.complex64)}, "has dtype complex64, the signature says FP32"),
        ({"input": np.array([[{"a": 1}] * 4], dtype=object)}, "only read with pickle"),
    ],
)
def test_bad_user_samples(tmp_path: Path, arrays: dict[str, np.ndarray], message: str) -> None:
    npz = tmp_path / "inputs.npz"
    np.savez(npz, **arrays)  # type: ignore[arg-type]
    with pytest.raises(BundleError) as caught:
        make_bundle(tmp_path, "m", samples=npz)
    assert message in str(caught.value) and caught.value.hint
    assert not (tmp_path / "m-bundle").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_external_data_is_carried_and_verified(tmp_path: Path) -> None:
    model = make_external_data_onnx(tmp_path / "src" / "model.onnx", location="weights/w.bin")
    path = make_bundle(tmp_path, "ext", model=model)
    bundle = open_bundle(path)
    assert sorted(bundle.manifest.files) == ["model.onnx", "samples.npz", "weights/w.bin"]
    inputs, outputs = bundle.samples()
    np.testing.assert_allclose(outputs["output"], inputs["input"] + np.arange(4, dtype=np.float32))
    assert verify_bundle(path) == []
    (path / "weights" / "w.bin").unlink()
    assert "bundle member 'weights/w.bin': listed in the manifest but missing" in verify_bundle(path)


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/hostname"])
def test_external_data_outside_is_refused(tmp_path: Path, bundle_dir: Path, location: str) -> None:
    from tests.runtime.bundle.conftest import reseal

    model = make_external_data_onnx(tmp_path / "src" / "model.onnx", location=location)
    with pytest.raises(BundleError, match="keeps its data at"):
        make_bundle(tmp_path, "ext", model=model)
    make_external_data_onnx(bundle_dir / "model.onnx", location=location)
    reseal(bundle_dir)
    problems = verify_bundle(bundle_dir)
    assert problems and all("external data must stay inside the bundle" in p for p in problems)


def test_unsupported_graphs(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not a readable ONNX model"):
        make_bundle(tmp_path, "c", model=write_corrupt_onnx(tmp_path / "c.onnx"))
    with pytest.raises(ModelLoadError, match="ONNX Runtime cannot load"):
        make_bundle(tmp_path, "u", model=make_unknown_op_onnx(tmp_path / "u.onnx"))
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "u32",
        [helper.make_tensor_value_info("x", TensorProto.UINT32, ["n"])],
        [helper.make_tensor_value_info("y", TensorProto.UINT32, ["n"])],
    )
    u32 = tmp_path / "u32.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(u32))
    with pytest.raises(BundleError, match="input 'x' has element type UINT32"):
        make_bundle(tmp_path, "t", model=u32)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_refuses_bad_names_and_existing_output(tmp_path: Path, bundle_dir: Path) -> None:
    with pytest.raises(UsageError, match=r"model name '\.\./x' is not allowed"):
        make_bundle(tmp_path, "../x")
    with pytest.raises(UsageError, match="version 'v 1' is not allowed"):
        make_bundle(tmp_path, "m", version="v 1")
    before = (bundle_dir / "manifest.json").read_bytes()
    with pytest.raises(BundleError, match="already exists"):
        make_bundle(tmp_path, "m", out=bundle_dir)
    assert (bundle_dir / "manifest.json").read_bytes() == before
    with pytest.raises(BundleError, match="metrics"):
        make_bundle(tmp_path, "m", metrics={"auc": "high"})
    with pytest.raises(BundleError, match="metric 'auc' is nan"):
        make_bundle(tmp_path, "m", metrics={"auc": float("nan")})


def test_with_gates_keeps_the_id(bundle_dir: Path, tmp_path: Path) -> None:
    before = open_bundle(bundle_dir).manifest
    gates = [
        GateResult(name="metrics.roc_auc", measured=0.91, threshold=">= 0.85", passed=True),
        GateResult(name="latency.p95_ms", measured=7.5, threshold="<= 5", passed=False, detail="slow"),
    ]
    after = with_gates(bundle_dir, gates)
    assert after.gates == tuple(gates)
    assert after.bundle_id == before.bundle_id and after.files == before.files
    assert open_bundle(bundle_dir).manifest == after
    assert json.loads((bundle_dir / "manifest.json").read_text())["gates"][1]["detail"] == "slow"
    assert verify_bundle(bundle_dir) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["churn-bundle", "churn-src"]  # no temp left
    (bundle_dir / "samples.npz").write_bytes(b"tampered")
    with pytest.raises(BundleError, match="checksum differs"):
        with_gates(bundle_dir, gates)


def test_builds_into_an_existing_empty_folder(tmp_path: Path) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    assert make_bundle(tmp_path, "m", out=out) == out
    assert verify_bundle(out) == []


def test_sequence_output_is_refused_with_a_hint(tmp_path: Path) -> None:
    seq = helper.make_tensor_sequence_value_info("probs", TensorProto.FLOAT, None)
    graph = helper.make_graph(
        [helper.make_node("SequenceConstruct", ["x"], ["probs"])],
        "seq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2])],
        [seq],
    )
    model = tmp_path / "seq.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(model))
    with pytest.raises(BundleError, match="output 'probs' is a sequence, not a tensor") as caught:
        make_bundle(tmp_path, "s", model=model)
    assert "zipmap" in (caught.value.hint or "")
