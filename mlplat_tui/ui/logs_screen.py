"""Service logs: follow one service's log (tracker, metadata, serving), switch with 1/2/3.

A followed log never ends, and a thread worker cannot be interrupted while it waits for the
next line (and Textual's executor joins its threads at exit), so the follower is a daemon
thread of our own. It only appends lines to a buffer; a timer on the UI thread moves them into
the ``Log`` widget in batches, so a chatty service cannot flood the message queue.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Header, Log, Tab, Tabs

from mlplat_runtime.errors import MlplatError
from mlplat_tui.stack.base import SERVICES
from mlplat_tui.ui.data import DataSource

_MAX_LINES = 5000
_DRAIN_S = 0.1


class _Follower:
    def __init__(self, data: DataSource, service: str) -> None:
        self.service = service
        self.lines: deque[str] = deque(maxlen=_MAX_LINES)
        self.error: str | None = None
        self.stopped = threading.Event()
        self._data = data
        self._thread = threading.Thread(target=self._run, name=f"mlplat-logs-{service}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for line in self._data.logs(self.service, follow=True, tail=500):
                if self.stopped.is_set():
                    return
                self.lines.append(line)
        except MlplatError as exc:
            self.error = str(exc)
        except OSError as exc:
            self.error = f"cannot read the {self.service} log: {exc}"

    def stop(self) -> None:
        self.stopped.set()


class LogsScreen(Screen[None]):
    CSS_PATH = "logs_screen.tcss"
    BINDINGS: ClassVar[list[Binding | tuple[str, str] | tuple[str, str, str]]] = [
        Binding("escape", "app.pop_screen", "back"),
        Binding("1", "show('tracker')", "tracker"),
        Binding("2", "show('metadata')", "metadata"),
        Binding("3", "show('serving')", "serving"),
        Binding("c", "clear", "clear"),
    ]

    def __init__(self, data: DataSource, service: str = "serving") -> None:
        super().__init__()
        self.data = data
        self.service = service
        self._follower: _Follower | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Tabs(*(Tab(str(s), id=f"tab-{s}") for s in SERVICES), active=f"tab-{self.service}")
        yield Log(max_lines=_MAX_LINES, id="logs", auto_scroll=True)
        yield Footer()

    def on_mount(self) -> None:
        self.set_interval(_DRAIN_S, self._drain)
        self._follow(self.service)

    def on_unmount(self) -> None:
        if self._follower is not None:
            self._follower.stop()

    def _follow(self, service: str) -> None:
        if self._follower is not None:
            self._follower.stop()
        self.service = service
        self.sub_title = f"{service} log (following)"
        self.query_one(Log).clear()
        self._follower = _Follower(self.data, service)

    def _drain(self) -> None:
        f = self._follower
        if f is None:
            return
        batch: list[str] = []
        while f.lines:
            batch.append(f.lines.popleft())
        if batch:
            self.query_one(Log).write_lines(batch)
        if f.error is not None:
            self.notify(f.error, title=f"{f.service} log", severity="error", markup=False)
            f.error = None

    def on_tabs_tab_activated(self, event: Tabs.TabActivated) -> None:
        service = (event.tab.id or "").removeprefix("tab-")
        if service and service != self.service:
            self._follow(service)

    def action_show(self, service: str) -> None:
        self.query_one(Tabs).active = f"tab-{service}"

    def action_clear(self) -> None:
        self.query_one(Log).clear()
