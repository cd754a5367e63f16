"""The swarm engine against a real single-node Swarm and a real image registry.

Each case drives ``SwarmEngine`` directly with images from ``build_and_push``: a good
start-first rollout of 2 replicas under a bounded load through the HAProxy edge, replicas that
never turn ready (Swarm rolls back), a reservation no node can hold (mlplat's deadline rolls
back and names the scheduler's reason), the same image twice (no rollout), and a manual
rollback that re-applies the spec recorded for an earlier version.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from mlplat_tui.project.config import Project
from mlplat_tui.project.targets import Resources
from mlplat_tui.push.edge import edge_stats
from mlplat_tui.push.engine import Deployed, ImageRef, RolloutOutcome, RolloutRequest, RolloutResult
from mlplat_tui.push.image import build_and_push
from mlplat_tui.push.swarm import HealthTiming, SwarmEngine
from tests.helpers.load import InferenceLoad, infer_body
from tests.helpers.registry import RunningRegistry
from tests.helpers.swarm import remove_swarm_objects, swarm_objects
from tests.mlplat_tui.push.swarm_fixtures import (  # noqa: F401 - fixtures
    RUNTIME_TEST_IMAGE,
    broken_copy,
    bundle,
    registry,
    remove_pushed,
    swarm,
    swarm_project,
)
from tests.mlplat_tui.stack.conftest import docker_client, mlplat_images  # noqa: F401 - fixtures

pytestmark = [
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.integration,
    pytest.mark.xdist_group("swarm"),
    pytest.mark.timeout(1500),
]

# Shorter than the defaults so a case takes a minute, with the same shape: the monitor still
# outlasts the start period plus the failures that mark a replica unhealthy.
HEALTH = HealthTiming(interval_s=1.0, timeout_s=2.0, retries=3, start_period_s=8.0, stop_grace_s=15.0)
ROWS = np.zeros((1, 4), dtype=np.float32)


def _request(
    engine: SwarmEngine, path: Path, bid: str, version: str, image: ImageRef, deadline: float = 240
) -> RolloutRequest:
    return RolloutRequest(
        model_name="m", version=version, bundle_id=bid, bundle_path=path, image=image,
        previous=engine.current("m"), deadline_s=deadline,
    )  # fmt: skip


def _push(
    tmp: Path, reg: RunningRegistry, version: str, seed: int, broken: bool = False
) -> tuple[Path, str, ImageRef]:
    path, bid = bundle(tmp, version, seed)
    if broken:
        path = broken_copy(path, tmp / f"broken-{version}")
    image = build_and_push(
        path, "m", version, bid, reg.address, None, lambda _: None, runtime_image=RUNTIME_TEST_IMAGE
    )
    return path, bid, image


def _versions_seen(url: str, n: int = 20) -> set[str]:
    seen = set()
    with httpx.Client(timeout=10) as http:
        for _ in range(n):
            r = http.post(f"{url}/v2/models/m/infer", json=infer_body(ROWS))
            assert r.status_code == 200, r.text
            seen.add(str(r.json()["model_version"]))
    return seen


def _states(result: RolloutResult) -> list[str]:
    return [t.state for t in result.transitions]


@pytest.fixture
def serving_v1(
    tmp_path: Path,
    mlplat_images: dict[str, Any],  # noqa: F811
    swarm_project: Callable[..., Project],  # noqa: F811
    registry: RunningRegistry,  # noqa: F811
) -> Iterator[tuple[SwarmEngine, Project, list[ImageRef]]]:
    project = swarm_project()
    engine = SwarmEngine(project, "prod", project.config.targets["prod"], None, health=HEALTH)  # type: ignore[arg-type]
    path, bid, image = _push(tmp_path, registry, "1", seed=1)
    result = engine.rollout(_request(engine, path, bid, "1", image), print)
    assert result.outcome is RolloutOutcome.COMPLETED, result.reason
    assert result.endpoint is not None
    assert _versions_seen(result.endpoint) == {"1"}
    images = [image]
    yield engine, project, images
    engine.remove("m")
    assert swarm_objects(engine.client, project.name)["services"] == []
    remove_swarm_objects(engine.client, project.name)  # waits for the tasks' containers to go
    remove_pushed(engine.client, images)


def test_good_rollout_under_load_through_the_edge(
    tmp_path: Path,
    serving_v1: tuple[SwarmEngine, Project, list[ImageRef]],
    registry: RunningRegistry,  # noqa: F811
) -> None:
    engine, _, images = serving_v1
    before = engine.current("m")
    assert before is not None and before.version == "1" and before.replicas == 2 and before.healthy == 2
    path, bid, image = _push(tmp_path, registry, "2", seed=2)
    images.append(image)
    url = engine.endpoint("m")
    assert url is not None
    with InferenceLoad(f"{url}/v2/models/m/infer", infer_body(ROWS), clients=2, pause_s=0.02) as load:
        result = engine.rollout(_request(engine, path, bid, "2", image), print)
    stats = edge_stats(engine.client, engine._edge("m"))
    print(f"requests {len(load.outcomes)}, failed {len(load.failures)}; edge: {stats}")
    assert result.outcome is RolloutOutcome.COMPLETED, result.reason
    assert load.failures == []
    assert len(load.outcomes) > 20
    # A rolling update: while it runs both versions answer; nothing else ever does.
    assert {v for _, _, v in load.outcomes} <= {"1", "2"}
    assert _versions_seen(url) == {"2"}
    now = engine.current("m")
    assert (
        now is not None
        and now.version == "2"
        and now.bundle_id == bid
        and now.image == ImageRef(image.repository, image.digest)
    )
    assert now.healthy == 2
    states = _states(result)
    assert "updating" in states and "completed" in states
    assert states.count("running") >= 2  # each new replica seen running, with the engine's time
    assert all(t.at.tzinfo is not None for t in result.transitions)

    again = engine.rollout(_request(engine, path, bid, "2", image), print)
    assert again.outcome is RolloutOutcome.COMPLETED and again.transitions == ()
    after = engine.current("m")
    assert after is not None and after.spec["TaskTemplate"] == now.spec["TaskTemplate"]


def test_replicas_that_never_turn_ready_are_rolled_back_and_the_old_version_serves(
    tmp_path: Path,
    serving_v1: tuple[SwarmEngine, Project, list[ImageRef]],
    registry: RunningRegistry,  # noqa: F811
) -> None:
    engine, _, images = serving_v1
    # its own version: a tag names one bundle, and this one is not the good version 2
    path, bid, image = _push(tmp_path, registry, "3", seed=3, broken=True)
    images.append(image)
    url = engine.endpoint("m")
    assert url is not None
    with InferenceLoad(f"{url}/v2/models/m/infer", infer_body(ROWS), clients=2, pause_s=0.02) as load:
        result = engine.rollout(_request(engine, path, bid, "3", image), print)
    print("reason:", result.reason)
    assert result.outcome is RolloutOutcome.ROLLED_BACK, result
    assert "rolled back" in result.reason.lower()
    assert load.failures == []
    assert {v for _, _, v in load.outcomes} == {"1"}
    now = engine.current("m")
    assert now is not None and now.version == "1"
    assert "rollback_completed" in _states(result)


def test_a_reservation_no_node_can_hold_is_rolled_back_at_mlplats_deadline(
    tmp_path: Path,
    serving_v1: tuple[SwarmEngine, Project, list[ImageRef]],
    registry: RunningRegistry,  # noqa: F811
) -> None:
    engine, project, images = serving_v1
    huge = project.config.targets["prod"].model_copy(update={"resources": Resources(memory="100000g")})  # type: ignore[union-attr]
    big = SwarmEngine(project, "prod", huge, None, client=engine.client, health=HEALTH)  # type: ignore[arg-type]
    path, bid, image = _push(tmp_path, registry, "2", seed=2)
    images.append(image)
    result = big.rollout(_request(big, path, bid, "2", image, deadline=20), print)
    assert result.outcome is RolloutOutcome.ROLLED_BACK, result
    assert "deadline of 20s" in result.reason
    assert "insufficient resources" in result.reason  # the scheduler's own words
    assert "pending" in _states(result) and "mlplat_rollback" in _states(result)
    now = engine.current("m")
    assert now is not None and now.version == "1" and now.healthy == 2
    url = engine.endpoint("m")
    assert url is not None and _versions_seen(url) == {"1"}


def test_manual_rollback_reapplies_the_recorded_spec_of_an_earlier_version(
    tmp_path: Path,
    serving_v1: tuple[SwarmEngine, Project, list[ImageRef]],
    registry: RunningRegistry,  # noqa: F811
) -> None:
    engine, _, images = serving_v1
    v1 = engine.current("m")
    assert v1 is not None and v1.image is not None
    recorded = Deployed(**{**vars(v1)})  # what mlplat's history keeps of version 1
    path, bid, image = _push(tmp_path, registry, "2", seed=2)
    images.append(image)
    assert engine.rollout(_request(engine, path, bid, "2", image), print).outcome is RolloutOutcome.COMPLETED
    back = RolloutRequest(
        model_name="m", version="1", bundle_id=v1.bundle_id, bundle_path=path, image=v1.image,
        previous=recorded, deadline_s=240, reason="operator asked for version 1",
    )  # fmt: skip
    result = engine.rollback(back, print)
    assert result.outcome is RolloutOutcome.COMPLETED, result.reason
    now = engine.current("m")
    assert now is not None and now.version == "1" and now.image == v1.image
    assert now.spec["TaskTemplate"]["ContainerSpec"] == v1.spec["TaskTemplate"]["ContainerSpec"]
    url = engine.endpoint("m")
    assert url is not None and _versions_seen(url) == {"1"}
