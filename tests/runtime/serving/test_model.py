"""Loading, warming up and checking models on real ONNX Runtime sessions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mlplat_runtime.bundle import open_bundle
from mlplat_runtime.bundle.manifest import Signature, TensorSpec
from mlplat_runtime.errors import ModelLoadError, RequestError
from mlplat_runtime.serving.model import (
    graph_signature,
    load_bundle,
    load_onnx,
    outputs_mismatch,
    signature_differences,
)
from tests.helpers.models import (
    make_identity_onnx,
    make_logreg_onnx,
    make_multi_io_onnx,
    make_unknown_op_onnx,
)
from tests.runtime.serving.conftest import build_version, logreg_expected

CPU = ["CPUExecutionProvider"]


def test_raw_onnx_loads_with_graph_signature_and_predicts(tmp_path: Path) -> None:
    model = load_onnx(make_logreg_onnx(tmp_path / "m.onnx", seed=3), name="m", version="1", providers=CPU)
    assert model.provider == "CPUExecutionProvider"
    assert list(model.inputs) == ["input"]
    assert model.inputs["input"].shape == (-1, 4) and model.inputs["input"].datatype == "FP32"
    assert [(o.name, o.datatype, o.shape) for o in model.outputs] == [
        ("label", "INT64", (-1,)),
        ("probabilities", "FP32", (-1, 2)),
    ]
    assert model.inline and model.call_ms < 50
    x = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    label, probs = model.predict({"input": x}, ["label", "probabilities"])
    want_label, want_probs = logreg_expected(x, seed=3)
    assert np.array_equal(label, want_label)
    assert np.allclose(probs, want_probs, atol=1e-6)
    assert model.parameters() == {
        "execution_provider": "CPUExecutionProvider",
        "bundle_id": "",
        "version": "1",
    }


def test_multi_io_signature_keeps_dynamic_dimensions(tmp_path: Path) -> None:
    model = load_onnx(make_multi_io_onnx(tmp_path / "mio.onnx"), name="mio", version="1", providers=CPU)
    assert model.signature == Signature(
        inputs=(
            TensorSpec(name="a", datatype="FP32", shape=(-1, -1)),
            TensorSpec(name="b", datatype="INT64", shape=(-1, 3)),
        ),
        outputs=(
            TensorSpec(name="sum", datatype="FP32", shape=(-1, -1)),
            TensorSpec(name="b2", datatype="INT64", shape=(-1, 3)),
        ),
    )
    (b2,) = model.predict({"a": np.ones((1, 5), np.float32), "b": np.array([[1, 2, 3]])}, ["b2"])
    assert b2.tolist() == [[2, 4, 6]]


@pytest.mark.parametrize("datatype", ["BOOL", "INT32", "FP64", "FP16", "UINT8"])
def test_identity_models_of_other_datatypes(tmp_path: Path, datatype: str) -> None:
    model = load_onnx(
        make_identity_onnx(tmp_path / "id.onnx", datatype), name="id", version="1", providers=CPU
    )
    assert model.inputs["input"].datatype == datatype
    x = np.ones((2, 4), dtype=model.inputs["input"].dtype)
    (y,) = model.predict({"input": x}, ["output"])
    assert np.array_equal(x, y)


def test_a_model_ort_refuses_is_a_model_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="ONNX Runtime could not load"):
        load_onnx(make_unknown_op_onnx(tmp_path / "u.onnx"), name="u", version="1", providers=CPU)


def test_bundle_loads_and_checks_its_samples(tmp_path: Path) -> None:
    bundle = open_bundle(build_version(tmp_path, "7", seed=2))
    model = load_bundle(bundle, providers=CPU)
    assert (model.name, model.version, model.bundle_id) == ("m", "7", bundle.manifest.bundle_id)
    assert model.signature == bundle.manifest.signature


def test_manifest_signature_that_lies_is_refused(tmp_path: Path) -> None:
    from tests.runtime.serving.conftest import wrong_signature_bundle

    bundle = open_bundle(wrong_signature_bundle(tmp_path, "2"))
    with pytest.raises(ModelLoadError) as err:
        load_bundle(bundle, providers=CPU)
    assert "manifest signature does not match its model" in err.value.message
    assert "input 'input': shape [-1, 4] in the manifest, [-1, 6] in the model graph" in err.value.message


def test_sample_outputs_that_differ_are_refused(tmp_path: Path) -> None:
    bundle = open_bundle(build_version(tmp_path, "1", seed=0))
    inputs, expected = bundle.samples()
    other = make_logreg_onnx(tmp_path / "other.onnx", seed=5)
    with pytest.raises(ModelLoadError, match=r"sample check failed: .*sample output 'probabilities' differs"):
        load_onnx(other, name="m", version="1", providers=CPU, samples=(inputs, expected))


def test_predict_maps_ort_errors(tmp_path: Path) -> None:
    model = load_onnx(make_multi_io_onnx(tmp_path / "mio.onnx"), name="mio", version="1", providers=CPU)
    with pytest.raises(RequestError, match="model 'mio' rejected the input"):
        model.predict({"a": np.ones((1, 2), np.float32), "b": np.ones((1, 3), np.float32)}, ["sum"])


def test_outputs_mismatch_tolerances() -> None:
    a = np.array([0.5, 0.25], dtype=np.float32)
    assert outputs_mismatch("p", a, a + 1e-7) is None
    assert "max abs difference" in (outputs_mismatch("p", a, a + 0.01) or "")
    assert outputs_mismatch("l", np.array([1, 0]), np.array([1, 0])) is None
    assert outputs_mismatch("l", np.array([1, 0]), np.array([1, 1])) == (
        "sample output 'l' differs from the expected values in 1 of 2 element(s)"
    )
    assert "has shape [2], expected [3]" in (
        outputs_mismatch("l", np.array([1, 0]), np.array([1, 0, 1])) or ""
    )
    assert outputs_mismatch("b", np.array([True]), np.array([False])) is not None


def test_signature_differences_lists_each_problem(tmp_path: Path) -> None:
    a = graph_signature(load_onnx(make_logreg_onnx(tmp_path / "a.onnx"), name="a", version="1").session)
    b = graph_signature(
        load_onnx(make_logreg_onnx(tmp_path / "b.onnx", n_features=6), name="b", version="1").session
    )
    assert signature_differences(a, a, left="x", right="y") == []
    assert signature_differences(a, b, left="v1", right="v2") == [
        "input 'input': shape [-1, 4] in v1, [-1, 6] in v2"
    ]


def test_a_model_loaded_elsewhere_is_installed_in_a_repository_and_replaces_the_old_one(
    tmp_path: Path,
) -> None:
    from mlplat_runtime.serving.repository import ModelState, Repository

    repo = Repository(providers=CPU)
    repo.load(build_version(tmp_path, "1", seed=1))
    side = load_bundle(open_bundle(build_version(tmp_path, "2", seed=2)), providers=CPU)  # off to the side
    old = repo.install(side)
    assert old is not None and old.version == "1"
    assert repo.get("m") is side and repo.get("m", "2") is side
    assert [(e.name, e.version, e.state) for e in repo.index()] == [("m", "2", ModelState.READY)]
    assert repo.metrics.active["m"][0] == "2"
    assert (
        repo.install(load_bundle(open_bundle(build_version(tmp_path, "1", name="n")), providers=CPU)) is None
    )
    repo.close()
