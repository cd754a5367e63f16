"""Docker fixtures: the real engine, the project's images built once, projects with unique names.

``mlplat_images`` builds the runtime and tracker images (tags ``mlplat-*:test``, so a
developer's own ``:latest`` images are left alone) on the local base image from
``scripts/make-base-image.sh`` with the wheelhouse from ``scripts/build-wheelhouse.sh``, and
keeps images whose sources are unchanged. A file lock in the temp folder serialises that
work across xdist workers and across concurrent test runs; the others wait, then reuse.
``MLPLAT_TEST_BASE_IMAGE`` picks another base (e.g. ``python:3.11-slim`` where a registry is
reachable).

No fixture here is autouse: the local-backend tests in this folder need none of it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from mlplat_tui.project.config import Project, load_project
from tests.helpers.stack import free_port_base

if TYPE_CHECKING:
    import docker

REPO = Path(__file__).resolve().parents[3]
BASE_IMAGE = os.environ.get("MLPLAT_TEST_BASE_IMAGE", "mlplat-base:bookworm")
TEST_TAGS = {"runtime": "mlplat-runtime:test", "tracker": "mlplat-tracker:test"}
WHEELHOUSE = REPO / "wheelhouse"
BUILD_LOCK = Path(tempfile.gettempdir()) / "mlplat-test-images.lock"


@pytest.fixture(scope="session")
def docker_client() -> docker.DockerClient:
    """The engine (``scripts/ensure-docker.sh`` starts one); a clear error, not a skip, without."""
    from mlplat_tui.docker.engine import connect

    return connect()


@pytest.fixture(scope="session")
def mlplat_images(docker_client: docker.DockerClient) -> dict[str, Any]:
    """``{"runtime": tag, "tracker": tag, "built": [BuiltImage...], "seconds": float}``."""
    from mlplat_tui.docker.images import build_images

    begun = time.monotonic()
    with open(BUILD_LOCK, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            if BASE_IMAGE == "mlplat-base:bookworm":
                _run([str(REPO / "scripts" / "make-base-image.sh"), BASE_IMAGE])
            _run([str(REPO / "scripts" / "build-wheelhouse.sh"), str(WHEELHOUSE)])
            built = build_images(
                tags=TEST_TAGS,
                base_image=BASE_IMAGE,
                wheelhouse=WHEELHOUSE,
                client=docker_client,
                only_if_changed=True,
            )
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
    return {**TEST_TAGS, "built": built, "seconds": time.monotonic() - begun}


def _run(cmd: list[str]) -> None:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")


def remove_project_objects(client: docker.DockerClient, name: str) -> None:
    """Everything labelled for project ``name``: containers, networks, volumes."""
    import docker

    label = {"label": f"io.mlplat.project={name}"}
    for c in client.containers.list(all=True, filters=label):
        with contextlib.suppress(docker.errors.DockerException):
            c.remove(force=True)
    for n in client.networks.list(filters=label):
        with contextlib.suppress(docker.errors.DockerException):
            n.remove()
    for v in client.volumes.list(filters=label):
        with contextlib.suppress(docker.errors.DockerException):
            v.remove(force=True)


def write_project(root: Path, name: str, sample: str | None = None, **stack: Any) -> Project:
    """A project named ``name`` in ``root``: a copy of ``sample_projects/<sample>``, else a minimal
    one; ``[stack]`` gets the docker backend, free ports and ``stack``."""
    settings = {"backend": "docker", "port_base": free_port_base(), **stack}
    lines = [f"{k} = {v!r}" if not isinstance(v, str) else f'{k} = "{v}"' for k, v in settings.items()]
    if sample:
        ignore = shutil.ignore_patterns(".mlplat", "__pycache__", "out")
        shutil.copytree(REPO / "sample_projects" / sample, root, ignore=ignore)
        text = (root / "mlplat.toml").read_text()
        assert "[stack]" not in text, "the sample sets [stack] itself: merge instead of appending"
        # The first `name =` is [project] name: unique, so container names never clash.
        text = re.sub(r'(?m)^name = "[^"]*"', f'name = "{name}"', text, count=1)
    else:
        root.mkdir(parents=True, exist_ok=True)
        text = f'[project]\nname = "{name}"\n\n[model]\nname = "m"\n'
    (root / "mlplat.toml").write_text(text + "\n[stack]\n" + "\n".join(lines) + "\n")
    return load_project(root)


@pytest.fixture
def docker_project(tmp_path: Path, docker_client: docker.DockerClient) -> Iterator[Callable[..., Project]]:
    """``make(sample=None, **stack)`` -> a project (a copy of that sample, else minimal) with a
    unique name and free ports, on the test images;
    whatever docker objects carry its name are removed afterwards, whatever the test did."""
    made: list[str] = []

    def make(sample: str | None = None, **stack: Any) -> Project:
        name = f"t{uuid.uuid4().hex[:10]}"
        made.append(name)
        stack = {"runtime_image": TEST_TAGS["runtime"], "tracker_image": TEST_TAGS["tracker"], **stack}
        return write_project(tmp_path / name, name, sample, **stack)

    yield make
    for name in made:
        remove_project_objects(docker_client, name)


def project_objects(client: docker.DockerClient, name: str) -> dict[str, list[str]]:
    """Names of the containers, networks and volumes labelled for project ``name``."""
    label = {"label": f"io.mlplat.project={name}"}
    return {
        "containers": sorted(c.name for c in client.containers.list(all=True, filters=label)),
        "networks": sorted(n.name for n in client.networks.list(filters=label)),
        "volumes": sorted(v.name for v in client.volumes.list(filters=label)),
    }
