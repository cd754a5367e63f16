"""Each way ``up`` can fail on docker gives a clear StackError with a hint and leaves nothing
half-created: no engine, an engine that refuses us, a missing image, a port in use, a foreign
container with our name, a service that cannot start, a service that dies during start-up."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mlplat_runtime.errors import StackError
from mlplat_tui.stack.base import Service
from mlplat_tui.stack.docker import DockerBackend
from tests.mlplat_tui.stack.conftest import BASE_IMAGE, REPO, TEST_TAGS, project_objects

pytestmark = [pytest.mark.docker, pytest.mark.xdist_group("docker"), pytest.mark.timeout(900)]

NOTHING: dict[str, list[str]] = {"containers": [], "networks": [], "volumes": []}


def test_no_engine_says_where_it_looked(docker_project, tmp_path: Path, monkeypatch) -> None:
    project = docker_project()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    backend = DockerBackend(project)
    with pytest.raises(StackError) as err:
        backend.up()
    assert f"no Docker engine answers at unix://{tmp_path}/no-engine.sock" in str(err.value)
    assert err.value.hint and "--backend local" in err.value.hint
    with pytest.raises(StackError, match="no Docker engine"):
        backend.status()
    assert not (project.state_dir / "stack" / "admin.token").exists()


def test_engine_that_refuses_us_says_permission_denied(tmp_path: Path) -> None:
    # A socket we may not open, as a docker group we are not in makes it; root passes any
    # file permission, so as root the child drops the capabilities that let it.
    path = tmp_path / "docker.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    path.chmod(0)
    code = "from mlplat_tui.docker.engine import connect\nconnect()"
    cmd = [sys.executable, "-c", code]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv, "setpriv (util-linux) is needed to test a refused engine as root"
        cmd = [setpriv, "--bounding-set=-dac_override,-dac_read_search", *cmd]
    try:
        out = subprocess.run(
            cmd,
            env={**os.environ, "DOCKER_HOST": f"unix://{path}"},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        listener.close()
    assert out.returncode != 0
    assert f"the Docker engine at unix://{path} refused the connection: permission denied" in out.stderr
    assert "docker` group" in out.stderr


def test_missing_image_points_at_images_build(docker_project, docker_client) -> None:
    project = docker_project(runtime_image="mlplat-runtime:does-not-exist")
    with pytest.raises(StackError) as err:
        DockerBackend(project, client=docker_client).up()
    assert "mlplat-runtime:does-not-exist (for metadata, serving)" in str(err.value)
    assert err.value.hint and "mlplat images build" in err.value.hint
    assert project_objects(docker_client, project.name) == NOTHING


def test_port_in_use_creates_nothing(docker_project, docker_client, mlplat_images) -> None:
    project = docker_project()
    backend = DockerBackend(project, client=docker_client)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", backend.ports.metadata))
        squatter.listen(1)
        with pytest.raises(StackError) as err:
            backend.up()
    assert f"port 127.0.0.1:{backend.ports.metadata} is already in use" in str(err.value)
    assert err.value.hint and "port_base" in err.value.hint
    assert project_objects(docker_client, project.name) == NOTHING


def test_foreign_container_with_our_name_is_left_alone(docker_project, docker_client, mlplat_images) -> None:
    project = docker_project()
    backend = DockerBackend(project, client=docker_client)
    name = backend.container_name(Service.METADATA)
    foreign = docker_client.containers.create(BASE_IMAGE, ["sleep", "60"], name=name)
    try:
        with pytest.raises(StackError) as err:
            backend.up()
        assert f"a container named {name} already exists and is not part of mlplat" in str(err.value)
        assert err.value.hint and f"docker rm -f {name}" in err.value.hint
        assert project_objects(docker_client, project.name) == NOTHING
        foreign.reload()
        assert foreign.status == "created" and not foreign.labels
    finally:
        foreign.remove(force=True)


def test_service_that_cannot_start_is_named_and_undone(docker_project, docker_client, mlplat_images) -> None:
    # The runtime image has no mlflow: the tracker's command (`python -m mlflow`) exits at once.
    project = docker_project(tracker_image=TEST_TAGS["runtime"])
    with pytest.raises(StackError) as err:
        DockerBackend(project, client=docker_client).up()
    assert str(err.value).startswith("tracker failed to start: its container exited with status 1")
    assert "No module named mlflow" in str(err.value)
    assert project_objects(docker_client, project.name) == NOTHING


def test_service_dying_at_start_shows_its_log_and_keeps_old_data(
    docker_project, docker_client, mlplat_images
) -> None:
    project = docker_project()
    backend = DockerBackend(project, client=docker_client)
    # A metadata volume from an earlier run whose DuckDB file is damaged.
    volume = backend.volume_name(Service.METADATA)
    docker_client.volumes.create(volume, labels={"io.mlplat.project": project.name})
    docker_client.containers.run(
        TEST_TAGS["runtime"],
        ["sh", "-c", "echo garbage > /var/lib/mlplat/metadata/metadata.duckdb"],
        volumes={volume: {"bind": "/var/lib/mlplat/metadata", "mode": "rw"}},
        remove=True,
    )
    lines: list[str] = []
    with pytest.raises(StackError) as err:
        backend.up(progress=lines.append)
    message = str(err.value)
    assert message.startswith("metadata failed to start: its container exited with status 1")
    assert "not a valid DuckDB database file" in message  # the tail of its log
    assert "removed what this `up` created" in lines
    # Containers, network and the volumes this up made are gone; the old data is not.
    assert project_objects(docker_client, project.name) == {
        "containers": [],
        "networks": [],
        "volumes": [volume],
    }
