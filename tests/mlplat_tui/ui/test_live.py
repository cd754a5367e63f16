"""Pilot tests of the dashboard over a real local stack (see ``conftest.live``): what each
panel and screen shows, and what each action does to the real services.

The last test stops and restarts the stack, so it stays last in this file.
"""

from __future__ import annotations

import httpx
import pytest
from textual.coordinate import Coordinate
from textual.widgets import DataTable, Log

from mlplat_runtime.bundle import open_bundle
from mlplat_tui.clients.metadata import MetadataClient
from mlplat_tui.stack.base import Service
from mlplat_tui.ui.app import DashboardApp
from mlplat_tui.ui.bundle_screen import BundleScreen
from mlplat_tui.ui.confirm import ConfirmModal
from mlplat_tui.ui.data import DashboardData
from mlplat_tui.ui.events_panel import EventsPanel
from mlplat_tui.ui.help_screen import HelpScreen
from mlplat_tui.ui.logs_screen import LogsScreen
from mlplat_tui.ui.main_screen import MainScreen
from mlplat_tui.ui.run_detail import RunDetailScreen
from mlplat_tui.ui.runs_table import RunsTable
from mlplat_tui.ui.serving_panel import ServingPanel
from mlplat_tui.ui.stack_panel import StackPanel
from tests.mlplat_tui.ui.conftest import Live, notifications, rows_of, text_of, toasts, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("ui-live")]


def _app(live: Live) -> DashboardApp:
    return DashboardApp(DashboardData(live.project), poll_s=0.5)


def _main(app: DashboardApp) -> MainScreen:
    assert isinstance(app.screen, MainScreen)
    return app.screen


def _row(runs: RunsTable, run_id: str) -> list[str] | None:
    grid = runs.grid
    for i in range(grid.row_count):
        if grid.coordinate_to_cell_key(Coordinate(i, 0)).row_key.value == run_id:
            return [str(c) for c in grid.get_row_at(i)]
    return None


async def _select(pilot, runs: RunsTable, run_id: str) -> None:  # type: ignore[no-untyped-def]
    await wait_until(pilot, lambda: _row(runs, run_id) is not None, f"run {run_id} in the table")
    runs.grid.move_cursor(row=runs.grid.get_row_index(run_id), animate=False)
    await pilot.pause(0.05)
    assert runs.selected_run_id == run_id


def _infer_body(live: Live) -> dict:
    inputs, _ = open_bundle(live.root / ".mlplat" / "bundles" / f"churn-classifier-v{live.version}").samples()
    return {
        "inputs": [
            {"name": k, "datatype": "FP32", "shape": list(v[:1].shape), "data": v[:1].ravel().tolist()}
            for k, v in inputs.items()
        ]
    }


async def test_main_screen_shows_the_live_stack(live: Live) -> None:
    app = _app(live)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = _main(app)
        stack = screen.query_one(StackPanel)
        await wait_until(
            pilot,
            lambda: stack.snapshot and stack.snapshot.status and stack.snapshot.status.up,
            "every service healthy",
        )
        await pilot.pause(0.1)
        shown = text_of(stack)
        for service in (Service.TRACKER, Service.METADATA, Service.SERVING):
            address = live.backend.ports.url(service).removeprefix("http://")
            line = next(ln for ln in shown.splitlines() if ln.strip("│ ").startswith(str(service)))
            assert "● running" in line and address in line, line
        assert "Stack · local" in shown

        serving = screen.query_one(ServingPanel)
        await wait_until(
            pilot,
            lambda: serving.snapshot and serving.snapshot.version == live.version,
            f"serving v{live.version}",
        )
        await pilot.pause(0.1)
        assert f"churn-classifier v{live.version}" in text_of(serving)
        assert "CPUExecutionProvider" in text_of(serving)
        await wait_until(
            pilot, lambda: "CPUExecutionProvider" in text_of(stack), "the provider in the stack panel"
        )

        runs = screen.query_one(RunsTable)
        await wait_until(pilot, lambda: _row(runs, live.run_id) is not None, "the trained run")
        trained = _row(runs, live.run_id)
        assert trained is not None
        assert trained[1] == live.run_id[:12]
        assert "✓" in trained and f"v{live.version} {live.bundle_id.split(':')[1][:8]}" in trained
        assert trained[-1] == "● serving"
        failed = _row(runs, live.failed_run_id)
        assert failed is not None and "failed" in failed and failed[-1] == ""
        # newest first: the failed run was recorded after the trained one
        assert runs.grid.get_row_index(live.failed_run_id) < runs.grid.get_row_index(live.run_id)
        assert "roc_auc" in text_of(runs)  # the gated metric is a column

        events = screen.query_one(EventsPanel)
        await wait_until(pilot, lambda: "swapped" in text_of(events), "the swap event from the store")
        assert f"serving v{live.version}" in text_of(events)


async def test_serving_panel_counts_real_traffic(live: Live) -> None:
    app = _app(live)
    url = live.backend.ports.url(Service.SERVING)
    body = _infer_body(live)
    async with app.run_test(size=(120, 40)) as pilot:
        serving = _main(app).query_one(ServingPanel)
        await wait_until(pilot, lambda: serving.snapshot and serving.snapshot.version, "the served model")
        with httpx.Client(timeout=10) as http:
            for _ in range(3):  # across several polls, so there are deltas to read
                for _ in range(30):
                    assert http.post(f"{url}/v2/models/churn-classifier/infer", json=body).status_code == 200
                for _ in range(10):  # bad requests count as errors
                    bad = http.post(f"{url}/v2/models/churn-classifier/infer", json={"inputs": []})
                    assert bad.status_code == 400
                await pilot.pause(0.6)
        snap = serving.snapshot
        await wait_until(
            pilot,
            lambda: (s := serving.snapshot) and s.window_req_per_s and s.window_p50_ms,
            "traffic figures",
        )
        snap = serving.snapshot
        assert snap is not None and snap.window_error_rate is not None
        assert snap.window_req_per_s is not None and snap.window_req_per_s > 1.0
        assert 0.1 < snap.window_error_rate < 0.4  # 10 of every 40
        assert snap.window_p50_ms is not None and 0 < snap.window_p50_ms < 1000
        assert max(snap.req_per_s) > 0
        shown = text_of(serving)
        assert "/s" in shown and "ms" in shown and "%" in shown


async def test_run_detail_bundle_and_logs_screens(live: Live) -> None:
    app = _app(live)
    async with app.run_test(size=(120, 40)) as pilot:
        runs = _main(app).query_one(RunsTable)
        await _select(pilot, runs, live.run_id)
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, RunDetailScreen), "the run detail screen")
        detail = app.screen
        assert isinstance(detail, RunDetailScreen)
        await wait_until(pilot, lambda: detail.detail is not None, "the run detail")
        await pilot.pause(0.1)
        gates = {r[0]: r for r in rows_of(detail.query_one("#detail-gates", DataTable))}
        assert gates["metrics.roc_auc"][2] == ">= 0.85" and gates["metrics.roc_auc"][3] == "✓ pass"
        assert float(gates["metrics.roc_auc"][1]) >= 0.85
        assert gates["size_mb"][2] == "<= 50"
        metrics: dict[str, str] = dict(rows_of(detail.query_one("#detail-metrics", DataTable)))  # type: ignore[arg-type]
        assert float(metrics["roc_auc"]) == pytest.approx(float(gates["metrics.roc_auc"][1]))
        lineage = text_of(detail.query_one("#detail-lineage"))
        assert f"/#/experiments/1/runs/{live.run_id}" in lineage
        assert "data/churn.csv" in lineage and "python train.py" in lineage
        assert "● serving" in text_of(detail.query_one("#detail-title"))

        await pilot.press("b")
        await wait_until(pilot, lambda: isinstance(app.screen, BundleScreen), "the bundle screen")
        bundle = app.screen
        assert isinstance(bundle, BundleScreen)
        await wait_until(pilot, lambda: bundle.view is not None, "the bundle to open and verify", timeout=60)
        await pilot.pause(0.1)
        shown = text_of(bundle)
        assert "✓ verified" in shown and f"churn-classifier v{live.version}" in shown
        assert "model.onnx" in shown and "probabilities" in shown
        await pilot.press("escape")
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, MainScreen), "back to the main screen")

        await pilot.press("l")
        await wait_until(pilot, lambda: isinstance(app.screen, LogsScreen), "the logs screen")
        logs = app.screen
        assert isinstance(logs, LogsScreen)
        await wait_until(
            pilot,
            lambda: any(
                f"serving churn-classifier v{live.version}" in ln for ln in logs.query_one("#logs", Log).lines
            ),
            "the serving log",
        )
        # following: a new line written by the service shows up
        marker = "mlplat-dashboard-follow-check"
        httpx.get(f"{live.backend.ports.url(Service.TRACKER)}/{marker}", timeout=10)
        await pilot.press("1")
        await wait_until(
            pilot,
            lambda: (
                logs.service == "tracker" and any(marker in ln for ln in logs.query_one("#logs", Log).lines)
            ),
            "the tracker log to show the new request",
        )
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, MainScreen), "back to the main screen")


async def test_serving_a_run_without_a_bundle_is_refused_with_the_reason(live: Live) -> None:
    app = _app(live)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        runs = _main(app).query_one(RunsTable)
        await _select(pilot, runs, live.failed_run_id)
        await pilot.press("v")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal), "the confirmation")
        await pilot.press("y")
        await wait_until(
            pilot, lambda: any(sev == "error" for sev, _ in notifications(app)), "an error toast"
        )
        errors = [m for sev, m in notifications(app) if sev == "error"]
        assert any("has no bundle to serve" in m for m in errors), errors
        assert isinstance(app.screen, MainScreen)
        serving = app.screen.query_one(ServingPanel)
        await wait_until(pilot, lambda: serving.snapshot and serving.snapshot.version, "serving read")
        assert serving.snapshot is not None and serving.snapshot.bundle_id == live.bundle_id  # unchanged


async def test_train_now_then_roll_back_to_the_first_version(live: Live) -> None:
    app = _app(live)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        screen = _main(app)
        runs, serving = screen.query_one(RunsTable), screen.query_one(ServingPanel)
        await wait_until(pilot, lambda: serving.snapshot and serving.snapshot.version, "the served model")
        before = serving.snapshot
        assert before is not None
        await pilot.press("t")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal), "the confirmation")
        await pilot.press("y")
        # keys still answered while training runs in its worker
        await pilot.press("question_mark")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen), "help while training", timeout=5)
        await pilot.press("escape")
        events = screen.query_one(EventsPanel)
        await wait_until(
            pilot,
            lambda: "training " in text_of(events) and screen.devloop.state.phase != "off",
            "the cycle to start",
            timeout=30,
        )
        await wait_until(
            pilot,
            lambda: (s := serving.snapshot) and s.bundle_id != before.bundle_id,
            "the new version to serve",
            timeout=120,
        )
        new = serving.snapshot
        assert new is not None and new.version is not None and int(new.version) > int(before.version or 0)
        # The swap shows in Serving before the cycle (tracking after deploy) reports back.
        await wait_until(
            pilot,
            lambda: any(m.startswith(f"v{new.version} is serving") for _, m in notifications(app)),
            "the cycle's report",
            timeout=60,
        )
        assert screen.devloop.state.last_result_ok is True
        assert any(ln for ln in screen.devloop.query_one("#devloop-output", Log).lines)

        # roll back: serve the first run's bundle again
        await _select(pilot, runs, live.run_id)
        await pilot.press("v")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal), "the confirmation")
        assert f"to v{live.version}" in text_of(app.screen)
        await pilot.press("y")
        await wait_until(
            pilot,
            lambda: (s := serving.snapshot) and s.bundle_id == live.bundle_id,
            "the first version to serve again",
            timeout=60,
        )
        await wait_until(
            pilot,
            lambda: (r := _row(runs, live.run_id)) and r[-1] == "● serving",
            "the table to mark it served",
        )
    with MetadataClient(live.backend.ports.url(Service.METADATA)) as meta:
        current = meta.current_deployment("churn-classifier")
        assert current is not None and current.bundle_id == live.bundle_id and current.action == "rollback"


async def test_dev_mode_hosts_the_dev_loop(live: Live) -> None:
    """``mlplat dev``: the loop runs inside the dashboard, a save retrains, quitting stops it."""
    from mlplat_tui.devloop.loop import DevLoop
    from mlplat_tui.events import EventSink

    loops: list[DevLoop] = []

    def factory(emit: EventSink) -> DevLoop:
        loops.append(DevLoop(live.project, backend=live.backend, emit=emit))
        return loops[-1]

    app = DashboardApp(DashboardData(live.project), dev_loop=factory, poll_s=0.5)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = _main(app)
        serving = screen.query_one(ServingPanel)
        assert "dev" in (screen.sub_title or "")
        await wait_until(
            pilot,
            lambda: screen.devloop.state.phase == "watching" and screen.devloop.state.cycles,
            "the first cycle, then watching",
            timeout=120,
        )
        await wait_until(pilot, lambda: serving.snapshot and serving.snapshot.version, "a served version")
        first = serving.snapshot
        assert first is not None
        train = live.root / "train.py"
        train.write_text(train.read_text() + "\n# edited from the dashboard test\n")
        await wait_until(
            pilot, lambda: screen.devloop.state.last_change == ("train.py",), "the change", timeout=30
        )
        assert "train.py" in text_of(screen.devloop)
        await wait_until(
            pilot,
            lambda: (s := serving.snapshot) and s.version != first.version,
            "the retrained version to serve",
            timeout=120,
        )
        await wait_until(
            pilot, lambda: screen.devloop.state.phase == "watching", "watching again", timeout=30
        )
        assert screen.devloop.state.last_result_ok is True
        assert any(
            ln for ln in screen.devloop.query_one("#devloop-output", Log).lines
        )  # training output tail
        await pilot.press("q")
        await wait_until(pilot, lambda: not app.is_running, "the app to leave", timeout=60)
    assert loops and loops[0].join(10), "quitting stopped the dev loop"


async def test_stop_and_start_the_stack_while_keys_keep_working(live: Live) -> None:
    """Last in the file: it restarts the shared stack."""
    app = _app(live)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        screen = _main(app)
        stack = screen.query_one(StackPanel)
        await wait_until(
            pilot,
            lambda: stack.snapshot and stack.snapshot.status and stack.snapshot.status.up,
            "the stack up",
        )
        await pilot.press("x")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal), "the confirmation")
        await pilot.press("y")
        await wait_until(
            pilot,
            lambda: (
                (s := stack.snapshot) and s.status and all(v.state == "stopped" for v in s.status.services)
            ),
            "every service stopped",
            timeout=60,
        )
        await wait_until(pilot, lambda: stack.busy is None, "the stop to finish")
        assert text_of(stack).count("○ stopped") == 3
        with pytest.raises(httpx.TransportError):
            httpx.get(live.backend.ports.url(Service.SERVING) + "/v2/health/live", timeout=2)

        await pilot.press("u")
        await wait_until(pilot, lambda: "starting the stack" in text_of(stack), "the busy line", timeout=5)
        await pilot.press("question_mark")  # answered while up() runs in its worker
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen), "help while starting", timeout=5)
        assert stack.busy is not None  # still starting when help answered
        await pilot.press("escape")
        await wait_until(
            pilot,
            lambda: (s := stack.snapshot) and s.status and s.status.up,
            "the stack up again",
            timeout=180,
        )
        await wait_until(pilot, lambda: stack.busy is None, "the start to finish")
        # the toast is a message the app handles after the busy line clears
        await wait_until(
            pilot, lambda: any(t == "stack up" for t, _ in toasts(app)), "the stack-up toast", timeout=10
        )
        assert ("stack up", "the stack is up") in toasts(app), toasts(app)
        assert "stack" in text_of(screen.query_one(EventsPanel))
    assert live.backend.status().up
    assert (
        httpx.get(live.backend.ports.url(Service.SERVING) + "/v2/health/live", timeout=5).status_code == 200
    )
