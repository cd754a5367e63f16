"""Run a project's ``train.py`` the way mlplat does (a subprocess with the contract's env vars)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "sample_projects"
CONTRACT_VARS = ("MLPLAT_OUTPUT_DIR", "MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLPLAT_PROJECT_DIR")


def run_train(project: Path, *, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    """Run ``python train.py`` of ``project``; return its output, fail the test on a bad exit."""
    full = {k: v for k, v in os.environ.items() if k not in CONTRACT_VARS}
    full.update({"PYTHONDONTWRITEBYTECODE": "1", **(env or {})})
    proc = subprocess.run(
        [sys.executable, str(project / "train.py")],
        cwd=cwd or project,
        env=full,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, f"train.py failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def copy_project(name: str, dest: Path) -> Path:
    """A private copy of a sample (tests must not write into the repository)."""
    return Path(
        shutil.copytree(SAMPLES / name, dest, ignore=shutil.ignore_patterns("out", ".mlplat", "__pycache__"))
    )


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def check_contract_files(out: Path, n_features: int, feature_keys: list[str]) -> dict[str, np.ndarray]:
    """The optional files follow the training contract; returns the sample inputs."""
    metrics = read_json(out / "metrics.json")
    assert metrics and all(isinstance(v, float) for v in metrics.values()), metrics
    params = read_json(out / "params.json")
    assert params and all(isinstance(v, str | int | float) for v in params.values()), params
    with np.load(out / "samples.npz", allow_pickle=False) as npz:
        samples = {k: npz[k] for k in npz.files}
    assert list(samples) == ["input:input"]
    assert samples["input:input"].dtype == np.float32
    assert samples["input:input"].ndim == 2 and samples["input:input"].shape[1] == n_features
    from mlplat_runtime.monitoring.reference import parse_reference

    reference = parse_reference(read_json(out / "reference.json"))  # v2, from compute_reference
    assert reference is not None and list(reference.features) == feature_keys
    for feature in reference.features.values():
        assert feature.count == reference.n_rows and sum(feature.counts) == feature.count
        if feature.kind == "numeric":
            assert feature.min is not None and feature.max is not None
            assert feature.edges[0] == feature.min and feature.edges[-1] == feature.max
        assert set(feature.floors) == {"1000", "10000", "100000"}
    assert "probabilities" in reference.outputs
    return samples


@dataclass(frozen=True)
class TrackedRun:
    uri: str
    run_id: str
    client: Any  # mlflow.tracking.MlflowClient


@pytest.fixture
def tracked_run(tmp_path: Path) -> Iterator[TrackedRun]:
    """An MLflow run created up front, as mlplat does, in a SQLite store under tmp_path."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("samples", artifact_location=(tmp_path / "artifacts").as_uri())
    run = client.create_run(experiment, run_name="platform-created")
    yield TrackedRun(uri=uri, run_id=run.info.run_id, client=client)
