"""Recording a training cycle: the MLflow run, and runs, bundles, gates, deployments and events
in the metadata store.

Split from ``pipeline.py`` so the cycle reads as its steps. Everything here is bookkeeping:
a store that is down or refuses must never change the outcome of a cycle, so metadata writes are
best effort (the run record carries the outcome), and events are written by one background
thread, in order, off the path from save to serving.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from mlplat_runtime.bundle.manifest import Manifest
from mlplat_runtime.errors import MlplatError
from mlplat_tui.events import Event
from mlplat_tui.project.config import Project


class Recorder:
    """The tracker and metadata clients of one pipeline (either may be None: stack down)."""

    def __init__(self, project: Project, tracker_uri: str) -> None:
        self.project = project
        self.tracker_uri = tracker_uri
        self.tracker: Any = None
        self.metadata: Any = None
        self._events: queue.Queue[Event] = queue.Queue()
        self._events_thread: threading.Thread | None = None

    # -- events ----------------------------------------------------------------------------
    def event(self, event: Event) -> None:
        if self.metadata is not None and event.kind != "output":
            self._enqueue(event)

    def _enqueue(self, event: Event) -> None:
        # Events are written by one background thread, in order, off the path from save to
        # serving; ``flush`` waits for them (end of a cycle, end of the process).
        if self._events_thread is None:
            self._events_thread = threading.Thread(target=self._drain, name="mlplat-events", daemon=True)
            self._events_thread.start()
        self._events.put(event)

    def _drain(self) -> None:
        while True:
            event = self._events.get()
            try:
                client = self.metadata
                if client is not None:
                    # Events are best effort (the run record carries the outcome), and this
                    # thread must outlive any one failure.
                    with contextlib.suppress(Exception):
                        client.record_event(event)
            finally:
                self._events.task_done()

    def flush(self, timeout_s: float = 10.0) -> None:
        """Wait until every queued event is in the metadata store (bounded)."""
        deadline = time.monotonic() + timeout_s
        while self._events.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)

    # -- runs --------------------------------------------------------------------------------
    def start_run(self, model: str, changed: tuple[str, ...]) -> tuple[str, str]:
        """Create the MLflow run and its metadata record; (run id, MLflow link)."""
        run_id = str(
            self.tracker.start_run(
                run_name=f"{model}-{datetime.now(UTC):%Y%m%d-%H%M%S}",
                tags={
                    "mlplat.project": self.project.name,
                    "mlplat.model": model,
                    "mlplat.changed": ",".join(changed)[:500],
                },
            )
        )
        self._record_run(run_id, model, status="running")
        return run_id, str(self.tracker.run_url(run_id))

    def deployment(self, run_id: str, manifest: Manifest, *, ok: bool, reason: str) -> None:
        from mlplat_runtime.metadata.records import DeploymentRecord

        deployment = DeploymentRecord(
            model_name=manifest.model_name,
            version=manifest.version,
            bundle_id=manifest.bundle_id,
            run_id=run_id,
            target="local",
            action="deploy",
            status="ok" if ok else "failed",
            reason=reason,
        )
        self._safe(lambda: self.metadata.record_deployment(deployment))

    def _safe(self, fn: Callable[[], object]) -> None:
        if self.metadata is None:
            return
        with contextlib.suppress(MlplatError):
            fn()

    def _record_run(self, run_id: str, model: str, status: Literal["running"]) -> None:
        from mlplat_runtime.metadata.records import RunRecord

        self._safe(
            lambda: self.metadata.record_run(
                RunRecord(
                    run_id=run_id,
                    project=self.project.name,
                    model_name=model,
                    status=status,
                    created_at=datetime.now(UTC),
                    command=self.project.config.train.command,
                    tracker_uri=self.tracker_uri,
                )
            )
        )

    def track(self, run_id: str, manifest: Manifest, bundle_dir: Path) -> None:
        from mlplat_runtime.metadata.records import BundleRecord

        lin = manifest.lineage
        tags = {
            "mlplat.bundle_id": manifest.bundle_id,
            "mlplat.version": manifest.version,
            "mlplat.gates_passed": str(all(g.passed for g in manifest.gates)).lower(),
            "mlplat.git_commit": lin.git_commit or "",
            "mlplat.dirty_hash": lin.dirty_hash or "",
            **{f"mlplat.data.{k}": v for k, v in lin.data_hashes.items()},
            **{
                f"mlplat.gate.{g.name}": f"{'pass' if g.passed else 'fail'} {g.measured} {g.threshold}"
                for g in manifest.gates
            },
        }
        if lin.git_commit:
            tags["mlflow.source.git.commit"] = lin.git_commit
        self.tracker.log(run_id, params=manifest.params, metrics=manifest.metrics, tags=tags)
        self.tracker.log_bundle(run_id, bundle_dir)
        size = sum(p.stat().st_size for p in bundle_dir.rglob("*") if p.is_file())
        self._safe(
            lambda: self.metadata.record_bundle(
                BundleRecord(
                    bundle_id=manifest.bundle_id,
                    run_id=run_id,
                    model_name=manifest.model_name,
                    version=manifest.version,
                    path=str(bundle_dir),
                    size_bytes=size,
                    created_at=datetime.fromisoformat(manifest.created_at),
                    manifest=manifest.model_dump(mode="json"),
                )
            )
        )
        self._safe(lambda: self.metadata.record_gates(manifest.bundle_id, run_id, manifest.gates))

    def close_run(
        self, run_id: str, mlflow_status: str, *, status: str, error: str | None = None, **fields: Any
    ) -> None:
        if self.tracker is not None and self.metadata is not None:
            # The MLflow run status is bookkeeping; the metadata store has the outcome.
            with contextlib.suppress(Exception):
                self.tracker.finish(run_id, mlflow_status)
            self._safe(
                lambda: self.metadata.update_run(
                    run_id, status=status, error=error, finished_at=datetime.now(UTC).isoformat(), **fields
                )
            )
