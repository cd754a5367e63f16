"""Typed snapshots the dashboard renders: what ``DashboardData`` returns and widgets receive.

Each is a frozen value taken at one moment (``taken_at`` where it matters), so a widget renders
it without doing any I/O, and a snapshot test can pin the screen with fixed values. Times are
epoch seconds; formatting relative times ("3m ago", uptime) uses the snapshot's own
``taken_at``, never the wall clock, so the same snapshot always renders the same text.

No textual and no I/O in this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # types only: importing them loads numpy (via the bundle package) before first paint
    from mlplat_runtime.bundle.manifest import GateResult, Manifest
    from mlplat_tui.events import Event
    from mlplat_tui.stack.base import StackStatus

# Sort keys of the runs table; "metric:<name>" sorts on one metric.
SORT_TIME = "time"
SORT_RUN = "run"
SORT_GATES = "gates"
SORT_VERSION = "version"

# The target the local stack serves on (``mlplat_tui.deploy.serve.LOCAL``; not imported from
# there: that module loads numpy, which would delay the first paint). A test pins them equal.
LOCAL_TARGET = "local"


@dataclass(frozen=True)
class StackSnapshot:
    taken_at: float
    status: StackStatus | None  # None when it could not be read (error says why)
    provider: str | None = None  # execution provider the serving runtime reports, e.g. "CPUExecutionProvider"
    error: str | None = None


@dataclass(frozen=True)
class RunRow:
    run_id: str
    started_at: float | None
    status: str  # "running" | "finished" | "failed" | ...
    metrics: Mapping[str, float] = field(default_factory=dict)
    gates_passed: bool | None = None  # None: no gates were evaluated (no bundle yet, or training failed)
    gates_failed: tuple[str, ...] = ()  # names of the gates that failed
    bundle_id: str | None = None
    version: str | None = None
    served_on: tuple[str, ...] = ()  # targets this run serves on now (the runs query's answer)
    was_deployed: bool = False

    @property
    def served(self) -> bool:
        """Serving on the local stack now (a version on ``prod`` only is not)."""
        return LOCAL_TARGET in self.served_on

    @property
    def served_elsewhere(self) -> tuple[str, ...]:
        return tuple(t for t in self.served_on if t != LOCAL_TARGET)


@dataclass(frozen=True)
class RunsQuery:
    offset: int = 0
    limit: int = 100
    search: str = ""
    sort: str = SORT_TIME  # SORT_* or "metric:<name>"
    descending: bool = True

    @property
    def page(self) -> int:
        return self.offset // self.limit


@dataclass(frozen=True)
class RunsPage:
    query: RunsQuery
    rows: tuple[RunRow, ...]
    total: int  # runs matching the search, across all pages
    metric_names: tuple[str, ...] = ()  # the key metrics shown as columns, in order
    taken_at: float = 0.0
    error: str | None = None

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.query.limit))


@dataclass(frozen=True)
class RunDetail:
    run_id: str
    status: str
    started_at: float | None = None
    finished_at: float | None = None
    params: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    gates: tuple[GateResult, ...] = ()
    bundle_id: str | None = None
    bundle_path: str | None = None
    version: str | None = None
    served_on: tuple[str, ...] = ()  # targets this run serves on now
    was_deployed: bool = False
    git_commit: str | None = None
    dirty_hash: str | None = None
    data_hashes: Mapping[str, str] = field(default_factory=dict)
    training_command: str | None = None
    tracker_url: str | None = None  # link to the run in the MLflow UI
    error: str | None = None  # why the run failed, when it did

    @property
    def served(self) -> bool:
        return LOCAL_TARGET in self.served_on


@dataclass(frozen=True)
class ServingSnapshot:
    """The served model and its traffic; series hold one point per poll, oldest first."""

    taken_at: float
    model: str
    version: str | None = None
    bundle_id: str | None = None
    provider: str | None = None
    ready: bool = False
    req_per_s: tuple[float, ...] = ()
    p50_ms: tuple[float, ...] = ()
    p99_ms: tuple[float, ...] = ()
    error_rate: tuple[float, ...] = ()  # 0..1
    window_s: float = 60.0  # the headline figures cover this many seconds
    window_req_per_s: float | None = None
    window_p50_ms: float | None = None
    window_p99_ms: float | None = None
    window_error_rate: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class EventsBatch:
    events: tuple[Event, ...]
    last_id: int | None  # pass back as ``after_id`` to get only newer ones


@dataclass(frozen=True)
class BundleView:
    path: str
    manifest: Manifest
    sizes: Mapping[str, int] = field(default_factory=dict)  # relative path -> bytes
    problems: tuple[str, ...] = ()  # from verify_bundle; empty when the bundle is good


def fmt_duration(seconds: float | None) -> str:
    """Short human duration: 42s, 3m05s, 2h07m, 3d04h."""
    if seconds is None or seconds < 0:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "K", "M", "G"):
        if size < 1024 or unit == "G":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return f"{size:.1f}G"  # pragma: no cover - the loop always returns


def fmt_time(ts: float | None, now: float | None = None) -> str:
    """Clock time, with the date when it is not the same day as ``now``."""
    if ts is None:
        return "-"
    t = datetime.fromtimestamp(ts)
    if now is not None and datetime.fromtimestamp(now).date() == t.date():
        return t.strftime("%H:%M:%S")
    return t.strftime("%Y-%m-%d %H:%M")


def fmt_metric(value: float | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if value == 0 or 0.001 <= abs(value) < 100000:
        return f"{value:.4g}"
    return f"{value:.3e}"


def short_id(value: str | None, n: int = 12) -> str:
    """``sha256:abcdef...`` -> ``abcdef123456``; plain ids are cut to ``n``."""
    if not value:
        return "-"
    return value.split(":", 1)[-1][:n]
