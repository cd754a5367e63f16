"""The client factory asks whose each service is before using it (``StackConnector``).

The services here are small real HTTP servers (``tests.fakes.http.StubServer``) standing in for
another project's stack or an MLflow on our ports; the clients and the factory are the real ones.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlplat_runtime.errors import StackError
from mlplat_runtime.identity import StackIdentity
from mlplat_tui.clients.factory import Endpoints, StackConnector, connect_admin
from mlplat_tui.project.config import Project, load_project
from tests.fakes.http import StubServer

TOML = '[project]\nname = "tiny"\n\n[train]\ncommand = "true"\n\n[model]\nname = "tiny"\n'
_EXPERIMENT = {
    "experiment": {"experiment_id": "7", "name": "tiny", "artifact_location": "", "lifecycle_stage": "active"}
}


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def _identity(name: str, root: Path, service: str) -> dict[str, object]:
    return StackIdentity(project=name, project_root=str(root), service=service).model_dump()


@pytest.fixture
def project(tmp_path: Path) -> Project:
    root = tmp_path / "tiny"
    root.mkdir()
    (root / "mlplat.toml").write_text(TOML)
    loaded = load_project(root)
    token = loaded.paths.admin_token
    token.parent.mkdir(parents=True, exist_ok=True)
    token.write_text("t" * 48)
    os.chmod(token, 0o600)
    return loaded


@pytest.fixture
def stubs(project: Project, tmp_path: Path) -> Iterator[dict[str, StubServer]]:
    ours = _identity("tiny", project.root, "metadata")
    servers = {
        "metadata": StubServer({"/health": (200, {"status": "ok"}), "/identity": (200, ours)}),
        "serving": StubServer({"/identity": (200, _identity("tiny", project.root, "serving"))}),
        "admin": StubServer({"/v2/repository/index": (200, [])}),
        "tracker": StubServer(
            {"/health": (200, b"OK"), "/api/2.0/mlflow/experiments/get-by-name": (200, _EXPERIMENT)}
        ),
    }
    yield servers
    for server in servers.values():
        server.close()


def _endpoints(project: Project, urls: dict[str, str]) -> Endpoints:
    return Endpoints(
        tracker=urls["tracker"],
        metadata=urls["metadata"],
        admin=urls["admin"],
        admin_token=project.paths.admin_token,
        serving=urls["serving"],
        project=project,
    )


def _urls(stubs: dict[str, StubServer]) -> dict[str, str]:
    return {name: server.url for name, server in stubs.items()}


def test_our_stack_gives_every_client(project: Project, stubs: dict[str, StubServer]) -> None:
    connector = StackConnector(project, _endpoints(project, _urls(stubs)))
    try:
        clients = connector.connect()
        assert clients.metadata is not None and clients.admin is not None and clients.tracker is not None
        assert "/identity" in stubs["serving"].paths
    finally:
        connector.close()


def test_serving_of_another_project_is_not_used(
    project: Project, stubs: dict[str, StubServer], tmp_path: Path
) -> None:
    """Bug: only the metadata service's identity was checked; our bundles went to the admin
    port of whatever serving held it."""
    other = tmp_path / "demo"
    stubs["serving"].routes["/identity"] = (200, _identity("demo", other, "serving"))
    endpoints = _endpoints(project, _urls(stubs))
    connector = StackConnector(project, endpoints)
    try:
        with pytest.raises(StackError, match="answers for project 'demo'"):
            connector.connect()
    finally:
        connector.close()
    with pytest.raises(StackError, match="answers for project 'demo'"):
        connect_admin(endpoints)
    assert stubs["admin"].paths == []  # the admin port was never asked anything


def test_serving_without_an_identity_is_not_refused(project: Project, stubs: dict[str, StubServer]) -> None:
    del stubs["serving"].routes["/identity"]
    admin = connect_admin(_endpoints(project, _urls(stubs)))
    assert admin is not None
    admin.close()


def test_no_tracker_when_the_metadata_service_cannot_confirm_the_stack(
    project: Project, stubs: dict[str, StubServer]
) -> None:
    """Bug: with the metadata service down, an MLflow on our tracker port (maybe another
    project's) got this project's runs."""
    urls = _urls(stubs) | {"metadata": _closed_port_url()}
    connector = StackConnector(project, _endpoints(project, urls))
    try:
        clients = connector.connect()
        assert clients.metadata is None and clients.tracker is None
        assert any("tracker" in n and "not used" in n and "confirm" in n for n in clients.notes)
        assert not [p for p in stubs["tracker"].paths if p.startswith("/api/")]

        # A metadata service that answers but does not say whose it is confirms nothing either.
        del stubs["metadata"].routes["/identity"]
        connector.endpoints = _endpoints(project, _urls(stubs))
        clients = connector.connect()
        assert clients.metadata is not None and clients.tracker is None
    finally:
        connector.close()
