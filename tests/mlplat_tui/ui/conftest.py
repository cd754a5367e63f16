"""Fixtures and pilot helpers for the dashboard tests.

``live`` is a real local stack (mlflow tracker, metadata service, serving runtime as processes
on free loopback ports) on a copy of the churn sample, with one real training cycle served and
one failed run recorded. It is shared by a module's tests because the tracker alone takes tens
of seconds to start on a busy machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from textual.geometry import Region
from textual.pilot import Pilot
from textual.widget import Widget
from textual.widgets import DataTable

from mlplat_tui.project.config import Project, load_project
from mlplat_tui.stack.local import LocalBackend
from tests.helpers.stack import copy_sample, relax_latency_gate, started_stack


@dataclass(frozen=True)
class Live:
    root: Path
    project: Project
    backend: LocalBackend
    run_id: str  # the trained run, served as version ``version``
    version: str
    bundle_id: str
    failed_run_id: str  # a run that failed before bundling: nothing to serve


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    from mlplat_runtime.metadata.records import RunRecord
    from mlplat_tui.clients.metadata import MetadataClient
    from mlplat_tui.cycle.pipeline import run_cycle
    from mlplat_tui.stack.base import Service

    root = copy_sample("churn", tmp_path_factory.mktemp("ui-live"))
    relax_latency_gate(root)  # these tests are about the dashboard, not that guardrail
    with started_stack(root) as backend:
        project = load_project(root)
        result = run_cycle(project, backend=backend)
        assert result.deployed, result.error
        assert result.run_id and result.version and result.bundle_id
        with MetadataClient(
            backend.ports.url(Service.METADATA), token_file=project.paths.metadata_token
        ) as meta:
            failed = meta.record_run(
                RunRecord(
                    run_id="f" * 32,
                    project=project.name,
                    model_name=project.config.model.name,
                    status="failed",
                    error="train.py exited with 1",
                )
            )
        yield Live(root, project, backend, result.run_id, result.version, result.bundle_id, failed.run_id)


@pytest.fixture
def offline_project(tmp_path: Path) -> Project:
    """The churn sample on free ports, its stack never started: every service is down."""
    return load_project(copy_sample("churn", tmp_path))


async def wait_until(pilot: Pilot[Any], cond: Callable[[], object], what: str, timeout: float = 60.0) -> None:
    """Let the app run until ``cond()`` is truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if cond():
                return
        except Exception:  # e.g. a widget not mounted yet: keep waiting
            pass
        await pilot.pause(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def text_of(widget: Widget) -> str:
    """What ``widget`` and its descendants show on screen, as plain text."""
    parts = []
    for w in (widget, *widget.query("*")):
        if w.size.area:
            strips = w.render_lines(Region(0, 0, w.size.width, w.size.height))
            parts.append("\n".join(s.text for s in strips))
    return "\n".join(parts)


def rows_of(table: DataTable[Any]) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def notifications(app: Any) -> list[tuple[str, str]]:
    """(severity, message) of every toast the app raised (run_test(notifications=True))."""
    return [(n.severity, n.message) for n in app._notifications]


def toasts(app: Any) -> list[tuple[str, str]]:
    """(title, message) of every toast the app raised; ``notify`` posts a message, so wait for them."""
    return [(n.title, n.message) for n in app._notifications]
