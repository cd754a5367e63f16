"""One contract suite per client protocol, run against the fake and the real implementation.

The fakes (``tests/fakes``) stand in for the stack in the fast tier; these assertions are what
makes that honest: each runs once against the fake and once against the real client talking to
a real started stack (``integration``: MLflow, the metadata service and serving as processes).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlplat_runtime.bundle import open_bundle
from mlplat_runtime.bundle.manifest import GateResult
from mlplat_runtime.errors import MlplatError, NotFoundError
from mlplat_runtime.metadata.records import BundleRecord, DeploymentRecord, RunRecord
from mlplat_tui.clients.factory import Endpoints, StackConnector
from mlplat_tui.clients.protocols import MetadataApi, ServingAdminApi, TrackerApi
from mlplat_tui.events import Event
from tests.fakes import FakeMetadata, FakeServingAdmin, FakeTracker
from tests.helpers.models import make_bundle, make_logreg_onnx
from tests.helpers.stack import copy_sample, started_stack

IMPLEMENTATIONS = ["fake", pytest.param("real", marks=pytest.mark.integration)]


@pytest.fixture(scope="module")
def real_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    root = copy_sample("churn", tmp_path_factory.mktemp("contracts"))
    with started_stack(root) as backend:
        connector = StackConnector(backend.project, Endpoints.of(backend.project, backend.ports))
        clients = connector.connect()
        assert clients.tracker and clients.metadata and clients.admin, clients.notes
        yield clients
        connector.close()


@pytest.fixture(params=IMPLEMENTATIONS)
def clients(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Any, Any, Any]]:
    if request.param == "real":
        real = request.getfixturevalue("real_stack")
        yield real.tracker, real.metadata, real.admin
        return
    metadata = FakeMetadata(tmp_path / "metadata.duckdb")
    yield FakeTracker(), metadata, FakeServingAdmin()
    metadata.shutdown()


@pytest.fixture
def model() -> str:
    return f"contract-{uuid.uuid4().hex[:8]}"  # the real services are shared by the module


def _bundle(tmp_path: Path, model: str, version: str) -> Path:
    onnx = make_logreg_onnx(tmp_path / f"src{version}" / "model.onnx", seed=int(version))
    return make_bundle(tmp_path / f"v{version}", name=model, version=version, model=onnx)


def test_metadata_contract(clients: tuple[Any, MetadataApi, Any], model: str, tmp_path: Path) -> None:
    _, meta, _ = clients
    assert isinstance(meta, MetadataApi) and meta.health()
    assert meta.next_version(model) == "1"
    run_id = f"{model}-run"
    meta.record_run(RunRecord(run_id=run_id, model_name=model, status="running"))
    meta.update_run(run_id, status="deployed", version="1")
    assert meta.run_detail(run_id).run.status == "deployed"
    with pytest.raises(NotFoundError):
        meta.run_detail(f"{model}-missing")

    path = _bundle(tmp_path, model, "1")
    manifest = open_bundle(path).manifest
    meta.record_bundle(
        BundleRecord(
            bundle_id=manifest.bundle_id,
            run_id=run_id,
            model_name=model,
            version="1",
            path=str(path),
            size_bytes=1,
        )
    )
    assert meta.bundle(manifest.bundle_id).path == str(path) and meta.next_version(model) == "2"
    with pytest.raises(NotFoundError):
        meta.bundle("sha256:none")
    gates = [GateResult(name="size_mb", measured=1.0, threshold="<= 50", passed=True)]
    assert [g.name for g in meta.record_gates(manifest.bundle_id, run_id, gates)] == ["size_mb"]

    assert meta.current_deployment(model, target="local") is None
    meta.record_deployment(
        DeploymentRecord(model_name=model, version="1", bundle_id=manifest.bundle_id, run_id=run_id)
    )
    meta.record_deployment(
        DeploymentRecord(
            model_name=model, version="1", bundle_id=manifest.bundle_id, run_id=run_id, target="prod"
        )
    )
    current = meta.current_deployment(model, target="local")
    assert current is not None and current.id is not None and current.run_id == run_id
    assert [d.target for d in meta.deployments(model, target="prod")] == ["prod"]
    page = meta.query_runs(model=model)
    assert page.total == 1 and page.rows[0].served_on == ("local", "prod")

    assert meta.record_event(Event("output", "a line")) is None
    recorded = meta.record_event(Event("trained", "done", run_id=run_id))
    assert recorded is not None and recorded.id is not None and recorded.kind == "trained"


def test_tracker_contract(clients: tuple[TrackerApi, Any, Any], model: str, tmp_path: Path) -> None:
    tracker, _, _ = clients
    assert isinstance(tracker, TrackerApi) and tracker.health()
    run_id = tracker.start_run(f"{model}-run", {"mlplat.model": model})
    assert isinstance(run_id, str) and run_id and run_id in tracker.run_url(run_id)
    tracker.log(run_id, params={"C": "1.0"}, metrics={"auc": 0.9}, tags={"mlplat.version": "1"})
    # a param the run already has is not logged again, even with another value
    tracker.log(run_id, params={"C": "2.0"}, metrics={"auc": 0.91}, tags={})
    tracker.log_bundle(run_id, _bundle(tmp_path, model, "1"))
    tracker.finish(run_id, "FINISHED")
    with pytest.raises(MlplatError):
        tracker.log("0" * 32, params={}, metrics={"auc": 1.0}, tags={})


def test_serving_admin_contract(
    clients: tuple[Any, Any, ServingAdminApi], model: str, tmp_path: Path
) -> None:
    _, _, admin = clients
    assert isinstance(admin, ServingAdminApi) and admin.health()
    path = _bundle(tmp_path, model, "1")
    loaded = admin.load(model, str(path))
    manifest = open_bundle(path).manifest
    assert (loaded.name, loaded.version, loaded.bundle_id) == (model, "1", manifest.bundle_id)
    with pytest.raises(MlplatError):
        admin.load(model, str(tmp_path / "no-such-bundle"))
    state = next(s for s in admin.index() if s.name == model)
    assert (state.version, state.bundle_id) == ("1", manifest.bundle_id)  # a refused load changes nothing
