"""Pins the main screen's layout: the app fed by ``StaticDashboardData`` (a fixed fake of our
own data source, used only here), at the smallest supported size and a common one."""

from __future__ import annotations

from typing import Any

import pytest
from textual.pilot import Pilot

from mlplat_tui.ui.app import DashboardApp
from mlplat_tui.ui.main_screen import MainScreen
from mlplat_tui.ui.runs_table import RunsTable
from mlplat_tui.ui.serving_panel import ServingPanel
from mlplat_tui.ui.stack_panel import StackPanel
from tests.mlplat_tui.ui.conftest import wait_until
from tests.mlplat_tui.ui.static_data import StaticDashboardData


async def _loaded(pilot: Pilot[Any]) -> None:
    screen = pilot.app.screen
    assert isinstance(screen, MainScreen)
    await wait_until(
        pilot,
        lambda: (
            screen.query_one(StackPanel).snapshot is not None
            and screen.query_one(ServingPanel).snapshot is not None
            and screen.query_one(RunsTable).grid.row_count > 0
            and screen.events.count > 0
        ),
        "every panel filled",
    )
    await pilot.pause(0.2)


@pytest.mark.parametrize("size", [(120, 40), (100, 30)])
def test_main_screen_layout(snap_compare: Any, size: tuple[int, int]) -> None:
    app = DashboardApp(StaticDashboardData(), poll_s=60.0)
    assert snap_compare(app, terminal_size=size, run_before=_loaded)
