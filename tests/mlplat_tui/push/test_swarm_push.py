"""``mlplat push`` end to end on a ``swarm`` target: the real pipeline, a target MLflow with its
basic-auth app, Debian's docker-registry with htpasswd, a real single-node Swarm, the edge.

One set of credentials (``user:password`` by env reference) is accepted by both registries.
A good push of 2 replicas under a bounded load through the edge completes with 0 failed
requests and a receipt holding the Swarm's transitions; a push with wrong credentials fails
and leaves the MLflow registry, the image registry and the Swarm exactly as they were.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from mlplat_tui.clients.metadata import MetadataClient
from mlplat_tui.project.config import Project, load_project
from mlplat_tui.push.edge import edge_stats
from mlplat_tui.push.engines import engine_for
from mlplat_tui.push.pipeline import PushOptions, PushOutcome, PushResult, push
from mlplat_tui.push.receipt import read_receipt
from mlplat_tui.push.swarm import SwarmEngine
from tests.helpers.load import InferenceLoad, infer_body
from tests.helpers.metadata import RunningMetadata, start_metadata
from tests.helpers.registry import RunningRegistry, started_registry
from tests.helpers.swarm import remove_swarm_objects, swarm_objects
from tests.mlplat_tui.push.push_helpers import MODEL, AuthMlflow, auth_mlflow, bundle, write_project
from tests.mlplat_tui.push.swarm_fixtures import RUNTIME_TEST_IMAGE, free_port, swarm  # noqa: F401
from tests.mlplat_tui.stack.conftest import docker_client, mlplat_images  # noqa: F401 - fixtures

pytestmark = [
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.integration,
    pytest.mark.xdist_group("swarm"),
    pytest.mark.timeout(1800),
]

USER, PASSWORD = "pusher", "Pusher-pass-0123456789"
ENV = "MLPLAT_SWARM_PUSH_TEST_CREDENTIALS"


@dataclass
class World:
    root: Path
    project: Project
    metadata: MetadataClient
    service: RunningMetadata
    mlflow: AuthMlflow
    registry: RunningRegistry

    def push(self, bundle_path: Path, **kw: Any) -> PushResult:
        self.lines: list[str] = []
        return push(
            self.project, "prod", bundle_path, metadata=self.metadata,
            options=PushOptions(deadline_s=300, **kw), progress=self.lines.append, emit=lambda _: None,
        )  # fmt: skip

    def engine(self) -> SwarmEngine:
        target = self.project.config.targets["prod"]
        engine = engine_for(self.project, "prod", target, None)
        assert isinstance(engine, SwarmEngine)
        return engine


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory,
    swarm: Any,  # noqa: F811
    mlplat_images: dict[str, Any],  # noqa: F811
) -> Iterator[World]:
    mp = pytest.MonkeyPatch()
    mp.setenv("MLPLAT_PUSH_RUNTIME_IMAGE", RUNTIME_TEST_IMAGE)
    mp.setenv(ENV, f"{USER}:{PASSWORD}")
    tmp = tmp_path_factory.mktemp("swarmpush")
    name = f"sw{uuid.uuid4().hex[:8]}"
    with auth_mlflow(tmp / "mlflow") as mlflow, started_registry(tmp / "reg", users={USER: PASSWORD}) as reg:
        mlflow.create_user(USER, PASSWORD)
        targets = f"""[targets.prod]
kind = "swarm"
stage = "prod"
registry = "{mlflow.url}"
image_registry = "{reg.address}"
docker_host = "unix:///var/run/docker.sock"
replicas = 2
publish = "edge"
port = {free_port()}
credentials = {{ env = "{ENV}" }}
"""
        root = write_project(tmp / "shop", name=name, targets=targets)
        project = load_project(root)
        service = start_metadata(root / ".mlplat" / "store" / "metadata.duckdb")
        metadata = MetadataClient(service.url)
        try:
            yield World(root, project, metadata, service, mlflow, reg)
        finally:
            metadata.close()
            service.stop()
            remove_swarm_objects(swarm, name)
            for img in swarm.images.list():
                if any(t.startswith(reg.address) for t in img.tags + (img.attrs.get("RepoDigests") or [])):
                    swarm.images.remove(img.id, force=True)
            mp.undo()


def _versions(url: str, n: int = 12) -> set[str]:
    rows = np.zeros((1, 4), dtype=np.float32)
    with httpx.Client(timeout=10) as http:
        return {
            str(http.post(f"{url}/v2/models/{MODEL}/infer", json=infer_body(rows)).json()["model_version"])
            for _ in range(n)
        }


def test_good_push_of_two_replicas_under_load_through_the_edge(world: World) -> None:
    first = world.push(bundle(world.root, "1", auc=0.90, seed=1))
    assert first.outcome is PushOutcome.COMPLETED, (first.reason, world.lines[-15:])
    engine = world.engine()
    url = engine.endpoint(MODEL)
    assert url is not None and _versions(url) == {"1"}

    v2 = bundle(world.root, "2", auc=0.91, seed=2)
    before = edge_stats(engine.client, engine._edge(MODEL))
    with InferenceLoad(f"{url}/v2/models/{MODEL}/infer", infer_body(np.zeros((1, 4), np.float32))) as load:
        result = world.push(v2)
    after = edge_stats(engine.client, engine._edge(MODEL))
    raw = after.raw_failures - before.raw_failures
    print(f"requests {len(load.outcomes)}, failed {len(load.failures)}, raw before retries {raw}")
    assert result.outcome is PushOutcome.COMPLETED, (result.reason, world.lines[-15:])
    assert load.failures == []
    assert {v for _, _, v in load.outcomes} <= {"1", "2"}
    assert _versions(url) == {"2"}
    current = engine.current(MODEL)
    assert current is not None and current.version == "2" and current.healthy == 2
    assert result.receipt is not None
    receipt = read_receipt(Path(result.receipt))
    states = [t.state for t in receipt.transitions]
    assert "updating" in states and "completed" in states and "running" in states
    assert receipt.image_digest and current.image is not None and current.image.digest == receipt.image_digest

    again = world.push(v2)  # the same bundle: no rollout, no second image
    assert again.outcome is PushOutcome.COMPLETED and not again.rolled_out
    assert world.registry.tags(f"mlplat/{MODEL}") and len(world.registry.tags(f"mlplat/{MODEL}")) == 2


def test_wrong_credentials_leave_both_registries_and_the_swarm_unchanged(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = world.engine()
    models = world.mlflow.registered_models()
    versions = world.mlflow.versions(MODEL) if MODEL in models else []
    images = {repo: world.registry.tags(repo) for repo in world.registry.repositories()}
    service = engine.current(MODEL)
    objects = swarm_objects(engine.client, world.project.name)

    monkeypatch.setenv(ENV, f"{USER}:not-the-password")
    result = world.push(bundle(world.root, "3", auc=0.92, seed=3))
    assert result.outcome is PushOutcome.FAILED, result.reason
    assert world.mlflow.registered_models() == models
    assert (world.mlflow.versions(MODEL) if MODEL in models else []) == versions
    assert {repo: world.registry.tags(repo) for repo in world.registry.repositories()} == images
    now = engine.current(MODEL)
    assert (now.spec if now else None) == (service.spec if service else None)
    assert swarm_objects(engine.client, world.project.name) == objects


def test_rollback_to_a_version_two_pushes_back(world: World) -> None:
    engine = world.engine()
    current = engine.current(MODEL)
    assert current is not None and current.version == "2"  # left by the good push above
    pushed = world.push(bundle(world.root, "4", auc=0.93, seed=4))
    assert pushed.outcome is PushOutcome.COMPLETED, (pushed.reason, world.lines[-15:])
    from mlplat_tui.push.rollback import rollback_target

    lines: list[str] = []
    result = rollback_target(
        world.project, "prod", "1", metadata=world.metadata, options=PushOptions(deadline_s=300),
        progress=lines.append,
    )  # fmt: skip
    assert result.outcome is PushOutcome.COMPLETED, (result.reason, lines[-15:])
    now = engine.current(MODEL)
    assert now is not None and now.version == "1" and now.healthy == 2
    url = engine.endpoint(MODEL)
    assert url is not None and _versions(url) == {"1"}
