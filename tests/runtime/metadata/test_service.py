"""The metadata service as a real process: HTTP status mapping, start-up failures, SIGTERM."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from mlplat_runtime.metadata.store import MetadataStore
from tests.helpers.metadata import metadata_service, start_metadata

pytestmark = pytest.mark.integration


def test_routes_answer_json_and_errors_carry_status_and_type(db_path: Path) -> None:
    json_type = {"content-type": "application/json"}
    with (
        metadata_service(db_path) as svc,
        httpx.Client(base_url=svc.url, timeout=10, headers=json_type) as http,
    ):
        assert http.get("/health").json() == {"status": "ok", "schema_version": 4}

        created = http.post("/runs", content=b'{"run_id": "r/1", "model_name": "m", "metrics": {"l": NaN}}')
        assert created.status_code == 200 and created.json()["run_id"] == "r/1"
        # Ids with "/" are one percent-encoded path segment.
        detail = http.get("/runs/r%2F1").json()
        assert detail["run"]["run_id"] == "r/1" and detail["bundle"] is None and detail["gates"] == []
        assert b'"l":NaN' in http.get("/runs/r%2F1").content

        cases = [
            (http.get("/runs/missing"), 404, "NotFoundError", "no run 'missing'"),
            (http.get("/nowhere"), 404, "NotFoundError", "no such endpoint"),
            (http.delete("/runs"), 405, "RequestError", "not allowed"),
            (http.post("/runs", content=b'{"run_id": "x", "colour": 1}'), 400, "RequestError", "colour"),
            (http.post("/runs", content=b"{not json"), 400, "RequestError", "not valid JSON"),
            (
                http.post("/sql", json={"query": "DELETE FROM runs"}),
                400,
                "MetadataError",
                "read-only: DELETE",
            ),
            (http.get("/runs", params={"limit": "many"}), 400, "RequestError", "limit"),
            (
                http.get("/deployments/at", params={"model": "m", "ts": "yesterday"}),
                400,
                "RequestError",
                "ts",
            ),
            (http.get("/versions/next"), 400, "RequestError", "model"),
        ]
        for response, status, kind, text in cases:
            body = response.json()
            assert (response.status_code, body["type"]) == (status, kind), body
            assert text in body["error"]


def test_latest_events_are_the_newest_oldest_first(db_path: Path) -> None:
    with metadata_service(db_path) as svc, httpx.Client(base_url=svc.url, timeout=10) as http:
        assert http.get("/events/latest").json() == {"events": []}
        ids = []
        for i in range(7):
            created = http.post("/events", json={"kind": "log", "message": f"m{i}"})
            assert created.status_code == 200, created.text
            ids.append(created.json()["id"])
        latest = http.get("/events/latest", params={"limit": 3}).json()["events"]
        assert [e["id"] for e in latest] == ids[-3:]
        assert [e["message"] for e in latest] == ["m4", "m5", "m6"]
        # fewer than the limit: all of them; polling on from the last id sees only newer ones
        assert [e["id"] for e in http.get("/events/latest").json()["events"]] == ids
        after = http.get("/events", params={"after_id": latest[-1]["id"]}).json()
        assert after == {"events": []}
        bad = http.get("/events/latest", params={"limit": "many"})
        assert bad.status_code == 400 and "limit" in bad.json()["error"]


def test_sigterm_checkpoints_and_exits_zero(db_path: Path) -> None:
    svc = start_metadata(db_path)
    try:
        httpx.post(
            f"{svc.url}/runs", json={"run_id": "kept", "model_name": "m"}, timeout=10
        ).raise_for_status()
    finally:
        code = svc.stop()
    assert code == 0, svc.log.read_text()
    assert not db_path.with_name(db_path.name + ".wal").exists()
    with MetadataStore(db_path) as store:
        assert store.run("kept").model_name == "m"


def test_second_service_on_the_same_file_fails_clearly(db_path: Path) -> None:
    with metadata_service(db_path):
        second = subprocess.run(
            [sys.executable, "-m", "mlplat_runtime.metadata", "--db", str(db_path), "--port", "0"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert second.returncode == 1
    assert "cannot open the metadata store" in second.stderr and "mlplat down" in second.stderr


def test_busy_port_fails_clearly(db_path: Path, tmp_path: Path) -> None:
    with metadata_service(db_path) as svc:
        port = svc.url.rsplit(":", 1)[1]
        second = subprocess.run(
            [
                sys.executable,
                "-m",
                "mlplat_runtime.metadata",
                "--db",
                str(tmp_path / "other.duckdb"),
                "--port",
                port,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert second.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in second.stderr and "port_base" in second.stderr
    assert second.stdout == ""  # no start-up line for a service that did not start
