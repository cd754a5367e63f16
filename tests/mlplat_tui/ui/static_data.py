"""``StaticDashboardData``: a FAKE data source returning fixed snapshots, for snapshot tests only.

It stands in for ``DashboardData`` so the main screen's layout can be pinned pixel for pixel
(fixed times, fixed traffic, no clock). It is not a replacement for the real platform: the
pilot tests drive the dashboard over a real stack (see ``conftest.py``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime

from mlplat_runtime.bundle.manifest import GateResult
from mlplat_runtime.errors import ServiceError
from mlplat_tui.events import Event, EventSink
from mlplat_tui.stack.base import Service, ServiceStatus, StackStatus
from mlplat_tui.ui.snapshots import (
    BundleView,
    EventsBatch,
    RunDetail,
    RunRow,
    RunsPage,
    RunsQuery,
    ServingSnapshot,
    StackSnapshot,
)

NOW = datetime(2026, 3, 14, 15, 9, 26).timestamp()  # local time, so the clock text is fixed too


def _wave(n: int, base: float, amp: float) -> tuple[float, ...]:
    return tuple(base + amp * ((i * 7) % 11) / 10 for i in range(n))


class StaticDashboardData:
    project_name = "churn"
    model_name = "churn-classifier"
    backend_name = "local"

    def __init__(self, runs: int = 30) -> None:
        self._runs = [
            RunRow(
                run_id=f"{i:04d}aa0c3f5e9b7d41a2b8c6d0e4f1a9",
                started_at=NOW - 60 * (runs - i),
                status="finished" if i % 5 else "failed",
                metrics={"roc_auc": 0.80 + (i % 9) / 100, "accuracy": 0.75 + (i % 7) / 100} if i % 5 else {},
                gates_passed=None if i % 5 == 0 else (i % 3 != 0),
                gates_failed=() if i % 3 else ("metrics.roc_auc",),
                bundle_id=None if i % 5 == 0 else f"sha256:{i:02d}f00dbeef{i:02d}cafe",
                version=None if i % 5 == 0 else str(i),
                served_on=("local",) if i == runs - 2 else ("prod",) if i == runs - 3 else (),
                was_deployed=i in (runs - 2, runs - 3, runs - 5),
            )
            for i in range(1, runs + 1)
        ]

    def now(self) -> float:
        return NOW

    def stack(self) -> StackSnapshot:
        services = tuple(
            ServiceStatus(
                s,
                "local",
                "running",
                True,
                f"http://127.0.0.1:{7800 + n}",
                ident=str(4242 + n),
                started_at=NOW - 3725,
                cpu_percent=1.5 * (n + 1),
                memory_bytes=(120 + 40 * n) << 20,
            )
            for n, s in enumerate((Service.TRACKER, Service.METADATA, Service.SERVING))
        )
        return StackSnapshot(
            NOW, StackStatus("churn", "local", services, gpu=None), provider="CPUExecutionProvider"
        )

    def start_stack(self, progress: object) -> StackSnapshot:
        return self.stack()

    def stop_stack(self, progress: object) -> None:
        return None

    def runs(self, query: RunsQuery) -> RunsPage:
        rows = sorted(self._runs, key=lambda r: r.started_at or 0.0, reverse=query.descending)
        if query.search:
            rows = [r for r in rows if query.search in r.run_id]
        page = tuple(rows[query.offset : query.offset + query.limit])
        return RunsPage(query, page, len(rows), ("roc_auc", "accuracy"), taken_at=NOW)

    def run_detail(self, run_id: str) -> RunDetail:
        return RunDetail(
            run_id=run_id,
            status="finished",
            started_at=NOW - 120,
            finished_at=NOW - 100,
            gates=(GateResult(name="metrics.roc_auc", measured=0.9, threshold=">= 0.85", passed=True),),
        )

    def serving(self) -> ServingSnapshot:
        return ServingSnapshot(
            taken_at=NOW,
            model="churn-classifier",
            version="28",
            bundle_id="sha256:28f00dbeef28cafe",
            provider="CPUExecutionProvider",
            ready=True,
            req_per_s=_wave(60, 40.0, 20.0),
            p50_ms=_wave(60, 0.4, 0.2),
            p99_ms=_wave(60, 1.5, 1.0),
            error_rate=tuple(0.0 for _ in range(60)),
            window_req_per_s=48.2,
            window_p50_ms=0.42,
            window_p99_ms=2.1,
            window_error_rate=0.0,
        )

    def events_since(self, after_id: int | None) -> EventsBatch:
        if after_id is not None:
            return EventsBatch((), after_id)
        events = (
            Event("stack", "stack is up", ts=NOW - 300, duration_s=4.2),
            Event("change", "train.py changed", ts=NOW - 40, data={"files": ["train.py"]}),
            Event("training", "training started", ts=NOW - 39),
            Event("trained", "training finished", ts=NOW - 36, duration_s=2.9),
            Event("bundled", "bundle v28 built", ts=NOW - 35),
            Event("gated", "gates passed 4/4", ts=NOW - 34),
            Event("swapped", "serving v28 on CPUExecutionProvider", ts=NOW - 33, duration_s=0.12),
            Event("watching", "watching *.py, data/**", ts=NOW - 33),
        )
        return EventsBatch(events, len(events))

    def bundle_view(self, ref: str) -> BundleView:
        raise ServiceError("no bundles in the static snapshot data")

    def logs(self, service: str, *, follow: bool, tail: int = 200) -> Iterator[str]:
        return iter(())

    def train_now(self, emit: EventSink, cancel: threading.Event) -> str:
        return "nothing to train in the static snapshot data"

    def serve_run(self, run_id: str, emit: EventSink | None = None) -> str:
        raise ServiceError("nothing to serve in the static snapshot data")

    def close(self) -> None:
        return None
