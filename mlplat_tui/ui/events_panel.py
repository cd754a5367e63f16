"""Events panel: the dev loop's and the stack's events as they happen, newest at the bottom.

The screen calls ``add(event)``; duplicates (the same event seen in-process and again from the
metadata store, where the pipeline records it) are dropped here, so callers need not care.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.widget import Widget
from textual.widgets import RichLog

if TYPE_CHECKING:
    from mlplat_tui.events import Event

_GOOD = ("swapped", "watching")
_BAD = ("rejected", "failed")
_QUIET = ("output",)  # training output goes to the Dev loop panel's tail, not here


def _key(event: Event) -> tuple[str, str, int]:
    # The store may keep timestamps at a coarser precision than the emitter: compare to 0.1 s.
    return (event.kind, event.message, round(event.ts * 10))


class EventsPanel(Widget):
    DEFAULT_CSS = Path(__file__).with_suffix(".tcss").read_text(encoding="utf-8")
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "events-panel--good",
        "events-panel--bad",
        "events-panel--kind",
        "events-panel--time",
    }

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._seen: deque[tuple[str, str, int]] = deque(maxlen=500)
        self.count = 0  # events shown, for tests and the title

    def compose(self) -> ComposeResult:
        yield RichLog(max_lines=1000, wrap=True, min_width=20, markup=False, auto_scroll=True)

    def on_mount(self) -> None:
        self.border_title = "Events"

    def add(self, event: Event) -> bool:
        """Show ``event`` unless it is training output or already shown; True when shown."""
        if event.kind in _QUIET:
            return False
        key = _key(event)
        if (
            key in self._seen
            or (key[0], key[1], key[2] - 1) in self._seen
            or (key[0], key[1], key[2] + 1) in self._seen
        ):
            return False
        self._seen.append(key)
        style = self.get_component_rich_style
        kind_style = style(
            "events-panel--good"
            if event.kind in _GOOD
            else "events-panel--bad"
            if event.kind in _BAD or event.error
            else "events-panel--kind"
        )
        line = Text.assemble(
            (datetime.fromtimestamp(event.ts).strftime("%H:%M:%S "), style("events-panel--time")),
            (f"{event.kind:<9} ", kind_style),
            event.message,
        )
        if event.duration_s is not None:
            line.append(f" ({event.duration_s:.2f}s)", style=style("events-panel--time"))
        if event.error and event.error.splitlines()[0] not in event.message:
            line.append(f" — {event.error.splitlines()[0]}", style=style("events-panel--bad"))
        self.query_one(RichLog).write(line)
        self.count += 1
        return True
