"""Targets panel: each push target's kind and stage, the version serving there, its health and
replicas, and its last push with the outcome; the live progress of a push or rollback.

Attributes down: the screen sets ``snapshot`` and calls ``show_activity`` with each progress
line of a running push (and its end); the panel only renders them. The row under the cursor is
the target that push (p) and rollback (z) act on (``selected``).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import DataTable, Static

from mlplat_tui.ui.targets_data import LastPush, TargetRow, TargetsSnapshot

_HEALTH_CLASS = {
    "healthy": "targets-panel--ok",
    "degraded": "targets-panel--warn",
    "down": "targets-panel--bad",
    "nothing": "targets-panel--dim",
}
_OUTCOME_CLASS = {
    "completed": "targets-panel--ok",
    "rejected": "targets-panel--warn",
    "rolled_back": "targets-panel--warn",
    "failed": "targets-panel--bad",
}
COLUMNS = ("target", "kind", "stage", "version", "health", "replicas", "last push", "outcome")


def health_text(row: TargetRow) -> tuple[str, str]:
    """(text, component class) of a target's health cell."""
    word = row.health
    if word.startswith("unreachable"):
        return "○ unreachable", "targets-panel--bad"
    mark = "●" if word == "healthy" else "○"
    return f"{mark} {word}", _HEALTH_CLASS.get(word, "targets-panel--warn")


def last_text(last: LastPush | None) -> str:
    if last is None:
        return "-"
    when = datetime.fromtimestamp(last.at).strftime("%m-%d %H:%M")
    return f"{last.action} v{last.version} {when}"


class TargetsPanel(Widget):
    DEFAULT_CSS = Path(__file__).with_suffix(".tcss").read_text(encoding="utf-8")
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "targets-panel--ok",
        "targets-panel--warn",
        "targets-panel--bad",
        "targets-panel--dim",
    }

    snapshot: reactive[TargetsSnapshot | None] = reactive(None, always_update=True)

    def __init__(self, names: tuple[str, ...], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.names = names
        self.activity: dict[str, tuple[str, str]] = {}  # target -> (line, component class)

    def compose(self) -> ComposeResult:
        grid: DataTable[Text | str] = DataTable(id="targets-grid", cursor_type="row", zebra_stripes=False)
        yield grid
        yield Static("", id="targets-status", markup=False)

    @property
    def grid(self) -> DataTable[Text | str]:
        return self.query_one("#targets-grid", DataTable)

    @property
    def selected(self) -> str | None:
        """The target under the cursor (the first one before any is chosen)."""
        grid = self.grid
        if grid.row_count == 0:
            return self.names[0] if self.names else None
        key = grid.coordinate_to_cell_key(grid.cursor_coordinate).row_key
        return str(key.value) if key.value is not None else None

    def on_mount(self) -> None:
        self.border_title = "Targets"
        self.border_subtitle = "p push · z rollback · f fleet"
        self.grid.add_columns(*COLUMNS)
        self._fill()

    def watch_snapshot(self, snapshot: TargetsSnapshot | None) -> None:
        if self.is_mounted:
            self._fill()

    def show_activity(self, target: str, line: str, *, outcome: str | None = None) -> None:
        """A progress line of the push running on ``target``; ``outcome`` when it ended."""
        cls = _OUTCOME_CLASS.get(outcome or "", "targets-panel--warn" if outcome else "targets-panel--dim")
        self.activity[target] = (line, cls)
        self._status()

    def _fill(self) -> None:
        snap = self.snapshot
        style = self.get_component_rich_style
        grid = self.grid
        keep = self.selected if grid.row_count else None
        grid.clear()
        rows = {r.name: r for r in snap.rows} if snap else {}
        for name in self.names:
            row = rows.get(name)
            if row is None:
                grid.add_row(
                    name,
                    "-",
                    "-",
                    "-",
                    Text("reading…", style=style("targets-panel--dim")),
                    "-",
                    "-",
                    "-",
                    key=name,
                )
                continue
            health, cls = health_text(row)
            outcome = row.last.outcome if row.last else "-"
            grid.add_row(
                name,
                row.kind,
                row.stage,
                f"v{row.version}" if row.version else "-",
                Text(health, style=style(cls)),
                f"{row.healthy}/{row.replicas}" if row.replicas is not None else "-",
                last_text(row.last),
                Text(outcome, style=style(_OUTCOME_CLASS.get(outcome, "targets-panel--dim"))),
                key=name,
            )
        if keep in self.names:
            grid.move_cursor(row=self.names.index(keep))
        unhealthy = [r for r in rows.values() if r.health not in ("healthy", "nothing")]
        self.set_class(bool(unhealthy), "-unhealthy")
        self._status()

    def _status(self) -> None:
        """The selected target's running push, else any running push, else what is wrong:
        the selected target's first, then any target's, then the push history's."""
        style = self.get_component_rich_style
        status = self.query_one("#targets-status", Static)
        target = self.selected
        order = [target] if target in self.activity else []
        order += [n for n in self.activity if n != target]
        if order:
            line, cls = self.activity[order[0]]
            status.update(Text(f"{order[0]}: {line}", style=style(cls)))
            return
        snap = self.snapshot
        rows = sorted(snap.rows, key=lambda r: r.name != target) if snap else []
        for row in rows:
            if row.health.startswith("unreachable"):
                status.update(Text(f"{row.name}: {row.health}", style=style("targets-panel--bad")))
                return
            last = row.last
            if last is not None and last.outcome != "completed" and last.reason:
                why = last.reason.splitlines()[0]
                text = f"{row.name}: {last.action} v{last.version} {last.outcome}: {why}"
                status.update(Text(text, style=style("targets-panel--warn")))
                return
        if snap is not None and snap.error:
            status.update(Text(snap.error.splitlines()[0], style=style("targets-panel--dim")))
        else:
            status.update("")

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self._status()
