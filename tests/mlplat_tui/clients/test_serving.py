"""The serving client against answers that are not mlplat serving's (another program on the
port, answering 200): a ``ServiceError`` that says so, never a ``ValueError``/``KeyError``
escaping the deploy use case or ``up``. The client is the real one; the program on the port is
a small real HTTP server (``tests.fakes.http.StubServer``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from mlplat_runtime.errors import ServiceError, UsageError
from mlplat_tui.clients.serving import ServingAdmin, model_metadata
from mlplat_tui.deploy.restore import up_and_restore
from mlplat_tui.deploy.serve import BundleToServe, DeployOutcome, LocalTarget, serve_bundle
from mlplat_tui.project.config import Project, load_project
from mlplat_tui.stack.base import Ports, StackStatus
from tests.fakes.http import Route, StubServer

LOAD = "/v2/repository/models/m/load"
NOT_OURS: dict[str, Route] = {
    "html": (200, b"<html><body>hello</body></html>"),
    "other json": (200, {"ok": True}),
    "a list": (200, [1, 2]),
}


@pytest.fixture(params=list(NOT_OURS))
def other_program(request: pytest.FixtureRequest) -> Iterator[StubServer]:
    answer = NOT_OURS[request.param]
    with StubServer({LOAD: answer, "/v2/repository/index": answer, "/v2/models/m": answer}) as server:
        yield server


def test_load_and_index_say_the_answer_is_not_servings(other_program: StubServer) -> None:
    admin = ServingAdmin(other_program.url, "t" * 48)
    try:
        with pytest.raises(ServiceError, match=r"load of m: .*not mlplat serving's"):
            admin.load("m", "/bundles/m-v1")
        with pytest.raises(ServiceError, match=r"repository index: .*not mlplat serving's"):
            admin.index()
    finally:
        admin.close()


def test_model_metadata_says_the_answer_is_not_servings(other_program: StubServer) -> None:
    with pytest.raises(ServiceError, match=r"metadata of model m: .*not mlplat serving's"):
        model_metadata(other_program.url, "m")


def test_serve_bundle_refuses_instead_of_raising(other_program: StubServer, tmp_path: Path) -> None:
    """Bug: ``data["name"]`` raised KeyError out of ``serve_bundle`` (the cycle ended in a crash)."""
    admin = ServingAdmin(other_program.url, "t" * 48)
    bundle = BundleToServe("m", "1", "sha256:abc", tmp_path / "m-v1", run_id="r1")
    try:
        result = serve_bundle(LocalTarget(admin, str), bundle, metadata=None)
    finally:
        admin.close()
    assert result.outcome is DeployOutcome.REFUSED and "not mlplat serving's" in result.reason


@dataclass
class _UpBackend:
    """A backend whose ``up`` finds the stack up already: what ``up_and_restore`` asks of one."""

    project: Project
    ports: Ports

    def up(self, progress: object) -> StackStatus:
        return StackStatus(project=self.project.name, backend="local", services=())


def test_up_and_restore_reports_instead_of_raising(other_program: StubServer, tmp_path: Path) -> None:
    (tmp_path / "mlplat.toml").write_text(
        '[project]\nname = "m"\n[train]\ncommand = "true"\n[model]\nname = "m"\n'
    )
    port = urlsplit(other_program.url).port or 0
    backend = _UpBackend(load_project(tmp_path), Ports("127.0.0.1", port, port, port, port))
    said: list[str] = []
    up_and_restore(backend, said.append)  # type: ignore[arg-type]
    assert any("nothing restored" in s and "not mlplat serving" in s for s in said), said


def test_the_admin_token_is_read_by_the_hardened_reader(tmp_path: Path) -> None:
    """Bug: ``from_token_file`` used a plain ``read_text``: it followed a symlink to whatever
    file it pointed at and sent that as the token."""
    real = tmp_path / "elsewhere"
    real.write_text("s" * 48)
    real.chmod(0o600)
    link = tmp_path / "admin.token"
    link.symlink_to(real)
    with pytest.raises(UsageError, match="symlink"):
        ServingAdmin.from_token_file("http://127.0.0.1:1", link)
    with pytest.raises(ServiceError, match="cannot read the serving admin token"):
        ServingAdmin.from_token_file("http://127.0.0.1:1", tmp_path / "missing.token")
    ServingAdmin.from_token_file("http://127.0.0.1:1", real).close()
