"""The monitor end to end: a real serving process writes its prediction log, a real metadata
service reads it, the metadata client drives the windows (``POST /monitor/process``).

Traffic is the bundle's own training distribution (undrifted) or the same with one feature
shifted; each window is 1,200 rows sent in batches, waited for until serving has closed the
segments holding them (a condition with a deadline, not a sleep), then cut as one window.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import httpx
import numpy as np
import pytest

from mlplat_runtime.bundle import open_bundle
from mlplat_runtime.metadata.records import BundleRecord
from mlplat_runtime.monitoring import logschema
from mlplat_runtime.monitoring.reference import compute_reference
from mlplat_tui.clients.metadata import MetadataClient
from tests.helpers.metadata import RunningMetadata, start_metadata
from tests.helpers.models import logreg_weights, make_bundle
from tests.runtime.serving.conftest import Serving, start_serving

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FEATURES = ["age", "spend", "score", "plan"]
WINDOW_ROWS = 1200
BATCH = 100


def training_rows(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack(
        [rng.normal(0, 1, n), rng.exponential(1.0, n), rng.uniform(-1, 1, n), rng.integers(0, 4, n)]
    ).astype(np.float32)


def _probabilities(x: np.ndarray) -> np.ndarray:
    w, b = logreg_weights(4, 0)
    p1 = 1 / (1 + np.exp(-(x @ w + b)))
    return np.column_stack([1 - p1[:, 0], p1[:, 0]])


@dataclass
class Live:
    serving: Serving
    metadata: RunningMetadata
    client: MetadataClient
    log_dir: Path
    sent: int = 0

    def send(self, x: np.ndarray) -> None:
        with httpx.Client(base_url=self.serving.url, timeout=30, trust_env=False) as http:
            for start in range(0, len(x), BATCH):
                chunk = x[start : start + BATCH]
                body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(chunk.shape),
                                    "data": chunk.ravel().tolist()}]}  # fmt: skip
                assert http.post("/v2/models/m/infer", json=body).status_code == 200
        self.sent += len(x)
        self.wait_logged(self.sent)

    def wait_logged(self, rows: int, timeout: float = 60.0) -> None:
        """Until the closed segments hold ``rows`` rows (serving closes one every 0.2 s)."""
        deadline = time.monotonic() + timeout
        have = 0
        while time.monotonic() < deadline:
            files = sorted(self.log_dir.glob(logschema.PREDICTIONS_GLOB))
            if files:
                listed = ", ".join(f"'{f}'" for f in files)
                have = duckdb.sql(f"SELECT count(*) FROM read_parquet([{listed}])").fetchall()[0][0]
                if have >= rows:
                    return
            time.sleep(0.05)
        raise AssertionError(f"serving logged {have} of {rows} rows in {timeout} s")

    def window(self, x: np.ndarray) -> dict[str, object]:
        self.send(x)
        (window,) = self.client.monitor_process(cut=True)["windows"]
        return window  # type: ignore[no-any-return]


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    x = training_rows(20_000, 0)
    ref = compute_reference(
        {"input": x}, feature_names=FEATURES, outputs={"probabilities": _probabilities(x)}
    )
    bundle = make_bundle(tmp_path, reference=json.loads(ref.model_dump_json()), version="1")
    log_dir = tmp_path / "log"
    serving = start_serving(
        tmp_path, bundle, "--log-dir", str(log_dir), "--log-segment-seconds", "0.2",
        "--log-flush-ms", "20", "--log-budget", "1000000",
    )  # fmt: skip
    metadata = start_metadata(tmp_path / "md" / "metadata.duckdb", extra=("--monitor-dir", str(log_dir),
                              "--monitor-interval", "3600"))  # fmt: skip
    client = MetadataClient(metadata.url, timeout=60)
    manifest = open_bundle(bundle).manifest
    # The monitor finds the reference through the bundle the store knows (its folder).
    client.record_bundle(
        BundleRecord(
            bundle_id=manifest.bundle_id, model_name="m", version="1", path=str(bundle), size_bytes=1
        )
    )
    try:
        yield Live(serving, metadata, client, log_dir)
    finally:
        client.close()
        serving.stop()
        metadata.stop()


def shifted(n: int, seed: int) -> np.ndarray:
    x = training_rows(n, seed)
    x[:, 1] += 2.5  # spend moves up
    return x


def test_a_drifted_feature_opens_an_alert_within_three_windows(live: Live) -> None:
    opened: list[str] = []
    for i in range(3):
        window = live.window(shifted(WINDOW_ROWS, 10 + i))
        opened += window["opened"]  # type: ignore[operator]
    # spend moves the model's outputs too, so the class mix may alert as well; no other feature does
    assert [k for k in opened if not k.endswith(":__output__")] == ["drift:m:1:spend"]
    (alert,) = [a for a in live.client.monitor_alerts(open_only=True) if a.feature != "__output__"]
    assert alert.feature == "spend" and alert.open
    events = [e for e in live.client.latest_events() if e.kind == "alert_opened"]
    assert [e.payload["feature"] for e in events if e.payload["feature"] != "__output__"] == ["spend"]
    report = live.client.monitor_report("1h")
    (version,) = report.versions
    assert version.requests == 3 * WINDOW_ROWS
    states = {f.feature: f.state for f in version.features}
    assert states["spend"] == "drift" and states["age"] == "ok"
    metrics = httpx.get(f"{live.metadata.url}/metrics", timeout=10).text
    assert 'mlplat_drift_score{model="m",version="1",feature="spend"}' in metrics
    assert 'mlplat_alerts_open{model="m"}' in metrics
    # the log is queryable through mlplat sql's path
    rows = live.client.sql("SELECT count(*) FROM predictions WHERE model = 'm'").rows
    assert rows == [[3 * WINDOW_ROWS]]
    assert live.client.sql("SELECT feature FROM alerts WHERE open AND feature = 'spend'").rows == [["spend"]]


def test_an_undrifted_stream_opens_no_alert_over_twenty_windows(live: Live) -> None:
    for i in range(20):
        window = live.window(training_rows(WINDOW_ROWS, 100 + i))
        assert window["enough_data"] and window["opened"] == [], window
    assert live.client.monitor_alerts() == []
    assert live.client.sql("SELECT count(DISTINCT window_id) FROM drift").rows == [[20]]


def test_a_new_category_raises_the_unseen_share(live: Live) -> None:
    x = training_rows(WINDOW_ROWS, 7)
    x[::5, 3] = 9.0  # a plan training never saw, on every fifth row
    window = live.window(x)
    by = {f["feature"]: f for f in window["features"]}  # type: ignore[attr-defined]
    assert by["plan"]["kind"] == "categorical"
    assert by["plan"]["unseen_share"] == pytest.approx(0.2, abs=0.01)
    assert by["age"]["unseen_share"] == 0.0
