"""Messages that carry results from workers (threads) to the screens.

Threads never touch widgets: they ``post_message`` one of these and the handler, on the UI
thread, sets the widgets' attributes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.message import Message

if TYPE_CHECKING:
    from mlplat_tui.events import Event
    from mlplat_tui.push.pipeline import PushResult
    from mlplat_tui.ui.targets_data import FleetSnapshot, TargetsSnapshot
from mlplat_tui.ui.snapshots import (
    BundleView,
    EventsBatch,
    RunDetail,
    RunsPage,
    ServingSnapshot,
    StackSnapshot,
)


class PlatformEvent(Message):
    """One event from the in-process dev loop, a "train now" cycle or the stack's progress."""

    def __init__(self, event: Event) -> None:
        super().__init__()
        self.event = event


class StackUpdated(Message):
    def __init__(self, snapshot: StackSnapshot) -> None:
        super().__init__()
        self.snapshot = snapshot


class ServingUpdated(Message):
    def __init__(self, snapshot: ServingSnapshot) -> None:
        super().__init__()
        self.snapshot = snapshot


class RunsLoaded(Message):
    def __init__(self, page: RunsPage) -> None:
        super().__init__()
        self.page = page


class EventsLoaded(Message):
    def __init__(self, batch: EventsBatch) -> None:
        super().__init__()
        self.batch = batch


class DetailLoaded(Message):
    def __init__(self, detail: RunDetail) -> None:
        super().__init__()
        self.detail = detail


class BundleLoaded(Message):
    def __init__(self, view: BundleView) -> None:
        super().__init__()
        self.view = view


class ActionDone(Message):
    """A user action (start/stop, train, serve) finished; ``message`` is what to tell the user."""

    def __init__(self, action: str, message: str, *, ok: bool = True) -> None:
        super().__init__()
        self.action = action
        self.message = message
        self.ok = ok


class ServeRequested(Message):
    """A screen other than the main one asks to serve a run's bundle (the main screen confirms)."""

    def __init__(self, run_id: str, version: str | None = None, bundle_id: str | None = None) -> None:
        super().__init__()
        self.run_id = run_id
        self.version = version
        self.bundle_id = bundle_id


class DevLoopDied(Message):
    """The hosted dev loop ended on an error (or never started): the app must say so and exit 1."""

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason


class TargetsUpdated(Message):
    """What each push target serves, its health and its last push."""

    def __init__(self, snapshot: TargetsSnapshot) -> None:
        super().__init__()
        self.snapshot = snapshot


class TargetProgress(Message):
    """One progress line of a push or rollback running on ``target``."""

    def __init__(self, target: str, line: str) -> None:
        super().__init__()
        self.target = target
        self.line = line


class TargetActionDone(Message):
    """A push or rollback ended: ``result`` is the pipeline's, ``error`` when it could not try."""

    def __init__(
        self, target: str, action: str, result: PushResult | None = None, error: str | None = None
    ) -> None:
        super().__init__()
        self.target = target
        self.action = action
        self.result = result
        self.error = error


class FleetLoaded(Message):
    def __init__(self, snapshot: FleetSnapshot) -> None:
        super().__init__()
        self.snapshot = snapshot
