"""Two projects on the same ports, one stack up: the services say whose they are, and every
command of the other project refuses them by name instead of reading the wrong project's data.
Also: the stack remembers its backend, `status` says what serves, and the local tracker runs
without MLflow's job runner. Real processes, driven through the `mlplat` command."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import psutil
import pytest

from mlplat_runtime.errors import AuthError
from mlplat_runtime.metadata.records import DeploymentRecord
from mlplat_tui.clients.identity import check_identity, fetch_identity
from mlplat_tui.clients.metadata import MetadataClient
from mlplat_tui.clients.serving import ServingAdmin
from mlplat_tui.project.config import load_project
from mlplat_tui.stack.base import Service
from mlplat_tui.stack.local import LocalBackend
from tests.helpers.models import make_bundle
from tests.helpers.stack import free_port_base

pytestmark = pytest.mark.integration


def mlplat(*args: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlplat_tui", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def _write(root: Path, name: str, base: int) -> Path:
    root.mkdir(parents=True)
    (root / "mlplat.toml").write_text(
        f'[project]\nname = "{name}"\n[model]\nname = "m"\n[stack]\nport_base = {base}\n'
    )
    return root


def test_a_stack_of_another_project_is_named_never_used(tmp_path: Path) -> None:
    base = free_port_base()
    holder = _write(tmp_path / "x" / "holder", "holder", base)
    other = _write(tmp_path / "y" / "other", "other", base)
    up = mlplat("up", cwd=holder)
    assert up.returncode == 0, up.stderr
    try:
        backend = LocalBackend(load_project(holder))
        for service in (Service.METADATA, Service.SERVING):
            identity = fetch_identity(backend.ports.url(service))
            assert identity is not None, service
            assert (identity.project, identity.project_root) == ("holder", str(holder))
        check_identity(backend.ports.url(Service.METADATA), load_project(holder))  # ours: no error

        # Every read command of the other project refuses, naming the holder and its folder.
        for args in (("runs",), ("show", "some-run"), ("sql", "SELECT 1 AS n")):
            out = mlplat(*args, cwd=other)
            assert out.returncode == 1, (args, out.stdout, out.stderr)
            assert "answers for project 'holder'" in out.stderr and str(holder) in out.stderr, out.stderr
            assert f"mlplat --project {holder} down" in out.stderr
        status = mlplat("status", cwd=other)
        assert status.returncode == 3
        assert f"held by project 'holder' ({holder})" in status.stdout, status.stdout
        data = json.loads(mlplat("status", "--json", cwd=other).stdout)
        assert data["held_by"] == {"project": "holder", "project_root": str(holder)} and not data["up"]
        refused = mlplat("up", cwd=other)
        assert refused.returncode == 1
        assert "answers for project 'holder'" in refused.stderr and str(holder) in refused.stderr
        assert "another program" not in refused.stderr

        # The holder's own stack: remembered as local, so docker is refused without an engine.
        assert json.loads(backend.paths.stack_state.read_text())["backend"] == "local"
        docker = mlplat("up", "--backend", "docker", cwd=holder)
        assert docker.returncode == 1
        assert "the local stack of project 'holder' is up" in docker.stderr
        assert "mlplat down" in docker.stderr

        # The tracker runs without MLflow's job runner and its huey consumers.
        tracker = psutil.Process(int(backend.read_pid(Service.TRACKER).pid))  # type: ignore[union-attr]
        tree = [tracker, *tracker.children(recursive=True)]
        assert not [p for p in tree if "huey" in " ".join(p.cmdline())], [p.cmdline() for p in tree]

        # What serves: nothing yet; then a loaded, recorded deployment with its version and time.
        assert json.loads(mlplat("status", "--json", cwd=holder).stdout)["serving"] is None
        bundle = make_bundle(tmp_path, name="m", version="3")
        admin = ServingAdmin.from_token_file(backend.ports.url("admin"), backend.admin_token_file)
        loaded = admin.load("m", str(bundle))
        admin.close()
        with MetadataClient(
            backend.ports.url(Service.METADATA), token_file=backend.paths.metadata_token
        ) as meta:
            recorded = meta.record_deployment(
                DeploymentRecord(model_name="m", version=loaded.version, bundle_id=loaded.bundle_id)
            )
        with MetadataClient(backend.ports.url(Service.METADATA)) as anonymous, pytest.raises(AuthError):
            anonymous.record_event({"kind": "note", "message": "writes need the stack's token"})
        shown = mlplat("status", "--json", cwd=holder)
        assert shown.returncode == 0, shown.stderr
        serving = json.loads(shown.stdout)["serving"]
        assert serving["model"] == "m" and serving["version"] == loaded.version
        assert serving["bundle_id"] == loaded.bundle_id
        assert datetime.fromisoformat(serving["since"]) == recorded.ts
        table = mlplat("status", cwd=holder).stdout
        assert f"m v{loaded.version} since" in table, table
    finally:
        down = mlplat("down", cwd=holder)
    assert down.returncode == 0, down.stderr
    assert "stack down (local)" in down.stdout
    assert not (holder / ".mlplat" / "stack" / "stack.json").exists()
