"""Turn a burst of file events into one change.

Editors save in several steps (write a temp file, rename it over the original, touch the
backup), and a "save all" writes many files: each of those is a file event, but the person made
one change. ``Debouncer`` collects paths until nothing new has arrived for ``quiet_s`` and then
reports them once, with the time of the *first* event of the burst (the dev loop measures
"save -> serving" from it).

No watchdog, no UI: the watcher pushes paths in, a callback gets ``Change`` values out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Change:
    """One debounced change: the project-relative paths and when the burst started and ended."""

    files: tuple[str, ...]
    first_at: float  # time.monotonic() of the first event of the burst
    last_at: float  # time.monotonic() of the last event
    first_wall: float  # time.time() of the first event (for event timestamps)

    def merge(self, newer: Change) -> Change:
        """Both changes as one (a change that arrived while the previous one was being handled)."""
        return Change(
            files=tuple(sorted(set(self.files) | set(newer.files))),
            first_at=min(self.first_at, newer.first_at),
            last_at=max(self.last_at, newer.last_at),
            first_wall=min(self.first_wall, newer.first_wall),
        )


ChangeCallback = Callable[[Change], None]


class Debouncer:
    """Collects paths; calls ``on_change`` from its own thread once ``quiet_s`` passed silently."""

    def __init__(
        self,
        on_change: ChangeCallback,
        quiet_s: float = 0.2,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if quiet_s < 0:
            raise ValueError("quiet_s must be >= 0")
        self.on_change = on_change
        self.quiet_s = quiet_s
        self._clock = clock
        self._wall = wall_clock
        self._cond = threading.Condition()
        self._files: set[str] = set()
        self._first_at: float | None = None
        self._first_wall = 0.0
        self._last_at = 0.0
        self._stopped = False
        self._thread: threading.Thread | None = None

    def push(self, path: str) -> None:
        """Record one file event now."""
        now = self._clock()
        with self._cond:
            if self._first_at is None:
                self._first_at = now
                self._first_wall = self._wall()
            self._last_at = now
            self._files.add(path)
            self._cond.notify()

    def start(self) -> None:
        with self._cond:
            if self._thread is not None:
                return
            self._stopped = False
            self._thread = threading.Thread(target=self._run, name="mlplat-debounce", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop without reporting what is still pending."""
        with self._cond:
            self._stopped = True
            self._cond.notify()
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def flush(self) -> Change | None:
        """Take what is pending now (without waiting for quiet); None when nothing is."""
        with self._cond:
            return self._take()

    def _take(self) -> Change | None:
        if self._first_at is None:
            return None
        change = Change(tuple(sorted(self._files)), self._first_at, self._last_at, self._first_wall)
        self._files.clear()
        self._first_at = None
        return change

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    if self._first_at is None:
                        self._cond.wait()
                        continue
                    remaining = self._last_at + self.quiet_s - self._clock()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                if self._stopped:
                    return
                change = self._take()
            if change is not None:
                # outside the lock: the callback may be slow, and pushes must not wait for it
                self.on_change(change)
