"""The Monitoring screen over a real serving process and metadata service: a shifted feature
opens an alert within three windows, and the screen ranks that feature first, marks it
drifted and lists the open alert."""

from __future__ import annotations

import pytest
from textual.app import App
from textual.widgets import DataTable

from mlplat_tui.ui.monitoring_data import ClientMonitoring
from mlplat_tui.ui.monitoring_screen import MonitoringScreen
from tests.mlplat_tui.ui.conftest import text_of, wait_until
from tests.runtime.metadata.test_monitor_live import WINDOW_ROWS, Live, live, shifted  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_the_screen_shows_the_drifted_feature_and_its_alert(live: Live) -> None:  # noqa: F811
    opened: list[str] = []
    for i in range(3):
        opened += live.window(shifted(WINDOW_ROWS, 40 + i))["opened"]  # type: ignore[operator]
    assert "drift:m:1:spend" in opened

    class Host(App[None]):
        def on_mount(self) -> None:
            self.push_screen(MonitoringScreen(ClientMonitoring(lambda: live.client), model="m", poll_s=0))

    async with Host().run_test(size=(120, 40)) as pilot:
        screen = pilot.app.screen
        assert isinstance(screen, MonitoringScreen)
        await wait_until(pilot, lambda: screen.view is not None, "the monitor answered")
        await pilot.pause(0.2)
        table = screen.query_one("#mon-features", DataTable)
        rows = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
        by_name = {r[0]: r for r in rows}
        features = [r[0] for r in rows if r[0] != "(output mix)"]
        assert features[0] == "spend"
        assert by_name["spend"][1] == "✗ drift" and by_name["age"][1] == "ok"
        assert screen.feature in ("spend", "__output__")
        shown = text_of(screen)
        assert "m v1" in shown and f"{3 * WINDOW_ROWS} rows" in shown
        assert "spend drifted" in text_of(screen.query_one("#mon-alerts"))
        assert "drift score per window" in shown
