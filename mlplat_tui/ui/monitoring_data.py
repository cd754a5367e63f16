"""What the Monitoring screen reads, and where from: the metadata service's monitor.

``MonitoringSource`` is the screen's seam (a fixed one feeds the snapshot test);
``ClientMonitoring`` asks the metadata client the dashboard already holds (``DashboardData.
metadata``: identity checked, the project's token). Blocking calls: the screen runs them in a
worker. No textual here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from mlplat_runtime.metadata.monitor_records import Histogram, MonitorReport, WindowPoint

if TYPE_CHECKING:
    from mlplat_tui.clients.metadata import MetadataClient


@dataclass(frozen=True)
class MonitoringView:
    """One refresh of the screen: the report, the selected feature's history and histogram."""

    report: MonitorReport
    model: str | None
    version: str | None
    feature: str | None
    history: tuple[WindowPoint, ...] = ()  # the selected feature's windows, oldest first
    traffic: tuple[WindowPoint, ...] = ()  # one point per window (requests, errors, p99)
    histogram: Histogram | None = None


class MonitoringSource(Protocol):
    def report(self, window: str) -> MonitorReport: ...

    def history(self, model: str, feature: str | None) -> list[WindowPoint]: ...

    def histogram(self, model: str, version: str, feature: str, window: str) -> Histogram: ...


class ClientMonitoring:
    """``MonitoringSource`` over the metadata client (asked for it on each call: a service that
    came up since is found)."""

    def __init__(self, client: Callable[[], MetadataClient]) -> None:
        self._client = client

    def report(self, window: str) -> MonitorReport:
        return self._client().monitor_report(window)

    def history(self, model: str, feature: str | None) -> list[WindowPoint]:
        return self._client().monitor_history(model, feature, limit=120 if feature else 2000)

    def histogram(self, model: str, version: str, feature: str, window: str) -> Histogram:
        return self._client().monitor_histogram(model, version, feature, window)


def monitoring_source(data: Any) -> MonitoringSource:
    """The dashboard data source's monitoring: its own, or through its metadata client."""
    own = getattr(data, "monitoring_source", None)
    if callable(own):
        found: MonitoringSource = own()
        return found
    return ClientMonitoring(data.metadata)


def load_view(
    source: MonitoringSource, window: str, feature: str | None, model: str | None = None
) -> MonitoringView:
    """Everything one refresh shows; ``feature`` None picks the worst-drifting one."""
    report = source.report(window)
    versions = [v for v in report.versions if model is None or v.model == model]
    if not versions:
        return MonitoringView(report, model, None, None)
    current = versions[-1]
    ranked = sorted(current.features, key=lambda f: (f.score is None, -(f.score or 0.0), f.feature))
    names = [f.feature for f in ranked]
    chosen = feature if feature in names else (names[0] if names else None)
    history: list[WindowPoint] = []
    traffic: list[WindowPoint] = []
    histogram = None
    if chosen is not None:
        history = source.history(current.model, chosen)
        if chosen != "__output__":
            histogram = source.histogram(current.model, current.version, chosen, window)
    all_points = source.history(current.model, None)
    seen: set[int] = set()
    for point in all_points:
        if point.window_id not in seen:
            seen.add(point.window_id)
            traffic.append(point)
    return MonitoringView(
        report, current.model, current.version, chosen, tuple(history), tuple(traffic), histogram
    )
