"""Bug, against the real engine: `mlplat up --backend docker`, then plain `mlplat status`
reported every service `stopped` and plain `mlplat down` printed "stack down" while the three
containers kept running. The stack now remembers its backend; `down --volumes` removes the
volumes and exactly the project's data paths."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mlplat_tui.clients.identity import fetch_identity
from mlplat_tui.stack.base import Service
from mlplat_tui.stack.docker import DockerBackend
from tests.mlplat_tui.stack.conftest import project_objects

pytestmark = [pytest.mark.docker, pytest.mark.xdist_group("docker"), pytest.mark.timeout(900)]


def mlplat(*args: str, cwd: Path, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlplat_tui", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def _local_default(project_root: Path) -> None:
    toml = project_root / "mlplat.toml"
    toml.write_text(toml.read_text().replace('backend = "docker"', 'backend = "local"'))


def test_plain_status_and_down_act_on_the_docker_stack(docker_project, docker_client, mlplat_images) -> None:
    project = docker_project()
    root = project.root
    _local_default(root)  # so only the remembered backend can point status and down at docker
    up = mlplat("up", "--backend", "docker", cwd=root)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        assert len(project_objects(docker_client, project.name)["containers"]) == 3
        backend = DockerBackend(project, client=docker_client)
        identity = fetch_identity(backend.ports.url(Service.METADATA))
        assert identity is not None and identity.project_root == str(root)

        status = mlplat("status", "--json", cwd=root)
        assert status.returncode == 0, status.stdout + status.stderr
        data = json.loads(status.stdout)
        assert data["backend"] == "docker" and data["up"], data
        assert {s["state"] for s in data["services"]} == {"running"}

        refused = mlplat("up", "--backend", "local", cwd=root)
        assert refused.returncode == 1 and "the docker stack of project" in refused.stderr, refused.stderr

        down = mlplat("down", cwd=root)
        assert down.returncode == 0, down.stderr
        assert "stack down (docker)" in down.stdout
        left = project_objects(docker_client, project.name)
        # plain down keeps the data: bundles, metadata, monitoring (the prediction log), tracker
        assert left["containers"] == [] and left["networks"] == []
        assert sorted(v.rsplit("-", 1)[-1] for v in left["volumes"]) == [
            "bundles",
            "metadata",
            "monitoring",
            "tracker",
        ], left["volumes"]

        # down --volumes: the docker volumes and the host's bundles and runs go, nothing else.
        assert mlplat("up", "--backend", "docker", cwd=root).returncode == 0
        paths = project.paths
        for folder in (paths.bundle("m", "1"), paths.run_output("r1")):
            folder.mkdir(parents=True)
            (folder / "model.onnx").write_bytes(b"x")
        gone = mlplat("down", "--volumes", cwd=root)
        assert gone.returncode == 0, gone.stderr
        nothing: dict[str, list[str]] = {"containers": [], "networks": [], "volumes": []}
        assert project_objects(docker_client, project.name) == nothing
        assert [p for p in paths.data_paths() if p.exists()] == []
        assert paths.admin_token.exists()
        assert not paths.stack_state.exists()
        assert mlplat("status", cwd=root).stdout.startswith(f"project {project.name} · backend local")
    finally:
        mlplat("down", "--backend", "docker", cwd=root)
