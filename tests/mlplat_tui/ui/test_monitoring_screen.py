"""The Monitoring screen: opened with ``m`` from the main screen, pinned by a snapshot.

``FixedMonitoring`` is a FAKE monitoring source with fixed answers, for layout and key tests
only; ``test_monitoring_live.py`` drives the screen over a real serving process and metadata
service.
"""

from __future__ import annotations

from typing import Any

import pytest
from textual.app import App
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from mlplat_runtime.metadata.monitor_records import Histogram, MonitorReport, WindowPoint
from mlplat_tui.ui.app import DashboardApp
from mlplat_tui.ui.charts import markers, paired_bars, slot_labels, sparkline
from mlplat_tui.ui.monitoring_screen import MonitoringScreen
from tests.mlplat_tui.ui.conftest import text_of, wait_until
from tests.mlplat_tui.ui.static_data import StaticDashboardData


def _feature(
    name: str, state: str, score: float | None, psi: float | None, kind: str = "numeric"
) -> dict[str, Any]:
    return {"feature": name, "kind": kind, "rows": 2000, "state": state, "score": score, "psi": psi,
            "ks": None if psi is None else psi / 2, "js": None if psi is None else psi / 3,
            "missing_share": 0.0, "out_of_range_share": 0.0, "unseen_share": 0.0}  # fmt: skip


REPORT = MonitorReport.model_validate(
    {
        "window_s": 900,
        "versions": [
            {
                "model": "churn-classifier",
                "version": "7",
                "first": "2026-03-14T14:00:00Z",
                "last": "2026-03-14T15:00:00Z",
                "requests": 24000,
                "request_rate": 6.7,
                "error_rate": 0.004,
                "uncertain_share": 0.12,
                "latency_p50_ms": 1.0,
                "latency_p99_ms": 3.0,
                "estimated_accuracy": 0.86,
                "features": [
                    _feature("tenure", "ok", 0.21, 0.02),
                    _feature("monthly_charges", "drift", 3.4, 0.34),
                    _feature("contract", "warn", 0.62, 0.06, "categorical"),
                    _feature("__output__", "ok", 0.3, 0.03, "categorical"),
                ],
            },
        ],
        "alerts": [
            {
                "dedupe_key": "drift:churn-classifier:7:monthly_charges",
                "model": "churn-classifier",
                "version": "7",
                "feature": "monthly_charges",
                "open": True,
                "severity": "severe",
                "score": 3.4,
                "opened_at": "2026-03-14T14:45:00Z",
            }
        ],
    }
)
SCORES = [0.2, 0.3, 0.25, 0.2, 0.4, 0.3, 1.2, 2.5, 3.1, 3.4]


class FixedMonitoring:
    """FAKE: fixed answers (see the module docstring)."""

    def report(self, window: str) -> MonitorReport:
        return REPORT

    def history(self, model: str, feature: str | None) -> list[WindowPoint]:
        versions = ["6"] * 5 + ["7"] * 5
        return [
            WindowPoint(
                window_id=i + 1,
                version=versions[i],
                window_end=f"2026-03-14T14:{i * 5:02d}:00Z",
                feature=feature or "tenure",
                score=s if feature == "monthly_charges" else 0.2,
                psi=s / 10,
                state="drift" if s >= 1 else "ok",
                requests=2400,
                errors=i,
                rows=2400,
                latency_p99_ms=3.0 + i % 3,
            )
            for i, s in enumerate(SCORES)
        ]

    def histogram(self, model: str, version: str, feature: str, window: str) -> Histogram:
        return Histogram(
            feature=feature,
            kind="numeric",
            edges=[0.0, 20.0, 40.0, 60.0, 80.0, 100.0],
            training=[0, 200, 300, 250, 150, 100, 0, 0],
            live=[0, 50, 100, 200, 400, 300, 100, 0],
        )


class WithMonitoring(StaticDashboardData):
    def monitoring_source(self) -> FixedMonitoring:
        return FixedMonitoring()


async def _open(pilot: Pilot[Any]) -> None:
    await pilot.press("m")
    await wait_until(
        pilot,
        lambda: isinstance(pilot.app.screen, MonitoringScreen) and pilot.app.screen.view is not None,
        "the monitoring screen filled",
    )
    await pilot.pause(0.2)


async def test_m_opens_the_screen_with_features_ranked_and_the_alert() -> None:
    app = DashboardApp(WithMonitoring(), poll_s=60.0)
    async with app.run_test(size=(120, 40)) as pilot:
        await _open(pilot)
        screen = pilot.app.screen
        assert isinstance(screen, MonitoringScreen)
        table = screen.query_one("#mon-features", DataTable)
        firsts = [str(table.get_row_at(i)[0]) for i in range(table.row_count)]
        assert firsts == ["monthly_charges", "contract", "(output mix)", "tenure"]
        assert screen.feature == "monthly_charges"  # the worst one is selected first
        shown = text_of(screen)
        assert "churn-classifier v7" in shown and "accuracy 0.860 (estimated)" in shown
        assert "monthly_charges  training" in shown
        assert "open alerts" in shown and "monthly_charges drifted (score 3.40)" in shown
        assert "▲ a new version started serving" in text_of(screen.query_one("#mon-traffic", Static))
        await pilot.press("down")  # select contract: its histogram is fetched
        await wait_until(pilot, lambda: screen.feature == "contract", "contract selected")
        await pilot.press("escape")
        assert not isinstance(pilot.app.screen, MonitoringScreen)


class _Failing:
    def report(self, window: str) -> MonitorReport:
        from mlplat_runtime.errors import NotFoundError

        raise NotFoundError("this metadata service has no prediction log to monitor")

    def history(self, model: str, feature: str | None) -> list[WindowPoint]:
        return []

    def histogram(self, model: str, version: str, feature: str, window: str) -> Histogram:
        raise AssertionError("not asked")


async def test_a_service_without_a_log_is_said_on_the_screen() -> None:
    class Host(App[None]):
        def on_mount(self) -> None:
            self.push_screen(MonitoringScreen(_Failing(), poll_s=0))

    async with Host().run_test(size=(100, 30)) as pilot:
        screen = pilot.app.screen
        assert isinstance(screen, MonitoringScreen)
        await wait_until(pilot, lambda: screen.error is not None, "the error shown")
        assert "no prediction log" in text_of(screen.query_one("#mon-summary"))


def test_charts() -> None:
    assert sparkline([0, 1, 2, None, 4]).plain == "▁▂▄ █"
    assert markers([False, True, False]).plain == " ▲ "
    assert slot_labels("numeric", [0.0, 1.0, 2.0], []) == ["<0", "0…1", "1…2", ">2", "missing"]
    assert slot_labels("categorical", [], ["a", "b"]) == ["a", "b", "other", "missing"]
    lines = paired_bars(["a", "b"], [1, 3], [3, 1], width=8).plain.splitlines()
    assert lines[0].startswith("a ██▋") and "25.0%  75.0%" in lines[0]
    assert lines[1].startswith("b ████████")


@pytest.mark.parametrize("size", [(120, 40), (100, 30)])
def test_monitoring_screen_layout(snap_compare: Any, size: tuple[int, int]) -> None:
    app = DashboardApp(WithMonitoring(), poll_s=60.0)
    assert snap_compare(app, terminal_size=size, run_before=_open)
