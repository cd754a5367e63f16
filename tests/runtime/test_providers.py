"""Execution provider choice and the shared session settings, on real ONNX Runtime sessions."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mlplat_runtime import providers
from mlplat_runtime.errors import ModelLoadError, UsageError
from tests.helpers.models import make_logreg_onnx, write_corrupt_onnx


def test_override_is_taken_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLPLAT_PROVIDERS", " CPUExecutionProvider ")
    assert providers.choose_providers() == ["CPUExecutionProvider"]


def test_override_with_unknown_provider_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLPLAT_PROVIDERS", "CPUExecutionProvider,NoSuchExecutionProvider")
    with pytest.raises(UsageError) as err:
        providers.choose_providers()
    assert "NoSuchExecutionProvider" in err.value.message
    assert err.value.hint is not None and "CPUExecutionProvider" in err.value.hint


def test_cuda_only_when_the_driver_reports_a_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLPLAT_PROVIDERS", raising=False)
    chosen = providers.choose_providers()
    assert chosen[-1] == "CPUExecutionProvider"
    assert ("CUDAExecutionProvider" in chosen) == (providers.cuda_device_count() > 0)


def test_cuda_probe_is_silent_in_a_fresh_process() -> None:
    # Run in a subprocess: the probe is cached, and we want to see what a cold probe prints.
    code = "from mlplat_runtime.providers import choose_providers; print(choose_providers())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert "CPUExecutionProvider" in out.stdout
    assert out.stderr == ""


def test_session_options_defaults_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLPLAT_ORT_THREADS", raising=False)
    opts = providers.session_options()
    assert opts.intra_op_num_threads == 1
    assert opts.inter_op_num_threads == 1
    monkeypatch.setenv("MLPLAT_ORT_THREADS", "3")
    assert providers.session_options().intra_op_num_threads == 3
    monkeypatch.setenv("MLPLAT_ORT_THREADS", "many")
    with pytest.raises(UsageError, match="MLPLAT_ORT_THREADS"):
        providers.session_options()


def test_a_batched_session_gets_the_workers_share_of_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    cores = len(os.sched_getaffinity(0))
    monkeypatch.delenv("MLPLAT_ORT_THREADS", raising=False)
    monkeypatch.delenv("MLPLAT_SERVING_WORKERS", raising=False)
    assert providers.batch_threads() == cores
    monkeypatch.setenv("MLPLAT_SERVING_WORKERS", str(cores * 4))  # more workers than cores: 1 each
    assert providers.batch_threads() == 1
    monkeypatch.setenv("MLPLAT_SERVING_WORKERS", "junk")
    assert providers.batch_threads() == cores
    monkeypatch.setenv("MLPLAT_ORT_THREADS", "3")  # the operator's setting wins
    assert providers.batch_threads() == 3
    assert providers.session_options(providers.batch_threads()).intra_op_num_threads == 3


def test_make_session_runs_and_reports_its_provider(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLPLAT_PROVIDERS", "CPUExecutionProvider")
    session = providers.make_session(make_logreg_onnx(tmp_path / "m.onnx"))
    assert providers.active_provider(session) == "CPUExecutionProvider"
    label, probs = session.run(None, {"input": np.zeros((2, 4), dtype=np.float32)})
    assert label.shape == (2,)
    assert np.allclose(probs.sum(axis=1), 1.0)


def test_make_session_refuses_a_corrupt_model(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"could not load bad\.onnx"):
        providers.make_session(write_corrupt_onnx(tmp_path / "bad.onnx"), ["CPUExecutionProvider"])


def test_gpu_info_is_none_without_nvidia_smi(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert providers.gpu_info() is None


def test_gpu_info_reads_a_real_nvidia_smi_binary(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A stand-in executable on PATH that prints what nvidia-smi prints for the query.
    exe = tmp_path / "nvidia-smi"
    exe.write_text("#!/bin/sh\necho 'NVIDIA H100 80GB HBM3, 81559'\n")
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert providers.gpu_info() == "NVIDIA H100 80GB HBM3 (79 GiB)"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("NVIDIA H100 80GB HBM3, 81559\n", "NVIDIA H100 80GB HBM3 (79 GiB)"),
        ("Tesla T4, 15360\nTesla T4, 15360\n", "Tesla T4 (15 GiB) ×2"),
        ("", None),
        ("weird output\n", "weird output"),
    ],
)
def test_parse_nvidia_smi(text: str, expected: str | None) -> None:
    assert providers.parse_nvidia_smi(text) == expected
