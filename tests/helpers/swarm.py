"""A real single-node Docker Swarm for push tests, and the clean-up of what a test put on it.

``single_node_swarm`` inits a swarm (``docker swarm init --advertise-addr 127.0.0.1``) when the
engine is not in one, and the last test process using it leaves it again (``docker swarm leave
--force``) at the end; an engine already in a swarm is left as it was. ``remove_swarm_objects``
removes the services, containers and networks labelled for a test project, so nothing a test
made outlives it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import docker


def _state(client: docker.DockerClient) -> str:
    return str((client.info().get("Swarm") or {}).get("LocalNodeState") or "inactive")


LOCK_DIR = Path(tempfile.gettempdir())
USERS_LOCK = LOCK_DIR / "mlplat-test-swarm.users"  # held shared by every test process using it
INIT_LOCK = LOCK_DIR / "mlplat-test-swarm.lock"  # serialises joining and leaving
MARKER = LOCK_DIR / "mlplat-test-swarm.made"  # the tests made the swarm (what to remove after)


@contextlib.contextmanager
def single_node_swarm(client: docker.DockerClient) -> Iterator[bool]:
    """Yields whether the tests made the swarm (and so the last of them leaves it).

    Several test processes (xdist workers, other sessions) may use one engine's swarm at once:
    each holds a shared lock while it does, and the process that ends last, finding no other
    holder, leaves the swarm the tests made (and removes the ``docker_gwbridge`` network that
    ``swarm init`` made and ``swarm leave`` keeps)."""
    users = open(USERS_LOCK, "a+")  # noqa: SIM115 - closed in finally
    try:
        with open(INIT_LOCK, "a+") as init:
            fcntl.flock(init, fcntl.LOCK_EX)
            fcntl.flock(users, fcntl.LOCK_SH)
            if _state(client) != "active":
                had_gwbridge = any(
                    n.name == "docker_gwbridge" for n in client.networks.list(names=["docker_gwbridge"])
                )
                out = subprocess.run(
                    ["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"],
                    capture_output=True,
                    text=True,
                    timeout=120,
                    check=False,
                )
                if out.returncode != 0 and "already part of a swarm" not in out.stderr:
                    raise RuntimeError(f"docker swarm init failed: {out.stderr.strip()}")
                if out.returncode == 0:
                    MARKER.write_text(json.dumps({"had_gwbridge": had_gwbridge}))
            made = MARKER.exists()
        yield made
    finally:
        with open(INIT_LOCK, "a+") as init:
            fcntl.flock(init, fcntl.LOCK_EX)
            fcntl.flock(users, fcntl.LOCK_UN)
            try:
                fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
                last = True
            except OSError:
                last = False  # another process still uses the swarm: it leaves it
            if last and MARKER.exists():
                had = bool(json.loads(MARKER.read_text() or "{}").get("had_gwbridge"))
                subprocess.run(
                    ["docker", "swarm", "leave", "--force"], capture_output=True, timeout=120, check=False
                )
                if not had:
                    _remove_network(client, "docker_gwbridge")
                MARKER.unlink(missing_ok=True)
        users.close()


def _remove_network(client: docker.DockerClient, name: str) -> None:
    import docker

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = [n for n in client.networks.list(names=[name]) if n.name == name]
        if not found:
            return
        try:
            found[0].remove()
            return
        except docker.errors.APIError:
            time.sleep(0.5)  # its endpoints (the ingress sandbox) go asynchronously


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
