"""The stack's state on disk, without starting anything: one lock for both backends, the
backend that is up remembered, and ``down --volumes`` removing exactly the data."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlplat_runtime.errors import StackError
from mlplat_tui.project.config import Project, load_project
from mlplat_tui.stack.base import get_backend
from mlplat_tui.stack.docker import DockerBackend
from mlplat_tui.stack.local import LocalBackend
from mlplat_tui.stack.state import forget_backend, project_lock, record_backend, recorded_backend
from tests.helpers.stack import free_port_base


def _project(tmp_path: Path, backend: str = "local") -> Project:
    (tmp_path / "mlplat.toml").write_text(
        f'[project]\nname = "statetest"\n[model]\nname = "m"\n'
        f'[stack]\nbackend = "{backend}"\nport_base = {free_port_base()}\n'
    )
    return load_project(tmp_path)


def _fill(path: Path) -> None:
    if path.suffix in (".duckdb", ".wal"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"data")
    else:
        (path / "deep").mkdir(parents=True, exist_ok=True)
        (path / "deep" / "file").write_bytes(b"data")


def test_down_volumes_removes_exactly_the_data_paths(tmp_path: Path) -> None:
    """Bug: `down --volumes` deleted `.mlplat/stack/bundles` while bundles are written to
    `.mlplat/bundles`: every bundle and every `runs/` folder survived."""
    project = _project(tmp_path)
    paths = project.paths
    bundle = paths.bundle("m", "1")
    _fill(bundle)
    _fill(paths.run_output("r1"))
    for data in paths.data_paths():
        if not data.exists():
            _fill(data)
    kept = [paths.admin_token, paths.logfile("serving"), paths.push / "receipt.json", tmp_path / "train.py"]
    for path in kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("keep")
    notes: list[str] = []
    LocalBackend(project).down(volumes=True, progress=notes.append)
    assert not bundle.exists() and not paths.runs.exists()
    assert [p for p in paths.data_paths() if p.exists()] == []
    assert all(p.read_text() == "keep" for p in kept)
    assert any(n.startswith("data removed") and "bundles" in n and "runs" in n for n in notes), notes


def test_get_backend_follows_the_backend_that_is_up(tmp_path: Path) -> None:
    project = _project(tmp_path)
    assert get_backend(project).name == "local"  # nothing up: the configured default
    record_backend(project.paths, "docker")
    assert recorded_backend(project.paths) == "docker"
    assert get_backend(project).name == "docker"  # what is up, without a flag
    assert get_backend(project, "local").name == "local"  # a flag still wins
    forget_backend(project.paths, "local")  # `down --backend local` leaves docker's record
    assert get_backend(project).name == "docker"
    forget_backend(project.paths, "docker")
    assert get_backend(project).name == "local"
    project.paths.stack_state.write_text("{not json")
    assert get_backend(project).name == "local"  # a damaged record is no record


def test_both_backends_take_the_one_project_lock(tmp_path: Path) -> None:
    """Bug: local took stack/up.lock and docker stack/docker.lock, so both could start at once."""
    project = _project(tmp_path)
    with project_lock(project):
        assert project.paths.lock.read_text().strip().isdigit()
        for backend in (LocalBackend(project), DockerBackend(project)):
            with pytest.raises(StackError, match="already running for project 'statetest'"):
                backend.up()
            with pytest.raises(StackError, match="already running"):
                backend.down()
    assert not project.paths.stack_state.exists()  # nothing was brought up
