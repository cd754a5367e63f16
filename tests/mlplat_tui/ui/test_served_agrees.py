"""The dashboard and ``mlplat runs --json`` give one answer to "which run serves, on which target".

A real metadata service (on the project's metadata port, saying it is this project's) holds
three runs and deployments on two targets: ``local`` serves run B (it replaced A), ``prod``
serves run A (pushed there last), and run C's local deploy failed. The dashboard had its own
SQL and asked for the current deployment without a target, so the prod push marked A as
serving locally.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mlplat_runtime.metadata.records import DeploymentRecord, RunRecord
from mlplat_tui.clients.metadata import MetadataClient
from mlplat_tui.deploy.serve import LOCAL
from mlplat_tui.project.config import Project, load_project
from mlplat_tui.stack.base import Ports
from mlplat_tui.ui.app import DashboardApp
from mlplat_tui.ui.data import DashboardData
from mlplat_tui.ui.main_screen import MainScreen
from mlplat_tui.ui.runs_table import RunsTable
from mlplat_tui.ui.snapshots import LOCAL_TARGET, RunsQuery
from tests.helpers.stack import copy_sample
from tests.mlplat_tui.ui.conftest import rows_of, wait_until

pytestmark = [pytest.mark.integration]

A, B, C = "a" * 32, "b" * 32, "c" * 32


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return load_project(copy_sample("churn", tmp_path))


@contextlib.contextmanager
def _service(project: Project, log_path: Path, module: str, health_url: str, *args: str) -> Iterator[None]:
    """``python -m <module> <args>`` started for this project, until ``health_url`` answers 200."""
    with log_path.open("wb") as log:
        identity = ("--project", project.name, "--project-root", str(project.root))
        process = subprocess.Popen([sys.executable, "-m", module, *args, *identity], stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 60
            with httpx.Client(timeout=2, trust_env=False) as http:
                while True:
                    assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()
                    try:
                        if http.get(health_url).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    time.sleep(0.1)
            yield
        finally:
            process.terminate()
            process.wait(15)


@pytest.fixture
def metadata(project: Project, tmp_path: Path) -> Iterator[str]:
    """The real metadata service on the project's port, answering for this project."""
    ports = Ports.from_project(project)
    url = f"http://127.0.0.1:{ports.metadata}"
    db = str(tmp_path / "meta.duckdb")
    args = ("--db", db, "--host", "127.0.0.1", "--port", str(ports.metadata))
    with _service(project, tmp_path / "metadata.log", "mlplat_runtime.metadata", f"{url}/health", *args):
        yield url


def _record(url: str, project: Project) -> None:
    model = project.config.model.name
    with MetadataClient(url) as meta:
        for run_id, version in ((A, "1"), (B, "2"), (C, "3")):
            meta.record_run(
                RunRecord(
                    run_id=run_id,
                    project=project.name,
                    model_name=model,
                    status="deployed",
                    bundle_id=f"sha256:{run_id}",
                    version=version,
                    gates_passed=True,
                )
            )

        def deploy(run_id: str, version: str, target: str, status: str = "ok") -> None:
            meta.record_deployment(
                DeploymentRecord(
                    model_name=model,
                    version=version,
                    bundle_id=f"sha256:{run_id}",
                    run_id=run_id,
                    target=target,
                    status=status,  # type: ignore[arg-type]
                )
            )

        deploy(A, "1", "local")
        deploy(B, "2", "local")
        deploy(A, "1", "prod")  # the newest deployment of all, on another target
        deploy(C, "3", "local", status="failed")


def _cli_runs(project: Project) -> dict[str, tuple[str, ...]]:
    done = subprocess.run(
        [sys.executable, "-m", "mlplat_tui", "--project", str(project.root), "runs", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    return {r["run_id"]: tuple(r["served_on"]) for r in json.loads(done.stdout)}


async def test_the_dashboard_and_mlplat_runs_agree_on_what_serves_where(
    project: Project, metadata: str
) -> None:
    assert LOCAL_TARGET == LOCAL
    _record(metadata, project)
    cli = _cli_runs(project)
    assert cli == {A: ("prod",), B: ("local",), C: ()}, cli

    data = DashboardData(project, timeout_s=5.0)
    page = data.runs(RunsQuery())
    assert page.error is None, page.error
    assert {r.run_id: r.served_on for r in page.rows} == cli
    assert [r.run_id for r in page.rows if r.served] == [B]  # served locally: B only
    assert data.run_detail(A).served_on == ("prod",) and not data.run_detail(A).served
    assert data.run_detail(B).served

    app = DashboardApp(data, poll_s=0.5)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        assert isinstance(screen, MainScreen)
        runs = screen.query_one(RunsTable)
        await wait_until(pilot, lambda: runs.grid.row_count == 3, "the three runs")
        served = {row[1]: row[-1] for row in rows_of(runs.grid)}
    assert served == {A[:12]: "on prod", B[:12]: "● serving", C[:12]: ""}, served


@pytest.fixture
def serving(project: Project, tmp_path: Path) -> Iterator[str]:
    """The real serving runtime (empty) on the project's ports, answering for this project."""
    ports = Ports.from_project(project)
    url = f"http://127.0.0.1:{ports.serving}"
    args = ("--port", str(ports.serving), "--admin-port", str(ports.admin),
            "--admin-token-file", str(tmp_path / "admin.token"))  # fmt: skip
    with _service(
        project, tmp_path / "serving.log", "mlplat_runtime.serving", f"{url}/v2/health/live", *args
    ):
        yield url


def test_services_of_another_project_on_the_ports_are_named_not_read(
    project: Project, metadata: str, serving: str, tmp_path: Path
) -> None:
    """The dashboard of a second project on the same ports refuses the first one's answers."""
    _record(metadata, project)
    other_root = copy_sample("churn", tmp_path / "other", port_base=project.config.stack.port_base)
    data = DashboardData(load_project(other_root), timeout_s=5.0)
    page = data.runs(RunsQuery())
    assert page.rows == () and page.error is not None
    assert str(project.root) in page.error and "churn" in page.error, page.error
    snap = data.serving()
    assert snap.version is None and snap.error is not None
    assert str(project.root) in snap.error, snap.error
    # its own dashboard reads both
    mine = DashboardData(project, timeout_s=5.0)
    assert len(mine.runs(RunsQuery()).rows) == 3
    assert mine.serving().error is None
