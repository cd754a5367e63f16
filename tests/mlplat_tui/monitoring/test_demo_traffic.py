"""``make demo``'s traffic: rows from the training reference do not drift; with the drift
toggle on, the shifted feature drifts (and only it), as the monitor scores them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from mlplat_runtime.metadata.alerts import Thresholds
from mlplat_runtime.metadata.profiles import feature_drift
from mlplat_runtime.monitoring import drift
from mlplat_runtime.monitoring.reference import compute_reference

DEMO = Path(__file__).resolve().parents[3] / "scripts" / "demo.py"


def _demo():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("demo_script", DEMO)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reference_rows_and_the_drift_toggle(tmp_path: Path) -> None:
    demo = _demo()
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.gamma(2.0, 10.0, 5000), rng.normal(70, 20, 5000), rng.integers(0, 3, 5000)])
    ref = compute_reference({"input": x.astype(np.float32)}, feature_names=["tenure", "charges", "contract"])
    bundle = tmp_path / ".mlplat" / "bundles" / "churn-v1"
    bundle.mkdir(parents=True)
    (bundle / "reference.json").write_text(ref.model_dump_json())
    rows = demo.ReferenceRows.newest(tmp_path)
    assert rows is not None and rows.shifted == "tenure"
    rule = Thresholds()

    def states(drifted: bool) -> dict[str, str]:
        data = np.array([rows.fill("input", [1, 3], drifted) for _ in range(2000)])
        return {
            name: feature_drift(f, drift.bin_counts(data[:, f.column], f), rule=rule).state
            for name, f in ref.features.items()
        }

    assert set(states(False).values()) <= {"ok", "warn"}
    on = states(True)
    assert on["tenure"] == "drift" and on["charges"] != "drift" and on["contract"] != "drift"
    body = demo._body([{"name": "input", "datatype": "FP32", "shape": [-1, 3]}], rows, False)
    assert body["inputs"][0]["shape"] == [1, 3] and len(body["inputs"][0]["data"]) == 3
