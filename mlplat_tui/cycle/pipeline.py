"""One training cycle: train → bundle → gates → record → deploy.

``mlplat train`` runs one cycle; the dev loop runs one per change. A cycle never raises for
what a data scientist causes (a crashing ``train.py``, a gate miss, a model serving refuses):
it emits ``failed`` / ``rejected`` events, records the run with the reason and returns a
``CycleResult``. The serving model is only ever replaced by a load that serving accepted.

When the stack is down the cycle still trains, bundles and gates, but tracks nothing and
deploys nothing (``CycleResult.tracked`` is False) and says so in an event.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mlplat_runtime.bundle.manifest import GateResult, Manifest
from mlplat_runtime.errors import MlplatError, TrainingError
from mlplat_tui.cycle.recording import Recorder
from mlplat_tui.cycle.training import SubprocessRunner, TrainingCancelled, TrainingRunner
from mlplat_tui.events import Event, EventSink, null_sink
from mlplat_tui.project.config import Project
from mlplat_tui.stack.base import Ports, Service, StackBackend


@dataclass(frozen=True)
class CycleResult:
    run_id: str | None = None
    bundle_id: str | None = None
    bundle_path: Path | None = None
    version: str | None = None
    gates: tuple[GateResult, ...] = ()
    passed: bool = False
    deployed: bool = False
    serving_version: str | None = None
    train_s: float | None = None
    total_s: float = 0.0
    error: str | None = None
    cancelled: bool = False
    tracked: bool = False
    run_url: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "bundle_id": self.bundle_id,
            "bundle_path": str(self.bundle_path) if self.bundle_path else None,
            "version": self.version,
            "passed": self.passed,
            "deployed": self.deployed,
            "serving_version": self.serving_version,
            "train_s": self.train_s,
            "total_s": self.total_s,
            "error": self.error,
            "cancelled": self.cancelled,
            "tracked": self.tracked,
            "run_url": self.run_url,
            "metrics": self.metrics,
            "gates": [g.model_dump() for g in self.gates],
        }


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise TrainingError(f"{what} written by the training command is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise TrainingError(f"{what} must hold a JSON object")
    return data


class Pipeline:
    """Connections to the stack's services, reused across the cycles of a dev loop.

    The pipeline records in the metadata store every event it emits itself (except ``output``
    lines); a caller such as the dev loop records its own events with ``record_event``.
    """

    def __init__(
        self, project: Project, backend: StackBackend | None, *, runner: TrainingRunner | None = None
    ) -> None:
        self.project = project
        self.backend = backend
        self.runner: TrainingRunner = runner or SubprocessRunner()
        self.ports = backend.ports if backend is not None else Ports.from_project(project)
        self.rec = Recorder(project, self.ports.url(Service.TRACKER))
        self._admin: Any = None
        self._stack_checked = 0.0

    # -- connections ---------------------------------------------------------------------
    def connect(self) -> bool:
        """Connect to whatever of the stack is up; True when tracker and metadata both are."""
        if self.backend is None:
            return False
        if self.rec.metadata is not None and time.monotonic() - self._stack_checked < 30:
            return self.rec.metadata.health()
        from mlplat_tui.clients.metadata import MetadataClient
        from mlplat_tui.clients.serving import ServingAdmin

        try:
            status = self.backend.status()
        except MlplatError:  # e.g. no Docker engine: train untracked, as with the stack down
            return False
        self._stack_checked = time.monotonic()
        tracker_up = bool((s := status.service(Service.TRACKER)) and s.healthy)
        meta_up = bool((s := status.service(Service.METADATA)) and s.healthy)
        serving_up = bool((s := status.service(Service.SERVING)) and s.healthy)
        if tracker_up and self.rec.tracker is None:
            from mlplat_tui.clients.tracker import Tracker

            try:
                self.rec.tracker = Tracker(self.ports.url(Service.TRACKER), self.project.name)
            except MlplatError:
                tracker_up = False
        self.close()
        self.rec.metadata = MetadataClient(self.ports.url(Service.METADATA)) if meta_up else None
        token_file = self.project.paths.admin_token
        self._admin = (
            ServingAdmin.from_token_file(self.ports.url("admin"), token_file)
            if serving_up and token_file.exists()
            else None
        )
        return tracker_up and meta_up

    def close(self) -> None:
        """Close the HTTP clients (a dev loop reconnects; its old pools must not pile up)."""
        for client in (self.rec.metadata, self._admin):
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()
        self.rec.metadata = None
        self._admin = None

    def record_event(self, event: Event) -> None:
        """Record an event the caller emitted (e.g. ``change``, ``cycle``) in the metadata store."""
        self._recorder(null_sink)(event)

    # -- the cycle -----------------------------------------------------------------------
    def run_cycle(
        self,
        *,
        emit: EventSink = null_sink,
        cancel: threading.Event | None = None,
        deploy: bool = True,
        changed: tuple[str, ...] = (),
    ) -> CycleResult:
        try:
            return self._run_cycle(emit=emit, cancel=cancel, deploy=deploy, changed=changed)
        finally:
            self.flush()

    def _run_cycle(
        self,
        *,
        emit: EventSink = null_sink,
        cancel: threading.Event | None = None,
        deploy: bool = True,
        changed: tuple[str, ...] = (),
    ) -> CycleResult:
        cancel = cancel or threading.Event()
        started = time.monotonic()
        tracked = self.connect()
        model = self.project.config.model.name
        record = self._recorder(emit)
        if not tracked:
            record(
                Event(
                    "stack",
                    "stack is not up: training without tracking or serving "
                    "(run `mlplat up` to track and serve)",
                )
            )
        run_id, run_url = uuid.uuid4().hex, None
        if tracked:
            try:
                run_id, run_url = self.rec.start_run(model, changed)
            except Exception as exc:  # MLflow raises many types; train untracked rather than not at all
                record(Event("stack", f"MLflow refused to create the run ({exc}); training untracked"))
                tracked = False
        out_dir = self.project.paths.run_output(run_id)
        out_dir.mkdir(parents=True, exist_ok=True)
        base = CycleResult(run_id=run_id, tracked=tracked, run_url=run_url)

        # 1. train
        record(
            Event(
                "training",
                f"training: {self.project.config.train.command}",
                run_id=run_id,
                data={"changed": list(changed)},
            )
        )
        try:
            train_s = self.runner.run(
                self.project.config.train.command,
                cwd=self.project.root,
                env=self._train_env(out_dir, run_id if tracked else None),
                cancel=cancel,
                on_output=lambda line: emit(Event("output", line, run_id=run_id)),
                timeout_s=self.project.config.train.timeout_s,
            )
        except TrainingCancelled:
            self.rec.close_run(run_id, "KILLED", status="cancelled", error="cancelled by a newer change")
            record(Event("cancelled", "training cancelled by a newer change", run_id=run_id))
            return replace(base, cancelled=True, total_s=time.monotonic() - started)
        except TrainingError as exc:
            return self._fail(record, run_id, base, started, str(exc), exc.output_tail)
        record(Event("trained", "training finished", run_id=run_id, duration_s=train_s))

        # 2. bundle, 3. gates
        try:
            if cancel.is_set():
                raise TrainingCancelled()
            bundle_dir, manifest = self._bundle(out_dir, run_id, tracked)
            record(
                Event(
                    "bundled",
                    f"bundle v{manifest.version} {manifest.bundle_id[:19]}",
                    run_id=run_id,
                    bundle_id=manifest.bundle_id,
                    version=manifest.version,
                )
            )
            champion = self.champion(model)
            gates = self.evaluate_gates(bundle_dir, champion)
            from mlplat_runtime.bundle import with_gates

            manifest = with_gates(bundle_dir, gates)
        except TrainingCancelled:
            self.rec.close_run(run_id, "KILLED", status="cancelled", error="cancelled by a newer change")
            record(Event("cancelled", "cycle cancelled by a newer change", run_id=run_id))
            return replace(base, cancelled=True, train_s=train_s, total_s=time.monotonic() - started)
        except MlplatError as exc:
            return self._fail(record, run_id, base, started, str(exc), "", train_s=train_s)
        from mlplat_tui.gates.evaluate import all_passed, failure_reasons

        passed = all_passed(gates)
        record(
            Event(
                "gated",
                "gates passed" if passed else "gates failed: " + "; ".join(failure_reasons(gates)),
                run_id=run_id,
                bundle_id=manifest.bundle_id,
                version=manifest.version,
                gates=tuple(gates),
            )
        )
        result = replace(
            base,
            bundle_id=manifest.bundle_id,
            bundle_path=bundle_dir,
            version=manifest.version,
            gates=tuple(gates),
            passed=passed,
            train_s=train_s,
            metrics=dict(manifest.metrics),
        )
        # 4. deploy first (what the user waits for), then track
        serving_before = champion.version if champion else None
        deployed, serving_version, error = False, serving_before, None
        if not passed:
            still = f"still serving v{serving_before}" if serving_before else "nothing serving"
            error = "rejected: " + "; ".join(failure_reasons(gates)) + f", {still}"
            record(
                Event(
                    "rejected",
                    error,
                    run_id=run_id,
                    bundle_id=manifest.bundle_id,
                    version=manifest.version,
                    gates=tuple(gates),
                )
            )
        elif deploy and self._admin is not None and not cancel.is_set():
            deployed, serving_version, error = self._deploy(
                record, run_id, manifest, bundle_dir, serving_before
            )
        if tracked:
            try:
                self.rec.track(run_id, manifest, bundle_dir)
            except Exception as exc:  # MLflow errors are many types; the outcome still stands
                record(Event("stack", f"tracking the run in MLflow failed: {exc}", run_id=run_id))
        status = "deployed" if deployed else ("finished" if passed and error is None else "rejected")
        self.rec.close_run(
            run_id,
            "FINISHED",
            status=status,
            error=error,
            bundle_id=manifest.bundle_id,
            version=manifest.version,
            gates_passed=passed,
            deployed=deployed,
            metrics=dict(manifest.metrics),
            params=dict(manifest.params),
            git_commit=manifest.lineage.git_commit,
            dirty_hash=manifest.lineage.dirty_hash,
            data_hashes=dict(manifest.lineage.data_hashes),
        )
        return replace(
            result,
            deployed=deployed,
            serving_version=serving_version,
            error=error,
            total_s=time.monotonic() - started,
        )

    # -- steps ---------------------------------------------------------------------------
    def _recorder(self, emit: EventSink) -> EventSink:
        def record(event: Event) -> None:
            emit(event)
            self.rec.event(event)

        return record

    def flush(self, timeout_s: float = 10.0) -> None:
        """Wait until every queued event is in the metadata store (bounded)."""
        self.rec.flush(timeout_s)

    def _train_env(self, out_dir: Path, run_id: str | None) -> dict[str, str]:
        import os

        env = dict(os.environ)
        env["MLPLAT_OUTPUT_DIR"] = str(out_dir)
        env["MLPLAT_PROJECT_DIR"] = str(self.project.root)
        env["PYTHONUNBUFFERED"] = "1"
        if run_id is not None:
            env["MLFLOW_TRACKING_URI"] = self.ports.url(Service.TRACKER)
            env["MLFLOW_RUN_ID"] = run_id
        else:
            env.pop("MLFLOW_RUN_ID", None)
            env.pop("MLFLOW_TRACKING_URI", None)
        return env

    def _bundle(self, out_dir: Path, run_id: str, tracked: bool) -> tuple[Path, Manifest]:
        from mlplat_runtime.bundle import build_bundle, open_bundle
        from mlplat_tui.project.lineage import build_lineage

        model_path = out_dir / "model.onnx"
        if not model_path.is_file():
            raise TrainingError(
                "the training command finished but wrote no model.onnx into $MLPLAT_OUTPUT_DIR",
                hint="save the ONNX model to os.environ['MLPLAT_OUTPUT_DIR'] + '/model.onnx'",
            )
        metrics = {
            k: float(v)
            for k, v in _read_json(out_dir / "metrics.json", "metrics.json").items()
            if isinstance(v, int | float)
        }
        params = {k: str(v) for k, v in _read_json(out_dir / "params.json", "params.json").items()}
        reference = _read_json(out_dir / "reference.json", "reference.json") or None
        samples = out_dir / "samples.npz"
        model = self.project.config.model.name
        version = (
            self.rec.metadata.next_version(model) if self.rec.metadata is not None else self._local_version()
        )
        bundles = self.project.paths.bundles
        bundles.mkdir(parents=True, exist_ok=True)
        target = bundles / f"{model}-v{version}"
        if target.exists():  # a reset metadata store must not overwrite an older bundle
            target = bundles / f"{model}-v{version}-{run_id[:8]}"
        lineage = build_lineage(
            self.project, run_id if tracked else None, self.ports.url(Service.TRACKER) if tracked else None
        )
        path = build_bundle(
            model_path,
            model,
            target,
            samples=samples if samples.exists() else None,
            metrics=metrics,
            params=params,
            lineage=lineage,
            reference=reference,
            version=version,
        )
        return path, open_bundle(path).manifest

    def _local_version(self) -> str:
        bundles = self.project.paths.bundles
        return str(sum(1 for _ in bundles.glob("*-v*")) + 1) if bundles.exists() else "1"

    def champion(self, model: str) -> Manifest | None:
        if self.rec.metadata is None:
            return None
        current = self.rec.metadata.current_deployment(model, target="local")
        if current is None:
            return None
        try:
            from mlplat_runtime.bundle import open_bundle

            bundle = self.rec.metadata.bundle(current.bundle_id)
            return open_bundle(Path(bundle.path)).manifest
        except MlplatError:
            return None

    def evaluate_gates(self, bundle_dir: Path, champion: Manifest | None) -> list[GateResult]:
        from mlplat_tui.gates.evaluate import validate_bundle

        return validate_bundle(
            self.project,
            bundle_dir,
            champion=champion,
            serving_signature=champion.signature if champion else None,
        )

    def _deploy(
        self, record: EventSink, run_id: str, manifest: Manifest, bundle_dir: Path, serving_before: str | None
    ) -> tuple[bool, str | None, str | None]:
        assert self.backend is not None
        try:
            path = self.backend.serving_bundle_path(bundle_dir)
            loaded = self._admin.load(manifest.model_name, path)
        except MlplatError as exc:  # refused, unreachable, wrong token: the old version serves on
            still = f"still serving v{serving_before}" if serving_before else "nothing serving"
            error = f"rejected: serving refused the bundle: {exc.message}, {still}"
            record(
                Event(
                    "rejected", error, run_id=run_id, bundle_id=manifest.bundle_id, version=manifest.version
                )
            )
            self.rec.deployment(run_id, manifest, ok=False, reason=exc.message)
            return False, serving_before, error
        self.rec.deployment(run_id, manifest, ok=True, reason="")
        record(
            Event(
                "swapped",
                f"serving v{loaded.version} on {loaded.provider}",
                run_id=run_id,
                bundle_id=manifest.bundle_id,
                version=manifest.version,
                duration_s=(loaded.swap_ms or 0) / 1000,
                data={"provider": loaded.provider},
            )
        )
        return True, loaded.version, None

    def _fail(
        self,
        record: EventSink,
        run_id: str,
        base: CycleResult,
        started: float,
        message: str,
        tail: str,
        train_s: float | None = None,
    ) -> CycleResult:
        self.rec.close_run(run_id, "FAILED", status="failed", error=message)
        record(
            Event(
                "failed",
                message.splitlines()[0],
                run_id=run_id,
                error=message,
                data={"output_tail": tail} if tail else {},
            )
        )
        return replace(base, error=message, train_s=train_s, total_s=time.monotonic() - started)


def run_cycle(
    project: Project,
    *,
    backend: StackBackend | None,
    emit: EventSink = null_sink,
    runner: TrainingRunner | None = None,
    cancel: threading.Event | None = None,
    deploy: bool = True,
    changed: tuple[str, ...] = (),
) -> CycleResult:
    """One cycle with fresh connections (``mlplat train``); the dev loop keeps a ``Pipeline``."""
    pipeline = Pipeline(project, backend, runner=runner)
    try:
        return pipeline.run_cycle(emit=emit, cancel=cancel, deploy=deploy, changed=changed)
    finally:
        pipeline.close()


def clean_run_outputs(project: Project, keep: int = 20) -> None:
    """Training outputs are copied into bundles; keep only the newest few scratch folders."""
    runs = project.paths.runs
    if not runs.exists():
        return
    dirs = sorted((d for d in runs.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime, reverse=True)
    for d in dirs[keep:]:
        shutil.rmtree(d, ignore_errors=True)
