"""The main screen: Stack, Serving, Dev loop, Events, Targets and Runs at a glance, and every action.

It owns the polling: a timer ticks every ``poll_s``; each tick starts at most one worker per
source (stack, serving, events, runs), skipping a source whose last read is still running, so
a slow service never piles up threads. Workers post typed messages back; the handlers set the
panels' attributes. Actions that block (start/stop, train, serve) run in workers too, so keys
keep working while the stack starts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Footer, Header
from textual.worker import Worker, WorkerState

from mlplat_runtime.errors import MlplatError
from mlplat_tui.ui import devstate
from mlplat_tui.ui.actions import ACTIONS
from mlplat_tui.ui.confirm import ConfirmModal
from mlplat_tui.ui.data import DataSource
from mlplat_tui.ui.devloop_panel import DevLoopPanel
from mlplat_tui.ui.events_panel import EventsPanel
from mlplat_tui.ui.messages import (
    ActionDone,
    EventsLoaded,
    PlatformEvent,
    RunsLoaded,
    ServingUpdated,
    StackUpdated,
)
from mlplat_tui.ui.runs_table import RunsTable
from mlplat_tui.ui.serving_panel import ServingPanel
from mlplat_tui.ui.snapshots import RunsQuery, short_id
from mlplat_tui.ui.stack_panel import StackPanel
from mlplat_tui.ui.targets_actions import TARGETS_EVERY_TICKS, TargetActions
from mlplat_tui.ui.targets_panel import TargetsPanel

if TYPE_CHECKING:
    from mlplat_tui.events import Event
    from mlplat_tui.ui.devhost import DevLoopHandle
    from mlplat_tui.ui.targets_data import TargetsSource

RUNS_EVERY_TICKS = 3  # runs change only when a cycle ends (an event refreshes them at once)
_REFRESH_KINDS = ("bundled", "gated", "swapped", "rejected", "failed", "cancelled", "cycle")


def _event(kind: str, message: str, **fields: Any) -> Event:
    # Imported here, not at the top: mlplat_tui.events loads numpy (through the bundle package),
    # which would delay the first paint; by the time an action runs it is loaded anyway.
    from mlplat_tui.events import Event

    return Event(kind, message, **fields)


class MainScreen(TargetActions):
    CSS_PATH = "main_screen.tcss"
    BINDINGS: ClassVar[list[Binding | tuple[str, str] | tuple[str, str, str]]] = [
        Binding(a.key, a.action, a.short or a.title, show=a.footer)
        for a in ACTIONS
        if a.key and not a.action.startswith("app.") and a.key != "enter"
    ]

    def __init__(
        self,
        data: DataSource,
        *,
        dev: bool = False,
        poll_s: float = 1.0,
        targets: TargetsSource | None = None,
    ) -> None:
        super().__init__()
        self.data = data
        self.targets_source = targets  # push targets and the fleet (targets_actions.py)
        self.dev = dev
        self.poll_s = poll_s
        self.dev_loop: DevLoopHandle | None = None  # set by the app once the loop runs
        self._inflight: set[str] = set()
        self._pending: set[str] = set()
        self._ticks = 0
        self._last_event_id: int | None = None
        self._busy: str | None = None  # the stack action running, if any
        self._training: threading.Event | None = None  # cancel flag of a running "train now"
        self._errors: dict[str, str] = {}  # last error shown per poller, so it is not repeated

    # ---- layout ------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="top"):
            yield StackPanel(id="stack")
            yield ServingPanel(id="serving")
        with Horizontal(id="middle"):
            yield DevLoopPanel(id="devloop")
            yield EventsPanel(id="events")
        if self.targets_source is not None and self.targets_source.names:
            yield TargetsPanel(self.targets_source.names, id="targets")
        yield RunsTable(RunsQuery(), id="runs")
        yield Footer()

    @property
    def runs(self) -> RunsTable:
        return self.query_one(RunsTable)

    @property
    def events(self) -> EventsPanel:
        return self.query_one(EventsPanel)

    @property
    def devloop(self) -> DevLoopPanel:
        return self.query_one(DevLoopPanel)

    def on_mount(self) -> None:
        self.title = "mlplat"
        self.set_class(self.has_targets, "-targets")
        self._show_backend()
        if self.dev:
            self.devloop.state = devstate.DevLoopState(phase="idle", watching=True)
        self.runs.grid.focus()
        # Paint first, then start reading: the first reads import the heavier modules.
        self.call_after_refresh(self._start_polling)

    def _show_backend(self) -> None:
        # The data source follows the backend that is up (it may change under a running
        # dashboard: `mlplat down`, then `mlplat up --backend docker`); the title follows it.
        d = self.data
        dev = " · dev" if self.dev else ""
        self.sub_title = f"{d.project_name} · {d.model_name} · {d.backend_name}{dev}"

    def _start_polling(self) -> None:
        self._tick()
        self.set_interval(self.poll_s, self._tick)

    # ---- polling -----------------------------------------------------------------------------
    def _tick(self) -> None:
        self.devloop.now = self.data.now()
        self._poll("stack")
        self._poll("serving")
        self._poll("events")
        if self._ticks % RUNS_EVERY_TICKS == 0:
            self._poll("runs")
        if self.has_targets and self._ticks % TARGETS_EVERY_TICKS == 0:
            self._poll("targets")
        self._ticks += 1

    def _poll(self, name: str) -> None:
        """Read one source in a worker, unless its last read is still running (then once after)."""
        if name in self._inflight:
            self._pending.add(name)
            return
        self._inflight.add(name)
        self.run_worker(self._reader(name), name=name, group=f"poll-{name}", thread=True, exit_on_error=False)

    def _reader(self, name: str) -> Callable[[], object]:
        # What a read needs from the screen is taken here, on the UI thread; the worker only
        # calls the data source and posts the answer.
        data, post = self.data, self.post_message
        if name == "stack":
            return lambda: post(StackUpdated(data.stack()))
        if name == "serving":
            return lambda: post(ServingUpdated(data.serving()))
        if name == "targets":
            return self.targets_reader()
        if name == "events":
            after = self._last_event_id
            return lambda: post(EventsLoaded(data.events_since(after)))
        query = self.runs.runs_query
        return lambda: post(RunsLoaded(data.runs(query)))

    def refresh_runs(self) -> None:
        self._poll("runs")

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker, name = event.worker, event.worker.name
        if event.state == WorkerState.ERROR:
            error = worker.error
            text = str(error) if isinstance(error, MlplatError) else f"{type(error).__name__}: {error}"
            if self._errors.get(name) != text:  # a poller failing every second says it once
                self._errors[name] = text
                self.notify(text, title=name, severity="error", markup=False)
        elif event.state == WorkerState.SUCCESS:
            self._errors.pop(name, None)
        if worker.is_finished and name in self._inflight:
            self._inflight.discard(name)
            if name in self._pending:
                self._pending.discard(name)
                self._poll(name)

    # ---- data in -----------------------------------------------------------------------------
    def on_stack_updated(self, message: StackUpdated) -> None:
        self.query_one(StackPanel).snapshot = message.snapshot
        self._show_backend()

    def on_serving_updated(self, message: ServingUpdated) -> None:
        self.query_one(ServingPanel).snapshot = message.snapshot

    def on_runs_loaded(self, message: RunsLoaded) -> None:
        self.runs.page = message.page

    def on_events_loaded(self, message: EventsLoaded) -> None:
        first = self._last_event_id is None
        self._last_event_id = message.batch.last_id
        before = self.devloop.state
        for event in message.batch.events:
            self.show_event(event)
        if first:
            # History tells the last change and outcome, not what runs now: keep the phase.
            self.devloop.state = replace(
                self.devloop.state,
                phase=before.phase,
                step=before.step,
                step_started=before.step_started,
                watching=before.watching,
            )

    def on_platform_event(self, message: PlatformEvent) -> None:
        self.show_event(message.event)

    def show_event(self, event: Event) -> None:
        if event.kind == "output":
            self.devloop.add_output(event.message)
            return
        if not self.events.add(event):
            return
        if event.kind == "training" and event.run_id:
            self.devloop.add_output(f"── run {short_id(event.run_id)} ──")
        self.devloop.state = devstate.apply(self.devloop.state, event)
        if event.kind in _REFRESH_KINDS:
            self.refresh_runs()
            if event.kind == "swapped":
                self._poll("serving")

    @on(RunsTable.QueryChanged)
    def _query_changed(self) -> None:
        self.refresh_runs()

    @on(RunsTable.RunChosen)
    def _run_chosen(self, message: RunsTable.RunChosen) -> None:
        self._open_run(message.run_id)

    # ---- actions -----------------------------------------------------------------------------
    def _emit(self, event: Event) -> None:
        """An event sink safe to call from any thread."""
        self.post_message(PlatformEvent(event))

    def _confirm(self, title: str, body: str, then: Callable[[], None], *, confirm: str = "Yes") -> None:
        def answered(ok: bool | None) -> None:
            if ok:
                then()

        self.app.push_screen(ConfirmModal(title, body, confirm=confirm), answered)

    def _serving_now(self) -> str:
        snap = self.query_one(ServingPanel).snapshot
        return f"v{snap.version}" if snap and snap.version else "nothing"

    def action_stack_up(self) -> None:
        if self._busy:
            self.notify(f"already {self._busy}", severity="warning")
            return
        self._set_busy("starting the stack…")
        self.run_worker(self._stack_up, name="stack_up", thread=True, exit_on_error=False)

    def _stack_up(self) -> None:
        try:
            self._emit(_event("stack", f"starting the {self.data.backend_name} stack"))
            snap = self.data.start_stack(lambda line: self._emit(_event("stack", line)))
            self.post_message(StackUpdated(snap))
            self.post_message(ActionDone("stack_up", "the stack is up"))
        except MlplatError as exc:
            self.post_message(ActionDone("stack_up", str(exc), ok=False))

    def action_stack_down(self) -> None:
        if self._busy:
            self.notify(f"already {self._busy}", severity="warning")
            return
        self._confirm(
            "Stop the stack?",
            f"Tracker, metadata and serving stop; serving stops answering "
            f"({self._serving_now()} serves now).",
            self._stack_down_confirmed,
            confirm="Stop",
        )

    def _stack_down_confirmed(self) -> None:
        self._set_busy("stopping the stack…")
        self.run_worker(self._stack_down, name="stack_down", thread=True, exit_on_error=False)

    def _stack_down(self) -> None:
        try:
            self.data.stop_stack(lambda line: self._emit(_event("stack", line)))
            self.post_message(ActionDone("stack_down", "the stack is stopped"))
        except MlplatError as exc:
            self.post_message(ActionDone("stack_down", str(exc), ok=False))

    def _set_busy(self, text: str | None) -> None:
        self._busy = text
        self.query_one(StackPanel).busy = text

    def action_train_now(self) -> None:
        if self._training is not None:
            self.notify("a training cycle is already running", severity="warning")
            return
        self._confirm(
            "Train now?",
            f"Train, bundle and check the gates; when they all pass the new version replaces "
            f"{self._serving_now()} in serving.",
            self._train_confirmed,
            confirm="Train",
        )

    def _train_confirmed(self) -> None:
        if self.dev_loop is not None:
            self.dev_loop.trigger()
            self.notify("the dev loop trains once more")
            return
        self._training = threading.Event()
        self.run_worker(self._train, name="train_now", thread=True, exit_on_error=False)

    def _train(self) -> None:
        cancel = self._training or threading.Event()
        try:
            self.post_message(ActionDone("train_now", self.data.train_now(self._emit, cancel)))
        except MlplatError as exc:
            self.post_message(ActionDone("train_now", str(exc), ok=False))

    def cancel_training(self) -> None:
        if self._training is not None:
            self._training.set()

    def action_serve_selected(self) -> None:
        row = self.runs.selected_row
        if row is None:
            self.notify("select a run first", severity="warning")
            return
        self.request_serve(row.run_id, row.version, row.bundle_id)

    def request_serve(self, run_id: str, version: str | None = None, bundle_id: str | None = None) -> None:
        snap = self.query_one(ServingPanel).snapshot
        if bundle_id and snap is not None and snap.bundle_id == bundle_id:
            self.notify(f"v{version or snap.version} is already serving")
            return
        what = f"v{version} (run {short_id(run_id)})" if version else f"run {short_id(run_id)}"
        self._confirm(
            f"Serve {what}?",
            f"Serving swaps from {self._serving_now()} to {what}. The old version keeps answering "
            "until the new one is loaded and checked; if it is refused, nothing changes.",
            lambda: self._start_serve(run_id),
            confirm="Serve",
        )

    def _start_serve(self, run_id: str) -> None:
        self.run_worker(lambda: self._serve(run_id), name="serve", thread=True, exit_on_error=False)

    def _serve(self, run_id: str) -> None:
        try:
            self.post_message(ActionDone("serve", self.data.serve_run(run_id, self._emit)))
        except MlplatError as exc:
            self.post_message(ActionDone("serve", str(exc), ok=False))

    def on_action_done(self, message: ActionDone) -> None:
        if message.action in ("stack_up", "stack_down"):
            self._set_busy(None)
            self._poll("stack")
        if message.action == "train_now":
            self._training = None
        if message.action in ("serve", "train_now", "stack_up"):
            self.refresh_runs()
            self._poll("serving")
        self.notify(
            message.message,
            title=message.action.replace("_", " "),
            severity="information" if message.ok else "error",
            markup=False,
        )

    def _open_run(self, run_id: str) -> None:
        from mlplat_tui.ui.run_detail import RunDetailScreen

        self.app.push_screen(RunDetailScreen(self.data, run_id))

    def action_open_run(self) -> None:
        run_id = self.runs.selected_run_id
        if run_id is None:
            self.notify("no run selected", severity="warning")
            return
        self._open_run(run_id)

    def action_inspect_bundle(self) -> None:
        from mlplat_tui.ui.bundle_screen import BundleScreen

        row = self.runs.selected_row
        if row is None or not row.bundle_id:
            self.notify("the selected run has no bundle" if row else "select a run first", severity="warning")
            return
        self.app.push_screen(BundleScreen(self.data, row.bundle_id))

    def action_open_monitoring(self) -> None:
        from mlplat_tui.ui.monitoring_data import monitoring_source
        from mlplat_tui.ui.monitoring_screen import MonitoringScreen

        self.app.push_screen(MonitoringScreen(monitoring_source(self.data), model=self.data.model_name))

    def action_open_logs(self, service: str = "serving") -> None:
        from mlplat_tui.ui.logs_screen import LogsScreen

        self.app.push_screen(LogsScreen(self.data, service))

    def action_filter(self) -> None:
        self.runs.open_filter()

    def action_sort_next(self) -> None:
        self.runs.next_sort()

    def action_sort_reverse(self) -> None:
        self.runs.reverse()

    def action_page(self, delta: int) -> None:
        self.runs.turn_page(delta)

    def action_refresh(self) -> None:
        self._ticks = 0
        self._tick()
