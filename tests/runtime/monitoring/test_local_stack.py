"""The local stack end to end: serving logs into ``.mlplat/monitoring/predictions``, the folder
the metadata service is started to monitor, with the ``[monitor]`` settings of mlplat.toml."""

from __future__ import annotations

import json
import time
from pathlib import Path

import duckdb
import httpx
import numpy as np
import pytest

from mlplat_runtime.monitoring import logschema
from mlplat_runtime.monitoring.reference import compute_reference
from mlplat_tui.project.config import load_project
from mlplat_tui.stack.base import Service
from mlplat_tui.stack.local import LocalBackend
from tests.helpers.models import make_bundle
from tests.helpers.stack import free_port_base

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_local_stack_logs_where_the_monitor_reads(tmp_path: Path) -> None:
    (tmp_path / "mlplat.toml").write_text(
        f'[project]\nname = "logtest"\n[model]\nname = "m"\n[stack]\nport_base = {free_port_base()}\n'
        '[monitor]\nsegment_seconds = 0.5\nexclude = ["secret"]\n'
    )
    ref = compute_reference(np.zeros((10, 4), dtype=np.float32), feature_names=["a", "b", "c", "secret"])
    bundle = make_bundle(tmp_path, reference=json.loads(ref.model_dump_json()))
    backend = LocalBackend(load_project(tmp_path))
    log_dir = backend.paths.monitoring / "predictions"
    metadata_cmd = backend.command(Service.METADATA)
    assert metadata_cmd[metadata_cmd.index("--monitor-dir") + 1] == str(log_dir)
    try:
        backend.up()
        token = backend.admin_token_file.read_text().strip()
        admin = backend.ports.url("admin")
        r = httpx.post(
            f"{admin}/v2/repository/models/m/load",
            json={"parameters": {"bundle": str(bundle)}},
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        url = backend.ports.url("serving")
        body = {
            "id": "stack-1",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}],
        }
        assert httpx.post(f"{url}/v2/models/m/infer", json=body, timeout=10).json()["id"] == "stack-1"
        deadline = time.monotonic() + 30
        while not list(log_dir.glob(logschema.PREDICTIONS_GLOB)) and time.monotonic() < deadline:
            time.sleep(0.1)
        (segment,) = log_dir.glob(logschema.PREDICTIONS_GLOB)
        rel = duckdb.connect().sql(f"SELECT * FROM read_parquet('{segment}')")
        assert "in_secret" not in rel.columns and "in_a" in rel.columns
        assert rel.fetchall()[0][rel.columns.index("request_id")] == "stack-1"
    finally:
        backend.down()
