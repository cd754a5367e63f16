"""Monitoring (``m``): is the served model still seeing the data it was trained on?

Left, the features of the version serving now ranked by drift score (worst first) with their
state; right, for the selected feature, training vs live shares in its reference bins, its
drift score per window (the trigger is 1.0: blocks at or over it are red), and per window the
request count, error rate and p99 latency, with ``▲`` under each window where a new version
started serving; below, the open alerts. Everything comes from the metadata service's monitor
(``monitoring_data.py``), fetched in a worker every ``poll_s`` and posted as one message.
"""

from __future__ import annotations

from typing import ClassVar

from rich.console import Group, RenderableType
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from mlplat_runtime.errors import MlplatError
from mlplat_tui.ui import charts
from mlplat_tui.ui.monitoring_data import MonitoringSource, MonitoringView, load_view

OUTPUT = "__output__"
_STATE = {"drift": "✗ drift", "warn": "! warn", "ok": "ok", "unknown": "n/a"}
_WINDOWS = ("15m", "1h", "24h")


class MonitoringLoaded(Message):
    def __init__(self, view: MonitoringView) -> None:
        super().__init__()
        self.view = view


class MonitoringFailed(Message):
    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error


def _name(feature: str) -> str:
    return "(output mix)" if feature == OUTPUT else feature


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


class MonitoringScreen(Screen[None]):
    CSS_PATH = "monitoring_screen.tcss"
    BINDINGS: ClassVar[list[Binding | tuple[str, str] | tuple[str, str, str]]] = [
        Binding("escape", "app.pop_screen", "back"),
        Binding("w", "next_window", "window"),
        Binding("r", "refresh", "refresh"),
    ]

    def __init__(self, source: MonitoringSource, *, model: str | None = None, poll_s: float = 5.0) -> None:
        super().__init__()
        self.source = source
        self.model = model
        self.poll_s = poll_s
        self.window = _WINDOWS[0]
        self.feature: str | None = None
        self.view: MonitoringView | None = None
        self.error: str | None = None
        self._rows: list[str] = []

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("monitoring: asking the metadata service…", id="mon-summary", markup=False)
        with Horizontal(id="mon-body"):
            with Vertical(id="mon-left"):
                table: DataTable[str] = DataTable(id="mon-features", cursor_type="row", zebra_stripes=True)
                yield table
            with VerticalScroll(id="mon-right"):
                yield Static("", id="mon-histogram", markup=False)
                yield Static("", id="mon-trend", markup=False)
                yield Static("", id="mon-traffic", markup=False)
        yield Static("", id="mon-alerts", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#mon-features", DataTable)
        table.add_columns("feature", "state", "score", "PSI", "KS/JS")
        self.sub_title = f"monitoring · last {self.window}"
        self.action_refresh()
        if self.poll_s > 0:
            self.set_interval(self.poll_s, self.action_refresh)

    # -- data -------------------------------------------------------------------------

    def action_refresh(self) -> None:
        self._load(self.window, self.feature)

    def action_next_window(self) -> None:
        self.window = _WINDOWS[(_WINDOWS.index(self.window) + 1) % len(_WINDOWS)]
        self.sub_title = f"monitoring · last {self.window}"
        self.action_refresh()

    @work(thread=True, exclusive=True, exit_on_error=False, group="monitoring")
    def _load(self, window: str, feature: str | None) -> None:
        try:
            self.post_message(MonitoringLoaded(load_view(self.source, window, feature, self.model)))
        except MlplatError as exc:
            self.post_message(MonitoringFailed(str(exc)))

    def on_monitoring_failed(self, message: MonitoringFailed) -> None:
        first = self.error is None
        self.error = message.error
        self.query_one("#mon-summary", Static).update(f"monitoring: {message.error}")
        if first:
            self.notify(message.error, title="monitoring", severity="error", markup=False)

    def on_monitoring_loaded(self, message: MonitoringLoaded) -> None:
        self.error = None
        self.view = message.view
        self.feature = message.view.feature
        self._show(message.view)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.cursor_row < 0 or event.cursor_row >= len(self._rows):
            return
        chosen = self._rows[event.cursor_row]
        if chosen != self.feature:
            self.feature = chosen
            self.action_refresh()

    # -- drawing ----------------------------------------------------------------------

    def _show(self, view: MonitoringView) -> None:
        self.query_one("#mon-summary", Static).update(self._summary(view))
        self._fill_table(view)
        self.query_one("#mon-histogram", Static).update(self._histogram(view))
        self.query_one("#mon-trend", Static).update(self._trend(view))
        self.query_one("#mon-traffic", Static).update(self._traffic(view))
        self.query_one("#mon-alerts", Static).update(self._alerts(view))

    def _current(self, view: MonitoringView):  # type: ignore[no-untyped-def]
        return next(
            (
                v
                for v in reversed(view.report.versions)
                if v.model == view.model and v.version == view.version
            ),
            None,
        )

    def _summary(self, view: MonitoringView) -> RenderableType:
        current = self._current(view)
        if current is None:
            return Text(
                f"no traffic logged in the last {self.window}: send requests to the serving port "
                "(`make demo` sends some); the monitor evaluates each window when it ends"
            )
        parts = [
            f"{current.model} v{current.version}",
            f"{current.requests} rows · {current.request_rate:.1f}/s",
            f"p50 {_num(current.latency_p50_ms, 1)} ms · p99 {_num(current.latency_p99_ms, 1)} ms",
            f"errors {current.error_rate * 100:.1f}%",
        ]
        if current.uncertain_share is not None:
            parts.append(f"uncertain {current.uncertain_share * 100:.1f}%")
        if current.estimated_accuracy is not None:
            parts.append(f"accuracy {current.estimated_accuracy:.3f} (estimated)")
        return Text("  ·  ".join(parts))

    def _fill_table(self, view: MonitoringView) -> None:
        table = self.query_one("#mon-features", DataTable)
        current = self._current(view)
        features = [] if current is None else current.features
        ranked = sorted(features, key=lambda f: (f.score is None, -(f.score or 0.0), f.feature))
        rows = [f.feature for f in ranked]
        cursor = table.cursor_row
        table.clear()
        self._rows = rows
        for f in ranked:
            state = Text(_STATE.get(f.state, f.state))
            if f.state == "drift":
                state.stylize("bold red")
            elif f.state == "warn":
                state.stylize("yellow")
            second = f.ks if f.kind == "numeric" else f.js
            table.add_row(
                _name(f.feature), state, _num(f.score), _num(f.psi, 3), _num(second, 3), key=f.feature
            )
        if rows and view.feature in rows:
            table.move_cursor(row=rows.index(view.feature), animate=False)
        elif rows and 0 <= cursor < len(rows):
            table.move_cursor(row=cursor, animate=False)

    def _right_width(self) -> int:
        """Cells inside the right panel: the screen less the feature list, borders, padding, scrollbar."""
        left = self.query_one("#mon-left").outer_size.width or 50
        return max(20, (self.size.width or 120) - left - 6)

    def _histogram(self, view: MonitoringView) -> RenderableType:
        h = view.histogram
        if view.feature is None:
            return Text("no window evaluated yet", style="dim")
        if h is None or not h.training:
            return Text(f"{_name(view.feature)}: no training histogram", style="dim")
        labels = charts.slot_labels(h.kind, h.edges, h.categories)
        training = list(h.training)
        live = list(h.live) if h.live else [0] * len(training)
        keep = [i for i in range(len(training)) if training[i] or (i < len(live) and live[i])]
        title = Text.assemble(
            (f"{view.feature}", "bold"), "  training ", ("██", "blue"), " vs live ", ("██", "magenta"),
            f"  (last {self.window})",
        )  # fmt: skip
        shown = [labels[i] for i in keep]
        pad = max((len(label) for label in shown), default=0)
        width = max(4, min(24, (self._right_width() - pad - 16) // 2))  # two bars, label, shares fit
        bars = charts.paired_bars(
            shown, [training[i] for i in keep], [live[i] if i < len(live) else 0 for i in keep], width=width
        )
        return Group(title, bars)

    def _swap_flags(self, points: list[str]) -> list[bool]:
        return [i > 0 and points[i] != points[i - 1] for i in range(len(points))]

    def _trend(self, view: MonitoringView) -> RenderableType:
        if not view.history:
            return Text("")
        scores = [p.score for p in view.history]
        flags = self._swap_flags([p.version for p in view.history])
        width = max(10, self._right_width() - 2)
        last = view.history[-1]
        return Group(
            Text.assemble(("drift score per window", "bold"), f"  (trigger 1.0, last {_num(last.score)})"),
            charts.sparkline(scores, width=width, top=max(2.0, *[s or 0.0 for s in scores]), threshold=1.0),
            charts.markers(flags, width=width),
        )

    def _traffic(self, view: MonitoringView) -> RenderableType:
        points = list(view.traffic)
        if not points:
            return Text("")
        width = max(10, self._right_width() - 2)
        requests = [float(p.requests) if p.requests is not None else None for p in points]
        errors = [
            (p.errors or 0) / p.requests if p.requests else None for p in points
        ]  # share of failed requests per window
        latency = [p.latency_p99_ms for p in points]
        flags = self._swap_flags([p.version for p in points])
        return Group(
            Text("rows per window", style="bold"),
            charts.sparkline(requests, width=width),
            Text("error rate per window", style="bold"),
            charts.sparkline(errors, width=width, top=max(0.05, *[e or 0.0 for e in errors]), threshold=0.05),
            Text("p99 latency per window (ms)", style="bold"),
            charts.sparkline(latency, width=width),
            charts.markers(flags, width=width),
            Text("▲ a new version started serving", style="dim") if any(flags) else Text(""),
        )

    def _alerts(self, view: MonitoringView) -> RenderableType:
        alerts = view.report.alerts
        if not alerts:
            return Text("open alerts: none")
        lines = [Text("open alerts", style="bold")]
        for a in alerts:
            line = Text.assemble(
                ("● ", "bold red" if a.severity == "severe" else "yellow"),
                f"{a.model} v{a.version} {_name(a.feature)} drifted (score {_num(a.score)})",
                f" since {(a.opened_at or '')[:19].replace('T', ' ')}",
            )
            lines.append(line)
        return Group(*lines)
