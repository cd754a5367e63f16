"""``mlplat push``, ``status --target --at``, ``rollback --target`` and ``fleet`` as a user runs
them (subprocesses): two projects, each with its own metadata store, pushing to two local
targets (real second stacks)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mlplat_tui.project.config import load_project
from mlplat_tui.push.local import LocalEngine
from tests.helpers.metadata import start_metadata
from tests.mlplat_tui.cli.test_cli import mlplat
from tests.mlplat_tui.push.push_helpers import bundle, local_target, write_project

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _metadata_for(root: Path):  # type: ignore[no-untyped-def]
    project = load_project(root)
    return start_metadata(
        root / ".mlplat" / "stack" / "metadata.duckdb", port=project.config.stack.port_base + 1
    )


@pytest.fixture()
def two_projects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Path]]:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    shop = write_project(
        tmp_path / "shop",
        name="shop",
        targets=local_target("staging", extra='gates = { "metrics.roc_auc" = ">= 0.85" }'),
    )
    bank = write_project(
        tmp_path / "bank", name="bank", model="fraud", targets=local_target("prod", stage="prod")
    )
    services = [_metadata_for(shop), _metadata_for(bank)]
    try:
        yield shop, bank
    finally:
        for service in services:
            service.stop()
        for root in (shop, bank):
            project = load_project(root)
            for name, target in project.config.targets.items():
                LocalEngine(project, name, target).backend.down()  # type: ignore[arg-type]


def _json(out) -> dict:  # type: ignore[no-untyped-def]
    return json.loads(out.stdout)


def test_push_status_at_rollback_and_fleet(two_projects: tuple[Path, Path]) -> None:
    shop, bank = two_projects
    bundle(shop, "1", auc=0.90, seed=1)
    first = mlplat("push", "--target", "staging", "--json", cwd=shop, timeout=300)
    assert first.returncode == 0, first.stderr + first.stdout
    assert _json(first)["outcome"] == "completed" and _json(first)["version"] == "1"
    assert "[1/8 verify]" in first.stderr and "[7/8 alias]" in first.stderr and "{" not in first.stderr
    time.sleep(1.0)
    between = datetime.now(UTC).isoformat()
    time.sleep(1.0)
    bundle(shop, "2", auc=0.91, seed=2)
    second = mlplat("push", "latest", "--target", "staging", "--json", cwd=shop, timeout=300)
    assert second.returncode == 0 and _json(second)["previous_version"] == "1", second.stderr

    weak = bundle(shop, "3", auc=0.81, seed=3)
    rejected = mlplat("push", str(weak), "--target", "staging", cwd=shop, timeout=300)
    assert rejected.returncode == 3, rejected.stderr + rejected.stdout
    assert "rejected" in rejected.stdout and "metrics.roc_auc" in rejected.stdout

    then = mlplat("status", "--target", "staging", "--at", between, "--json", cwd=shop)
    assert then.returncode == 0, then.stderr
    assert _json(then)["serving"]["version"] == "1"
    status_now = mlplat("status", "--target", "staging", "--json", cwd=shop)
    assert status_now.returncode == 0, status_now.stderr
    now = _json(status_now)
    assert now["serving"]["version"] == "2" and "@" in now["serving"]["pushed_by"]
    assert now["serving"]["registry_version"] and now["serving"]["receipt"]
    assert now["live"]["health"] == "healthy" and now["live"]["version"] == "2", now["live"]
    table = mlplat("status", "--target", "staging", cwd=shop)
    assert table.returncode == 0 and "v2" in table.stdout and "since" in table.stdout

    back = mlplat("rollback", "--target", "staging", "--to", "v1", "--json", cwd=shop, timeout=300)
    assert back.returncode == 0, back.stderr + back.stdout
    assert _json(back)["action"] == "rollback" and _json(back)["serving_version"] == "1"
    targets_out = mlplat("targets", "--json", cwd=shop)
    assert targets_out.returncode == 0, targets_out.stderr
    listed = {r["name"]: r for r in _json(targets_out)}
    assert listed["staging"]["serves"]["version"] == "1"
    assert listed["staging"]["live"] == {"version": "1", "replicas": 1, "healthy": 1, "health": "healthy"}
    unknown = mlplat("rollback", "--target", "staging", "--to", "9", cwd=shop)
    assert unknown.returncode != 0 and "never served version 9" in unknown.stderr

    bundle(bank, "1", auc=0.95, seed=4, model="fraud")
    pushed = mlplat("push", "--target", "prod", "--json", cwd=bank, timeout=300)
    assert pushed.returncode == 0, pushed.stderr

    fleet = mlplat("fleet", "--json", cwd=bank)
    assert fleet.returncode == 0, fleet.stderr
    rows = {(r["project"], r["target"]): r for r in _json(fleet)}
    assert len(rows) == 2, fleet.stdout
    assert set(rows) == {("shop", "staging"), ("bank", "prod")}
    assert (rows["shop", "staging"]["version"], rows["shop", "staging"]["health"]) == ("1", "healthy"), rows
    assert (
        rows["bank", "prod"]["model"],
        rows["bank", "prod"]["stage"],
        rows["bank", "prod"]["version"],
    ) == (
        "fraud",
        "prod",
        "1",
    )
    table = mlplat("fleet", cwd=bank)
    assert "2 model(s) serving on 2 target(s)" in table.stdout


def test_push_to_an_unknown_target_is_a_usage_error(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p")
    out = mlplat("push", "--target", "nope", cwd=root)
    assert out.returncode == 2 and "no target 'nope'" in out.stderr
    help_text = mlplat("push", "--help", cwd=root)
    assert help_text.returncode == 0 and "rolled back" in help_text.stdout and "--dry-run" in help_text.stdout
