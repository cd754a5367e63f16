"""The one deploy use case with fake clients: serve, refuse, record, roll back, restore."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mlplat_runtime.bundle import open_bundle
from mlplat_runtime.errors import NotFoundError, UsageError
from mlplat_runtime.metadata.records import RunRecord
from mlplat_tui.deploy.restore import restore_with
from mlplat_tui.deploy.runs import previous_deployment, rollback_run, serve_run
from mlplat_tui.deploy.serve import BundleToServe, DeployOutcome, LocalTarget, bundle_record, serve_bundle
from mlplat_tui.events import Event
from tests.fakes import FakeMetadata, FakeServingAdmin
from tests.helpers.models import make_bundle, make_logreg_onnx

MODEL = "m"


@pytest.fixture
def metadata(tmp_path: Path) -> Iterator[FakeMetadata]:
    fake = FakeMetadata(tmp_path / "metadata.duckdb")
    yield fake
    fake.shutdown()


@pytest.fixture
def admin() -> FakeServingAdmin:
    return FakeServingAdmin()


def _bundle(tmp_path: Path, version: str) -> BundleToServe:
    # a model of its own per version: the bundle id is the hash of the content
    model = make_logreg_onnx(tmp_path / f"src{version}" / "model.onnx", seed=int(version))
    path = make_bundle(tmp_path / f"b{version}", name=MODEL, version=version, model=model)
    manifest = open_bundle(path).manifest
    return BundleToServe(MODEL, version, manifest.bundle_id, path, run_id=f"run{version}")


def _recorded_run(metadata: FakeMetadata, bundle: BundleToServe) -> None:
    """A run the store knows, with its bundle, as a cycle leaves it."""
    metadata.record_run(
        RunRecord(
            run_id=bundle.run_id or "", model_name=MODEL, bundle_id=bundle.bundle_id, version=bundle.version
        )
    )
    manifest = open_bundle(bundle.path).manifest
    metadata.record_bundle(bundle_record(manifest, bundle.path, bundle.run_id))
    metadata.record_gates(bundle.bundle_id, bundle.run_id, manifest.gates)


def test_served_is_recorded_on_its_target_with_its_bundle(
    tmp_path: Path, metadata: FakeMetadata, admin: FakeServingAdmin
) -> None:
    bundle = _bundle(tmp_path, "1")
    events: list[Event] = []
    result = serve_bundle(LocalTarget(admin, str), bundle, metadata=metadata, emit=events.append, by="cycle")
    assert result.outcome is DeployOutcome.SERVED and result.served and result.recorded
    assert result.serving_version == "1" and admin.served_version(MODEL) == "1"
    current = metadata.current_deployment(MODEL, target="local")
    assert current is not None and (current.action, current.run_id) == ("deploy", "run1")
    # the store knows the bundle it serves, even when no cycle recorded it
    assert metadata.bundle(bundle.bundle_id).path == str(bundle.path)
    assert [e.kind for e in events] == ["swapped"] and events[0].data["by"] == "cycle"


def test_a_refusal_is_an_outcome_recorded_as_failed_and_the_old_version_serves(
    tmp_path: Path, metadata: FakeMetadata, admin: FakeServingAdmin
) -> None:
    target = LocalTarget(admin, str)
    serve_bundle(target, _bundle(tmp_path, "1"), metadata=metadata)
    admin.refuse = "signature changed"
    events: list[Event] = []
    result = serve_bundle(
        target, _bundle(tmp_path, "2"), metadata=metadata, emit=events.append, serving_before="1"
    )
    assert result.outcome is DeployOutcome.REFUSED and "signature changed" in result.reason
    assert result.serving_version == "1" and admin.served_version(MODEL) == "1"
    assert [e.kind for e in events] == ["rejected"] and "still serving v1" in events[0].message
    last = metadata.deployments(MODEL, 1, target="local")[0]
    assert (last.status, last.version) == ("failed", "2")
    current = metadata.current_deployment(MODEL, target="local")
    assert current is not None and current.version == "1"


def test_without_a_store_it_serves_but_records_nothing(tmp_path: Path, admin: FakeServingAdmin) -> None:
    result = serve_bundle(LocalTarget(admin, str), _bundle(tmp_path, "1"), metadata=None)
    assert result.served and not result.recorded


def test_serve_run_rolls_back_to_an_older_version_and_refuses_a_run_that_cannot_serve(
    tmp_path: Path, metadata: FakeMetadata, admin: FakeServingAdmin
) -> None:
    target = LocalTarget(admin, str)
    one, two = _bundle(tmp_path, "1"), _bundle(tmp_path, "2")
    for b in (one, two):
        _recorded_run(metadata, b)
        serve_bundle(target, b, metadata=metadata)
    back = serve_run(metadata, target, "run1", by="dashboard")
    assert back.served and back.action == "rollback" and admin.served_version(MODEL) == "1"
    forward = serve_run(metadata, target, "run2")
    assert forward.action == "deploy"

    metadata.record_run(RunRecord(run_id="nobundle", model_name=MODEL))
    with pytest.raises(UsageError, match="no bundle"):
        serve_run(metadata, target, "nobundle")


def test_rollback_resolution_previous_version_and_prefix(
    tmp_path: Path, metadata: FakeMetadata, admin: FakeServingAdmin
) -> None:
    target = LocalTarget(admin, str)
    with pytest.raises(UsageError, match="nothing to roll back to"):
        rollback_run(metadata, MODEL, None)
    bundles = [_bundle(tmp_path, v) for v in ("1", "2", "3")]
    for b in bundles:
        _recorded_run(metadata, b)
        serve_bundle(target, b, metadata=metadata)
    assert rollback_run(metadata, MODEL, None) == "run2"
    assert rollback_run(metadata, MODEL, "v1") == "run1"
    assert rollback_run(metadata, MODEL, "1") == "run1"
    assert rollback_run(metadata, MODEL, "run3") == "run3"
    with pytest.raises(NotFoundError):
        rollback_run(metadata, MODEL, "7")

    serve_run(metadata, target, "run2", action="rollback")
    previous = previous_deployment(metadata, MODEL)
    assert previous is not None and previous.version == "3"  # rolling back twice goes back and forth


def test_restore_serves_the_current_deployment_again_without_a_new_record(
    tmp_path: Path, metadata: FakeMetadata, admin: FakeServingAdmin
) -> None:
    bundle = _bundle(tmp_path, "1")
    serve_bundle(LocalTarget(admin, str), bundle, metadata=metadata)
    fresh = FakeServingAdmin()  # serving restarted: nothing in memory
    notes: list[str] = []
    assert restore_with(metadata, LocalTarget(fresh, str), MODEL, notes.append) == "1"
    assert fresh.served_version(MODEL) == "1" and any("restored" in n for n in notes)
    assert len(metadata.deployments(MODEL, target="local")) == 1


def test_rollback_to_a_version_finds_it_behind_many_newer_matching_runs(
    tmp_path: Path, metadata: FakeMetadata
) -> None:
    """Bug: ``--to 1`` searched the text "1" in 500 runs at most: newer runs whose id, status
    or bundle id held a 1 pushed version 1 out of the page, and it was "not found"."""
    v1 = _bundle(tmp_path, "1")
    _recorded_run(metadata, v1)
    for i in range(510):  # failed runs, newer, each with a "1" in its id
        metadata.record_run(RunRecord(run_id=f"r1-{i:04d}", model_name=MODEL, status="failed"))
    assert rollback_run(metadata, MODEL, "1") == "run1"
    assert rollback_run(metadata, MODEL, "v1") == "run1"


def test_rollback_to_a_run_prefix_finds_it_behind_many_newer_runs_holding_it(
    tmp_path: Path, metadata: FakeMetadata
) -> None:
    """Bug: ``--to <prefix>`` searched the prefix as a substring in 50 runs at most: newer runs
    whose id held it pushed the run out of the page, and it was "not found"."""
    v1 = _bundle(tmp_path, "1")
    _recorded_run(metadata, v1)  # run id "run1"
    for i in range(60):  # newer, each id holding "run1" further in
        metadata.record_run(RunRecord(run_id=f"x-run1-{i:03d}", model_name=MODEL, status="failed"))
    assert rollback_run(metadata, MODEL, "run1") == "run1"
    # an ambiguous prefix names how many runs it matches, all of them, not one page's worth
    for i in range(60):
        metadata.record_run(RunRecord(run_id=f"dup-{i:03d}", model_name=MODEL, status="failed"))
    with pytest.raises(UsageError, match="'dup' matches 60 runs"):
        rollback_run(metadata, MODEL, "dup")
    with pytest.raises(UsageError, match="'dup-05' matches 10 runs"):
        rollback_run(metadata, MODEL, "dup-05")
    assert rollback_run(metadata, MODEL, "dup-059") == "dup-059"
    with pytest.raises(NotFoundError, match="no run or version 'nope'"):
        rollback_run(metadata, MODEL, "nope")
