"""The digits sample (PyTorch): trains standalone, exports ONNX with a dynamic batch, logs per epoch."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tests.sample_projects.conftest import (
    SAMPLES,
    TrackedRun,
    check_contract_files,
    read_json,
    run_train,
)

DIGITS = SAMPLES / "digits"


def test_trains_into_the_output_dir_and_the_model_serves(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_train(DIGITS, env={"MLPLAT_OUTPUT_DIR": str(out)}, cwd=tmp_path)

    metrics = read_json(out / "metrics.json")
    assert {"accuracy", "f1_macro", "loss"} <= set(metrics)
    assert metrics["accuracy"] >= 0.9
    samples = check_contract_files(out, 64, [f"x{i}" for i in range(64)])

    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert (inp.name, inp.type, inp.shape[1]) == ("input", "tensor(float)", 64)
    assert not isinstance(inp.shape[0], int)  # dynamic batch
    assert [o.name for o in session.get_outputs()] == ["logits", "probabilities"]
    for x in (samples["input:input"], samples["input:input"][:1]):
        logits, proba = session.run(None, {"input": x})
        assert logits.shape == proba.shape == (len(x), 10)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
        np.testing.assert_array_equal(logits.argmax(axis=1), proba.argmax(axis=1))

    # The held-out samples are real digits: the served model gets most of them right.
    from sklearn.datasets import load_digits

    x_all, y_all = load_digits(return_X_y=True)
    idx = [int(np.flatnonzero((x_all == row).all(axis=1))[0]) for row in samples["input:input"]]
    _, proba = session.run(None, {"input": samples["input:input"]})
    assert (proba.argmax(axis=1) == y_all[idx]).mean() >= 0.8


@pytest.mark.integration
def test_epochs_land_in_the_run_the_platform_created(tmp_path: Path, tracked_run: TrackedRun) -> None:
    epochs = int(re.search(r"(?m)^EPOCHS = (\d+)", (DIGITS / "train.py").read_text()).group(1))  # type: ignore[union-attr]
    run_train(
        DIGITS,
        env={
            "MLPLAT_OUTPUT_DIR": str(tmp_path / "out"),
            "MLFLOW_TRACKING_URI": tracked_run.uri,
            "MLFLOW_RUN_ID": tracked_run.run_id,
        },
        cwd=tmp_path,
    )
    client = tracked_run.client
    history = client.get_metric_history(tracked_run.run_id, "train_loss")
    assert [m.step for m in history] == list(range(epochs))
    assert history[-1].value < history[0].value  # it learned
    assert client.get_run(tracked_run.run_id).data.metrics["val_accuracy"] >= 0.9
    runs = client.search_runs([client.get_run(tracked_run.run_id).info.experiment_id])
    assert len(runs) == 1
