"""One verification for ``mlplat bundle verify`` and serving's load, and the warm-up memory
budget: a model whose warm-up would take the server to gigabytes is refused, in the check
process at a hot swap and after the fact at start-up, and what was serving keeps serving."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from mlplat_runtime.bundle import verify_bundle
from mlplat_runtime.errors import ModelLoadError
from mlplat_runtime.serving.checker import Checker
from mlplat_runtime.serving.repository import Repository
from tests.helpers.models import _save, make_bundle
from tests.runtime.serving.conftest import ROOT, build_version, rehash

CPU = ["CPUExecutionProvider"]
MIB = 1024 * 1024


ONE = helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])


def make_hungry_onnx(path: Path, mib: int = 256) -> Path:
    """input [batch, 4] -> output [batch, 4], but the run first fills a ``mib`` MiB tensor."""
    shape = np.array([mib, MIB // 4], dtype=np.int64)
    nodes = [
        helper.make_node("Shape", ["input"], ["s"]),  # depends on the input: not constant-folded
        helper.make_node("ReduceSum", ["s"], ["n"], keepdims=1),
        helper.make_node("Mul", ["n", "zero_i"], ["n0"]),
        helper.make_node("Add", ["big_shape", "n0"], ["shape"]),
        helper.make_node("ConstantOfShape", ["shape"], ["big"], value=ONE),
        helper.make_node("ReduceSum", ["big"], ["total"], keepdims=0),
        helper.make_node("Mul", ["total", "zero_f"], ["nothing"]),
        helper.make_node("Add", ["input", "nothing"], ["output"]),
    ]  # fmt: skip
    consts = {
        "big_shape": shape,
        "zero_i": np.array([0], np.int64),
        "zero_f": np.array(0.0, np.float32),
    }
    graph = helper.make_graph(
        nodes,
        "hungry",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 4])],
        initializer=[numpy_helper.from_array(v, k) for k, v in consts.items()],
    )
    return _save(graph, path)


def hungry_bundle(root: Path, version: str, mib: int = 256) -> Path:
    model = make_hungry_onnx(root / f"hungry-src-{version}" / "model.onnx", mib)
    return make_bundle(root, name="h", version=version, model=model, out=root / f"h-v{version}")


def drop_sample_output(bundle: Path, output: str) -> Path:
    """Rewrite samples.npz without ``output:<output>`` and fix the checksums (a buggy tool)."""
    path = bundle / "samples.npz"
    kept = {}
    with np.load(path, allow_pickle=False) as data:
        kept = {k: data[k] for k in data.files if k != f"output:{output}"}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for key, value in kept.items():
            with zf.open(key + ".npy", "w") as f:
                np.lib.format.write_array(f, value, allow_pickle=False)
    path.write_bytes(buf.getvalue())
    rehash(bundle)
    return bundle


def test_a_bundle_verify_refuses_is_refused_by_serving_too(tmp_path: Path) -> None:
    bundle = drop_sample_output(build_version(tmp_path, "1"), "label")
    problems = verify_bundle(bundle)
    assert problems == ["samples: output 'label' is missing"]
    checker = Checker(providers=CPU)
    repo = Repository(checker=checker, providers=CPU)
    try:
        with pytest.raises(ModelLoadError, match="samples: output 'label' is missing"):
            repo.load(bundle)
        assert repo.models() == []
    finally:
        repo.close()
        checker.close()


def test_a_warm_up_over_the_budget_is_refused_in_the_check_process(tmp_path: Path) -> None:
    good = build_version(tmp_path, "1")
    checker = Checker(providers=CPU, max_bytes=96 * MIB)
    repo = Repository(checker=checker, providers=CPU)
    try:
        repo.load(good)
        with pytest.raises(ModelLoadError, match="warm-up memory budget of 96 MiB"):
            repo.load(hungry_bundle(tmp_path, "2"), name="h")
        assert [m.version for m in repo.models()] == ["1"]  # still serving what it served
        small = checker.check(
            make_hungry_onnx(tmp_path / "small.onnx", 16), {"input": np.zeros((1, 4), np.float32)}
        )
        assert small >= 0 and 16 * MIB <= checker.last_peak_bytes < 96 * MIB
    finally:
        repo.close()
        checker.close()


def test_sample_inputs_over_the_budget_are_refused_before_they_are_sent(tmp_path: Path) -> None:
    checker = Checker(providers=CPU, max_bytes=MIB)
    try:
        with pytest.raises(ModelLoadError, match="sample inputs take 4 MiB, over the warm-up budget"):
            checker.check(tmp_path / "any.onnx", {"input": np.zeros((MIB, 1), np.float32)})
        assert not checker.started  # nothing was sent
    finally:
        checker.close()


def test_a_start_up_bundle_over_the_warm_up_budget_stops_serving_before_it_listens(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mlplat_runtime.serving", str(hungry_bundle(tmp_path, "1")), "--port", "0",
         "--admin-port", "0", "--admin-token-file", str(tmp_path / "t"), "--memory-budget-mb", "256"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 1, out.stderr
    assert "over the warm-up memory budget of 64 MiB" in out.stderr
    assert "mlplat serving" not in out.stdout
