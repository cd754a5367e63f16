"""Churn classifier: a scikit-learn pipeline exported to ONNX, following mlplat's training contract.

mlplat runs this with ``MLPLAT_OUTPUT_DIR``, ``MLFLOW_TRACKING_URI`` and ``MLFLOW_RUN_ID`` set; it
writes ``model.onnx``, ``metrics.json``, ``params.json``, ``samples.npz`` and ``reference.json``
there. Run on its own (``python train.py``) it writes them to ``./out/`` and skips MLflow.

The ONNX model takes one FP32 tensor ``input`` [-1, 8] in ``FEATURES`` order (``contract`` coded
as ``CONTRACT_CODES``) and returns ``label`` INT64 [-1] and ``probabilities`` FP32 [-1, 2].
"""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

import numpy as np

# The platform's reference helper (bins fixed at training time, for drift): part of mlplat.
from mlplat_runtime.monitoring import compute_reference

# Hyperparameters: edit a line and save, and `mlplat dev` retrains.
C = 1.0  # inverse regularisation strength of the logistic regression
MAX_ITER = 1000
CLASS_WEIGHT = None  # or "balanced"
TEST_SIZE = 0.25  # held-out share for metrics.json
SEED = 7
LABEL_NOISE = 0.0  # share of training labels flipped at random: raise it to watch a gate reject

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "churn.csv"
TARGET = "churned"
CONTRACT_CODES = {"month-to-month": 0.0, "one-year": 1.0, "two-year": 2.0}
SCALED = ["tenure_months", "monthly_charges", "total_charges", "support_calls"]
FLAGS = ["has_fiber", "senior_citizen", "paperless_billing"]
FEATURES = [*SCALED, *FLAGS, "contract"]  # the model's input columns, in order


def load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The CSV as one float32 matrix (categories coded as numbers) and the 0/1 target."""
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    x = np.array(
        [[float(r[c]) for c in FEATURES[:-1]] + [CONTRACT_CODES[r["contract"]]] for r in rows],
        dtype=np.float32,
    )
    y = np.array([int(r[TARGET]) for r in rows], dtype=np.int64)
    return x, y


def output_dir() -> Path:
    out = Path(os.environ.get("MLPLAT_OUTPUT_DIR") or HERE / "out")
    out.mkdir(parents=True, exist_ok=True)
    return out


def build_pipeline():  # type: ignore[no-untyped-def]
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    idx = {name: i for i, name in enumerate(FEATURES)}
    prep = ColumnTransformer(
        [
            ("scaled", StandardScaler(), [idx[c] for c in SCALED]),
            ("flags", "passthrough", [idx[c] for c in FLAGS]),
            (
                "contract",
                OneHotEncoder(categories=[sorted(CONTRACT_CODES.values())], handle_unknown="ignore"),
                [idx["contract"]],
            ),
        ]
    )
    clf = LogisticRegression(C=C, max_iter=MAX_ITER, class_weight=CLASS_WEIGHT)
    return Pipeline([("prep", prep), ("clf", clf)]), clf


def to_onnx(pipeline, clf, n_features: int) -> bytes:  # type: ignore[no-untyped-def]
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    model = convert_sklearn(
        pipeline,
        initial_types=[("input", FloatTensorType([None, n_features]))],
        # Plain tensors out (no ZipMap of dicts), so OIP clients get label + probabilities.
        options={id(clf): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    return model.SerializeToString()


def check_onnx(model: bytes, x: np.ndarray, expected: np.ndarray) -> None:
    """Fail loudly if the converted model disagrees with scikit-learn."""
    import onnxruntime as ort

    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    _, proba = session.run(None, {"input": x})
    diff = float(np.abs(proba - expected).max())
    if diff > 1e-4:
        raise SystemExit(f"ONNX model disagrees with scikit-learn (max |diff| {diff:.2e})")


def log_to_tracker(metrics: dict[str, float]) -> None:
    """Extra metrics for MLflow; mlplat itself records metrics.json and params.json."""
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        return  # standalone run: no tracker
    import mlflow

    with mlflow.start_run():  # resumes the run mlplat created (MLFLOW_RUN_ID)
        mlflow.log_metrics(metrics)


def main() -> None:
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score
    from sklearn.model_selection import train_test_split

    x, y = load(DATA)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_SIZE, random_state=SEED, stratify=y
    )
    if LABEL_NOISE > 0:
        flip = np.random.default_rng(SEED).random(len(y_train)) < LABEL_NOISE
        y_train = np.where(flip, 1 - y_train, y_train)

    pipeline, clf = build_pipeline()
    start = time.perf_counter()
    pipeline.fit(x_train, y_train)
    fit_s = time.perf_counter() - start

    proba = pipeline.predict_proba(x_test)
    pred = proba.argmax(axis=1)
    metrics = {
        "roc_auc": float(roc_auc_score(y_test, proba[:, 1])),
        "accuracy": float(accuracy_score(y_test, pred)),
        "f1": float(f1_score(y_test, pred)),
        "precision": float(precision_score(y_test, pred, zero_division=0)),
        "recall": float(recall_score(y_test, pred)),
    }
    params = {
        "model": "logistic_regression",
        "C": C,
        "max_iter": MAX_ITER,
        "class_weight": str(CLASS_WEIGHT),
        "test_size": TEST_SIZE,
        "seed": SEED,
        "label_noise": LABEL_NOISE,
        "n_train": len(y_train),
        "n_features": x.shape[1],
    }

    model = to_onnx(pipeline, clf, x.shape[1])
    check_onnx(model, x_test, proba)

    out = output_dir()
    (out / "model.onnx").write_bytes(model)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "params.json").write_text(json.dumps(params, indent=2) + "\n")
    # Training distributions (bins fixed now) and the outputs on the test split, for drift.
    reference = compute_reference(
        {"input": x_train},
        feature_names=FEATURES,
        project_dir=HERE,
        outputs={"label": pred.astype(np.int64), "probabilities": proba.astype(np.float32)},
    )
    (out / "reference.json").write_text(reference.model_dump_json(indent=2) + "\n")
    np.savez(out / "samples.npz", **{"input:input": x_test[:16]})

    train_proba = pipeline.predict_proba(x_train)[:, 1]
    log_to_tracker(
        {
            "train_roc_auc": float(roc_auc_score(y_train, train_proba)),
            "train_accuracy": float(accuracy_score(y_train, train_proba >= 0.5)),
            "fit_seconds": fit_s,
        }
    )
    summary = " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
    print(f"{summary} -> {out / 'model.onnx'} ({len(model) / 1024:.1f} KiB)")


if __name__ == "__main__":
    main()
