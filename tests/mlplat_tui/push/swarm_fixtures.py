"""Fixtures of the swarm engine's tests (imported by ``test_swarm*.py`` and ``test_image*.py``):
a real single-node Swarm, a real image registry, the runtime test image, bundle images.

Everything a test makes carries its project's label and is removed at the end (services, the
edge container, the overlay network, the pushed images on the engine, the registry process
and its storage); the swarm is left when these fixtures made it.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from mlplat_runtime.bundle import open_bundle
from mlplat_tui.project.config import Project, load_project
from mlplat_tui.push.credentials import Credentials
from mlplat_tui.push.engine import ImageRef
from tests.helpers.models import make_bundle, make_logreg_onnx
from tests.helpers.ports import free_port
from tests.helpers.registry import RunningRegistry, started_registry
from tests.helpers.swarm import remove_swarm_objects, single_node_swarm

if TYPE_CHECKING:
    import docker

RUNTIME_TEST_IMAGE = "mlplat-runtime:test"  # tests/mlplat_tui/stack/conftest.py's mlplat_images


@pytest.fixture(scope="module")
def swarm(docker_client: docker.DockerClient) -> Iterator[docker.DockerClient]:
    with single_node_swarm(docker_client):
        yield docker_client


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    with started_registry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


def write_swarm_project(root: Path, registry: str, port: int, **target: Any) -> Project:
    name = f"sw{uuid.uuid4().hex[:8]}"
    settings: dict[str, Any] = {
        "kind": "swarm",
        "stage": "prod",
        "registry": "http://127.0.0.1:5000",
        "image_registry": registry,
        "docker_host": "unix:///var/run/docker.sock",
        "replicas": 2,
        "publish": "edge",
        "port": port,
        **target,
    }
    lines = []
    for key, value in settings.items():
        if isinstance(value, dict):
            inner = ", ".join(
                f'{k} = "{v}"' if isinstance(v, str) else f"{k} = {v}" for k, v in value.items()
            )
            lines.append(f"{key} = {{ {inner} }}")
        elif isinstance(value, str):
            lines.append(f'{key} = "{value}"')
        else:
            lines.append(f"{key} = {value}")
    root.mkdir(parents=True, exist_ok=True)
    (root / "mlplat.toml").write_text(
        f'[project]\nname = "{name}"\n\n[model]\nname = "m"\n\n[targets.prod]\n' + "\n".join(lines) + "\n"
    )
    return load_project(root)


@pytest.fixture
def swarm_project(
    tmp_path: Path, swarm: docker.DockerClient, registry: RunningRegistry
) -> Iterator[Callable[..., Project]]:
    made: list[str] = []

    def make(**target: Any) -> Project:
        project = write_swarm_project(tmp_path / f"p{len(made)}", registry.address, free_port(), **target)
        made.append(project.name)
        return project

    yield make
    for name in made:
        remove_swarm_objects(swarm, name)


def bundle(tmp: Path, version: str, seed: int) -> tuple[Path, str]:
    """A bundle of a logistic regression (``seed`` makes the weights); its path and bundle id."""
    model = make_logreg_onnx(tmp / f"src-{version}" / "model.onnx", seed=seed)
    path = make_bundle(tmp, name="m", version=version, model=model, out=tmp / f"bundle-{version}")
    return path, open_bundle(path).manifest.bundle_id


def broken_copy(src: Path, dest: Path) -> Path:
    """The bundle with its samples altered after the build: serving refuses it at start (the
    checksums no longer match), so its replicas never turn ready."""
    import shutil

    shutil.copytree(src, dest)
    samples = dest / "samples.npz"
    data = bytearray(samples.read_bytes())
    data[-40] ^= 0xFF
    samples.write_bytes(bytes(data))
    return dest


def remove_pushed(client: docker.DockerClient, refs: list[ImageRef]) -> None:
    import docker

    for ref in refs:
        # By id: removing the tag alone leaves the image behind, still named by its digest.
        for name in (f"{ref.repository}:{ref.tag}", ref.pinned):
            with contextlib.suppress(docker.errors.DockerException):
                client.images.remove(client.images.get(name).id, force=True)


def creds(user: str, password: str) -> Credentials:
    return Credentials(username=user, secret=password, source="test")
