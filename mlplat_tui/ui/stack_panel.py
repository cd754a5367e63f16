"""Stack panel: each service's state, health, address, uptime, CPU and memory; GPU and the
execution provider serving uses.

Attributes down: the screen sets ``snapshot`` (and ``busy`` while the stack starts or stops);
the panel only renders them.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from mlplat_tui.stack.base import SERVICES, ServiceStatus
from mlplat_tui.ui.snapshots import StackSnapshot, fmt_bytes, fmt_duration

# service state -> component class (colours live in stack_panel.tcss)
_STATE_CLASS = {
    "running": "stack-panel--ok",
    "starting": "stack-panel--warn",
    "unhealthy": "stack-panel--bad",
    "exited": "stack-panel--bad",
    "stopped": "stack-panel--dim",
}


def _address(value: str) -> str:
    return value.removeprefix("http://").removeprefix("https://")


class StackPanel(Widget):
    DEFAULT_CSS = Path(__file__).with_suffix(".tcss").read_text(encoding="utf-8")
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "stack-panel--ok",
        "stack-panel--warn",
        "stack-panel--bad",
        "stack-panel--dim",
        "stack-panel--label",
    }

    snapshot: reactive[StackSnapshot | None] = reactive(None)
    busy: reactive[str | None] = reactive(None)  # "starting the stack…" while up() runs

    def on_mount(self) -> None:
        self.border_title = "Stack"

    def watch_snapshot(self, snapshot: StackSnapshot | None) -> None:
        backend = snapshot.status.backend if snapshot and snapshot.status else None
        self.border_title = f"Stack · {backend}" if backend else "Stack"
        up = bool(snapshot and snapshot.status and snapshot.status.up)
        self.set_class(up, "-up")
        self.set_class(bool(snapshot and snapshot.error), "-error")

    def render(self) -> RenderableType:
        snap = self.snapshot
        style = self.get_component_rich_style
        if snap is None:
            return Text("reading the stack…", style=style("stack-panel--dim"))
        table = Table(
            box=None,
            expand=True,
            padding=(0, 2, 0, 0),
            show_edge=False,
            header_style=style("stack-panel--label"),
        )
        table.add_column("service", no_wrap=True)
        table.add_column("state", no_wrap=True)
        table.add_column("address", no_wrap=True, overflow="ellipsis", min_width=14)
        table.add_column("up", justify="right", no_wrap=True)
        table.add_column("cpu", justify="right", no_wrap=True)
        table.add_column("mem", justify="right", no_wrap=True)
        services: dict[str, ServiceStatus] = {}
        if snap.status is not None:
            services = {str(s.name): s for s in snap.status.services}
        for name in [*map(str, SERVICES), *(n for n in services if n not in map(str, SERVICES))]:
            svc = services.get(name)
            if svc is None:
                table.add_row(name, Text("○ stopped", style=style("stack-panel--dim")), "-", "-", "-", "-")
                continue
            mark = "●" if svc.healthy else "○"
            cls = _STATE_CLASS.get(svc.state, "stack-panel--warn")
            if svc.state == "running" and not svc.healthy:
                cls = "stack-panel--warn"
            uptime = snap.taken_at - svc.started_at if svc.started_at and svc.state == "running" else None
            cpu = f"{svc.cpu_percent:.0f}%" if svc.cpu_percent is not None else "-"
            table.add_row(
                name,
                Text(f"{mark} {svc.state}", style=style(cls)),
                _address(svc.address),
                fmt_duration(uptime),
                cpu,
                fmt_bytes(svc.memory_bytes),
            )
        gpu = snap.status.gpu if snap.status else None
        label, dim = style("stack-panel--label"), style("stack-panel--dim")
        foot = Text.assemble(
            ("GPU ", label),
            (gpu or "none", "" if gpu else dim),
            ("  provider ", label),
            (snap.provider or "-", "" if snap.provider else dim),
        )
        parts: list[RenderableType] = [table, foot]
        if self.busy:
            parts.append(Text(self.busy, style=style("stack-panel--warn")))
        elif snap.error:
            parts.append(Text(snap.error.splitlines()[0], style=style("stack-panel--bad")))
        return Group(*parts)
