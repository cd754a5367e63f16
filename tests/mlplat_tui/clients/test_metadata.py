"""MetadataClient against the real metadata service, started in a subprocess on a free port."""

from __future__ import annotations

import math
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from mlplat_runtime.bundle.manifest import GateResult
from mlplat_runtime.errors import MetadataError, NotFoundError, RequestError, ServiceError, UsageError
from mlplat_runtime.metadata.records import BundleRecord, DeploymentRecord, RunRecord
from mlplat_tui.clients.metadata import MetadataClient
from mlplat_tui.events import Event
from tests.helpers.metadata import RunningMetadata, start_metadata

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMetadata]:
    svc = start_metadata(tmp_path_factory.mktemp("metadata") / "metadata.duckdb")
    yield svc
    assert svc.stop() == 0


@pytest.fixture
def client(service: RunningMetadata) -> Iterator[MetadataClient]:
    with MetadataClient(service.url, timeout=10) as c:
        yield c


@pytest.fixture
def model() -> str:
    # The service is shared by the module's tests: each works on its own model name.
    return f"model-{uuid.uuid4().hex[:8]}"


@pytest.mark.integration
def test_a_training_cycle_is_recorded_and_read_back(client: MetadataClient, model: str) -> None:
    assert client.health()
    run_id = f"run-{model}"
    version = client.next_version(model)
    assert version == "1"

    client.record_run(
        RunRecord(
            run_id=run_id,
            project="churn",
            model_name=model,
            command="python train.py",
            params={"C": "0.5"},
            data_hashes={"data/churn.csv": "sha256:aa"},
        )
    )
    bundle_id = f"sha256:{model}"
    client.record_bundle(
        BundleRecord(
            bundle_id=bundle_id,
            run_id=run_id,
            model_name=model,
            version=version,
            path="/bundles/x",
            size_bytes=2048,
            manifest={"model_name": model},
        )
    )
    gates = [
        GateResult(name="metrics.roc_auc", measured=0.91, threshold=">= 0.85", passed=True),
        GateResult(name="signature", measured="compatible", threshold="compatible", passed=True),
    ]
    recorded = client.record_gates(bundle_id, run_id, gates)
    assert [g.bundle_id for g in recorded] == [bundle_id, bundle_id]
    updated = client.update_run(
        run_id,
        status="deployed",
        finished_at=T0,
        metrics={"roc_auc": 0.91, "loss": math.nan},
        bundle_id=bundle_id,
        version=version,
        gates_passed=True,
        deployed=True,
    )
    assert updated.status == "deployed" and updated.finished_at == T0

    run = client.run(run_id)
    assert run.params == {"C": "0.5"} and run.version == "1" and math.isnan(run.metrics["loss"])
    detail = client.run_detail(run_id)
    assert detail.bundle is not None and detail.bundle.size_bytes == 2048
    assert [g.to_result() for g in detail.gates] == gates
    assert [g.name for g in client.gates(bundle_id)] == ["metrics.roc_auc", "signature"]
    assert client.bundle(bundle_id).manifest == {"model_name": model}
    assert client.next_version(model) == "2"

    listed = client.runs(search=model)
    assert [r.run_id for r in listed] == [run_id]
    assert client.runs(limit=1, offset=0, search="no-such-run-anywhere") == []

    result = client.sql(
        f"SELECT run_id, status, metrics->>'roc_auc' AS auc FROM runs WHERE model_name = '{model}'"
    )
    assert result.columns == ["run_id", "status", "auc"] and result.rows == [[run_id, "deployed", "0.91"]]


@pytest.mark.integration
def test_deployments_now_and_at_time(client: MetadataClient, model: str) -> None:
    assert client.current_deployment(model) is None
    for version, minutes, extra in [
        ("1", 0, {}),
        ("2", 10, {}),
        ("3", 20, {"status": "failed"}),
        ("1", 30, {"action": "rollback", "reason": "latency"}),
    ]:
        rec = client.record_deployment(
            DeploymentRecord.model_validate(
                {
                    "model_name": model,
                    "version": version,
                    "bundle_id": f"b{version}",
                    "ts": T0 + timedelta(minutes=minutes),
                    **extra,
                }
            )
        )
        assert rec.id is not None

    current = client.current_deployment(model)
    assert current is not None and (current.version, current.action) == ("1", "rollback")
    at = client.deployed_at(model, T0 + timedelta(minutes=25))
    assert at is not None and at.version == "2"
    # An ISO string and unix seconds name the same instant.
    as_text = client.deployed_at(model, (T0 + timedelta(minutes=5)).isoformat())
    as_secs = client.deployed_at(model, (T0 + timedelta(minutes=5)).timestamp())
    assert as_text is not None and as_secs is not None and as_text.version == as_secs.version == "1"
    assert client.deployed_at(model, T0 - timedelta(seconds=1)) is None
    assert client.current_deployment(model, target="prod") is None
    assert [d.version for d in client.deployments(model, limit=2)] == ["1", "3"]


@pytest.mark.integration
def test_events_are_recorded_and_polled(client: MetadataClient, model: str) -> None:
    start = client.events(after_id=0, limit=10_000)
    last = start[-1].id if start else 0
    assert last is not None
    gate = GateResult(name="size_mb", measured=0.1, threshold="<= 50", passed=True)
    first = client.record_event(
        Event(kind="gated", message=model, version="1", gates=(gate,), duration_s=0.5)
    )
    assert client.record_event(Event(kind="output", message="epoch 1 loss 0.3")) is None
    second = client.record_event({"kind": "swapped", "message": model, "version": "1"})
    assert first is not None and second is not None

    polled = client.events(after_id=last)
    assert [(e.kind, e.message) for e in polled] == [("gated", model), ("swapped", model)]
    assert polled[0].payload["gates"][0]["name"] == "size_mb" and polled[0].payload["duration_s"] == 0.5
    assert client.events(after_id=polled[-1].id or 0) == []


@pytest.mark.integration
def test_server_errors_come_back_as_the_same_class(client: MetadataClient, model: str) -> None:
    with pytest.raises(NotFoundError, match="no run 'missing-run'") as info:
        client.run("missing-run")
    assert info.value.hint and "mlplat runs" in info.value.hint
    with pytest.raises(NotFoundError):
        client.bundle("sha256:missing")
    with pytest.raises(MetadataError, match="mlplat sql is read-only: INSERT refused"):
        client.sql("INSERT INTO runs (run_id, status, created_at) VALUES ('x', 'running', now())")
    with pytest.raises(MetadataError, match="one statement at a time"):
        client.sql("SELECT 1; DROP TABLE runs")
    client.record_run(RunRecord(run_id=f"r-{model}", model_name=model))
    with pytest.raises(RequestError, match="colour"):
        client.update_run(f"r-{model}", colour="red")
    with pytest.raises(RequestError, match="status"):
        client.update_run(f"r-{model}", status="exploded")


def test_connection_refused_says_to_start_the_stack() -> None:
    # A bound socket that does not listen: the port stays ours and connecting is refused.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        client = MetadataClient(f"http://127.0.0.1:{sock.getsockname()[1]}", timeout=2)
        assert client.health() is False
        with pytest.raises(ServiceError, match="cannot reach the metadata service") as info:
            client.runs()
    assert info.value.hint == "start the stack with `mlplat up`"


def test_a_service_that_never_answers_times_out_as_service_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)  # the kernel accepts the connection; nobody answers
        client = MetadataClient(f"http://127.0.0.1:{sock.getsockname()[1]}", timeout=0.3)
        with pytest.raises(ServiceError, match=r"did not answer POST /runs/query within 0\.3s"):
            client.runs()
        assert client.health() is False


def test_error_bodies_without_a_known_type_map_by_status(tmp_path: Path) -> None:
    # httpx's transport seam stands in for a proxy or an older service in front of the client.
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/runs/proxy":
            return httpx.Response(502, text="<html>bad gateway</html>")
        if request.url.path == "/runs/config":
            return httpx.Response(400, json={"error": "mlplat.toml: key 'x'", "type": "ConfigError"})
        return httpx.Response(404, json={"error": "gone", "type": "SomethingNew"})

    client = MetadataClient("http://metadata.test", transport=httpx.MockTransport(answer))
    with pytest.raises(ServiceError, match="answered 502"):
        client.run("proxy")
    with pytest.raises(UsageError, match=r"mlplat\.toml"):
        client.run("config")
    with pytest.raises(NotFoundError, match="gone"):
        client.run("other")


@pytest.mark.integration
def test_the_runs_query_travels_typed_and_says_what_serves_per_target(
    client: MetadataClient, model: str
) -> None:
    from mlplat_runtime.metadata.runs_query import RunsQuery

    for i in (1, 2):
        client.record_run(
            RunRecord(
                run_id=f"{model}-r{i}", model_name=model, bundle_id=f"sha256:{model}{i}", version=str(i)
            )
        )
    client.record_deployment(
        DeploymentRecord(model_name=model, version="1", bundle_id=f"sha256:{model}1", run_id=f"{model}-r1")
    )
    client.record_deployment(
        DeploymentRecord(model_name=model, version="2", bundle_id=f"sha256:{model}2", run_id=f"{model}-r2")
    )
    page = client.query_runs(RunsQuery(model=model, sort="version", descending=False))
    assert page.total == 2
    assert [(r.run.version, r.served_on, r.was_deployed) for r in page.rows] == [
        ("1", (), True),
        ("2", ("local",), True),
    ]
    assert client.query_runs(search=f"{model}-r2").rows[0].served("local")
    with pytest.raises(RequestError, match="sort"):
        client.query_runs(
            RunsQuery.model_construct(sort="nope", search="", model=None, descending=True, limit=5, offset=0)
        )


def test_runs_search_is_the_runs_querys(client: MetadataClient, model: str) -> None:
    """Bug: ``runs(search=)`` (what ``mlplat show`` resolves a prefix with) had a search rule of
    its own (run id, project, model, status) apart from the runs query's ``SEARCH_COLUMNS``."""
    run_id = f"run-{model}"
    client.record_run(RunRecord(run_id=run_id, model_name=model, version="41", bundle_id=f"sha256:{model}"))
    assert [r.run_id for r in client.runs(search=f"sha256:{model}")] == [run_id]
    query = client.query_runs(search=f"sha256:{model}")
    assert [r.run_id for r in client.runs(search=f"sha256:{model}")] == [r.run.run_id for r in query.rows]
