"""``mlplat bundle build|verify|inspect``: through click's runner and the installed script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mlplat_runtime.bundle import open_bundle
from mlplat_tui.cli import cli
from tests.helpers.models import make_logreg_onnx

MLPLAT = Path(sys.executable).parent / "mlplat"


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return make_logreg_onnx(tmp_path / "model.onnx")


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["bundle", *args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_build_default_output_then_verify_and_inspect(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "metrics.json").write_text(json.dumps({"roc_auc": 0.91, "rmse": 2}))
    code, out, _ = invoke("build", "model.onnx", "--name", "churn", "--metrics", "metrics.json")
    assert code == 0, out
    [built] = [p for p in tmp_path.iterdir() if p.name.startswith("churn-")]
    manifest = open_bundle(built).manifest
    assert built.name == f"churn-{manifest.version}" and len(manifest.version) == 12
    assert manifest.metrics == {"roc_auc": 0.91, "rmse": 2.0}
    assert f"built {built.name}" in out and manifest.bundle_id in out
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

    code, out, _ = invoke("verify", built.name)
    assert code == 0 and out.startswith("ok:")

    code, out, _ = invoke("inspect", built.name)
    assert code == 0
    for needle in (
        "churn  version",
        manifest.bundle_id,
        "input   input",
        "FP32",
        "[-1, 4]",
        "roc_auc",
        "probabilities",
        "model.onnx",
        "samples.npz",
        "KiB",
    ):
        assert needle in out, needle

    code, out, _ = invoke("inspect", built.name, "--json")
    data = json.loads(out)
    assert data["manifest"]["bundle_id"] == manifest.bundle_id
    assert data["file_sizes"]["model.onnx"] == (built / "model.onnx").stat().st_size


def test_build_archive_by_suffix_and_by_flag(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, _ = invoke("build", "model.onnx", "--name", "churn", "--version", "2", "-o", "out/c.mlbundle")
    assert code == 0 and (tmp_path / "out" / "c.mlbundle").is_file()
    code, _, _ = invoke("build", "model.onnx", "--name", "churn", "--version", "3", "--archive")
    assert code == 0 and (tmp_path / "churn-3.mlbundle").is_file()
    code, out, _ = invoke("inspect", "churn-3.mlbundle")
    assert code == 0 and "churn  version 3" in out
    assert open_bundle(tmp_path / "out" / "c.mlbundle", extract_to=tmp_path / "x").manifest.version == "2"


@pytest.mark.parametrize("key", ["input", "input:input"])
def test_build_with_user_samples(model: Path, tmp_path: Path, key: str) -> None:
    np.savez(tmp_path / "inputs.npz", **{key: np.ones((5, 4), dtype=np.float32)})  # type: ignore[arg-type]
    out = tmp_path / "b"
    code, _, _ = invoke(
        "build", str(model), "--name", "m", "--samples", str(tmp_path / "inputs.npz"), "-o", str(out)
    )
    assert code == 0
    inputs, _ = open_bundle(out).samples()
    np.testing.assert_array_equal(inputs["input"], np.ones((5, 4), dtype=np.float32))


def test_verify_lists_problems_and_exits_1(model: Path, tmp_path: Path) -> None:
    out = tmp_path / "b"
    assert invoke("build", str(model), "--name", "m", "-o", str(out))[0] == 0
    (out / "stray.txt").write_text("x")
    (out / "samples.npz").write_bytes(b"changed")
    code, _, err = invoke("verify", str(out))
    assert code == 1
    assert "3 problems" in err and "not a readable .npz file" in err
    assert "'samples.npz': checksum differs" in err and "'stray.txt': not listed" in err


def test_help_teaches_with_examples() -> None:
    for args in (["--help"], ["build", "--help"], ["verify", "--help"], ["inspect", "--help"]):
        code, out, _ = invoke(*args)
        assert code == 0 and "mlplat bundle" in out and "Example" in out


def test_installed_script_exit_codes(model: Path, tmp_path: Path) -> None:
    """Errors from the tree reach the user as one line on stderr with a hint, and an exit code."""
    out = tmp_path / "b"
    ok = subprocess.run(
        [MLPLAT, "bundle", "build", model, "--name", "m", "-o", out], capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    again = subprocess.run(
        [MLPLAT, "bundle", "build", model, "--name", "m", "-o", out], capture_output=True, text=True
    )
    assert again.returncode == 1 and "already exists" in again.stderr and "hint:" in again.stderr
    bad_name = subprocess.run(
        [MLPLAT, "bundle", "build", model, "--name", "no spaces", "-o", tmp_path / "c"],
        capture_output=True,
        text=True,
    )
    assert bad_name.returncode == 2 and "is not allowed" in bad_name.stderr
    (out / "model.onnx").write_bytes(b"x")
    verify = subprocess.run([MLPLAT, "bundle", "verify", out], capture_output=True, text=True)
    assert verify.returncode == 1 and "checksum differs" in verify.stderr
