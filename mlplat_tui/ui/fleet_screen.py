"""The fleet (f): every model of every project on every target this user can reach, with
stage, version, replicas and health — ``mlplat fleet`` on a screen, the answer to "how many
models do we have in production".

Asking each target's engine blocks (Docker, HTTP), so the list is read in a worker, on opening
and on ``r``; a target that cannot be asked is a row that says why.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from mlplat_runtime.errors import MlplatError
from mlplat_tui.ui.messages import FleetLoaded
from mlplat_tui.ui.targets_data import FleetSnapshot, TargetsSource

COLUMNS = ("project", "target", "kind", "stage", "model", "version", "replicas", "since", "health")
_HEALTH_CLASS = {
    "healthy": "fleet-screen--ok",
    "degraded": "fleet-screen--warn",
    "down": "fleet-screen--bad",
    "nothing": "fleet-screen--dim",
}


def since_text(value: str | None) -> str:
    if not value:
        return "-"
    try:
        return datetime.fromisoformat(value).astimezone().strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return value[:16]


class FleetScreen(Screen[None]):
    CSS_PATH = "fleet_screen.tcss"
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "fleet-screen--ok",
        "fleet-screen--warn",
        "fleet-screen--bad",
        "fleet-screen--dim",
    }
    BINDINGS: ClassVar[list[Binding | tuple[str, str] | tuple[str, str, str]]] = [
        Binding("escape", "app.pop_screen", "back"),
        Binding("r", "reload", "refresh"),
    ]

    def __init__(self, source: TargetsSource) -> None:
        super().__init__()
        self.source = source
        self.snapshot: FleetSnapshot | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("asking every target what serves…", id="fleet-summary", markup=False)
        grid: DataTable[Text | str] = DataTable(id="fleet-grid", cursor_type="row")
        yield grid
        yield Static("", id="fleet-index", markup=False)
        yield Footer()

    @property
    def grid(self) -> DataTable[Text | str]:
        return self.query_one("#fleet-grid", DataTable)

    def on_mount(self) -> None:
        self.sub_title = "fleet"
        self.grid.add_columns(*COLUMNS)
        self.grid.focus()
        self._load()

    def action_reload(self) -> None:
        self.query_one("#fleet-summary", Static).update("asking every target what serves…")
        self._load()

    @work(thread=True, exclusive=True, exit_on_error=False)
    def _load(self) -> None:
        try:
            self.post_message(FleetLoaded(self.source.fleet()))
        except MlplatError as exc:
            self.app.call_from_thread(self._failed, exc)

    def _failed(self, exc: MlplatError) -> None:
        self.query_one("#fleet-summary", Static).update(f"fleet: {exc}")
        self.notify(str(exc), title="fleet", severity="error", markup=False)

    def on_fleet_loaded(self, message: FleetLoaded) -> None:
        snap = self.snapshot = message.snapshot
        style = self.get_component_rich_style
        grid = self.grid
        grid.clear()
        for n, r in enumerate(snap.rows):
            health = r.health
            cls = "fleet-screen--bad" if ":" in health else _HEALTH_CLASS.get(health, "fleet-screen--warn")
            grid.add_row(
                *r.cells(),
                since_text(r.since),
                Text(health, style=style(cls)),
                key=f"{n}:{r.root}:{r.target}",
            )
        projects = len({r.root for r in snap.rows})
        prod = sum(1 for r in snap.rows if r.version is not None and r.stage == "prod")
        summary = (
            f"{snap.serving} model(s) serving on {len(snap.rows)} target(s) of {projects} project(s); "
            f"{prod} in prod"
            if snap.rows
            else "no projects yet: a push from the dashboard (p) or `mlplat push` adds its project"
        )
        self.query_one("#fleet-summary", Static).update(summary)
        self.query_one("#fleet-index", Static).update(f"index: {snap.index}")
