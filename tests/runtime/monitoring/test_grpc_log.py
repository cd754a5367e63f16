"""The prediction log for OIP over gRPC: tritonclient's gRPC client against a real serving
process started with ``--grpc-port`` and ``--log-dir``; rows read from the closed segments with
DuckDB, as the monitor reads them."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pytest
import tritonclient.grpc as tgrpc

from mlplat_runtime.monitoring import logschema
from mlplat_runtime.monitoring.reference import compute_reference
from tests.helpers.models import make_bundle
from tests.runtime.serving.conftest import start_serving

pytestmark = pytest.mark.integration

FEATURES = ["age", "income", "flag", "score"]


def rows_of(glob: Path) -> list[dict[str, object]]:
    rel = duckdb.connect().sql(
        f"SELECT * FROM read_parquet('{glob}', union_by_name=true) ORDER BY time, request_id, \"row\""
    )
    return [dict(zip(rel.columns, row, strict=True)) for row in rel.fetchall()]


def test_grpc_inference_and_its_failures_are_in_the_prediction_log(tmp_path: Path) -> None:
    x = np.random.default_rng(0).normal(size=(500, 4)).astype(np.float32)
    ref = compute_reference({"input": x}, feature_names=FEATURES)
    bundle = make_bundle(tmp_path, reference=json.loads(ref.model_dump_json()))
    log_dir = tmp_path / "log"
    s = start_serving(tmp_path, bundle, "--grpc-port", "0", "--log-dir", str(log_dir))
    try:
        assert s.grpc is not None
        client = tgrpc.InferenceServerClient(url=s.grpc)
        try:
            sent = np.array([[1.0, 2.0, 0.0, 3.5], [0.5, -1.0, 1.0, -1.0]], dtype=np.float32)
            inp = tgrpc.InferInput("input", list(sent.shape), "FP32")
            inp.set_data_from_numpy(sent)
            named = client.infer("m", [inp], request_id="grpc-7")
            assert named.get_response().id == "grpc-7"
            generated = client.infer("m", [inp]).get_response().id  # no id sent: serving's own
            assert generated.count("-") == 1 and generated.endswith("-1")  # <boot>-<seq>
            bad = tgrpc.InferInput("input", [1, 3], "FP32")
            bad.set_data_from_numpy(np.zeros((1, 3), np.float32))
            with pytest.raises(tgrpc.InferenceServerException, match="does not fit"):
                client.infer("m", [bad], request_id="grpc-bad")
            with pytest.raises(tgrpc.InferenceServerException, match="not loaded"):
                client.infer("nope", [inp], request_id="grpc-nope")  # no model: nothing to log
        finally:
            client.close()
    finally:
        assert s.stop() == 0  # SIGTERM: what is queued is written, every segment closed

    assert not list(log_dir.rglob("*.tmp"))
    rows = rows_of(log_dir / logschema.PREDICTIONS_GLOB)
    by_id: dict[str, list[dict[str, object]]] = {}
    for r in rows:
        by_id.setdefault(str(r["request_id"]), []).append(r)
    assert sorted(by_id) == sorted(["grpc-7", generated, "grpc-bad"])
    served = by_id["grpc-7"]
    assert [(r["row"], r["status"]) for r in served] == [(0, 200), (1, 200)]
    assert [served[0][f"in_{f}"] for f in FEATURES] == [1.0, 2.0, 0.0, 3.5]
    assert served[0]["model"] == "m" and str(served[0]["bundle_id"]).startswith("sha256:")
    proba = served[1]["out_probabilities"]
    assert isinstance(proba, list) and len(proba) == 2 and served[1]["out_label"] == int(np.argmax(proba))
    assert len(by_id[generated]) == 2
    (failed,) = by_id["grpc-bad"]
    assert failed["status"] == 400 and "does not fit" in str(failed["error"])
    assert failed["out_label"] is None and failed["in_age"] is None
