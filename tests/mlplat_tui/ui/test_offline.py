"""The dashboard on a project whose stack is down: the real ``DashboardData``, real (refused)
connections. Everything must still paint, say what is wrong, and answer keys."""

from __future__ import annotations

from mlplat_tui.project.config import Project
from mlplat_tui.ui.app import DashboardApp
from mlplat_tui.ui.confirm import ConfirmModal
from mlplat_tui.ui.data import DashboardData
from mlplat_tui.ui.devloop_panel import DevLoopPanel
from mlplat_tui.ui.help_screen import HelpScreen
from mlplat_tui.ui.logs_screen import LogsScreen
from mlplat_tui.ui.main_screen import MainScreen
from mlplat_tui.ui.runs_table import RunsTable
from mlplat_tui.ui.serving_panel import ServingPanel
from mlplat_tui.ui.stack_panel import StackPanel
from tests.mlplat_tui.ui.conftest import notifications, text_of, wait_until


def _app(project: Project) -> DashboardApp:
    return DashboardApp(DashboardData(project, timeout_s=1.0), poll_s=0.3)


async def test_a_down_stack_is_shown_as_down_not_as_a_crash(offline_project: Project) -> None:
    app = _app(offline_project)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        screen = app.screen
        assert isinstance(screen, MainScreen)
        stack = screen.query_one(StackPanel)
        await wait_until(pilot, lambda: stack.snapshot is not None, "the first stack read")
        shown = text_of(stack)
        base = offline_project.config.stack.port_base
        for service, port in (("tracker", base), ("metadata", base + 1), ("serving", base + 2)):
            line = next(ln for ln in shown.splitlines() if ln.strip("│ ").startswith(service))
            assert "○ stopped" in line and f"127.0.0.1:{port}" in line, line
        serving = screen.query_one(ServingPanel)
        await wait_until(pilot, lambda: serving.snapshot is not None, "the first serving read")
        assert "not reachable" in text_of(serving)
        runs = screen.query_one(RunsTable)
        await wait_until(pilot, lambda: runs.page is not None, "the first runs read")
        assert runs.grid.row_count == 0
        assert "cannot reach the metadata service" in text_of(runs)
        assert "idle (no dev loop" in text_of(screen.query_one(DevLoopPanel))
        # Polls that fail every tick do not raise toasts: the panels already say it.
        await pilot.pause(1.0)
        assert not [n for n in notifications(app) if n[0] == "error"]


async def test_actions_without_a_selection_warn(offline_project: Project) -> None:
    app = _app(offline_project)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        for key in ("v", "b"):
            await pilot.press(key)

        def warned() -> list[str]:
            return [m for sev, m in notifications(app) if sev == "warning"]

        # a loaded machine may take more than a fixed pause to handle both keys
        await wait_until(pilot, lambda: len(warned()) >= 2, "a warning for each key")
        warnings = warned()
        assert warnings == ["select a run first", "select a run first"], warnings
        assert isinstance(app.screen, MainScreen)


async def test_help_lists_every_key(offline_project: Project) -> None:
    from mlplat_tui.ui.actions import ACTIONS

    app = _app(offline_project)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("question_mark")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen), "the help screen")
        await pilot.pause(0.1)
        shown = text_of(app.screen)
        for action in ACTIONS:
            assert action.title in shown, action.title
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, MainScreen), "back to the main screen")


async def test_the_palette_runs_dashboard_commands(offline_project: Project) -> None:
    app = _app(offline_project)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("ctrl+p")
        await pilot.press(*"logs: tracker")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, LogsScreen), "the logs screen")
        assert isinstance(app.screen, LogsScreen) and app.screen.service == "tracker"
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, MainScreen), "back to the main screen")


async def test_changing_what_serves_asks_first_and_no_means_no(offline_project: Project) -> None:
    app = _app(offline_project)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        assert isinstance(screen, MainScreen)
        for key in ("t", "x"):
            await pilot.press(key)
            await wait_until(
                pilot, lambda: isinstance(app.screen, ConfirmModal), f"the confirmation for {key}"
            )
            await pilot.press("n")
            await wait_until(pilot, lambda: isinstance(app.screen, MainScreen), "the modal to close")
        names = {w.name for w in app.workers} | {w.name for w in screen.workers}
        assert "train_now" not in names and "stack_down" not in names


async def test_layout_fits_100_by_30(offline_project: Project) -> None:
    app = _app(offline_project)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        stack = screen.query_one(StackPanel)
        await wait_until(pilot, lambda: stack.snapshot is not None, "the first stack read")
        await pilot.pause(0.2)
        for sel in ("#stack", "#serving", "#devloop", "#events", "#runs"):
            region = screen.query_one(sel).region
            assert region.width >= 30 and region.height >= 7, (sel, region)
            assert region.right <= 100 and region.bottom <= 29, (sel, region)
        port = offline_project.config.stack.port_base + 2
        assert f"127.0.0.1:{port}" in text_of(stack)  # addresses are not cut at 100 columns


async def test_quit_leaves(offline_project: Project) -> None:
    app = _app(offline_project)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("q")
        await pilot.pause(0.2)
        assert not app.is_running
