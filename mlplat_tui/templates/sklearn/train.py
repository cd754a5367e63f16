"""Train a scikit-learn classifier and export it to ONNX, the way mlplat expects.

mlplat runs this with ``MLPLAT_OUTPUT_DIR``, ``MLFLOW_TRACKING_URI`` and ``MLFLOW_RUN_ID`` set.
It must write ``model.onnx`` there; ``metrics.json`` (flat numbers, checked by the gates in
mlplat.toml), ``params.json``, ``samples.npz`` (example inputs, keys ``input:<name>``) and
``reference.json`` (training distributions, for drift) are optional but worth having.
Run on its own (``python train.py``) it writes to ``./out/`` and skips MLflow.

Data: ``data/train.csv`` — numeric feature columns and a ``label`` column of class ids.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

# The platform's reference helper (bins fixed at training time, for drift): part of mlplat.
from mlplat_runtime.monitoring import compute_reference

# Hyperparameters: edit a line and save, and `mlplat dev` retrains.
C = 1.0  # inverse regularisation strength
MAX_ITER = 1000
TEST_SIZE = 0.25  # held-out share used for metrics.json
SEED = 42

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "train.csv"
TARGET = "label"


def load(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    names = [c for c in rows[0] if c != TARGET]
    x = np.array([[float(r[c]) for c in names] for r in rows], dtype=np.float32)
    y = np.array([int(r[TARGET]) for r in rows], dtype=np.int64)
    return names, x, y


def output_dir() -> Path:
    out = Path(os.environ.get("MLPLAT_OUTPUT_DIR") or HERE / "out")
    out.mkdir(parents=True, exist_ok=True)
    return out


def main() -> None:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    names, x, y = load(DATA)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_SIZE, random_state=SEED, stratify=y
    )
    clf = LogisticRegression(C=C, max_iter=MAX_ITER)
    model = make_pipeline(StandardScaler(), clf).fit(x_train, y_train)

    proba = model.predict_proba(x_test)
    pred = model.classes_[proba.argmax(axis=1)]
    binary = proba.shape[1] == 2
    metrics = {
        "accuracy": float(accuracy_score(y_test, pred)),
        "f1": float(f1_score(y_test, pred, average="binary" if binary else "macro")),
        "roc_auc": float(roc_auc_score(y_test, proba[:, 1] if binary else proba, multi_class="ovr")),
    }
    params = {"C": C, "max_iter": MAX_ITER, "test_size": TEST_SIZE, "seed": SEED}

    # One FP32 input "input" [-1, n_features]; outputs "label" and "probabilities" as plain
    # tensors (zipmap off), which is what Open Inference Protocol clients expect.
    onnx_model = convert_sklearn(
        model,
        initial_types=[("input", FloatTensorType([None, x.shape[1]]))],
        options={id(clf): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )

    out = output_dir()
    (out / "model.onnx").write_bytes(onnx_model.SerializeToString())
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "params.json").write_text(json.dumps(params, indent=2) + "\n")
    # Training distributions (bins fixed now) and the outputs on the test split, for drift;
    # declare feature kinds in mlplat.toml [monitor.features] when the guess is wrong.
    reference = compute_reference(
        {"input": x_train},
        feature_names=names,
        project_dir=HERE,
        outputs={"label": pred.astype(np.int64), "probabilities": proba.astype(np.float32)},
    )
    (out / "reference.json").write_text(reference.model_dump_json(indent=2) + "\n")
    np.savez(out / "samples.npz", **{"input:input": x_test[:16]})

    if os.environ.get("MLFLOW_TRACKING_URI"):  # standalone runs have no tracker
        import mlflow

        # Resumes the run mlplat created (MLFLOW_RUN_ID): log anything extra you like here.
        with mlflow.start_run():
            mlflow.log_metric("train_accuracy", float(model.score(x_train, y_train)))

    print(" ".join(f"{k}={v:.4f}" for k, v in metrics.items()), "->", out / "model.onnx")


if __name__ == "__main__":
    main()
