"""The metadata client sends the stack's token, so a service that requires one takes its writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlplat_runtime.errors import AuthError
from mlplat_runtime.metadata.records import RunRecord
from mlplat_tui.clients.metadata import MetadataClient
from tests.runtime.metadata.test_guard import Service

pytestmark = pytest.mark.integration


def test_the_client_sends_the_token_of_the_token_file(tmp_path: Path) -> None:
    token_file = tmp_path / "stack" / "admin.token"
    svc = Service(tmp_path / "metadata.duckdb", "--token-file", str(token_file))
    try:
        with MetadataClient(svc.url, token_file=token_file) as client:
            client.record_run(RunRecord(run_id="r1", model_name="m"))
            assert client.sql("SELECT run_id FROM runs").rows == [["r1"]]
        with MetadataClient(svc.url) as anonymous:
            assert anonymous.run("r1").run_id == "r1"  # reads (GET) stay open
            with pytest.raises(AuthError, match="missing or wrong metadata token"):
                anonymous.record_run(RunRecord(run_id="r2", model_name="m"))
    finally:
        assert svc.stop() == 0
