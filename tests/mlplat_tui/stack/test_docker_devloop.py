"""``mlplat dev`` on the docker backend: every save hot-swaps into the containerised serving,
and a bounded load against it sees no failed request."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mlplat_runtime.bundle import open_bundle
from mlplat_tui.devloop.loop import DevLoop
from mlplat_tui.project.config import Project
from mlplat_tui.stack.base import Service
from mlplat_tui.stack.docker import DockerBackend
from tests.helpers.load import InferenceLoad, infer_body
from tests.mlplat_tui.devloop.conftest import EventLog, edit

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_dev_loop_swaps_into_containers_under_load_without_a_failed_request(
    docker_project: Callable[..., Project], mlplat_images: dict
) -> None:
    project = docker_project("churn")
    backend = DockerBackend(project)
    events = EventLog()
    loop = DevLoop(project, backend=backend, emit=events, debounce_s=0.1)
    try:
        loop.start()  # brings the containers up, then trains once
        first = events.wait("cycle", timeout=300)
        assert first.data["outcome"] == "deployed", first.message
        assert backend.status().up
        bundle_path = loop.results[-1].bundle_path
        assert bundle_path is not None
        rows = open_bundle(bundle_path).samples()[0]["input"]
        url = f"{backend.ports.url(Service.SERVING)}/v2/models/{project.config.model.name}/infer"
        with InferenceLoad(url, infer_body(rows), clients=2) as load:
            for i in range(5):
                mark = events.mark
                edit(project.root / "train.py", r"^C = .*$", f"C = {0.5 + 0.1 * i:.2f}")
                cycle = events.wait("cycle", mark)
                assert cycle.data["outcome"] == "deployed", cycle.message
    finally:
        loop.stop()
        backend.down(volumes=True)
    assert not load.failures, f"{len(load.failures)} of {len(load.outcomes)} failed: {load.failures[:5]}"
    assert len(load.outcomes) > 50 and len({v for _, _, v in load.outcomes}) >= 3
    assert load.versions_never_go_back()
    assert not backend.containers()
