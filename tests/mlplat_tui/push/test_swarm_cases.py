"""The push issue's remaining cases on a real single-node Swarm, a real image registry (Debian's
docker-registry with htpasswd) and a real target MLflow with its basic-auth app.

One world for the module: the swarm, both registries and the project's metadata service start
once, and version 1 is pushed once (2 replicas through the HAProxy edge) and reused. Each test
states what it expects of what serves when it starts:

- replicas that turn healthy but answer wrongly: the smoke test fails, mlplat rolls back, the
  alias does not move and version 1 serves;
- a bundle failing the target's gates, and one whose ``requires`` is not met: rejected, and the
  MLflow registry, the image registry's tags and the Swarm service (its spec version) unchanged;
- a push by a read-only MLflow user: nothing changed anywhere;
- two pushes of one bundle at once: one registry version, one spec update;
- ``mlplat status --target prod --at`` between pushes and ``mlplat rollback --to`` two pushes
  back, through the CLI (``--json``, exit codes);
- ``mlplat fleet --json`` lists the model on the swarm target with replicas and health.

The engines in this process run with short health timings (as ``test_swarm.py``): the same
shape, an update monitor of 16 s instead of 31 s. The CLI's own processes use the defaults.
``target_state`` is everything a push could change on the targets; the Swarm service's
``Version.Index`` moves with any change to it, so "one rollout" is read from ``PreviousSpec``.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from mlplat_tui.clients.metadata import MetadataClient
from mlplat_tui.project.config import Project, load_project
from mlplat_tui.push.credentials import Credentials
from mlplat_tui.push.engines import engine_for
from mlplat_tui.push.pipeline import PushOptions, PushOutcome, PushResult, push
from mlplat_tui.push.receipt import read_receipt
from mlplat_tui.push.registry import DIGEST_TAG, TargetRegistry
from mlplat_tui.push.swarm import HealthTiming, SwarmEngine
from tests.helpers.load import infer_body
from tests.helpers.metadata import RunningMetadata, start_metadata
from tests.helpers.registry import RunningRegistry, started_registry
from tests.helpers.swarm import remove_swarm_objects, swarm_objects
from tests.mlplat_tui.cli.test_cli import mlplat
from tests.mlplat_tui.push.push_helpers import (
    MODEL,
    AuthMlflow,
    auth_mlflow,
    batch_dependent_bundle,
    bundle,
    write_project,
)
from tests.mlplat_tui.push.swarm_fixtures import RUNTIME_TEST_IMAGE, free_port, swarm  # noqa: F401
from tests.mlplat_tui.stack.conftest import docker_client, mlplat_images  # noqa: F401 - fixtures

pytestmark = [
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.integration,
    pytest.mark.xdist_group("swarm"),
    pytest.mark.timeout(2400),
]

USER, PASSWORD = "pusher", "Pusher-pass-0123456789"
READER, READER_PASSWORD = "reader", "Reader-pass-0123456789"
ENV = "MLPLAT_SWARM_CASES_CREDENTIALS"
HEALTH = HealthTiming(interval_s=1.0, timeout_s=2.0, retries=3, start_period_s=8.0, stop_grace_s=15.0)
REPO = f"mlplat/{MODEL}"


@dataclass
class World:
    root: Path
    project: Project
    metadata: MetadataClient
    service: RunningMetadata
    mlflow: AuthMlflow
    registry: RunningRegistry
    marks: dict[str, datetime] = field(default_factory=dict)  # times between pushes
    lines: list[str] = field(default_factory=list)

    def push(self, bundle_path: Path, target: str = "prod", **kw: Any) -> PushResult:
        self.lines = []
        return push(
            self.project, target, bundle_path, metadata=self.metadata,
            options=PushOptions(deadline_s=300, **kw), progress=self.lines.append, emit=lambda _: None,
        )  # fmt: skip

    def engine(self, target: str = "prod") -> SwarmEngine:
        engine = engine_for(self.project, target, self.project.config.targets[target], None)
        assert isinstance(engine, SwarmEngine)
        return engine

    def alias(self) -> str | None:
        return TargetRegistry(self.mlflow.url, MODEL, Credentials(USER, PASSWORD, "test")).alias("prod")

    def service_version(self, target: str = "prod") -> int | None:
        found = self.engine(target)._find(MODEL)
        return int(found["Version"]["Index"]) if found else None

    def target_state(self) -> dict[str, Any]:
        """Everything a push could change on the targets: registry versions and aliases, the
        image registry's tags, the Swarm's services (spec version) and objects."""
        models = self.mlflow.registered_models()
        return {
            "models": models,
            "versions": sorted(
                (str(v["version"]), str(v.get("current_stage")), json.dumps(v.get("aliases")))
                for v in (self.mlflow.versions(MODEL) if MODEL in models else [])
            ),
            "tags": {repo: sorted(self.registry.tags(repo)) for repo in self.registry.repositories()},
            "service": self.service_version(),
            "other_service": self.service_version("live"),
            "objects": swarm_objects(self.engine().client, self.project.name),
        }


def _served_versions(url: str, n: int = 12) -> set[str]:
    rows = np.zeros((1, 4), dtype=np.float32)
    with httpx.Client(timeout=10) as http:
        return {
            str(http.post(f"{url}/v2/models/{MODEL}/infer", json=infer_body(rows)).json()["model_version"])
            for _ in range(n)
        }


def _tag(version: dict[str, Any], key: str) -> str | None:
    for tag in version.get("tags") or []:
        if tag.get("key") == key:
            return str(tag.get("value"))
    return None


def _serving(world: World) -> set[str]:
    url = world.engine().endpoint(MODEL)
    assert url is not None
    return _served_versions(url)


def _cli(world: World, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return mlplat(*args, cwd=world.root, timeout=timeout)


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory,
    swarm: Any,  # noqa: F811
    mlplat_images: dict[str, Any],  # noqa: F811
) -> Iterator[World]:
    mp = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("swarmcases")
    mp.setenv("MLPLAT_PUSH_RUNTIME_IMAGE", RUNTIME_TEST_IMAGE)
    mp.setenv(ENV, f"{USER}:{PASSWORD}")
    mp.setenv("XDG_STATE_HOME", str(tmp / "state"))  # the fleet index of this module only
    original = SwarmEngine.__init__

    def short_health(self: SwarmEngine, *args: Any, health: HealthTiming | None = None, **kw: Any) -> None:
        original(self, *args, health=health or HEALTH, **kw)

    mp.setattr(SwarmEngine, "__init__", short_health)
    name = f"sc{uuid.uuid4().hex[:8]}"
    users = {USER: PASSWORD, READER: READER_PASSWORD}  # both may push images; MLflow tells them apart
    with auth_mlflow(tmp / "mlflow") as mlflow, started_registry(tmp / "reg", users=users) as reg:
        mlflow.create_user(USER, PASSWORD)
        mlflow.create_user(READER, READER_PASSWORD)  # default_permission = READ: a read-only user
        common = f"""registry = "{mlflow.url}"
image_registry = "{reg.address}"
docker_host = "unix:///var/run/docker.sock"
replicas = 2
publish = "edge"
credentials = {{ env = "{ENV}" }}
"""
        targets = f"""[targets.prod]
kind = "swarm"
stage = "prod"
gates = {{ "metrics.roc_auc" = ">= 0.85" }}
port = {free_port()}
{common}
[targets.live]
kind = "swarm"
stage = "live"
requires = "prod"
port = {free_port()}
{common}"""
        root = write_project(tmp / "shop", name=name, targets=targets)
        project = load_project(root)
        # where the CLI finds it: the stack's metadata port
        service = start_metadata(
            root / ".mlplat" / "stack" / "metadata.duckdb", port=project.config.stack.port_base + 1
        )
        metadata = MetadataClient(service.url)
        w = World(root, project, metadata, service, mlflow, reg)
        try:
            first = w.push(bundle(root, "1", auc=0.90, seed=1))
            assert first.outcome is PushOutcome.COMPLETED, (first.reason, w.lines[-15:])
            time.sleep(1.0)
            w.marks["v1"] = datetime.now(UTC)
            yield w
        finally:
            metadata.close()
            service.stop()
            remove_swarm_objects(swarm, name)
            for img in swarm.images.list():
                if any(t.startswith(reg.address) for t in img.tags + (img.attrs.get("RepoDigests") or [])):
                    swarm.images.remove(img.id, force=True)
            mp.undo()


def test_healthy_replicas_answering_wrongly_fail_the_smoke_test_and_are_rolled_back(world: World) -> None:
    assert _serving(world) == {"1"}
    alias = world.alias()
    assert alias is not None
    batchy = batch_dependent_bundle(world.root, "7", auc=0.95)  # serving's load check passes it
    result = world.push(batchy)
    assert result.outcome is PushOutcome.ROLLED_BACK, (result.reason, world.lines[-15:])
    assert result.exit_code == 4
    assert "smoke test failed" in result.reason and "alone" in result.reason, result.reason
    assert result.rolled_out  # it did reach the replicas
    receipt = read_receipt(Path(str(result.receipt)))
    assert receipt.outcome == "rolled_back" and receipt.smoke is not None and not receipt.smoke["passed"]
    states = [t.state for t in receipt.transitions]
    assert "completed" in states  # the replicas turned healthy: Swarm itself saw nothing wrong
    assert world.alias() == alias
    now = world.engine().current(MODEL)
    assert now is not None and now.version == "1" and now.healthy == 2
    assert _serving(world) == {"1"}
    served = world.metadata.current_deployment(MODEL, target="prod")
    assert served is not None and served.version == "1"


def test_failing_the_targets_gates_or_its_requires_changes_nothing(world: World) -> None:
    before = world.target_state()
    assert before["service"] is not None and before["other_service"] is None
    weak = bundle(world.root, "4", auc=0.82, seed=4)  # the project's 0.8 passes, prod's 0.85 not
    result = world.push(weak)
    assert result.outcome is PushOutcome.REJECTED and result.exit_code == 3, result.reason
    assert "metrics.roc_auc" in result.reason
    assert world.target_state() == before

    fresh = bundle(world.root, "5", auc=0.93, seed=5)  # passes every gate, never pushed to prod
    refused = world.push(fresh, target="live")
    assert refused.outcome is PushOutcome.REJECTED and refused.exit_code == 3, refused.reason
    assert "requires" in refused.reason and "prod" in refused.reason
    assert world.target_state() == before
    assert _serving(world) == {"1"}


def test_a_read_only_registry_user_changes_nothing(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    before = world.target_state()
    assert MODEL in before["models"]  # made by the first push: the reader may only read it
    monkeypatch.setenv(ENV, f"{READER}:{READER_PASSWORD}")
    result = world.push(bundle(world.root, "6", auc=0.93, seed=6))
    assert result.outcome is PushOutcome.FAILED and result.exit_code == 1, result.reason
    assert "read-only" in result.reason, result.reason
    assert world.target_state() == before
    assert _serving(world) == {"1"}


def test_two_pushes_of_one_bundle_at_once_give_one_version_and_one_rollout(world: World) -> None:
    found = world.engine()._find(MODEL)
    assert found is not None
    v2 = bundle(world.root, "2", auc=0.91, seed=2)
    results: list[PushResult] = []

    def one() -> None:
        client = MetadataClient(world.service.url)
        try:
            options = PushOptions(deadline_s=300)
            results.append(push(world.project, "prod", v2, metadata=client, options=options))
        finally:
            client.close()

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert [r.outcome for r in results] == [PushOutcome.COMPLETED] * 2, [r.reason for r in results]
    assert len({r.registry_version for r in results}) == 1
    assert sorted(r.rolled_out for r in results) == [False, True]
    bundle_id = results[0].bundle_id
    mine = [v for v in world.mlflow.versions(MODEL) if _tag(v, DIGEST_TAG) == bundle_id]
    assert [str(v["version"]) for v in mine] == [results[0].registry_version]
    after = world.engine()._find(MODEL)
    assert after is not None
    # One spec update: what Swarm keeps as the previous spec is the one before both pushes.
    assert after["PreviousSpec"] == found["Spec"]
    assert after["Spec"]["Labels"]["io.mlplat.version"] == "2"
    assert len([t for t in world.registry.tags(REPO) if t.startswith("2-")]) == 1
    assert _serving(world) == {"2"}
    assert world.alias() == results[0].registry_version
    time.sleep(1.0)
    world.marks["v2"] = datetime.now(UTC)


def _json(out: subprocess.CompletedProcess[str]) -> Any:
    try:
        return json.loads(out.stdout)
    except ValueError:
        raise AssertionError(f"not JSON (rc {out.returncode}): {out.stdout}\n{out.stderr}") from None


def test_status_at_a_time_between_pushes_and_rollback_two_pushes_back_through_the_cli(world: World) -> None:
    assert "v2" in world.marks, "needs the concurrent push of version 2 above"
    third = world.push(bundle(world.root, "3", auc=0.92, seed=3))
    assert third.outcome is PushOutcome.COMPLETED, (third.reason, world.lines[-15:])
    assert _serving(world) == {"3"}

    for mark, version in (("v1", "1"), ("v2", "2")):
        then = _cli(world, "status", "--target", "prod", "--at", world.marks[mark].isoformat(), "--json")
        assert then.returncode == 0, then.stderr
        assert _json(then)["serving"]["version"] == version, then.stdout
    now = _cli(world, "status", "--target", "prod", "--json")
    assert now.returncode == 0, now.stderr
    assert _json(now)["serving"]["version"] == "3"

    unknown = _cli(world, "rollback", "--target", "prod", "--to", "9", "--json")
    assert unknown.returncode == 1, unknown.stderr + unknown.stdout  # a NotFoundError, not an outcome
    assert "never served version 9" in unknown.stderr + unknown.stdout
    assert _serving(world) == {"3"}

    back = _cli(world, "rollback", "--target", "prod", "--to", "v1", "--json")
    assert back.returncode == 0, back.stderr[-3000:] + back.stdout
    out = _json(back)
    assert out["outcome"] == "completed" and out["action"] == "rollback" and out["serving_version"] == "1"
    current = world.engine().current(MODEL)
    assert current is not None and current.version == "1" and current.healthy == 2
    assert _serving(world) == {"1"}
    first = world.mlflow.versions(MODEL)
    v1 = [v for v in first if _tag(v, "mlplat.bundle_version") == "1"]
    assert v1 and world.alias() == str(v1[0]["version"])
    recorded = world.metadata.current_deployment(MODEL, target="prod")
    assert recorded is not None and recorded.version == "1" and recorded.action == "rollback"


def test_fleet_lists_the_model_on_the_swarm_target_with_replicas_and_health(world: World) -> None:
    v1 = world.root / ".mlplat" / "bundles" / f"{MODEL}-v1"
    again = _cli(world, "push", str(v1), "--target", "prod", "--json")  # what serves: no rollout
    assert again.returncode == 0, again.stderr[-3000:] + again.stdout
    assert _json(again)["outcome"] == "completed"
    fleet = _cli(world, "fleet", "--json")
    assert fleet.returncode == 0, fleet.stderr
    rows = {(r["project"], r["target"]): r for r in _json(fleet)}
    prod = rows[world.project.name, "prod"]
    assert (prod["kind"], prod["stage"], prod["model"], prod["version"]) == ("swarm", "prod", MODEL, "1")
    assert (prod["replicas"], prod["healthy"], prod["health"]) == (2, 2, "healthy")
    assert rows[world.project.name, "live"]["health"] == "nothing"
    table = _cli(world, "fleet")
    assert table.returncode == 0 and world.project.name in table.stdout
