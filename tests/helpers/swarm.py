"""A real single-node Docker Swarm for push tests, and the clean-up of what a test put on it.

``single_node_swarm`` inits a swarm (``docker swarm init --advertise-addr 127.0.0.1``) when the
engine is not in one, and leaves it again (``docker swarm leave --force``) at the end; an engine
already in a swarm is left as it was. ``remove_swarm_objects`` removes the services, containers
and networks labelled for a test project, so nothing a test made outlives it.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import docker


def _state(client: docker.DockerClient) -> str:
    return str((client.info().get("Swarm") or {}).get("LocalNodeState") or "inactive")


@contextlib.contextmanager
def single_node_swarm(client: docker.DockerClient) -> Iterator[bool]:
    """Yields whether this helper made the swarm (and so will leave it)."""
    made = False
    if _state(client) != "active":
        out = subprocess.run(
            ["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if out.returncode != 0 and "already part of a swarm" not in out.stderr:
            raise RuntimeError(f"docker swarm init failed: {out.stderr.strip()}")
        made = out.returncode == 0
    try:
        yield made
    finally:
        if made:
            subprocess.run(
                ["docker", "swarm", "leave", "--force"], capture_output=True, timeout=120, check=False
            )


def remove_swarm_objects(client: docker.DockerClient, project: str) -> None:
    """Services, containers and networks labelled ``io.mlplat.project=<project>``."""
    import docker

    label = {"label": f"io.mlplat.project={project}"}
    for svc in client.services.list(filters=label):
        with contextlib.suppress(docker.errors.DockerException):
            svc.remove()
    for c in client.containers.list(all=True, filters=label):
        with contextlib.suppress(docker.errors.DockerException):
            c.remove(force=True)
    # A network is removable once the service's tasks are gone (they go asynchronously).
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        left = client.networks.list(filters=label)
        busy = [
            c
            for c in client.containers.list(all=True)
            if (c.labels or {}).get("com.docker.swarm.service.name", "").startswith(f"mlplat-{project}")
        ]
        for n in left:
            with contextlib.suppress(docker.errors.DockerException):
                n.remove()
        if not client.networks.list(filters=label) and not busy:
            return
        time.sleep(0.5)


def swarm_objects(client: docker.DockerClient, project: str) -> dict[str, list[str]]:
    label = {"label": f"io.mlplat.project={project}"}
    return {
        "services": sorted(s.name for s in client.services.list(filters=label)),
        "containers": sorted(c.name for c in client.containers.list(all=True, filters=label)),
        "networks": sorted(n.name for n in client.networks.list(filters=label)),
    }
