"""``Tracker`` says which failure it was: MLflow's refusal, or a tracker that cannot be reached.

The tracker is a small real HTTP server answering MLflow's REST paths (``StubServer``), then a
closed port; the client is the real ``Tracker`` over MLflow's own client.
"""

from __future__ import annotations

import pytest

from mlplat_runtime.errors import ServiceError
from mlplat_tui.clients.tracker import Tracker
from tests.fakes.http import StubServer

GET_BY_NAME = "/api/2.0/mlflow/experiments/get-by-name"
CREATE_RUN = "/api/2.0/mlflow/runs/create"
EXPERIMENT = {
    "experiment": {"experiment_id": "7", "name": "tiny", "artifact_location": "", "lifecycle_stage": "active"}
}


@pytest.fixture(autouse=True)
def no_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    # MLflow retries a refused connection for minutes by default; the answer is the same.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")


def test_a_tracker_that_went_away_is_unreachable_not_refused() -> None:
    """Bug: every exception of ``start_run`` said "MLflow refused to create the run"."""
    server = StubServer({GET_BY_NAME: (200, EXPERIMENT)})
    tracker = Tracker(server.url, "tiny")
    server.close()  # the port is closed now: connecting is refused by the OS, not by MLflow
    with pytest.raises(ServiceError) as info:
        tracker.start_run("r", {})
    assert "unreachable" in info.value.message and "refused to" not in info.value.message


def test_mlflows_own_refusal_says_refused() -> None:
    error = {"error_code": "INVALID_PARAMETER_VALUE", "message": "tag value too long"}
    with StubServer({GET_BY_NAME: (200, EXPERIMENT), CREATE_RUN: (400, error)}) as server:
        tracker = Tracker(server.url, "tiny")
        with pytest.raises(ServiceError, match="refused to create the run") as info:
            tracker.start_run("r", {})
    assert "tag value too long" in info.value.message and "unreachable" not in info.value.message
