"""Digits classifier: a small PyTorch MLP on scikit-learn's 8x8 digits, exported to ONNX.

mlplat runs this with ``MLPLAT_OUTPUT_DIR``, ``MLFLOW_TRACKING_URI`` and ``MLFLOW_RUN_ID`` set; it
writes ``model.onnx``, ``metrics.json``, ``params.json``, ``samples.npz`` and ``reference.json``
there. Run on its own (``python train.py``) it writes them to ``./out/`` and skips MLflow.

The ONNX model takes ``input`` FP32 [-1, 64] (pixel intensities 0..16, as ``load_digits`` gives
them) and returns ``logits`` and ``probabilities``, both FP32 [-1, 10]. The data ships with
scikit-learn, so nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path

import numpy as np

# The platform's reference helper (bins fixed at training time, for drift): part of mlplat.
from mlplat_runtime.monitoring import compute_reference

# Hyperparameters: edit a line and save, and `mlplat dev` retrains.
HIDDEN = 64
EPOCHS = 15
LEARNING_RATE = 3e-3
BATCH_SIZE = 64
WEIGHT_DECAY = 1e-4
TEST_SIZE = 0.25
SEED = 7
THREADS = 1  # tiny matrices: more threads only add sync overhead (10x+ slower on a busy CPU)

HERE = Path(__file__).resolve().parent


def output_dir() -> Path:
    out = Path(os.environ.get("MLPLAT_OUTPUT_DIR") or HERE / "out")
    out.mkdir(parents=True, exist_ok=True)
    return out


class Tracker:
    """Per-epoch curves for MLflow; mlplat itself records metrics.json and params.json."""

    def __init__(self) -> None:
        self.mlflow = None
        if os.environ.get("MLFLOW_TRACKING_URI"):  # standalone runs have no tracker
            import mlflow

            mlflow.start_run()  # resumes the run mlplat created (MLFLOW_RUN_ID)
            self.mlflow = mlflow

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self.mlflow is not None:
            self.mlflow.log_metrics(metrics, step=step)

    def close(self) -> None:
        if self.mlflow is not None:
            self.mlflow.end_run()


def main() -> None:
    import torch
    from sklearn.datasets import load_digits
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import train_test_split

    torch.set_num_threads(THREADS)
    torch.manual_seed(SEED)
    x, y = load_digits(return_X_y=True)
    x = x.astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_SIZE, random_state=SEED, stratify=y
    )

    class Net(torch.nn.Module):
        scale: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            # Scaling lives inside the graph, so clients send raw 0..16 pixels.
            self.register_buffer("scale", torch.tensor(1.0 / 16.0))
            self.body = torch.nn.Sequential(
                torch.nn.Linear(64, HIDDEN),
                torch.nn.ReLU(),
                torch.nn.Linear(HIDDEN, HIDDEN),
                torch.nn.ReLU(),
                torch.nn.Linear(HIDDEN, 10),
            )

        def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits = self.body(pixels * self.scale)
            return logits, torch.softmax(logits, dim=1)

    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train).long()
    xv = torch.from_numpy(x_test)
    gen = torch.Generator().manual_seed(SEED)
    tracker = Tracker()
    start = time.perf_counter()
    try:
        for epoch in range(EPOCHS):
            net.train()
            order = torch.randperm(len(xt), generator=gen)
            total = 0.0
            for i in range(0, len(order), BATCH_SIZE):
                batch = order[i : i + BATCH_SIZE]
                logits, _ = net(xt[batch])
                loss = torch.nn.functional.cross_entropy(logits, yt[batch])
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(batch)
            net.eval()
            with torch.no_grad():
                val_acc = float((net(xv)[0].argmax(1).numpy() == y_test).mean())
            tracker.log({"train_loss": total / len(xt), "val_accuracy": val_acc}, step=epoch)
    finally:
        tracker.close()
    fit_s = time.perf_counter() - start

    net.eval()
    with torch.no_grad():
        logits, proba = net(xv)
        val_loss = float(torch.nn.functional.cross_entropy(logits, torch.from_numpy(y_test).long()))
    pred = proba.argmax(1).numpy()
    metrics = {
        "accuracy": float(accuracy_score(y_test, pred)),
        "f1_macro": float(f1_score(y_test, pred, average="macro")),
        "loss": val_loss,
    }
    params = {
        "model": "mlp",
        "hidden": HIDDEN,
        "epochs": EPOCHS,
        "learning_rate": LEARNING_RATE,
        "batch_size": BATCH_SIZE,
        "weight_decay": WEIGHT_DECAY,
        "test_size": TEST_SIZE,
        "seed": SEED,
    }

    out = output_dir()
    with warnings.catch_warnings():
        # The TorchScript exporter works offline; the newer dynamo one needs onnxscript.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (xv[:2],),
            str(out / "model.onnx"),
            input_names=["input"],
            output_names=["logits", "probabilities"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}, "probabilities": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "params.json").write_text(json.dumps(params, indent=2) + "\n")
    # Per-pixel training distributions (features x0..x63, bins fixed now) and the outputs on
    # the test split, for drift.
    reference = compute_reference(
        {"input": x_train},
        project_dir=HERE,
        outputs={"logits": logits.numpy(), "probabilities": proba.numpy()},
    )
    (out / "reference.json").write_text(reference.model_dump_json(indent=2) + "\n")
    np.savez(out / "samples.npz", **{"input:input": x_test[:16]})
    summary = " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
    print(f"{summary} ({fit_s:.2f}s training) -> {out / 'model.onnx'}")


if __name__ == "__main__":
    main()
