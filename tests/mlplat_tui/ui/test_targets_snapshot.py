"""Pins the Targets panel on the main screen, the rollback picker and the fleet screen.

``StaticTargets`` is a FAKE targets source returning fixed rows (fixed times, no engines), used
only here so the layout can be pinned pixel for pixel, as ``StaticDashboardData`` is for the
main screen; the pilot tests (``test_targets_pilot.py``) drive the same screens over real local
targets.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from textual.pilot import Pilot

from mlplat_tui.events import EventSink
from mlplat_tui.push.fleet import FleetRow
from mlplat_tui.push.pipeline import PushResult
from mlplat_tui.ui.app import DashboardApp
from mlplat_tui.ui.fleet_screen import FleetScreen
from mlplat_tui.ui.main_screen import MainScreen
from mlplat_tui.ui.rollback_picker import RollbackPicker
from mlplat_tui.ui.runs_table import RunsTable
from mlplat_tui.ui.serving_panel import ServingPanel
from mlplat_tui.ui.stack_panel import StackPanel
from mlplat_tui.ui.targets_data import FleetSnapshot, LastPush, Progress, TargetRow, TargetsSnapshot
from mlplat_tui.ui.targets_panel import TargetsPanel
from tests.mlplat_tui.ui.conftest import wait_until
from tests.mlplat_tui.ui.static_data import NOW, StaticDashboardData


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


class StaticTargets:
    names = ("staging", "prod")

    def now(self) -> float:
        return NOW

    def targets(self) -> TargetsSnapshot:
        return TargetsSnapshot(
            NOW,
            "churn-classifier",
            (
                TargetRow(
                    "staging",
                    "local",
                    "staging",
                    None,
                    "28",
                    "sha256:28f0",
                    1,
                    1,
                    "healthy",
                    LastPush("push", "28", "completed", NOW - 600, by="ana@laptop"),
                ),
                TargetRow(
                    "prod",
                    "swarm",
                    "prod",
                    "staging",
                    "25",
                    "sha256:25f0",
                    2,
                    1,
                    "degraded",
                    LastPush(
                        "push", "27", "rolled_back", NOW - 300, "smoke test: outputs differ", "ana@laptop"
                    ),
                ),
            ),
        )

    def served(self, target: str) -> tuple[LastPush, ...]:
        return (
            LastPush("push", "25", "completed", NOW - 7200, by="ana@laptop"),
            LastPush("rollback", "24", "completed", NOW - 10800, by="bo@laptop"),
            LastPush("push", "22", "completed", NOW - 86400, by="bo@laptop"),
        )

    def push(self, target: str, bundle_id: str, progress: Progress, emit: EventSink) -> PushResult:
        raise AssertionError("the snapshot tests push nothing")

    def rollback(self, target: str, to: str | None, progress: Progress, emit: EventSink) -> PushResult:
        raise AssertionError("the snapshot tests roll nothing back")

    def fleet(self) -> FleetSnapshot:
        rows = (
            FleetRow(
                "churn",
                "/home/ana/churn",
                "staging",
                "local",
                "staging",
                "churn-classifier",
                "28",
                "sha256:28f0",
                1,
                1,
                _iso(NOW - 600),
                "healthy",
            ),
            FleetRow(
                "churn",
                "/home/ana/churn",
                "prod",
                "swarm",
                "prod",
                "churn-classifier",
                "25",
                "sha256:25f0",
                2,
                1,
                _iso(NOW - 7200),
                "degraded",
            ),
            FleetRow(
                "fraud",
                "/home/ana/fraud",
                "prod",
                "gitops-k8s",
                "prod",
                "fraud-scorer",
                "7",
                "sha256:07aa",
                3,
                3,
                _iso(NOW - 4 * 86400),
                "healthy",
            ),
            FleetRow(
                "fraud",
                "/home/ana/fraud",
                "edge",
                "swarm",
                "prod",
                "fraud-scorer",
                None,
                None,
                None,
                None,
                None,
                "unreachable: docker engine at tcp://edge:2376 refused",
            ),
        )
        return FleetSnapshot(NOW, rows, "/home/ana/.local/state/mlplat/fleet.json")


def _app() -> DashboardApp:
    return DashboardApp(StaticDashboardData(), poll_s=60.0, targets=StaticTargets())


async def _loaded(pilot: Pilot[Any]) -> None:
    screen = pilot.app.screen
    assert isinstance(screen, MainScreen)
    await wait_until(
        pilot,
        lambda: (
            screen.query_one(StackPanel).snapshot is not None
            and screen.query_one(ServingPanel).snapshot is not None
            and screen.query_one(RunsTable).grid.row_count > 0
            and screen.query_one(TargetsPanel).snapshot is not None
            and screen.events.count > 0
        ),
        "every panel filled",
    )
    await pilot.pause(0.2)


@pytest.mark.parametrize("size", [(120, 40), (100, 30)])
def test_main_screen_with_targets(snap_compare: Any, size: tuple[int, int]) -> None:
    assert snap_compare(_app(), terminal_size=size, run_before=_loaded)


def test_rollback_picker(snap_compare: Any) -> None:
    async def picker(pilot: Pilot[Any]) -> None:
        await _loaded(pilot)
        panel = pilot.app.screen.query_one(TargetsPanel)
        panel.grid.focus()
        await pilot.press("down")  # prod: serves v25, served v24 and v22 before
        await pilot.press("z")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, RollbackPicker), "the picker")
        await pilot.pause(0.2)

    assert snap_compare(_app(), terminal_size=(120, 40), run_before=picker)


def test_fleet_screen(snap_compare: Any) -> None:
    async def fleet(pilot: Pilot[Any]) -> None:
        await _loaded(pilot)
        await pilot.press("f")
        await wait_until(
            pilot,
            lambda: isinstance(pilot.app.screen, FleetScreen) and pilot.app.screen.snapshot is not None,
            "the fleet",
        )
        await pilot.pause(0.2)

    assert snap_compare(_app(), terminal_size=(120, 40), run_before=fleet)
