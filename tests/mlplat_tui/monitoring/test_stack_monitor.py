"""The local stack end to end: serving logs, the stack's metadata service monitors the same
folder, the bundle's reference is found through the store, and ``mlplat monitor`` reports the
drifted feature of the project's model."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from mlplat_runtime.bundle import open_bundle
from mlplat_runtime.metadata.records import BundleRecord
from mlplat_runtime.monitoring.reference import compute_reference
from mlplat_tui.cli import cli
from mlplat_tui.clients.metadata import MetadataClient
from mlplat_tui.project.config import load_project
from mlplat_tui.stack.base import Service
from mlplat_tui.stack.local import LocalBackend
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
from tests.runtime.serving.conftest import Serving

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_the_stacks_monitor_alerts_on_the_served_model(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "mlplat.toml").write_text(
        f'[project]\nname = "stackmon"\n[model]\nname = "m"\n[stack]\nport_base = {free_port_base()}\n'
        "[monitor]\nsegment_seconds = 0.2\nbudget = 1000000\n"
    )
    x = training_rows(20_000, 0)
    ref = compute_reference(
        {"input": x}, feature_names=FEATURES, outputs={"probabilities": _probabilities(x)}
    )
    bundle = make_bundle(tmp_path, reference=json.loads(ref.model_dump_json()), version="1")
    project = load_project(root)
    backend = LocalBackend(project)
    try:
        backend.up()
        token = backend.admin_token_file.read_text().strip()
        loaded = httpx.post(
            f"{backend.ports.url('admin')}/v2/repository/models/m/load",
            json={"parameters": {"bundle": str(bundle)}},
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )
        assert loaded.status_code == 200, loaded.text
        with MetadataClient(
            backend.ports.url(Service.METADATA), token_file=project.paths.metadata_token, timeout=60
        ) as client:
            client.record_bundle(
                BundleRecord(
                    bundle_id=open_bundle(bundle).manifest.bundle_id, model_name="m", version="1",
                    path=str(bundle), size_bytes=1,
                )
            )  # fmt: skip
            serving = Serving(proc=None, url=backend.ports.url("serving"), admin="", token="", line="")  # type: ignore[arg-type]
            live = Live(serving, None, client, project.paths.monitoring / "predictions")  # type: ignore[arg-type]
            for i in range(3):
                live.window(shifted(WINDOW_ROWS, 80 + i))
            result = CliRunner().invoke(cli, ["--project", str(root), "monitor", "--window", "1h", "--json"])
            assert result.exit_code == 0, result.output
            report = json.loads(result.output)
            assert "drift:m:1:spend" in [a["dedupe_key"] for a in report["alerts"]]
            metrics = httpx.get(f"{backend.ports.url(Service.METADATA)}/metrics", timeout=10).text
            assert "mlplat_monitor_enabled 1" in metrics
    finally:
        backend.down()
