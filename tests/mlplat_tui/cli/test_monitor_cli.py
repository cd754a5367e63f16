"""``mlplat monitor`` and ``mlplat feedback`` against a real serving process (with its
prediction log) and a real metadata service (with its monitor), both started for a project
on its own ports, as the stack starts them."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from mlplat_runtime.bundle import open_bundle
from mlplat_runtime.metadata.records import BundleRecord
from mlplat_runtime.monitoring.reference import compute_reference
from mlplat_tui.cli import cli
from mlplat_tui.clients.metadata import MetadataClient
from tests.helpers.metadata import start_metadata
from tests.helpers.models import make_bundle
from tests.helpers.stack import free_port_base
from tests.runtime.metadata.test_monitor_live import (
    FEATURES,
    WINDOW_ROWS,
    Live,
    _probabilities,
    shifted,
    training_rows,
)
from tests.runtime.serving.conftest import start_serving

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def project(tmp_path: Path) -> Iterator[tuple[Path, Live]]:
    base = free_port_base()
    root = tmp_path / "proj"
    root.mkdir()
    (root / "mlplat.toml").write_text(
        f'[project]\nname = "mon"\n[model]\nname = "m"\n[stack]\nport_base = {base}\n'
    )
    x = training_rows(20_000, 0)
    ref = compute_reference(
        {"input": x}, feature_names=FEATURES, outputs={"probabilities": _probabilities(x)}
    )
    bundle = make_bundle(tmp_path, reference=json.loads(ref.model_dump_json()), version="1")
    log_dir = tmp_path / "log"
    ident = ("--project", "mon", "--project-root", str(root))
    serving = start_serving(
        tmp_path, bundle, "--log-dir", str(log_dir), "--log-segment-seconds", "0.2", "--log-flush-ms", "20",
        "--log-budget", "1000000", "--port", str(base + 2), *ident,
    )  # fmt: skip
    metadata = start_metadata(
        tmp_path / "md" / "metadata.duckdb", port=base + 1,
        extra=("--monitor-dir", str(log_dir), "--monitor-interval", "3600", *ident),
    )  # fmt: skip
    client = MetadataClient(metadata.url, timeout=60)
    client.record_bundle(
        BundleRecord(
            bundle_id=open_bundle(bundle).manifest.bundle_id, model_name="m", version="1", path=str(bundle),
            size_bytes=1,
        )
    )  # fmt: skip
    try:
        yield root, Live(serving, metadata, client, log_dir)
    finally:
        client.close()
        serving.stop()
        metadata.stop()


def _run(root: Path, *args: str) -> str:
    result = CliRunner().invoke(cli, ["--project", str(root), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_monitor_reports_drift_alerts_and_feedback(project: tuple[Path, Live]) -> None:
    root, live = project
    for i in range(3):
        live.window(shifted(WINDOW_ROWS, 60 + i))
    # five requests with the client's own ids, then their labels through `mlplat feedback`
    with httpx.Client(base_url=live.serving.url, timeout=30, trust_env=False) as http:
        for i in range(5):
            body = {
                "id": f"fb-{i}",
                "inputs": [
                    {"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [0.0, 0.5, 0.0, 1.0]}
                ],
            }
            answer = http.post("/v2/models/m/infer", json=body).json()
            assert answer["id"] == f"fb-{i}"
    live.sent += 5
    live.wait_logged(live.sent)
    labels = root / "labels.csv"
    labels.write_text("request_id,label\n" + "".join(f"fb-{i},{i % 2}\n" for i in range(5)))
    assert json.loads(_run(root, "feedback", str(labels), "--json")) == {"sent": 5, "accepted": 5}
    deadline = time.monotonic() + 30
    while not list((live.log_dir / "_feedback").glob("*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.05)  # serving closes its feedback segment within 0.2 s
    assert list((live.log_dir / "_feedback").glob("*.parquet")), "serving wrote no feedback segment"

    report = json.loads(_run(root, "monitor", "--window", "1h", "--now", "--json"))
    (version,) = report["versions"]
    assert version["model"] == "m" and version["requests"] == 3 * WINDOW_ROWS + 5
    states = {f["feature"]: f["state"] for f in version["features"]}
    assert states["spend"] == "drift" and states["age"] == "ok"
    assert "drift:m:1:spend" in [a["dedupe_key"] for a in report["alerts"]]
    labelled = sum(w["labelled"] for w in report["feedback"])
    assert labelled == 5

    text = _run(root, "monitor", "--window", "1h")
    assert "m v1" in text and "✗ drift" in text and "open alerts" in text
    assert "realised quality (from feedback)" in text
    count = json.loads(_run(root, "sql", "SELECT count(*) AS n FROM predictions", "--json"))
    assert count == [{"n": 3 * WINDOW_ROWS + 5}]


def test_monitor_help_teaches_and_a_bad_window_is_a_usage_error(tmp_path: Path) -> None:
    out = " ".join(CliRunner().invoke(cli, ["monitor", "--help"]).output.split())
    assert "An alert opens after 3 windows in a row over the trigger" in out
    assert "--window" in out and "--json" in out
    (tmp_path / "mlplat.toml").write_text('[project]\nname = "x"\n[model]\nname = "m"\n')
    result = CliRunner().invoke(cli, ["--project", str(tmp_path), "monitor", "--window", "soon"])
    assert result.exit_code != 0 and "--window takes a duration" in str(result.exception or result.output)


def test_feedback_help() -> None:
    out = CliRunner().invoke(cli, ["feedback", "--help"]).output
    assert "request_id" in out and "label" in out and "value" in out and "--json" in out
