"""Each panel renders the values it is given (attributes down), in a bare app of its own."""

from __future__ import annotations

from typing import Any

from textual.app import App, ComposeResult

from mlplat_tui.events import Event
from mlplat_tui.stack.base import Service, ServiceStatus, StackStatus
from mlplat_tui.ui.devloop_panel import DevLoopPanel
from mlplat_tui.ui.devstate import DevLoopState
from mlplat_tui.ui.events_panel import EventsPanel
from mlplat_tui.ui.serving_panel import ServingPanel
from mlplat_tui.ui.snapshots import ServingSnapshot, StackSnapshot
from mlplat_tui.ui.stack_panel import StackPanel
from tests.mlplat_tui.ui.conftest import text_of


class _Host(App[None]):
    def __init__(self, widget: Any) -> None:
        super().__init__()
        self.widget = widget

    def compose(self) -> ComposeResult:
        yield self.widget


async def test_stack_panel_shows_gpu_provider_and_unhealthy_services() -> None:
    panel = StackPanel()
    async with _Host(panel).run_test(size=(90, 12)) as pilot:
        panel.snapshot = StackSnapshot(
            taken_at=1000.0,
            status=StackStatus(
                "p",
                "docker",
                (
                    ServiceStatus(
                        Service.TRACKER,
                        "docker",
                        "running",
                        True,
                        "http://127.0.0.1:7800",
                        started_at=1000.0 - 7300,
                        cpu_percent=12.4,
                        memory_bytes=3 << 30,
                    ),
                    ServiceStatus(
                        Service.SERVING,
                        "docker",
                        "unhealthy",
                        False,
                        "http://127.0.0.1:7802",
                        started_at=990.0,
                    ),
                ),
                gpu="NVIDIA H100 80GB HBM3 (79 GiB)",
            ),
            provider="CUDAExecutionProvider",
        )
        await pilot.pause()
        shown = text_of(panel)
        assert "Stack · docker" in shown
        assert "GPU NVIDIA H100 80GB HBM3 (79 GiB)" in shown and "provider CUDAExecutionProvider" in shown
        tracker = next(ln for ln in shown.splitlines() if "tracker" in ln)
        assert "● running" in tracker and "2h01m" in tracker and "12%" in tracker and "3.0G" in tracker
        assert "○ unhealthy" in next(ln for ln in shown.splitlines() if "serving" in ln)
        assert "○ stopped" in next(ln for ln in shown.splitlines() if "metadata" in ln)  # not reported
        panel.busy = "starting the stack…"
        await pilot.pause()
        assert "starting the stack…" in text_of(panel)


async def test_serving_panel_without_a_model_and_with_traffic() -> None:
    panel = ServingPanel()
    async with _Host(panel).run_test(size=(60, 8)) as pilot:
        panel.snapshot = ServingSnapshot(taken_at=0.0, model="m")
        await pilot.pause()
        assert "m  nothing served" in text_of(panel)
        panel.snapshot = ServingSnapshot(
            taken_at=0.0,
            model="m",
            version="7",
            bundle_id="sha256:abcdef0123456789",
            provider="CPUExecutionProvider",
            ready=True,
            req_per_s=(1.0, 2.0),
            window_req_per_s=1500.0,
            window_p50_ms=0.25,
            window_p99_ms=250.0,
            window_error_rate=0.015,
        )
        await pilot.pause()
        shown = text_of(panel)
        assert "m v7  ● ready" in shown and "abcdef012345  CPUExecutionProvider" in shown
        assert "1.5k/s" in shown and "0.2ms" in shown and "250ms" in shown and "1.5%" in shown


async def test_devloop_panel_counts_the_step_time() -> None:
    panel = DevLoopPanel()
    async with _Host(panel).run_test(size=(70, 10)) as pilot:
        panel.state = DevLoopState(
            phase="training",
            step="training",
            step_started=100.0,
            watching=True,
            last_change=("train.py",),
            last_change_at=99.0,
        )
        panel.now = 165.0
        panel.add_output("epoch 1 loss 0.3")
        await pilot.pause()
        shown = text_of(panel)
        assert "● training  training 1m05s" in shown and "train.py" in shown and "epoch 1 loss 0.3" in shown
        assert panel.has_class("-training")


async def test_events_panel_drops_duplicates_and_output() -> None:
    panel = EventsPanel()
    async with _Host(panel).run_test(size=(80, 10)) as pilot:
        e = Event("swapped", "serving v2 on CPUExecutionProvider", ts=1000.0)
        assert panel.add(e)
        assert not panel.add(Event("swapped", e.message, ts=1000.04))  # the same, as stored
        assert not panel.add(Event("output", "a training line", ts=1001.0))
        assert panel.add(Event("failed", "training failed", ts=1002.0, error="exit code 1"))
        await pilot.pause()
        shown = text_of(panel)
        assert panel.count == 2 and shown.count("serving v2") == 1 and "exit code 1" in shown
