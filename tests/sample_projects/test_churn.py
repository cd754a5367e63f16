"""The churn sample: trains standalone, writes the contract's files, logs into the platform's run."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from mlplat_tui.project.config import load_project
from tests.sample_projects.conftest import (
    SAMPLES,
    TrackedRun,
    check_contract_files,
    copy_project,
    read_json,
    run_train,
)

CHURN = SAMPLES / "churn"
FEATURES = [
    "tenure_months",
    "monthly_charges",
    "total_charges",
    "support_calls",
    "has_fiber",
    "senior_citizen",
    "paperless_billing",
    "contract",
]


def test_trains_into_the_output_dir_and_the_model_serves(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_train(CHURN, env={"MLPLAT_OUTPUT_DIR": str(out)}, cwd=tmp_path)

    metrics = read_json(out / "metrics.json")
    assert {"roc_auc", "accuracy", "f1"} <= set(metrics)
    assert metrics["roc_auc"] >= 0.85
    gate = load_project(CHURN).config.gates.thresholds["metrics.roc_auc"]
    assert gate.holds(metrics["roc_auc"])  # the sample passes its own gate
    samples = check_contract_files(out, len(FEATURES), FEATURES)

    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert (inp.name, inp.type, inp.shape[1]) == ("input", "tensor(float)", len(FEATURES))
    assert not isinstance(inp.shape[0], int)  # dynamic batch
    assert [o.name for o in session.get_outputs()] == ["label", "probabilities"]
    x = samples["input:input"]
    label, proba = session.run(None, {"input": x})
    assert label.shape == (len(x),) and label.dtype == np.int64
    assert proba.shape == (len(x), 2) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(label, proba.argmax(axis=1))
    assert (out / "model.onnx").stat().st_size < 50 * 2**20


def test_standalone_writes_out_and_hyperparameters_are_editable(tmp_path: Path) -> None:
    project = copy_project("churn", tmp_path / "churn")
    train = project / "train.py"
    text, n = re.subn(r"(?m)^C = 1\.0\b", "C = 0.002", train.read_text())
    assert n == 1, "train.py must keep `C = 1.0` on a line of its own"
    train.write_text(text)
    output = run_train(project)  # no env vars: ./out/, no MLflow
    assert "roc_auc=" in output
    assert read_json(project / "out" / "params.json")["C"] == 0.002
    assert (project / "out" / "model.onnx").is_file()
    assert not (project / "mlruns").exists()


def test_data_generator_is_reproducible(tmp_path: Path) -> None:
    project = copy_project("churn", tmp_path / "churn")
    committed = (CHURN / "data" / "churn.csv").read_bytes()
    (project / "data" / "churn.csv").unlink()
    import subprocess
    import sys

    subprocess.run([sys.executable, "data/make_churn.py"], cwd=project, check=True, capture_output=True)
    assert (project / "data" / "churn.csv").read_bytes() == committed
    assert 2000 <= committed.count(b"\n") - 1 <= 5000


@pytest.mark.integration
def test_metrics_land_in_the_run_the_platform_created(tmp_path: Path, tracked_run: TrackedRun) -> None:
    out = tmp_path / "out"
    run_train(
        CHURN,
        env={
            "MLPLAT_OUTPUT_DIR": str(out),
            "MLFLOW_TRACKING_URI": tracked_run.uri,
            "MLFLOW_RUN_ID": tracked_run.run_id,
        },
        cwd=tmp_path,
    )
    run = tracked_run.client.get_run(tracked_run.run_id)
    assert {"train_roc_auc", "train_accuracy", "fit_seconds"} <= set(run.data.metrics)
    assert 0.5 < run.data.metrics["train_roc_auc"] <= 1.0
    runs = tracked_run.client.search_runs([run.info.experiment_id])
    assert [r.info.run_id for r in runs] == [tracked_run.run_id]  # resumed, not a new run
    assert (out / "model.onnx").is_file()
