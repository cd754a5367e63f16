"""The dashboard hosting the dev loop (``mlplat dev`` on a terminal), without a running stack.

A loop that dies must say so on the panel and make the dashboard exit non-zero; Ctrl-C stops
the dashboard and the loop, as ``mlplat dev --help`` says. Real parts: the real ``DevLoop``
with its warm worker and watcher, the real local backend meeting a real port clash.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from mlplat_tui.devloop.loop import DevLoop
from mlplat_tui.events import EventSink
from mlplat_tui.project.config import Project
from mlplat_tui.stack.base import Ports
from mlplat_tui.stack.local import LocalBackend
from mlplat_tui.ui.app import DashboardApp
from mlplat_tui.ui.data import DashboardData
from mlplat_tui.ui.main_screen import MainScreen
from tests.mlplat_tui.ui.conftest import notifications, text_of, wait_until


@pytest.fixture
def metadata_port_taken(offline_project: Project) -> Iterator[int]:
    """Another program listens on the project's metadata port: ``up`` must refuse."""
    port = Ports.from_project(offline_project).metadata
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()
        yield port


async def test_a_dev_loop_that_dies_says_so_and_the_dashboard_exits_non_zero(
    offline_project: Project, metadata_port_taken: int
) -> None:
    loops: list[DevLoop] = []

    def factory(emit: EventSink) -> DevLoop:
        loops.append(DevLoop(offline_project, backend=LocalBackend(offline_project), emit=emit))
        return loops[-1]

    app = DashboardApp(DashboardData(offline_project, timeout_s=1.0), dev_loop=factory, poll_s=0.3)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        screen = app.screen
        assert isinstance(screen, MainScreen)
        panel = screen.devloop
        await wait_until(pilot, lambda: panel.state.phase == "died", "the panel to say the loop died")
        await pilot.pause(0.1)
        shown = text_of(panel)
        assert "watching" not in shown.split("\n")[1], shown  # the phase line
        assert "died: saves are not watched" in shown
        assert f"{metadata_port_taken}" in shown and "already in use" in shown, shown
        await wait_until(
            pilot,
            lambda: any(sev == "error" and "the dev loop died" in m for sev, m in notifications(app)),
            "an error toast",
        )
        assert loops and loops[0].died and loops[0].join(0)
        await pilot.press("q")
        await wait_until(pilot, lambda: not app.is_running, "the app to leave")
    assert app.return_code == 1
    assert app.dev_failure is not None and "already in use" in app.dev_failure


async def test_ctrl_c_stops_the_dev_loop_and_the_dashboard(offline_project: Project) -> None:
    """No stack (backend None): the loop trains untracked; Ctrl-C must end both, exit 0."""
    loops: list[DevLoop] = []

    def factory(emit: EventSink) -> DevLoop:
        loops.append(DevLoop(offline_project, backend=None, emit=emit))
        return loops[-1]

    app = DashboardApp(DashboardData(offline_project, timeout_s=1.0), dev_loop=factory, poll_s=0.3)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: app.dev_loop is not None, "the dev loop to start")
        await pilot.press("ctrl+c")
        await wait_until(pilot, lambda: not app.is_running, "Ctrl-C to end the dashboard", timeout=60)
    assert loops and loops[0].join(10), "Ctrl-C stopped the dev loop"
    assert not loops[0].died and loops[0].state == "stopped"
    assert app.return_code == 0 and app.dev_failure is None
