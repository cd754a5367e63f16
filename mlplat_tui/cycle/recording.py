"""Recording a training cycle: the MLflow run, and runs, bundles, gates and events in the
metadata store (deployments are recorded by the deploy use case, ``mlplat_tui.deploy``).

Split from ``pipeline.py`` so the cycle reads as its steps. The two records are independent:
the metadata store holds the run, its bundle and gates whether or not MLflow is up (a
deployment whose bundle the store never heard of cannot be the next cycle's champion nor be
restored after ``up``), and MLflow gets what it can when it is up. Everything here is
bookkeeping: a service that is down or refuses never changes the outcome of a cycle, so writes
are best effort (each says whether the store accepted it, and ``refusal`` keeps the store's
last refusal, so the cycle can say so and does not claim "recorded"), and events are written
by one background thread, in order, off the path from save to serving.

Imports the client protocols and the records; mlflow only through the tracker client.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlplat_runtime.bundle.manifest import Manifest
from mlplat_runtime.errors import MlplatError
from mlplat_tui.clients.protocols import MetadataApi, TrackerApi
from mlplat_tui.events import Event
from mlplat_tui.project.config import Project


class Recorder:
    """The tracker and metadata clients of the current cycle (either may be None: not up)."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.tracker: TrackerApi | None = None
        self.metadata: MetadataApi | None = None
        self._events: queue.Queue[Event] = queue.Queue()
        self._events_thread: threading.Thread | None = None
        self.refusal: MlplatError | None = None  # the store's last refusal of a write

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
    def create_mlflow_run(self, model: str, changed: tuple[str, ...]) -> tuple[str, str]:
        """Create the MLflow run (before training, so ``mlflow.log_metric`` lands in it);
        (run id, link). Raises ``MlplatError`` when MLflow refuses."""
        assert self.tracker is not None
        run_id = self.tracker.start_run(
            run_name=f"{model}-{datetime.now(UTC):%Y%m%d-%H%M%S}",
            tags={
                "mlplat.project": self.project.name,
                "mlplat.model": model,
                "mlplat.changed": ",".join(changed)[:500],
            },
        )
        return run_id, self.tracker.run_url(run_id)

    def record_run(self, run_id: str, model: str) -> bool:
        """The run in the store (status running); True when the store accepted it."""
        from mlplat_runtime.metadata.records import RunRecord

        tracker_uri = self.tracker.uri if self.tracker is not None else None
        return self._safe(
            lambda m: m.record_run(
                RunRecord(
                    run_id=run_id,
                    project=self.project.name,
                    model_name=model,
                    status="running",
                    created_at=datetime.now(UTC),
                    command=self.project.config.train.command,
                    tracker_uri=tracker_uri,
                )
            )
        )

    def record_bundle(self, run_id: str, manifest: Manifest, bundle_dir: Path) -> bool:
        """The bundle and its gate results in the store, before anything serves it; True when
        the store accepted both."""
        from mlplat_tui.deploy.serve import bundle_record

        record = bundle_record(manifest, bundle_dir, run_id)
        if not self._safe(lambda m: m.record_bundle(record)):
            return False
        self.register_reference(manifest, bundle_dir)
        return self._safe(lambda m: m.record_gates(manifest.bundle_id, run_id, manifest.gates))

    def register_reference(self, manifest: Manifest, bundle_dir: Path) -> bool:
        """The bundle's reference v2 handed to the store's monitor, so drift has it whether or
        not the metadata service can read the bundle folder (the docker backend's container
        cannot read the host's). True when the monitor took it; False without a store, a
        monitor (a service started without ``--monitor-dir`` answers 404), or a v2 reference.
        Never a refusal of the cycle's record: drift is bookkeeping on top of it."""
        import orjson

        if self.metadata is None:
            return False
        try:
            reference = orjson.loads((bundle_dir / "reference.json").read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return False
        if not isinstance(reference, dict) or reference.get("version") != 2:
            return False  # v1 (or none): nothing drift could use
        try:
            self.metadata.register_reference(
                manifest.bundle_id, manifest.model_name, manifest.version, reference
            )
        except MlplatError:
            return False
        return True

    def track(self, run_id: str, manifest: Manifest, bundle_dir: Path) -> None:
        """Params, metrics, lineage tags and the bundle as an artifact, in MLflow."""
        assert self.tracker is not None
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

    def close_run(
        self,
        run_id: str,
        mlflow_status: str,
        *,
        status: str,
        error: str | None = None,
        tracked: bool = False,
        **fields: Any,
    ) -> bool:
        """The outcome in the store (always, when it is up) and the MLflow run's end (when tracked);
        True when the store accepted the outcome."""
        if tracked and self.tracker is not None:
            # The MLflow run status is bookkeeping; the metadata store has the outcome.
            with contextlib.suppress(Exception):
                self.tracker.finish(run_id, mlflow_status)
        finished = datetime.now(UTC).isoformat()
        return self._safe(
            lambda m: m.update_run(run_id, status=status, error=error, finished_at=finished, **fields)
        )

    def _safe(self, fn: Callable[[MetadataApi], object]) -> bool:
        """One best-effort write: True when the store accepted it, False when there is no store
        or it refused (kept in ``refusal``)."""
        if self.metadata is None:
            return False
        try:
            fn(self.metadata)
        except MlplatError as exc:
            self.refusal = exc
            return False
        return True
