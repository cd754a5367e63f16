"""Pilot tests of the Targets panel, push and rollback as dashboard actions, and the fleet
screen, over real parts: the churn sample's local stack with real training cycles, two
``local`` targets (second local stacks, each with its own mlflow registry, metadata and
serving, started by the first push), the real push pipeline and this user's fleet index (in
a temporary ``XDG_STATE_HOME``). No Docker.

The tests run in order on one world: push v1 to staging, a push prod's gates refuse, v2 to
staging and a rollback to v1, then the fleet.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from textual.pilot import Pilot
from textual.widgets import RichLog

from mlplat_tui.project.config import Project, load_project
from mlplat_tui.push.local import LocalEngine
from mlplat_tui.stack.local import LocalBackend
from mlplat_tui.ui.app import DashboardApp
from mlplat_tui.ui.confirm import ConfirmModal
from mlplat_tui.ui.data import DashboardData
from mlplat_tui.ui.fleet_screen import FleetScreen
from mlplat_tui.ui.main_screen import MainScreen
from mlplat_tui.ui.targets_data import TargetsData
from mlplat_tui.ui.targets_panel import TargetsPanel
from tests.helpers.stack import copy_sample, free_port_base, relax_latency_gate
from tests.mlplat_tui.ui.conftest import notifications, rows_of, text_of, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.xdist_group("ui-targets")]

MODEL = "churn-classifier"
PUSH_TIMEOUT_S = 400.0  # the first push to a target starts its stack (an mlflow server) on 2 busy cores


@dataclass
class World:
    root: Path
    project: Project
    backend: LocalBackend
    state: Path  # XDG_STATE_HOME: this user's fleet index lives under it
    runs: list[tuple[str, str]]  # (run id, version) of each trained run, oldest first

    def train(self) -> tuple[str, str]:
        from mlplat_tui.cycle.pipeline import run_cycle

        result = run_cycle(self.project, backend=self.backend)
        assert result.bundle_id and result.run_id and result.version, result.error
        self.runs.append((result.run_id, result.version))
        return result.run_id, result.version

    def engine(self, target: str) -> LocalEngine:
        return LocalEngine(self.project, target, self.project.config.targets[target])  # type: ignore[arg-type]

    def serving_version(self, target: str) -> str | None:
        resp = httpx.get(
            f"{self.engine(target).endpoint(MODEL)}/v2/models/{MODEL}", timeout=10, trust_env=False
        )
        return resp.json()["versions"][0] if resp.status_code == 200 else None


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("ui-targets")
    root = copy_sample("churn", base)
    relax_latency_gate(root)
    with (root / "mlplat.toml").open("a") as fh:
        fh.write(
            f"""
[targets.staging]
kind = "local"
stage = "staging"
port_base = {free_port_base()}

[targets.prod]
kind = "local"
stage = "prod"
requires = "staging"
port_base = {free_port_base()}
gates = {{ "metrics.roc_auc" = ">= 0.9999" }}
"""
        )
    state = base / "state"
    project = load_project(root)
    backend = LocalBackend(project)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_STATE_HOME", str(state))
        try:
            backend.up()
            w = World(root, project, backend, state, [])
            w.train()
            yield w
        finally:
            for name in ("staging", "prod"):
                LocalEngine(project, name, project.config.targets[name]).backend.down()  # type: ignore[arg-type]
            backend.down()


def _app(world: World) -> DashboardApp:
    return DashboardApp(DashboardData(world.project), poll_s=0.5)


def _main(app: DashboardApp) -> MainScreen:
    assert isinstance(app.screen, MainScreen)
    return app.screen


async def _ready(pilot: Pilot[Any], app: DashboardApp) -> TargetsPanel:
    screen = _main(app)
    panel = screen.query_one(TargetsPanel)
    await wait_until(pilot, lambda: panel.snapshot is not None, "the targets read")
    return panel


async def _select(pilot: Pilot[Any], app: DashboardApp, run_id: str, target: str) -> None:
    screen = _main(app)
    grid = screen.runs.grid
    await wait_until(pilot, lambda: run_id in [str(k.value) for k in grid.rows], f"run {run_id} listed")
    grid.move_cursor(row=grid.get_row_index(run_id), animate=False)
    panel = screen.query_one(TargetsPanel)
    panel.grid.move_cursor(row=panel.names.index(target), animate=False)
    await pilot.pause(0.05)
    assert screen.runs.selected_run_id == run_id and panel.selected == target


async def _confirm_and_follow(pilot: Pilot[Any], app: DashboardApp, target: str, title: str) -> list[str]:
    """Answer yes to the confirm modal titled ``title``; every progress line seen until the end."""
    await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal), "the confirm modal")
    assert text_of(app.screen).count(title) == 1, text_of(app.screen)
    screen = app.main_screen
    panel = screen.query_one(TargetsPanel)
    before = panel.activity.get(target)
    await pilot.press("y")
    seen: list[str] = []

    def ended() -> bool:
        line = panel.activity.get(target)
        if line is None or line == before:
            return False  # not started yet
        if not seen or seen[-1] != line[0]:
            seen.append(line[0])
        return target not in getattr(screen, "_target_busy", {}) and not line[0].endswith("starting…")

    await wait_until(pilot, ended, f"the action on {target} to end", timeout=PUSH_TIMEOUT_S)
    return seen


async def test_push_from_the_dashboard_completes_with_live_progress(world: World) -> None:
    run_id, version = world.runs[0]
    app = _app(world)
    assert isinstance(app.targets, TargetsData) and app.targets.names == ("staging", "prod")
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        panel = await _ready(pilot, app)
        assert panel.snapshot is not None
        assert [(r.name, r.health, r.version) for r in panel.snapshot.rows] == [
            ("staging", "nothing", None),
            ("prod", "nothing", None),
        ]
        await _select(pilot, app, run_id, "staging")
        await pilot.press("p")
        seen = await _confirm_and_follow(pilot, app, "staging", f"Push v{version} to staging?")
        # the pipeline's lines arrived while it ran, then its outcome
        assert len(seen) >= 3 and any("/8 " in s or "staging stack" in s for s in seen[:-1]), seen
        assert seen[-1] == f"push v{version}: completed (v{version} serves)", seen
        done = ("information", f"v{version}: completed (v{version} serves)")
        await wait_until(pilot, lambda: done in notifications(app), "the completed toast", timeout=10)
        # every step was an event on the Events panel
        log = _main(app).events.query_one(RichLog)
        events = "\n".join(line.text for line in log.lines)
        for step in ("[1/8 verify]", "[2/8 gates]", "[5/8 rollout]", "[6/8 smoke]", "[7/8 alias]"):
            assert step in events, (step, events)
        # the panel reads the target again: it serves the version, healthy, last push completed
        await wait_until(
            pilot,
            lambda: (
                (row := panel.snapshot.row("staging")) is not None  # type: ignore[union-attr]
                and row.version == version
                and row.health == "healthy"
                and row.last is not None
                and row.last.outcome == "completed"
            ),
            "staging serving the pushed version",
        )
        cells = next(r for r in rows_of(panel.grid) if r[0] == "staging")
        assert cells[3:6] == [f"v{version}", "● healthy", "1/1"] and cells[7] == "completed", cells
        assert cells[6].startswith(f"push v{version} "), cells
    assert world.serving_version("staging") == version


async def test_a_push_the_target_gates_refuse_is_rejected_and_changes_nothing(world: World) -> None:
    run_id, version = world.runs[0]
    app = _app(world)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        panel = await _ready(pilot, app)
        await _select(pilot, app, run_id, "prod")
        await pilot.press("p")
        seen = await _confirm_and_follow(pilot, app, "prod", f"Push v{version} to prod?")
        assert seen[-1].startswith(f"push v{version}: rejected: "), seen

        def warnings() -> list[str]:
            return [m for sev, m in notifications(app) if sev == "warning"]

        rejected = f"v{version}: rejected: "
        await wait_until(
            pilot, lambda: any(m.startswith(rejected) for m in warnings()), "the toast", timeout=10
        )
        assert any(m.startswith(rejected) and "roc_auc" in m for m in warnings()), warnings()
        assert "prod: push" in text_of(panel) and "rejected" in text_of(panel)
        row = panel.snapshot.row("prod") if panel.snapshot else None
        assert row is not None and row.version is None and row.health == "nothing" and row.last is None
    # nothing changed on prod: its stack was never started
    assert not world.engine("prod").backend.status().up


async def test_rollback_from_the_dashboard_serves_the_earlier_version(world: World) -> None:
    (_, v1), (run2, v2) = world.runs[0], world.train()
    app = _app(world)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        panel = await _ready(pilot, app)
        await _select(pilot, app, run2, "staging")
        await pilot.press("p")
        seen = await _confirm_and_follow(pilot, app, "staging", f"Push v{v2} to staging?")
        assert seen[-1] == f"push v{v2}: completed (v{v2} serves)", seen
        assert world.serving_version("staging") == v2
        await wait_until(
            pilot,
            lambda: panel.snapshot is not None and panel.snapshot.row("staging").version == v2,  # type: ignore[union-attr]
            "the panel showing v2",
        )
        # z: the only other version staging served is v1, so it asks about that one directly
        await pilot.press("z")
        seen = await _confirm_and_follow(pilot, app, "staging", f"Roll staging back to v{v1}?")
        assert seen[-1] == f"rollback v{v1}: completed (v{v1} serves)", seen
        await wait_until(
            pilot,
            lambda: (
                (row := panel.snapshot.row("staging")) is not None  # type: ignore[union-attr]
                and row.version == v1
                and row.last is not None
                and (row.last.action, row.last.version, row.last.outcome) == ("rollback", v1, "completed")
            ),
            "the panel showing the rollback",
        )
    assert world.serving_version("staging") == v1


async def test_fleet_screen_lists_what_serves_on_every_target(world: World) -> None:
    app = _app(world)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await _ready(pilot, app)
        await pilot.press("f")
        await wait_until(
            pilot,
            lambda: isinstance(app.screen, FleetScreen) and app.screen.snapshot is not None,
            "the fleet",
        )
        screen = app.screen
        assert isinstance(screen, FleetScreen) and screen.snapshot is not None
        assert screen.snapshot.index == str(world.state / "mlplat" / "fleet.json")
        rows = {(r[0], r[1]): r for r in rows_of(screen.grid)}
        assert set(rows) == {("churn", "staging"), ("churn", "prod")}, rows
        v1 = world.runs[0][1]
        assert rows["churn", "staging"][5:7] == [f"v{v1}", "1/1"] and rows["churn", "staging"][8] == "healthy"
        assert rows["churn", "prod"][5] == "-" and rows["churn", "prod"][8] == "nothing"
        assert "1 model(s) serving on 2 target(s) of 1 project(s); 0 in prod" in text_of(screen)
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, MainScreen), "back to the main screen")
