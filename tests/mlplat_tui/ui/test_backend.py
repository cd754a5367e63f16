"""The dashboard acts on the backend whose stack is up (``get_backend`` remembers it in
``paths.stack_state``), names it, and follows it when it changes under a running dashboard."""

from __future__ import annotations

from mlplat_tui.project.config import Project
from mlplat_tui.stack.state import forget_backend, record_backend
from mlplat_tui.ui.app import DashboardApp
from mlplat_tui.ui.data import DashboardData
from mlplat_tui.ui.main_screen import MainScreen
from tests.mlplat_tui.ui.conftest import wait_until


async def test_the_dashboard_follows_the_remembered_backend(offline_project: Project) -> None:
    assert offline_project.config.stack.backend == "local"
    record_backend(offline_project.paths, "docker")  # as `mlplat up --backend docker` leaves it
    data = DashboardData(offline_project, timeout_s=1.0)
    assert data.backend().name == "docker" and data.backend_name == "docker"
    app = DashboardApp(data, poll_s=0.3)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        assert isinstance(screen, MainScreen)
        assert (screen.sub_title or "").endswith("· docker")
        forget_backend(offline_project.paths, "docker")  # `mlplat down` of that stack
        await wait_until(pilot, lambda: (screen.sub_title or "").endswith("· local"), "the local backend")
    assert data.backend().name == "local"


def test_a_backend_named_on_the_command_line_is_kept(offline_project: Project) -> None:
    record_backend(offline_project.paths, "docker")
    data = DashboardData(offline_project, backend_name="local", timeout_s=1.0)
    data.stack()
    assert data.backend().name == "local" and data.backend_name == "local"
