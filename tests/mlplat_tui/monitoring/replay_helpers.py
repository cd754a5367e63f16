"""Captured traffic for the replay tests: a real serving process writing the prediction log.

``capture`` starts ``python -m mlplat_runtime.serving`` on a bundle with ``--log-dir``, sends
requests over HTTP, and stops it with SIGTERM (what is queued is written, every segment closed),
so the replay reads segments exactly as serving wrote them. ``flipped_onnx`` is the tests'
logistic regression with its weights negated: nearly every label flips.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import onnx
from onnx import numpy_helper

from tests.helpers.models import make_logreg_onnx
from tests.runtime.serving.conftest import start_serving

FEATURES = ["age", "income", "flag", "score"]


def traffic(rows: int, seed: int = 1) -> np.ndarray:
    """Rows like the reference's: ``flag`` (column 2) is a category 0, 1 or 2."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 4)).astype(np.float32)
    x[:, 2] = rng.integers(0, 3, size=rows)
    return x


def reference() -> dict[str, object]:
    import json

    from mlplat_runtime.monitoring.reference import compute_reference

    ref = compute_reference(
        {"input": traffic(500, seed=0)}, feature_names=FEATURES, kinds={"flag": "categorical"}
    )
    return dict(json.loads(ref.model_dump_json()))


def flipped_onnx(path: Path) -> Path:
    """The logistic regression of ``make_logreg_onnx`` with W and b negated."""
    src = make_logreg_onnx(path.with_name("unflipped.onnx"))
    model = onnx.load(str(src))
    for init in model.graph.initializer:
        if init.name in ("W", "b"):
            init.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(init), init.name))
    onnx.save(model, str(path))
    return path


def capture(
    tmp_path: Path, bundle: Path, log_dir: Path, x: np.ndarray, *, batch: int = 20, model: str = "m"
) -> None:
    """Serve ``bundle`` with the prediction log on, send ``x`` in requests of ``batch`` rows
    (plus one request that fails), and stop serving so every segment is closed."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    s = start_serving(
        tmp_path, bundle, "--log-dir", str(log_dir), "--log-flush-ms", "20", "--log-budget", "1000000"
    )
    try:
        with httpx.Client(timeout=10) as client:
            for start in range(0, len(x), batch):
                rows = x[start : start + batch]
                body = {
                    "inputs": [
                        {
                            "name": "input",
                            "datatype": "FP32",
                            "shape": list(rows.shape),
                            "data": rows.ravel().tolist(),
                        }
                    ]
                }
                r = client.post(f"{s.url}/v2/models/{model}/infer", json=body)
                assert r.status_code == 200, r.text
            bad = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}
            assert client.post(f"{s.url}/v2/models/{model}/infer", json=bad).status_code == 400
    finally:
        assert s.stop() == 0
    assert list(log_dir.glob(f"{model}/*.parquet")), "serving wrote no closed segment"
