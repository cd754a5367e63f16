"""Train a small PyTorch network and export it to ONNX, the way mlplat expects.

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
import warnings
from pathlib import Path

import numpy as np

# The platform's reference helper (bins fixed at training time, for drift): part of mlplat.
from mlplat_runtime.monitoring import compute_reference

# Hyperparameters: edit a line and save, and `mlplat dev` retrains.
HIDDEN = 32
EPOCHS = 40
LEARNING_RATE = 1e-2
BATCH_SIZE = 64
TEST_SIZE = 0.25  # held-out share used for metrics.json
SEED = 42
THREADS = 1  # tiny matrices: more threads only add sync overhead (10x+ slower on a busy CPU)

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
    import torch
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
    from sklearn.model_selection import train_test_split

    torch.set_num_threads(THREADS)
    torch.manual_seed(SEED)
    names, x, y = load(DATA)
    classes = np.unique(y)
    target = np.searchsorted(classes, y)  # class ids -> 0..k-1
    x_train, x_test, t_train, t_test = train_test_split(
        x, target, test_size=TEST_SIZE, random_state=SEED, stratify=target
    )

    class Net(torch.nn.Module):
        mean: torch.Tensor
        std: torch.Tensor
        classes: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            # Standardisation and class ids live inside the graph: clients send raw features
            # and get back the labels of data/train.csv.
            self.register_buffer("mean", torch.from_numpy(x_train.mean(axis=0)))
            self.register_buffer("std", torch.from_numpy(x_train.std(axis=0) + 1e-6))
            self.register_buffer("classes", torch.from_numpy(classes))
            self.body = torch.nn.Sequential(
                torch.nn.Linear(x.shape[1], HIDDEN),
                torch.nn.ReLU(),
                torch.nn.Linear(HIDDEN, len(classes)),
            )

        def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            proba = torch.softmax(self.body((features - self.mean) / self.std), dim=1)
            return self.classes[proba.argmax(dim=1)], proba

    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)
    xt, tt = torch.from_numpy(x_train), torch.from_numpy(t_train)
    gen = torch.Generator().manual_seed(SEED)
    for _ in range(EPOCHS):
        order = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(order), BATCH_SIZE):
            batch = order[i : i + BATCH_SIZE]
            logits = net.body((xt[batch] - net.mean) / net.std)
            loss = torch.nn.functional.cross_entropy(logits, tt[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()

    net.eval()
    with torch.no_grad():
        _, proba = net(torch.from_numpy(x_test))
    pred = proba.argmax(dim=1).numpy()
    binary = len(classes) == 2
    metrics = {
        "accuracy": float(accuracy_score(t_test, pred)),
        "f1": float(f1_score(t_test, pred, average="binary" if binary else "macro")),
        "roc_auc": float(roc_auc_score(t_test, proba[:, 1] if binary else proba.numpy(), multi_class="ovr")),
    }
    params = {"hidden": HIDDEN, "epochs": EPOCHS, "learning_rate": LEARNING_RATE, "seed": SEED}

    out = output_dir()
    with warnings.catch_warnings():
        # The TorchScript exporter works offline; the newer dynamo one needs onnxscript.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (torch.from_numpy(x_test[:2]),),
            str(out / "model.onnx"),
            input_names=["input"],
            output_names=["label", "probabilities"],
            dynamic_axes={"input": {0: "batch"}, "label": {0: "batch"}, "probabilities": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "params.json").write_text(json.dumps(params, indent=2) + "\n")
    # Training distributions (bins fixed now) and the outputs on the test split, for drift;
    # declare feature kinds in mlplat.toml [monitor.features] when the guess is wrong.
    reference = compute_reference(
        {"input": x_train},
        feature_names=names,
        project_dir=HERE,
        outputs={"label": classes[pred].astype(np.int64), "probabilities": proba.numpy()},
    )
    (out / "reference.json").write_text(reference.model_dump_json(indent=2) + "\n")
    np.savez(out / "samples.npz", **{"input:input": x_test[:16]})

    if os.environ.get("MLFLOW_TRACKING_URI"):  # standalone runs have no tracker
        import mlflow

        # Resumes the run mlplat created (MLFLOW_RUN_ID): log anything extra you like here.
        with mlflow.start_run():
            mlflow.log_metric("final_train_loss", float(loss))

    print(" ".join(f"{k}={v:.4f}" for k, v in metrics.items()), "->", out / "model.onnx")


if __name__ == "__main__":
    main()
