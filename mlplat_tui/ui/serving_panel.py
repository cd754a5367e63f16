"""Serving panel: the active model and version, its execution provider, and its traffic
(req/s, p50/p99 latency, error rate) as sparklines over the last minutes.

Attributes down: the screen sets ``snapshot``; the series were computed by ``DashboardData``
from ``/metrics`` deltas (``promstats``), so this widget only draws them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Sparkline, Static

from mlplat_tui.ui.snapshots import ServingSnapshot, short_id


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}ms" if v < 100 else f"{v:.0f}ms"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.1f}%"


def _rate(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}/s" if v < 1000 else f"{v / 1000:.1f}k/s"


# (css id, label, series attribute, headline attribute, formatter)
_ROWS: tuple[tuple[str, str, str, str, Callable[[float | None], str]], ...] = (
    ("rps", "req/s", "req_per_s", "window_req_per_s", _rate),
    ("p50", "p50", "p50_ms", "window_p50_ms", _ms),
    ("p99", "p99", "p99_ms", "window_p99_ms", _ms),
    ("err", "errors", "error_rate", "window_error_rate", _pct),
)


class ServingPanel(Widget):
    DEFAULT_CSS = Path(__file__).with_suffix(".tcss").read_text(encoding="utf-8")
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "serving-panel--ok",
        "serving-panel--bad",
        "serving-panel--dim",
        "serving-panel--label",
    }

    snapshot: reactive[ServingSnapshot | None] = reactive(None)

    def compose(self) -> ComposeResult:
        yield Static(id="serving-head")
        for css_id, _, _, _, _ in _ROWS:
            with Horizontal(classes="serving-row"):
                yield Static(classes="serving-label", id=f"label-{css_id}")
                yield Sparkline([], id=f"spark-{css_id}")

    def on_mount(self) -> None:
        self.border_title = "Serving"
        self._render_snapshot(self.snapshot)

    def watch_snapshot(self, snapshot: ServingSnapshot | None) -> None:
        if self.is_mounted:
            self._render_snapshot(snapshot)

    def _render_snapshot(self, snap: ServingSnapshot | None) -> None:
        style = self.get_component_rich_style
        head = self.query_one("#serving-head", Static)
        if snap is None:
            head.update(Text("waiting for the serving runtime…", style=style("serving-panel--dim")))
        elif snap.version is None:
            head.update(
                Text.assemble(
                    (snap.model, style("serving-panel--label")),
                    "  ",
                    (
                        "nothing served" if not snap.error else snap.error.splitlines()[0][:60],
                        style("serving-panel--dim" if not snap.error else "serving-panel--bad"),
                    ),
                )
            )
        else:
            ready = (
                ("● ready", style("serving-panel--ok"))
                if snap.ready
                else ("○ not ready", style("serving-panel--bad"))
            )
            head.update(
                Text.assemble(
                    (f"{snap.model} v{snap.version}", style("serving-panel--label")),
                    "  ",
                    ready,
                    "\n",
                    (f"{short_id(snap.bundle_id)}  {snap.provider or '-'}", style("serving-panel--dim")),
                )
            )
        self.set_class(bool(snap and snap.version and snap.ready), "-serving")
        for css_id, label, series_attr, headline_attr, fmt in _ROWS:
            series: Sequence[float] = getattr(snap, series_attr) if snap else ()
            headline: float | None = getattr(snap, headline_attr) if snap else None
            self.query_one(f"#label-{css_id}", Static).update(
                Text.assemble((f"{label:<6}", style("serving-panel--label")), f"{fmt(headline):>8}")
            )
            # One point draws as a full bar: wait for two, until then the flat "no data" line.
            self.query_one(f"#spark-{css_id}", Sparkline).data = list(series) if len(series) > 1 else []
