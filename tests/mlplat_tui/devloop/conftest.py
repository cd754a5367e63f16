"""Fixtures for the dev-loop tests: a copy of the churn sample with its real local stack."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mlplat_tui.events import Event
from mlplat_tui.stack.local import LocalBackend
from tests.helpers.stack import copy_sample, started_stack


class EventLog:
    """Collects a loop's events and lets a test wait for the next one of a kind."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.cond = threading.Condition()

    def __call__(self, event: Event) -> None:
        with self.cond:
            self.events.append(event)
            self.cond.notify_all()

    @property
    def mark(self) -> int:
        with self.cond:
            return len(self.events)

    def wait(self, kind: str, after: int = 0, timeout: float = 180.0) -> Event:
        def found() -> Event | None:
            return next((e for e in self.events[after:] if e.kind == kind), None)

        with self.cond:
            if not self.cond.wait_for(lambda: found() is not None, timeout):
                kinds = [e.kind for e in self.events[after:]]
                raise AssertionError(f"no {kind!r} event within {timeout:.0f}s; saw {kinds}")
            event = found()
            assert event is not None
            return event

    def wait_nth(self, kind: str, n: int, after: int = 0, timeout: float = 180.0) -> Event:
        """The ``n``-th (1-based) event of ``kind`` after index ``after``."""

        def found() -> list[Event]:
            return [e for e in self.events[after:] if e.kind == kind]

        with self.cond:
            if not self.cond.wait_for(lambda: len(found()) >= n, timeout):
                raise AssertionError(f"fewer than {n} {kind!r} events within {timeout:.0f}s")
            return found()[n - 1]

    def kinds(self, after: int = 0) -> list[str]:
        with self.cond:
            return [e.kind for e in self.events[after:] if e.kind != "output"]


def edit(path: Path, pattern: str, replacement: str) -> None:
    """Change one line and save it the way editors do (temp file renamed over the original)."""
    text = path.read_text()
    new, n = re.subn(pattern, replacement, text, count=1, flags=re.M)
    assert n == 1, f"{pattern!r} not found in {path}"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(new)
    tmp.replace(path)


@pytest.fixture
def churn(tmp_path: Path) -> Path:
    return copy_sample("churn", tmp_path)


@pytest.fixture
def churn_stack(churn: Path) -> Iterator[LocalBackend]:
    with started_stack(churn) as backend:
        yield backend


@pytest.fixture
def event_log() -> EventLog:
    return EventLog()


Editor = Callable[[Path, str, str], None]
