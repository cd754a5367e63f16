"""The dev loop: edit, save, and the new model is serving.

    idle/watching ──save──> change (debounced) ──> training ──> bundle ──> gates ──> swapped
         ^                      │ a newer change cancels the run    └──> rejected: <reasons>,
         └──────────────────────┴──────────────────────────────────────── still serving vN

``DevLoop`` owns the watcher, the debouncer and the training runner, and runs one
``pipeline.Pipeline`` cycle per change. Every step is an ``Event``: the pipeline emits (and
records in the metadata store) the steps of a cycle; the loop emits and records its own
``stack``, ``watching``, ``change`` and ``cycle`` events. A ``cycle`` event's ``data`` holds
``save_to_serving_s`` (first save of the burst -> the swap) and ``overhead_s`` (that minus the
training command's own run time).

Thread-friendly: ``start()`` runs the loop in a thread (the dashboard hosts it that way),
``stop()`` ends it (cancelling a training run and ending its process tree), ``run_forever()``
blocks. All events are emitted from the loop's thread. The loop's last event is always
``stopped``; when something ended it other than ``stop()``, that event carries the ``error``
and ``DevLoop.died`` is True, so a host can say so and exit non-zero instead of showing a loop
that watches nothing. No UI code here.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlplat_runtime.errors import MlplatError
from mlplat_tui.cycle.training import TrainingRunner
from mlplat_tui.devloop.debounce import Change, Debouncer
from mlplat_tui.devloop.watcher import PathFilter, ProjectWatcher
from mlplat_tui.events import Event, EventSink, null_sink
from mlplat_tui.project.config import Project, load_project

if TYPE_CHECKING:
    from mlplat_tui.cycle.pipeline import CycleResult, Pipeline
    from mlplat_tui.stack.base import StackBackend

DEFAULT_DEBOUNCE_S = 0.15  # editors finish an atomic save in a few ms; 'save all' well within
_HASH_CAP = 16 * 1024 * 1024  # bigger files are compared by size and mtime, not content
_PRIME_HASH_CAP = 1024 * 1024  # at start-up only small files are read (code, small data)
_TRACKER_MODULES = ("mlflow", "mlflow.tracking", "mlflow.entities")


class ContentIndex:
    """Remembers what each watched file held, so a save that changed nothing is not a change.

    Editors rewrite unchanged files, ``touch`` bumps mtimes, and a training script may rewrite a
    watched file with the same bytes: none of those should retrain (or loop forever).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._seen: dict[str, tuple[Any, ...]] = {}
        self._lock = threading.Lock()

    def _key(self, rel: str, cap: int = _HASH_CAP) -> tuple[Any, ...]:
        path = self.root / rel
        try:
            st = path.stat()
        except OSError:
            return ("missing",)
        if st.st_size > cap:
            return ("stat", st.st_size, st.st_mtime_ns)
        try:
            return ("sha256", hashlib.sha256(path.read_bytes()).hexdigest())
        except OSError:
            return ("unreadable", st.st_mtime_ns)

    def prime(self, rels: Any) -> None:
        """Remember the files as they are now (a big file's first save always counts)."""
        with self._lock:
            for rel in rels:
                self._seen[rel] = self._key(rel, _PRIME_HASH_CAP)

    def changed(self, rels: tuple[str, ...]) -> tuple[str, ...]:
        """The paths whose content differs from last time (and remember the new content)."""
        out = []
        with self._lock:
            for rel in rels:
                key = self._key(rel)
                if self._seen.get(rel) != key:
                    self._seen[rel] = key
                    out.append(rel)
        return tuple(out)


@dataclass(frozen=True)
class _Trigger:
    kind: str  # "start" | "change" | "manual"
    change: Change | None = None

    @property
    def files(self) -> tuple[str, ...]:
        return self.change.files if self.change else ()


class DevLoop:
    """Watch the project; retrain, gate and hot-swap on every (debounced) change.

    ``runner`` defaults to the warm worker (``WarmWorkerRunner.for_project``) unless ``warm`` is
    False or the project turns it off. ``headless`` drops ``output`` events (one per line of
    training output): a JSON-lines consumer wants the steps; a failed run's event still carries
    the output tail. ``down_on_exit`` stops the stack when the loop ends (default: leave it up).
    """

    def __init__(
        self,
        project: Project,
        *,
        backend: StackBackend | None,
        emit: EventSink = null_sink,
        runner: TrainingRunner | None = None,
        debounce_s: float = DEFAULT_DEBOUNCE_S,
        headless: bool = False,
        warm: bool = True,
        start_stack: bool = True,
        down_on_exit: bool = False,
    ) -> None:
        self.project = project
        self.backend = backend
        self._sink = emit
        self.headless = headless
        self.start_stack = start_stack
        self.down_on_exit = down_on_exit
        self._own_runner = runner is None
        if runner is None:
            from mlplat_tui.devloop.worker import WarmWorkerRunner

            runner = WarmWorkerRunner.for_project(project, warm=warm)
        self.runner: TrainingRunner = runner
        self.filter = PathFilter.from_project(project)
        self.index = ContentIndex(project.root)
        self.debouncer = Debouncer(self._on_change, debounce_s)
        self.watcher = ProjectWatcher(project.root, self.filter, self.debouncer.push)
        self._pipeline: Pipeline | None = None
        self._queue: queue.Queue[_Trigger | None] = queue.Queue()
        self._records: queue.Queue[tuple[Pipeline, Event] | None] = queue.Queue()
        self._recorder: threading.Thread | None = None
        self._lock = threading.Lock()
        self._cancel: threading.Event | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.state = "stopped"  # stopped | starting | watching | training | stopping
        self.error: BaseException | None = None  # what ended the loop, when not stop()
        self.results: list[CycleResult] = []

    # -- public control ----------------------------------------------------------------------

    def start(self, *, once: bool = False) -> None:
        """Run the loop in a background thread (returns at once)."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stopping.clear()
            self._thread = threading.Thread(
                target=self._main, args=(once,), name="mlplat-devloop", daemon=True
            )
            self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """End the loop: cancel a running training (its process tree ends), stop watching."""
        self._stopping.set()
        with self._lock:
            if self._cancel is not None:
                self._cancel.set()
        self._queue.put(None)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)

    def trigger(self) -> None:
        """Retrain once more after the current cycle (the dashboard's "train now")."""
        self._queue.put(_Trigger("manual"))

    @property
    def died(self) -> bool:
        """True when the loop ended on an error rather than through ``stop()`` or ``--once``."""
        return self.error is not None

    def join(self, timeout_s: float | None = None) -> bool:
        """Wait for the loop thread; True when it has ended."""
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout_s)
        return not thread.is_alive()

    def run_forever(self) -> None:
        """Block until ``stop()`` (or Ctrl-C on the main thread); re-raise what ended the loop."""
        self._run_blocking(once=False)

    def run_once(self) -> CycleResult | None:
        """Bring the stack up, run one cycle, clean up; the cycle's result."""
        self._run_blocking(once=True)
        return self.results[-1] if self.results else None

    def _run_blocking(self, *, once: bool) -> None:
        if threading.current_thread() is threading.main_thread():
            # Keep the main thread free for Ctrl-C: a KeyboardInterrupt raised inside a training
            # wait would skip the cancel and orphan the training process.
            self.start(once=once)
            try:
                while not self.join(0.2):
                    pass
            except KeyboardInterrupt:
                self.stop()
                raise
        else:
            self._main(once)
        if self.error is not None:
            raise self.error

    # -- events --------------------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        """Emit one of the loop's own events and record it in the metadata store.

        Recording is an HTTP call; it happens on a recorder thread so that a ``change`` event
        does not delay the training it announces.
        """
        self._deliver(event)
        pipeline = self._pipeline
        if pipeline is not None:
            self._records.put((pipeline, event))

    def _record_events(self) -> None:
        while True:
            item = self._records.get()
            if item is None:
                return
            pipeline, event = item
            with contextlib.suppress(Exception):  # best effort, like the pipeline's own
                pipeline.record_event(event)

    def _deliver(self, event: Event) -> None:
        if self.headless and event.kind == "output":
            return
        with contextlib.suppress(Exception):  # a broken sink must not kill the loop
            self._sink(event)

    # -- watcher side ----------------------------------------------------------------------------

    def _on_change(self, change: Change) -> None:
        """Called by the debouncer thread: queue the change and cancel a running cycle."""
        real = self.index.changed(change.files)
        if not real:
            return
        self._queue.put(_Trigger("change", Change(real, change.first_at, change.last_at, change.first_wall)))
        with self._lock:
            if self._cancel is not None:
                self._cancel.set()

    def _take_pending(self, first: _Trigger | None) -> _Trigger | None:
        """``first`` merged with everything queued meanwhile (None when stopping)."""
        trigger = first
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return trigger
            if item is None:
                return None
            trigger = _merge(trigger, item)

    # -- the loop --------------------------------------------------------------------------------

    def _main(self, once: bool) -> None:
        self.error = None
        self.state = "starting"
        try:
            self._prepare(watch=not once)
            trigger: _Trigger | None = _Trigger("start")
            while not self._stopping.is_set():
                trigger = self._take_pending(trigger)
                if trigger is None or self._stopping.is_set():
                    break
                self._maybe_reload(trigger)
                self.state = "training"
                self._cycle(trigger)
                if once:
                    break
                trigger = None
                self.state = "watching"
                if self._queue.empty():
                    self.emit(Event("watching", f"watching {', '.join(self.filter.watch)}"))
                item = self._queue.get()
                if item is None:
                    break
                trigger = item
        except BaseException as exc:  # reported to whoever hosts the loop
            self.error = exc
        finally:
            self.state = "stopping"
            stopped = self._stopped_event()
            self._teardown(stopped)
            self.state = "stopped"
            self._deliver(stopped)

    def _stopped_event(self) -> Event:
        exc = self.error
        if exc is None:
            return Event("stopped", "dev loop stopped")
        msg = str(exc) if isinstance(exc, MlplatError) else f"{type(exc).__name__}: {exc}"
        return Event(
            "stopped",
            f"dev loop died: {msg.splitlines()[0]}; saves are no longer watched",
            error=msg,
        )

    def _prepare(self, *, watch: bool) -> None:
        if watch:
            self.index.prime(self.filter.scan(self.project.root))
            self.debouncer.start()
            self.watcher.start()
        start = getattr(self.runner, "start", None)
        if callable(start):
            start()  # the warm worker imports while the stack comes up
        # The pipeline's tracker client imports mlflow (seconds): do it while the stack starts,
        # and wait for it before the pipeline exists, so mlflow is only ever imported by one
        # thread at a time (see Preload).
        preload = Preload(_TRACKER_MODULES if self.backend is not None else ())
        preload.start()
        if self.backend is not None and self.start_stack:
            status = self.backend.status()
            if status.up:
                self.emit(Event("stack", f"stack is up ({self.backend.name})"))
            else:
                started = time.monotonic()
                self.emit(Event("stack", f"starting the {self.backend.name} stack"))
                from mlplat_tui.deploy.restore import up_and_restore

                up_and_restore(self.backend, lambda line: self._deliver(Event("stack", line)))
                self.emit(Event("stack", "stack is up", duration_s=time.monotonic() - started))
        preload.wait()
        from mlplat_tui.cycle.pipeline import Pipeline

        self._pipeline = Pipeline(self.project, self.backend, runner=self.runner)
        with contextlib.suppress(MlplatError):
            self._pipeline.connect()  # so the loop's own events are recorded from the start
        self._recorder = threading.Thread(
            target=self._record_events, name="mlplat-devloop-record", daemon=True
        )
        self._recorder.start()

    def _teardown(self, stopped: Event) -> None:
        """Stop watching and close what the loop opened; ``stopped`` (the loop's last event,
        delivered to the host afterwards) is recorded in the store before the pipeline closes."""
        with contextlib.suppress(Exception):
            self.watcher.stop()
        with contextlib.suppress(Exception):
            self.debouncer.stop()
        if self._recorder is not None:
            self._records.put(None)  # record what is queued, then end
            self._recorder.join(timeout=5)
            self._recorder = None
        if self._pipeline is not None:
            with contextlib.suppress(Exception):  # best effort, like the loop's other events
                self._pipeline.record_event(stopped)
            self._pipeline.flush(timeout_s=5)  # bounded: a store that is gone does not hold it
            self._pipeline.close()
        close = getattr(self.runner, "close", None)
        if self._own_runner and callable(close):
            with contextlib.suppress(Exception):
                close()
        if self.down_on_exit and self.backend is not None:
            self._deliver(Event("stack", f"stopping the {self.backend.name} stack"))
            try:
                self.backend.down(progress=lambda line: self._deliver(Event("stack", line)))
            except MlplatError as exc:
                self._deliver(Event("failed", f"stack down failed: {exc.message}", error=str(exc)))

    def _maybe_reload(self, trigger: _Trigger) -> None:
        """An edited mlplat.toml takes effect for this cycle (a broken one is reported, not used)."""
        if "mlplat.toml" not in trigger.files:
            return
        try:
            project = load_project(self.project.root)
        except MlplatError as exc:
            self.emit(
                Event("failed", "mlplat.toml is invalid; keeping the previous settings", error=str(exc))
            )
            return
        if project.config == self.project.config:
            return
        self.project = project
        self.filter = PathFilter.from_project(project)
        self.watcher.filter = self.filter
        from mlplat_tui.cycle.pipeline import Pipeline

        old = self._pipeline
        if old is not None:  # its queued events go out and its clients close before it goes
            old.flush(5)
            old.close()
        self._pipeline = Pipeline(project, self.backend, runner=self.runner)
        with contextlib.suppress(MlplatError):
            self._pipeline.connect()
        self.emit(Event("stack", "mlplat.toml changed: settings reloaded"))

    def _cycle(self, trigger: _Trigger) -> None:
        assert self._pipeline is not None
        files = trigger.files
        if trigger.kind == "change":
            self.emit(Event("change", f"changed: {', '.join(files)}", data={"files": list(files)}))
        elif trigger.kind == "manual":
            self.emit(Event("change", "retrain requested", data={"files": [], "trigger": "manual"}))
        cancel = threading.Event()
        with self._lock:
            self._cancel = cancel
            if self._stopping.is_set():
                cancel.set()
        swapped_at: list[float] = []
        cycle_started = time.monotonic()

        def on_event(event: Event) -> None:
            if event.kind == "swapped":
                swapped_at.append(time.monotonic())
            self._deliver(event)

        try:
            result = self._pipeline.run_cycle(emit=on_event, cancel=cancel, changed=files)
        finally:
            with self._lock:
                self._cancel = None
        ended = time.monotonic()
        self.results.append(result)
        self.emit(self._cycle_event(trigger, result, cycle_started, ended, swapped_at))
        from mlplat_tui.cycle.pipeline import clean_run_outputs

        with contextlib.suppress(OSError):
            clean_run_outputs(self.project)

    def _cycle_event(
        self, trigger: _Trigger, result: CycleResult, started: float, ended: float, swapped_at: list[float]
    ) -> Event:
        origin = trigger.change.first_at if trigger.change else started
        # deployed | passed (gates held, nothing deployed) | rejected | failed | cancelled
        outcome = result.outcome.value
        data: dict[str, Any] = {
            "outcome": outcome,
            "trigger": trigger.kind,
            "files": list(trigger.files),
            "cycle_s": round(ended - started, 4),
            "runner": getattr(self.runner, "last_mode", "") or type(self.runner).__name__,
        }
        if result.train_s is not None:
            data["train_s"] = round(result.train_s, 4)
        measured_from = "save" if trigger.change else "cycle start"
        if swapped_at:
            data["save_to_serving_s"] = round(swapped_at[-1] - origin, 4)
            data["measured_from"] = measured_from
            if result.train_s is not None:
                data["overhead_s"] = round(swapped_at[-1] - origin - result.train_s, 4)
        else:
            data["save_to_result_s"] = round(ended - origin, 4)
        if outcome == "deployed":
            took = data.get("save_to_serving_s", data.get("save_to_result_s", 0.0))
            msg = f"v{result.serving_version} serving {took:.2f}s after the {measured_from}"
            if "overhead_s" in data:
                msg += f" (training {data['train_s']:.2f}s, platform {data['overhead_s']:.2f}s)"
        elif outcome == "rejected" or outcome == "failed":
            msg = (result.error or outcome).splitlines()[0]
        elif outcome == "cancelled":
            msg = (
                "cancelled: the dev loop is stopping"
                if self._stopping.is_set()
                else "cancelled by a newer change"
            )
        else:
            msg = "gates passed; not deployed (the stack is not up)"
        return Event(
            "cycle",
            msg,
            run_id=result.run_id,
            bundle_id=result.bundle_id,
            version=result.version,
            duration_s=ended - started,
            error=result.error if outcome == "failed" else None,
            data=data,
        )


class Preload:
    """Import heavy modules on one background thread; ``wait()`` before anything else uses them.

    Two threads importing mlflow at once break it: the import system's deadlock detection
    hands the second thread a partially initialised ``mlflow.tracking`` ("cannot import name
    '_get_store' from partially initialized module"), and the dev loop died on its first cycle
    whenever the stack was already up. So one thread imports, and the loop waits for it before
    building the pipeline (whose tracker client imports mlflow). A failed import is not raised
    here: the importing code meets it again and reports it where it matters.
    """

    def __init__(self, modules: tuple[str, ...]) -> None:
        self.modules = modules
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.modules:
            self._thread = threading.Thread(target=self._run, name="mlplat-preload", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        for module in self.modules:
            with contextlib.suppress(Exception):
                importlib.import_module(module)

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()


def _merge(a: _Trigger | None, b: _Trigger) -> _Trigger:
    """One trigger for both: file changes merge; the start cycle and a pending change absorb others."""
    if a is None:
        return b
    if a.change is not None and b.change is not None:
        return _Trigger("change", a.change.merge(b.change))
    if a.kind == "start" or b.change is None:
        return a
    return b
