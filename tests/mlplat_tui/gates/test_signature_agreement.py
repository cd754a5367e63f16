"""The signature gate and serving's hot swap apply one rule, so they agree on every case.

Bug (issue 9): the gate let a -1 match any size on either side while serving wanted equal
shapes, so a bundle narrowing a dynamic input ([-1, 4] -> [1, 4]) passed the gate and was then
refused by serving (and [1, 4] -> [-1, 4], which breaks no client, was refused by serving).
Here each case is a real pair of bundles: the gate evaluates the candidate against the serving
signature, and a real ``Repository`` hot-swaps serving -> candidate.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mlplat_runtime.bundle import open_bundle
from mlplat_runtime.bundle.manifest import Signature, TensorSpec
from mlplat_runtime.bundle.signature import compatibility_problems, is_compatible
from mlplat_runtime.errors import ModelLoadError
from mlplat_runtime.serving.repository import Repository
from mlplat_tui.gates.evaluate import evaluate_gates
from mlplat_tui.project.gate_specs import GatesSection
from tests.helpers.models import make_bundle, make_identity_onnx

CPU = ["CPUExecutionProvider"]

# (serving shape, serving dtype) -> (candidate shape, candidate dtype), compatible?
CASES = [
    pytest.param((-1, 4), "FP32", (-1, 4), "FP32", True, id="same"),
    pytest.param((1, 4), "FP32", (-1, 4), "FP32", True, id="fixed-batch-becomes-dynamic"),
    pytest.param((-1, 4), "FP32", (1, 4), "FP32", False, id="dynamic-batch-becomes-fixed"),
    pytest.param((-1, 4), "FP32", (-1, -1), "FP32", True, id="fixed-features-become-dynamic"),
    pytest.param((-1, -1), "FP32", (-1, 4), "FP32", False, id="dynamic-features-become-fixed"),
    pytest.param((-1, 4), "FP32", (-1, 5), "FP32", False, id="other-fixed-size"),
    pytest.param((-1, 4), "FP32", (-1, 4, 1), "FP32", False, id="other-rank"),
    pytest.param((-1, 4), "FP32", (-1, 4), "FP64", False, id="other-datatype"),
]


def _bundle(tmp_path: Path, tag: str, version: str, shape: tuple[int, ...], dtype: str) -> Path:
    model = make_identity_onnx(tmp_path / f"{tag}-src" / "model.onnx", dtype=dtype, shape=shape)
    return make_bundle(tmp_path, "m", version=version, model=model, out=tmp_path / f"{tag}-bundle")


def _serving_accepts(serving: Path, candidate: Path) -> bool:
    repo = Repository(providers=CPU)
    try:
        repo.load(serving)
        try:
            repo.load(candidate, name="m")
        except ModelLoadError as exc:
            assert "signature is incompatible" in exc.message
            return False
        return repo.get("m").version == "2"
    finally:
        repo.close()


@pytest.mark.parametrize(("old_shape", "old_dtype", "new_shape", "new_dtype", "compatible"), CASES)
def test_gate_and_serving_agree(
    tmp_path: Path,
    old_shape: tuple[int, ...],
    old_dtype: str,
    new_shape: tuple[int, ...],
    new_dtype: str,
    compatible: bool,
) -> None:
    serving = _bundle(tmp_path, "old", "1", old_shape, old_dtype)
    candidate = _bundle(tmp_path, "new", "2", new_shape, new_dtype)
    serving_sig = open_bundle(serving).manifest.signature
    (gate,) = evaluate_gates(open_bundle(candidate), GatesSection(), serving_signature=serving_sig)
    assert gate.name == "signature" and gate.evaluated
    assert gate.passed is compatible
    assert _serving_accepts(serving, candidate) is compatible
    assert is_compatible(serving_sig, open_bundle(candidate).manifest.signature) is compatible


def _sig(inp: tuple[int, ...], out: tuple[int, ...]) -> Signature:
    return Signature(
        inputs=(TensorSpec(name="x", datatype="FP32", shape=inp),),
        outputs=(TensorSpec(name="y", datatype="FP32", shape=out),),
    )


@pytest.mark.parametrize(
    ("serving_out", "candidate_out", "compatible"),
    [
        ((-1, 2), (-1, 2), True),
        ((1, 2), (-1, 2), True),  # a dynamic output size follows the request
        ((-1, 2), (1, 2), True),  # clients of a dynamic output read any size
        ((-1, 2), (-1, 3), False),  # a fixed size clients read changed
        ((1, 2), (3, 2), False),
        ((-1, 2), (-1,), False),
    ],
)
def test_outputs_keep_every_size_a_client_can_see(
    serving_out: tuple[int, ...], candidate_out: tuple[int, ...], compatible: bool
) -> None:
    assert is_compatible(_sig((-1, 4), serving_out), _sig((-1, 4), candidate_out)) is compatible


def test_problems_name_the_tensor_and_both_shapes() -> None:
    (problem,) = compatibility_problems(_sig((-1, 4), (-1, 2)), _sig((1, 4), (-1, 2)), label="serving v3")
    assert str(problem) == "input 'x' shape [1, 4], serving v3 [-1, 4]"
    assert (problem.side, problem.name) == ("input", "x")
