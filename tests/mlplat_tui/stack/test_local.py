"""The local backend against real processes: mlflow server, metadata service, serving."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import httpx
import pytest

from mlplat_runtime.errors import StackError
from mlplat_tui.project.config import load_project
from mlplat_tui.stack.base import SERVICES, Service
from mlplat_tui.stack.local import LocalBackend, _pid_alive
from tests.helpers.stack import free_port_base

pytestmark = pytest.mark.integration


def _project(tmp_path: Path) -> Path:
    (tmp_path / "mlplat.toml").write_text(
        f'[project]\nname = "stacktest"\n[model]\nname = "m"\n[stack]\nport_base = {free_port_base()}\n'
    )
    return tmp_path


def test_up_is_idempotent_and_down_leaves_nothing(tmp_path: Path) -> None:
    backend = LocalBackend(load_project(_project(tmp_path)))
    lines: list[str] = []
    try:
        status = backend.up(progress=lines.append)
        assert status.up, status
        assert {s.name for s in status.services} == set(SERVICES)
        assert any("healthy" in line for line in lines)
        for svc in status.services:
            assert svc.address.startswith("http://127.0.0.1:")
            assert svc.ident and _pid_alive(int(svc.ident))
            assert httpx.get(backend.health_url(svc.name), timeout=2).status_code == 200
        pids = {s.name: s.ident for s in status.services}
        # the admin token exists and is private
        assert oct(backend.admin_token_file.stat().st_mode & 0o777) == "0o600"

        again: list[str] = []
        status2 = backend.up(progress=again.append)
        assert {s.name: s.ident for s in status2.services} == pids
        assert all("already running" in line for line in again)
        assert list(backend.logs(Service.METADATA, tail=50)), "metadata log is empty"
    finally:
        backend.down()
    after = backend.status()
    assert not after.up
    assert all(s.state == "stopped" for s in after.services)
    for pid in pids.values():
        assert pid is not None and not _pid_alive(int(pid))


def test_port_in_use_is_refused_before_anything_starts(tmp_path: Path) -> None:
    backend = LocalBackend(load_project(_project(tmp_path)))
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", backend.ports.serving))
        blocker.listen(1)
        with pytest.raises(StackError) as err:
            backend.up()
    assert f"port 127.0.0.1:{backend.ports.serving} is already in use" in str(err.value)
    assert "port_base" in str(err.value)
    assert all(backend.read_pid(s) is None for s in SERVICES)


def test_service_that_dies_at_start_stops_the_others(tmp_path: Path) -> None:
    backend = LocalBackend(load_project(_project(tmp_path)))
    # A folder where the DuckDB file should be: the metadata service cannot open it.
    backend.metadata_db.mkdir(parents=True)
    (backend.metadata_db / "x").write_text("not a database")
    with pytest.raises(StackError) as err:
        backend.up()
    assert "metadata" in str(err.value)
    assert "log" in str(err.value)
    for s in SERVICES:
        assert backend.read_pid(s) is None
    # nothing of ours still listens
    for port in (backend.ports.tracker, backend.ports.metadata, backend.ports.serving):
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0
    assert os.path.isdir(backend.metadata_db)  # nothing of the user's was removed


def test_a_stale_pidfile_never_signals_someone_elses_process(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    backend = LocalBackend(load_project(_project(tmp_path)))
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        backend.dir.mkdir(parents=True)
        # What a pidfile from before a reboot looks like: a pid now used by another program.
        backend.pidfile(Service.SERVING).write_text(
            json.dumps({"pid": stranger.pid, "port": 1, "started_at": 0, "command": ["x"], "created": 1.0})
        )
        assert backend.status().service(Service.SERVING).state == "stopped"  # type: ignore[union-attr]
        backend.down()
        assert stranger.poll() is None, "down killed a process that was not ours"
    finally:
        stranger.kill()
        stranger.wait()
