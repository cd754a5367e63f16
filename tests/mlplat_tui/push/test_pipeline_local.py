"""The push pipeline end to end on a ``local`` target: a real second stack (mlflow tracker as the
registry, metadata, serving), the real local metadata store, real bundles.

One target stack serves the whole module (starting mlflow is the slow part); each test states
what it expects relative to what serves when it starts.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from mlplat_tui.clients.metadata import MetadataClient
from mlplat_tui.events import Event
from mlplat_tui.project.config import Project, load_project
from mlplat_tui.push.local import LocalEngine
from mlplat_tui.push.pipeline import PushOptions, PushOutcome, PushResult, push
from mlplat_tui.push.receipt import read_receipt
from mlplat_tui.push.registry import DIGEST_TAG, TargetRegistry
from tests.helpers.metadata import RunningMetadata, start_metadata
from tests.mlplat_tui.push.push_helpers import (
    MODEL,
    batch_dependent_bundle,
    bundle,
    local_target,
    write_project,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@dataclass
class World:
    root: Path
    project: Project
    metadata: MetadataClient
    service: RunningMetadata
    engine: LocalEngine

    def push(self, bundle_path: Path, target: str = "staging", **kw: object) -> PushResult:
        lines: list[str] = []
        events: list[Event] = []
        result = push(
            self.project,
            target,
            bundle_path,
            metadata=self.metadata,
            options=PushOptions(**kw),  # type: ignore[arg-type]
            progress=lines.append,
            emit=events.append,
        )
        self.lines, self.events = lines, events
        return result

    def registry(self) -> TargetRegistry:
        return TargetRegistry(self.engine.tracker_uri, MODEL, None)

    def serving_version(self) -> str | None:
        resp = httpx.get(f"{self.engine.endpoint(MODEL)}/v2/models/{MODEL}", timeout=10)
        return resp.json()["versions"][0] if resp.status_code == 200 else None


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("pushproj") / "shop"
    targets = local_target("staging", extra='gates = { "metrics.roc_auc" = ">= 0.85" }')
    targets += local_target("prod", extra='requires = "staging"')
    targets += local_target("canary")
    write_project(root, targets=targets)
    project = load_project(root)
    service = start_metadata(root / ".mlplat" / "store" / "metadata.duckdb")
    metadata = MetadataClient(service.url)
    engine = LocalEngine(project, "staging", project.config.targets["staging"])  # type: ignore[arg-type]
    try:
        yield World(root, project, metadata, service, engine)
    finally:
        metadata.close()
        service.stop()
        for name in ("staging", "prod", "canary"):
            e = LocalEngine(project, name, project.config.targets[name])  # type: ignore[arg-type]
            e.backend.down()


def test_good_push_completes_with_receipt_alias_and_tags(world: World) -> None:
    v1 = bundle(world.root, "1", auc=0.90, seed=1)
    first = world.push(v1)
    assert first.outcome is PushOutcome.COMPLETED, first.reason
    assert first.exit_code == 0 and first.rolled_out
    v2 = bundle(world.root, "2", auc=0.91, seed=2)
    result = world.push(v2)
    assert result.outcome is PushOutcome.COMPLETED, result.reason
    assert result.previous_version == "1" and result.serving_version == "2"
    assert world.serving_version() == "2"
    # every step was a progress line and an event, recorded in the local store
    steps = [e.data["step"] for e in world.events]
    assert steps == ["verify", "gates", "register", "image", "rollout", "smoke", "alias"]
    recorded = [e for e in world.metadata.latest_events(200) if e.kind == "push" and e.version == "2"]
    assert [e.payload["data"]["step"] for e in recorded][-7:] == steps
    # the receipt holds the transitions, the evidence and the outcome
    assert result.receipt is not None
    receipt = read_receipt(Path(result.receipt))
    assert receipt.outcome == "completed" and receipt.bundle_id == result.bundle_id
    assert receipt.previous is not None and receipt.previous["version"] == "1"
    states = [t.state for t in receipt.transitions]
    assert "loading" in states and "serving" in states
    assert receipt.smoke is not None and receipt.smoke["passed"] and receipt.smoke["requests"] >= 2
    assert receipt.evidence["both_on_samples"]["compared"] is True
    assert {g["name"] for g in receipt.gates} >= {"metrics.roc_auc", "no_regression", "signature"}
    # the registry: alias = stage on this version, digest / lineage / gate tags, the receipt attached
    registry = world.registry()
    assert registry.alias("staging") == result.registry_version
    tags = registry.version_tags(str(result.registry_version))
    assert tags[DIGEST_TAG] == result.bundle_id
    assert tags["mlplat.gate.metrics.roc_auc"].startswith("passed")
    assert json.loads(tags["mlplat.receipt"])["outcome"] == "completed"
    # the local store: a deployment on the target with who pushed, the registry version, the receipt
    current = world.metadata.current_deployment(MODEL, target="staging")
    assert current is not None and current.version == "2"
    assert current.registry_version == result.registry_version and current.receipt_path == result.receipt
    assert "@" in current.pushed_by


def test_same_bundle_twice_and_two_pushes_at_once_give_one_version_and_one_rollout(world: World) -> None:
    v2 = world.root / ".mlplat" / "bundles" / f"{MODEL}-v2"
    again = world.push(v2)
    assert again.outcome is PushOutcome.COMPLETED and not again.rolled_out
    assert again.reason == "already serving: no rollout"
    v3 = bundle(world.root, "3", auc=0.92, seed=3)
    results: list[PushResult] = []

    def one() -> None:
        results.append(push(world.project, "staging", v3, metadata=MetadataClient(world.service.url)))

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert [r.outcome for r in results] == [PushOutcome.COMPLETED, PushOutcome.COMPLETED], [
        r.reason for r in results
    ]
    assert len({r.registry_version for r in results}) == 1
    assert sorted(r.rolled_out for r in results) == [False, True]
    bundle_id = results[0].bundle_id
    from mlflow import MlflowClient

    versions = MlflowClient(world.engine.tracker_uri).search_model_versions(f"name = '{MODEL}'")
    assert [v.version for v in versions if v.tags.get(DIGEST_TAG) == bundle_id] == [
        results[0].registry_version
    ]
    assert world.serving_version() == "3"


def test_failing_the_targets_gates_is_rejected_and_changes_nothing(world: World) -> None:
    before = world.engine.current(MODEL)
    alias = world.registry().alias("staging")
    weak = bundle(world.root, "4", auc=0.82, seed=4)  # passes the project's 0.8, not staging's 0.85
    result = world.push(weak)
    assert result.outcome is PushOutcome.REJECTED and result.exit_code == 3
    assert "metrics.roc_auc" in result.reason
    assert world.engine.current(MODEL) == before and world.serving_version() == before.version  # type: ignore[union-attr]
    assert world.registry().find(result.bundle_id) is None
    assert world.registry().alias("staging") == alias
    dry = world.push(bundle(world.root, "5", auc=0.93, seed=5), dry_run=True)
    assert dry.dry_run and dry.outcome is PushOutcome.COMPLETED
    assert any("roll out v5" in c for c in dry.changes)
    assert world.registry().find(dry.bundle_id) is None and world.serving_version() == before.version  # type: ignore[union-attr]


def test_requires_unmet_is_rejected(world: World) -> None:
    fresh = bundle(world.root, "6", auc=0.93, seed=6)  # never pushed to staging
    result = world.push(fresh, target="prod")
    assert result.outcome is PushOutcome.REJECTED
    assert "requires" in result.reason and "staging" in result.reason
    prod = LocalEngine(world.project, "prod", world.project.config.targets["prod"])  # type: ignore[arg-type]
    assert prod.current(MODEL) is None and not prod.backend.status().up  # nothing started, nothing served


def test_a_wrong_answer_in_the_smoke_test_rolls_back_and_leaves_the_alias(world: World) -> None:
    before = world.engine.current(MODEL)
    assert before is not None
    alias = world.registry().alias("staging")
    batchy = batch_dependent_bundle(world.root, "7", auc=0.95)
    result = world.push(batchy)
    assert result.outcome in (PushOutcome.ROLLED_BACK, PushOutcome.REJECTED), result.reason
    if result.outcome is PushOutcome.REJECTED:
        pytest.fail(
            f"the batch-dependent bundle must pass the gates to reach the smoke test: {result.reason}"
        )
    assert result.exit_code == 4 and "smoke test failed" in result.reason and "alone" in result.reason
    assert world.serving_version() == before.version
    assert world.registry().alias("staging") == alias
    receipt = read_receipt(Path(str(result.receipt)))
    assert receipt.outcome == "rolled_back" and receipt.smoke is not None and not receipt.smoke["passed"]
    current = world.metadata.current_deployment(MODEL, target="staging")
    assert current is not None and current.version == before.version
    failed = world.metadata.deployments(MODEL, target="staging", limit=5)
    assert failed[0].status == "failed" and failed[0].version == "7"


def test_rollback_to_two_pushes_back_and_status_at_a_time_between(world: World) -> None:
    from mlplat_tui.push.history import served_at
    from mlplat_tui.push.rollback import rollback_target

    served = [d for d in world.metadata.deployments(MODEL, target="staging", limit=50) if d.status == "ok"]
    assert [d.version for d in served][:3] == ["3", "2", "1"]
    between = datetime.fromtimestamp((served[1].ts.timestamp() + served[0].ts.timestamp()) / 2, UTC)
    at = served_at(world.metadata, MODEL, "staging", between)
    assert at is not None and at.version == "2"
    result = rollback_target(world.project, "staging", "1", metadata=world.metadata)
    assert result.outcome is PushOutcome.COMPLETED, result.reason
    assert result.action == "rollback" and world.serving_version() == "1"
    first = world.registry().find(served[2].bundle_id)
    assert first is not None and world.registry().alias("staging") == first.version
    now = world.metadata.current_deployment(MODEL, target="staging")
    assert now is not None and now.version == "1" and now.action == "rollback"


def test_a_first_push_that_fails_its_smoke_test_is_taken_down(world: World) -> None:
    canary = LocalEngine(world.project, "canary", world.project.config.targets["canary"])  # type: ignore[arg-type]
    batchy = world.root / ".mlplat" / "bundles" / f"{MODEL}-v7"
    result = world.push(batchy, target="canary")
    assert result.outcome is PushOutcome.ROLLED_BACK and "smoke test failed" in result.reason, result.reason
    assert canary.current(MODEL) is None
    resp = httpx.get(f"{canary.endpoint(MODEL)}/v2/models/{MODEL}", timeout=10)
    assert resp.status_code == 404  # nothing serves: the target is as it was
    assert TargetRegistry(canary.tracker_uri, MODEL, None).alias("canary") is None
    assert world.metadata.current_deployment(MODEL, target="canary") is None
    steps = [e.data["step"] for e in world.events]
    assert steps[-2:] == ["smoke", "rollback"]


def test_the_target_stack_started_again_serves_its_last_version(world: World) -> None:
    last = world.engine.current(MODEL)
    assert last is not None and last.healthy == 1
    world.engine.backend.down()
    down = world.engine.current(MODEL)
    assert down is not None and down.version == last.version and down.healthy == 0
    states = [t.state for t in world.engine.ensure_up(lambda _: None)]
    assert states == ["stack_up", "restored"]
    assert world.serving_version() == last.version
    again = world.engine.current(MODEL)
    assert again is not None and again.healthy == 1


def test_an_engine_failing_after_it_changed_the_target_is_rolled_back(world: World) -> None:
    """As a swarm edge that does not start after the update finished: the new version serves,
    then the engine raises. Step 8 must put back what served (it used to end ``failed``)."""
    import dataclasses

    from mlplat_runtime.errors import TargetError
    from mlplat_tui.push.pipeline import build_push

    class FailsAfterServing(LocalEngine):  # the real engine; then a failure of its last part
        def rollout(self, request, progress):  # type: ignore[no-untyped-def]
            super().rollout(request, progress)
            raise TargetError("the edge did not start: port 8802 is in use")

    before = world.engine.current(MODEL)
    assert before is not None and before.healthy == 1
    alias = world.registry().alias("staging")
    path = bundle(world.root, "11", auc=0.99, seed=11)
    engine = FailsAfterServing(world.project, "staging", world.project.config.targets["staging"])  # type: ignore[arg-type]
    runner = dataclasses.replace(build_push(world.project, "staging", metadata=world.metadata), engine=engine)
    result = runner.run(path)
    assert result.outcome is PushOutcome.ROLLED_BACK, result.reason
    assert "the rollout failed" in result.reason and "port 8802 is in use" in result.reason
    assert result.rolled_out and result.serving_version == before.version
    assert world.serving_version() == before.version
    assert world.registry().alias("staging") == alias  # the alias stays


def test_a_rollback_whose_smoke_test_fails_puts_back_what_served(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine really serves the chosen version; its smoke test is made to fail once (the
    served answers are not what this test is about): what served before must serve again, and
    the result must say so."""
    from mlplat_tui.push import smoke
    from mlplat_tui.push.rollback import rollback_target

    now = world.engine.current(MODEL)
    assert now is not None and now.healthy == 1
    served = [d for d in world.metadata.deployments(MODEL, target="staging", limit=50) if d.status == "ok"]
    to = next(d.version for d in served if d.bundle_id != now.bundle_id)
    real, calls = smoke.smoke_test, []

    def fails_once(endpoint: str, bundle: object, version: str, **kw: object) -> smoke.SmokeResult:
        calls.append(version)
        if len(calls) == 1:
            return smoke.SmokeResult(passed=False, skipped=False, reason="answers differ (made to fail)")
        return real(endpoint, bundle, version, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(smoke, "smoke_test", fails_once)
    result = rollback_target(world.project, "staging", to, metadata=world.metadata)
    assert result.outcome is PushOutcome.FAILED and "made to fail" in result.reason, result.reason
    assert f"v{now.version} serves again" in result.reason
    assert result.serving_version == now.version and calls == [to]
    assert world.serving_version() == now.version


def test_local_remove_drops_only_its_own_entry(world: World) -> None:
    """Last in the module: it takes the staging model down."""
    state = world.engine.root / "deployed.json"
    entries = json.loads(state.read_text())[MODEL]
    assert len(entries) >= 2
    world.engine.remove(MODEL)
    left = json.loads(state.read_text())[MODEL]
    assert left == entries[:-1]
    assert not [p.name for p in world.engine.root.iterdir() if p.name.startswith(".deployed.")]
