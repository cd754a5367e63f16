"""The dashboard application: assembles the screens, binds the global keys, routes messages.

Everything it shows comes from a ``DataSource`` (``data.py``); in dev mode it also hosts the
dev loop (``mlplat dev``), whose events it routes to the main screen. A dev loop that did not
start or died is kept in ``dev_failure`` and makes the app exit with return code 1, so
``mlplat dev`` exits non-zero. Ctrl-C quits like ``q`` (Textual's default only says how to
quit). It records how long the first paint took after the process started
(``first_paint_s``), written to the file named by ``MLPLAT_UI_TRACE`` when that is set.
"""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, ClassVar

from textual.app import App
from textual.binding import Binding

from mlplat_runtime.errors import MlplatError
from mlplat_tui.ui.commands import DashboardCommands
from mlplat_tui.ui.data import DataSource
from mlplat_tui.ui.devhost import DevLoopFactory, DevLoopHandle
from mlplat_tui.ui.help_screen import HelpScreen
from mlplat_tui.ui.main_screen import MainScreen
from mlplat_tui.ui.messages import DevLoopDied, PlatformEvent, ServeRequested

if TYPE_CHECKING:
    from mlplat_tui.events import Event
    from mlplat_tui.ui.targets_data import TargetsSource

TRACE_ENV = "MLPLAT_UI_TRACE"
_STOP_TIMEOUT_S = 20.0


class DashboardApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "mlplat"
    COMMANDS: ClassVar = App.COMMANDS | {DashboardCommands}
    BINDINGS: ClassVar[list[Binding | tuple[str, str] | tuple[str, str, str]]] = [
        Binding("question_mark", "help", "help"),
        Binding("q", "quit", "quit"),
        # `mlplat dev --help` promises Ctrl-C stops it; Textual binds it to a hint by default
        Binding("ctrl+c", "quit", "quit", show=False, priority=True),
    ]

    def __init__(
        self,
        data: DataSource,
        *,
        dev_loop: DevLoopFactory | None = None,
        poll_s: float = 1.0,
        launched_at: float | None = None,
        targets: TargetsSource | None = None,
    ) -> None:
        super().__init__()
        self.data = data
        if targets is None:  # the real platform's push targets, when the data source is real
            from mlplat_tui.ui.targets_data import targets_for

            targets = targets_for(data)
        self.targets = targets
        self.dev_loop_factory = dev_loop
        self.dev_loop: DevLoopHandle | None = None
        self.poll_s = poll_s
        self.launched_at = launched_at
        self.first_paint_s: float | None = None
        self._main: MainScreen | None = None
        self._quitting = False
        self.dev_failure: str | None = None  # why the hosted dev loop did not start or died

    @property
    def main_screen(self) -> MainScreen:
        if self._main is None:
            self._main = MainScreen(
                self.data, dev=self.dev_loop_factory is not None, poll_s=self.poll_s, targets=self.targets
            )
        return self._main

    def on_mount(self) -> None:
        # Pushed rather than returned by get_default_screen: only pushed screens load CSS_PATH.
        self.push_screen(self.main_screen)
        self.main_screen.call_after_refresh(self._painted)
        if self.dev_loop_factory is not None:
            self.run_worker(self._start_dev_loop, name="dev loop", thread=True, exit_on_error=False)

    def _painted(self) -> None:
        if self.first_paint_s is not None or self.launched_at is None:
            return
        self.first_paint_s = time.time() - self.launched_at
        self.log(f"first paint {self.first_paint_s:.3f}s after process start")
        trace = os.environ.get(TRACE_ENV)
        if trace:
            with open(trace, "a", encoding="utf-8") as fh:
                fh.write(
                    json.dumps({"first_paint_s": round(self.first_paint_s, 4), "size": list(self.size)})
                    + "\n"
                )

    # ---- dev loop ----------------------------------------------------------------------------
    def _emit(self, event: Event) -> None:
        # Called from the dev loop's threads: post, never touch widgets.
        self.main_screen.post_message(PlatformEvent(event))
        if event.kind == "stopped" and event.error:
            self.post_message(DevLoopDied(event.error.splitlines()[0]))

    def _start_dev_loop(self) -> None:
        assert self.dev_loop_factory is not None
        try:
            loop = self.dev_loop_factory(self._emit)
            loop.start()
        except Exception as exc:  # any failure here is the dev loop's death, to be shown
            from mlplat_tui.events import Event

            msg = str(exc) if isinstance(exc, MlplatError) else f"{type(exc).__name__}: {exc}"
            self._emit(Event("stopped", f"dev loop did not start: {msg.splitlines()[0]}", error=msg))
            return
        if self._quitting:  # quit was pressed while the loop was being built: the app is leaving
            loop.stop(timeout_s=_STOP_TIMEOUT_S)
            return
        self.call_from_thread(self._dev_started, loop)

    def _dev_started(self, loop: DevLoopHandle) -> None:
        self.dev_loop = loop
        self.main_screen.dev_loop = loop

    def on_dev_loop_died(self, message: DevLoopDied) -> None:
        if self.dev_failure is None:
            self.dev_failure = message.reason
            self.notify(
                f"the dev loop died: {message.reason}. Saves are not watched; quit and run "
                "`mlplat dev` again.",
                title="dev loop",
                severity="error",
                timeout=30,
                markup=False,
            )

    # ---- routing -----------------------------------------------------------------------------
    def on_serve_requested(self, message: ServeRequested) -> None:
        self.main_screen.request_serve(message.run_id, message.version, message.bundle_id)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    async def action_quit(self) -> None:
        if self._quitting:
            self._leave()  # asked twice: do not wait any longer
            return
        self._quitting = True
        self.main_screen.cancel_training()
        if self.dev_loop is None:
            self._leave()
            return
        self.notify("stopping the dev loop… (q again to leave now)")
        self.run_worker(self._stop_then_exit, name="stop", thread=True, exit_on_error=False)

    def _stop_then_exit(self) -> None:
        if self.dev_loop is not None:
            self.dev_loop.stop(timeout_s=_STOP_TIMEOUT_S)
        self.call_from_thread(self._leave)

    def _leave(self) -> None:
        loop = self.dev_loop
        if self.dev_failure is None and loop is not None and loop.died:
            self.dev_failure = "the dev loop ended on an error"  # its event is still queued
        self.exit(return_code=1 if self.dev_failure else 0)

    def on_unmount(self) -> None:
        self.data.close()
