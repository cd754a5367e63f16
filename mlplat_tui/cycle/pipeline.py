"""One training cycle: train → bundle → gates → record → deploy, with a typed outcome.

``mlplat train`` runs one cycle; the dev loop runs one per change. A cycle never raises for
what a data scientist causes (a crashing ``train.py``, a gate miss, a model serving refuses):
it emits ``failed`` / ``rejected`` events, records the run with the reason and returns a
``CycleResult`` whose ``outcome`` (a ``CycleOutcome``) says how it ended and ``reason`` why.
The serving model is only ever replaced by a load that serving accepted.

The cycle is *given* its clients (tracker, metadata, serving admin; each may be absent) by a
``ClientSource``, asked once per cycle: by default ``StackConnector`` over the backend's ports,
in tests the fakes. Each absent service changes one thing, said in a ``stack`` event:

- no tracker: nothing in MLflow; the run, bundle, gates and deployment are still recorded in
  the metadata store;
- no metadata store: nothing recorded, and the champion cannot be looked up, so the gates
  that compare with it are not evaluated (``ChampionUnknown``) and the bundle is not deployed;
- no serving admin: the bundle is gated and recorded but not deployed (outcome ``passed``).

Imports the client protocols, the gates and the deploy use case; never the dev loop or a UI.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlplat_runtime.bundle.manifest import GateResult, Manifest
from mlplat_runtime.errors import MlplatError, TrainingError
from mlplat_tui.clients.factory import ClientSource, Endpoints, FixedClients, StackClients, StackConnector
from mlplat_tui.cycle.outcome import RUN_STATUS, CycleOutcome, CycleResult
from mlplat_tui.cycle.recording import Recorder
from mlplat_tui.cycle.training import SubprocessRunner, TrainingCancelled, TrainingRunner
from mlplat_tui.events import Event, EventSink, null_sink
from mlplat_tui.gates import ChampionUnknown
from mlplat_tui.project.config import Project
from mlplat_tui.stack.base import Ports, Service, StackBackend

if TYPE_CHECKING:
    from mlplat_tui.monitoring.replay import ShadowReplay

__all__ = ["Champion", "CycleOutcome", "CycleResult", "Pipeline", "clean_run_outputs", "run_cycle"]

Champion = Manifest | ChampionUnknown | None
_CANCELLED = "cancelled by a newer change"
SWAP_ROWS = 5_000  # captured rows the swap message replays when no shadow gate reads more


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


def _absent_note(clients: StackClients) -> str | None:
    """The ``stack`` event for what is not up, saying what the cycle does without it."""
    if clients.tracker is None and clients.metadata is None and clients.admin is None:
        return (
            "stack is not up: training without tracking, recording or serving "
            "(run `mlplat up` to track and serve)"
        )
    parts = []
    if clients.tracker is None:
        parts.append("the tracker is not up: not tracked in MLflow (recorded in the metadata store)")
    if clients.metadata is None:
        parts.append("the metadata store is not up: nothing recorded, and the champion cannot be looked up")
    if clients.admin is None:
        parts.append("serving is not up: the bundle will not be deployed")
    return "; ".join(parts) or None


class Pipeline:
    """One project's cycles, with the clients of its stack, reused across a dev loop's cycles.

    ``clients`` is where the clients come from: a ``ClientSource``, a fixed ``StackClients``
    (tests hand the fakes), or None for the real ones over ``backend``'s ports (none at all
    without a backend). ``stage`` turns a bundle folder into the path serving reads (default:
    the backend's ``serving_bundle_path``). The pipeline records in the metadata store every
    event it emits itself (except ``output`` lines); a caller such as the dev loop records its
    own events with ``record_event``.
    """

    def __init__(
        self,
        project: Project,
        backend: StackBackend | None = None,
        *,
        runner: TrainingRunner | None = None,
        clients: ClientSource | StackClients | None = None,
        stage: Callable[[Path], str] | None = None,
    ) -> None:
        self.project = project
        self.backend = backend
        self.runner: TrainingRunner = runner or SubprocessRunner()
        self.ports = backend.ports if backend is not None else Ports.from_project(project)
        if isinstance(clients, StackClients):
            clients = FixedClients(clients)
        if clients is None:
            clients = (
                StackConnector(project, Endpoints.of(project, self.ports))
                if backend is not None
                else FixedClients(StackClients())
            )
        self.source: ClientSource = clients
        self.stage: Callable[[Path], str] = stage or (
            backend.serving_bundle_path if backend is not None else str
        )
        self.rec = Recorder(project)
        self.clients = StackClients()
        self.shadow: ShadowReplay | None = None  # the last cycle's replay of captured traffic

    # -- connections ---------------------------------------------------------------------
    def connect(self) -> bool:
        """Ask the source for the clients of what is up now; True when tracker and metadata are.

        Raises ``StackError`` when the stack on our ports is another project's.
        """
        self.clients = self.source.connect()
        self.rec.tracker, self.rec.metadata = self.clients.tracker, self.clients.metadata
        return self.clients.tracker is not None and self.clients.metadata is not None

    def close(self) -> None:
        """Close the HTTP clients (a dev loop reconnects; its old pools must not pile up)."""
        self.source.close()
        self.clients = StackClients()
        self.rec.tracker = self.rec.metadata = None

    def record_event(self, event: Event) -> None:
        """Record an event the caller emitted (e.g. ``change``, ``cycle``) in the metadata store."""
        self.rec.event(event)

    def flush(self, timeout_s: float = 10.0) -> None:
        """Wait until every queued event is in the metadata store (bounded)."""
        self.rec.flush(timeout_s)

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
            return _Cycle(self, emit, cancel or threading.Event(), deploy, changed).run()
        finally:
            self.flush()

    # -- steps the CLI also uses ----------------------------------------------------------
    def champion(self, model: str, *, why_absent: str | None = None) -> Champion:
        """What the bundle is gated against: the manifest serving locally now, None when
        nothing was ever served, ``ChampionUnknown`` when the store cannot tell
        (``gates.champion.lookup_champion``, the one lookup).

        Without a store: a project whose stack never ran (no ``.mlplat/stack/``) cannot have
        served anything, so it truly has no champion; any other project may have one.
        ``why_absent`` says why the store is absent when the cycle lost it midway (then the
        stack did run).
        """
        from mlplat_tui.gates.champion import lookup_champion

        metadata = self.clients.metadata
        if metadata is None and why_absent is None and not self.project.paths.stack.exists():
            return None
        return lookup_champion(
            metadata,
            model,
            target="local",
            why_absent=why_absent or "the metadata store is not up, so what serves cannot be looked up",
        )

    def evaluate_gates(self, bundle_dir: Path, champion: Champion) -> list[GateResult]:
        from mlplat_tui.gates.evaluate import validate_bundle
        from mlplat_tui.gates.policy import effective_policy
        from mlplat_tui.monitoring.replay import DEFAULT_SINCE, GATE_ROWS, ShadowReplay, Window

        # Captured traffic replayed against the champion, only when a shadow gate or the swap
        # message asks (once per cycle); kept for the swap message. Without a shadow gate only
        # the swap message asks: it reads the newest SWAP_ROWS, so a dev loop's swap stays cheap.
        gated = any(key.startswith("shadow.") for key in effective_policy(self.project).gates.specs)
        window = Window(DEFAULT_SINCE, GATE_ROWS if gated else SWAP_ROWS)
        self.shadow = ShadowReplay(self.project, bundle_dir, champion, self.clients.metadata, window)
        return validate_bundle(
            self.project,
            bundle_dir,
            champion=champion,
            serving_signature=champion.signature if isinstance(champion, Manifest) else None,
            shadow=self.shadow,
        )

    def train_env(self, out_dir: Path, run_id: str | None) -> dict[str, str]:
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

    def build_bundle(
        self, out_dir: Path, run_id: str, tracked: bool, version: str | None = None
    ) -> tuple[Path, Manifest]:
        """The bundle of a finished training run; ``version`` None: the next one after the
        bundles in ``.mlplat/bundles/`` (the cycle asks the metadata store first)."""
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
        version = version or self._local_version()
        target = self.project.paths.bundle(model, version)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():  # a reset metadata store must not overwrite an older bundle
            target = target.with_name(f"{target.name}-{run_id[:8]}")
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
            batching=self.project.config.serving.batching,  # [serving.batching] -> serving.batching
        )
        return path, open_bundle(path).manifest

    def _local_version(self) -> str:
        bundles = self.project.paths.bundles
        return str(sum(1 for _ in bundles.glob("*-v*")) + 1) if bundles.exists() else "1"


class _Cycle:
    """The steps of one cycle, with its run id, events and timings (one instance per cycle)."""

    def __init__(
        self, pipe: Pipeline, emit: EventSink, cancel: threading.Event, deploy: bool, changed: tuple[str, ...]
    ) -> None:
        self.pipe, self.emit, self.cancel, self.deploy, self.changed = pipe, emit, cancel, deploy, changed
        self.rec = pipe.rec
        self.started = time.monotonic()
        self.model = pipe.project.config.model.name
        self.run_id = uuid.uuid4().hex
        self.tracked = False
        self.metadata_lost: str | None = None  # why the store stopped counting mid-cycle
        self.refusal_said = False
        self.rec.refusal = None
        self.result = CycleResult()

    def record(self, event: Event) -> None:
        self.emit(event)
        self.rec.event(event)

    def run(self) -> CycleResult:
        self._connect()
        run_url = None
        if self.pipe.clients.tracker is not None:
            try:
                self.run_id, run_url = self.rec.create_mlflow_run(self.model, self.changed)
                self.tracked = True
            except MlplatError as exc:
                self.record(Event("stack", f"{exc.message}; not tracked in MLflow"))
        recorded = self._stored(self.rec.record_run(self.run_id, self.model))
        self.result = CycleResult(
            run_id=self.run_id, tracked=self.tracked, recorded=recorded, run_url=run_url
        )
        out_dir = self.pipe.project.paths.run_output(self.run_id)
        out_dir.mkdir(parents=True, exist_ok=True)
        train_s = self._train(out_dir)
        if isinstance(train_s, CycleResult):
            return train_s
        return self._after_training(out_dir, train_s)

    def _connect(self) -> None:
        try:
            self.pipe.connect()
        except MlplatError as exc:  # another project's stack on our ports: use none of it
            self.pipe.clients = StackClients()
            self.rec.tracker = self.rec.metadata = None
            self.record(
                Event("stack", f"{exc.message}; training without tracking or serving", error=str(exc))
            )
            return
        note = _absent_note(self.pipe.clients)
        if note:
            self.record(Event("stack", note, data={"absent": list(self.pipe.clients.notes)}))

    def _next_version(self) -> str | None:
        """The store's next version; None (the local count) when it is not up or fails now."""
        metadata = self.pipe.clients.metadata
        if metadata is None:
            return None
        try:
            return metadata.next_version(self.model)
        except MlplatError as exc:
            self._lose_metadata(f"the metadata service failed while the bundle was built: {exc.message}")
            return None

    def _stored(self, accepted: bool) -> bool:
        """After a write to the store: the first refusal of the cycle is said in one ``stack`` event."""
        refusal = self.rec.refusal
        if not accepted and refusal is not None and not self.refusal_said:
            self.refusal_said = True
            self.emit(
                Event(
                    "stack",
                    f"the metadata store refused to record the run: {refusal.message}",
                    run_id=self.run_id,
                    error=str(refusal),
                )
            )
        return accepted

    def _lose_metadata(self, why: str) -> None:
        """The store failed mid-cycle: the rest of the cycle runs as without one (nothing more
        recorded, the champion unknown), and the next cycle asks the source again."""
        self.metadata_lost = why
        self.pipe.clients = replace(self.pipe.clients, metadata=None)
        self.rec.metadata = None
        self.record(
            Event(
                "stack",
                f"{why}; not recorded, and the champion cannot be looked up",
                run_id=self.run_id,
                error=why,
            )
        )

    def _train(self, out_dir: Path) -> float | CycleResult:
        project = self.pipe.project
        self.record(
            Event(
                "training",
                f"training: {project.config.train.command}",
                run_id=self.run_id,
                data={"changed": list(self.changed)},
            )
        )
        try:
            train_s = self.pipe.runner.run(
                project.config.train.command,
                cwd=project.root,
                env=self.pipe.train_env(out_dir, self.run_id if self.tracked else None),
                cancel=self.cancel,
                on_output=lambda line: self.emit(Event("output", line, run_id=self.run_id)),
                timeout_s=project.config.train.timeout_s,
            )
        except TrainingCancelled:
            return self._cancelled("training cancelled by a newer change")
        except TrainingError as exc:
            return self._fail(str(exc), exc.output_tail)
        self.record(Event("trained", "training finished", run_id=self.run_id, duration_s=train_s))
        return train_s

    def _after_training(self, out_dir: Path, train_s: float) -> CycleResult:
        from mlplat_runtime.bundle import with_gates
        from mlplat_tui.gates.evaluate import all_passed, failure_reasons

        self.result = replace(self.result, train_s=train_s)
        try:
            if self.cancel.is_set():
                raise TrainingCancelled()
            bundle_dir, manifest = self.pipe.build_bundle(
                out_dir, self.run_id, self.tracked, self._next_version()
            )
            self.record(
                Event(
                    "bundled",
                    f"bundle v{manifest.version} {manifest.bundle_id[:19]}",
                    run_id=self.run_id,
                    bundle_id=manifest.bundle_id,
                    version=manifest.version,
                )
            )
            champion = self.pipe.champion(self.model, why_absent=self.metadata_lost)
            gates = self.pipe.evaluate_gates(bundle_dir, champion)
            manifest = with_gates(bundle_dir, gates)
        except TrainingCancelled:
            return self._cancelled("cycle cancelled by a newer change")
        except MlplatError as exc:
            return self._fail(str(exc), "")
        passed = all_passed(gates)
        reasons = "; ".join(failure_reasons(gates))
        self.record(
            Event(
                "gated",
                "gates passed" if passed else f"gates failed: {reasons}",
                run_id=self.run_id,
                bundle_id=manifest.bundle_id,
                version=manifest.version,
                gates=tuple(gates),
            )
        )
        self._stored(self.rec.record_bundle(self.run_id, manifest, bundle_dir))  # known before it serves
        self.result = replace(
            self.result,
            bundle_id=manifest.bundle_id,
            bundle_path=bundle_dir,
            version=manifest.version,
            gates=tuple(gates),
            passed=passed,
            metrics=dict(manifest.metrics),
        )
        serving_before = champion.version if isinstance(champion, Manifest) else None
        outcome, reason, serving = self._decide(passed, reasons, manifest, bundle_dir, serving_before)
        if self.tracked:
            try:
                self.rec.track(self.run_id, manifest, bundle_dir)
            except Exception as exc:  # MLflow errors are many types; the outcome still stands
                self.record(Event("stack", f"tracking the run in MLflow failed: {exc}", run_id=self.run_id))
        mlflow_status = "KILLED" if outcome is CycleOutcome.CANCELLED else "FINISHED"
        return self._close(outcome, reason, mlflow_status, serving_version=serving, manifest=manifest)

    def _decide(
        self, passed: bool, reasons: str, manifest: Manifest, bundle_dir: Path, serving_before: str | None
    ) -> tuple[CycleOutcome, str, str | None]:
        still = f"still serving v{serving_before}" if serving_before else "nothing serving"
        if not passed:
            reason = f"rejected: {reasons}, {still}"
            self.record(
                Event(
                    "rejected",
                    reason,
                    run_id=self.run_id,
                    bundle_id=manifest.bundle_id,
                    version=manifest.version,
                    gates=manifest.gates,
                )
            )
            return CycleOutcome.REJECTED, reason, serving_before
        admin = self.pipe.clients.admin
        if not self.deploy:
            return CycleOutcome.PASSED, "gates passed; not deployed (--no-deploy)", serving_before
        if admin is None:
            return CycleOutcome.PASSED, "gates passed; not deployed (serving is not up)", serving_before
        if self.cancel.is_set():
            return self._cancel_outcome()
        from mlplat_tui.deploy.serve import BundleToServe, LocalTarget, serve_bundle

        deployed = serve_bundle(
            LocalTarget(admin, self.pipe.stage),
            BundleToServe(
                manifest.model_name, manifest.version, manifest.bundle_id, bundle_dir, run_id=self.run_id
            ),
            metadata=self.pipe.clients.metadata,
            emit=self._with_replay_summary(),
            serving_before=serving_before,
            by="cycle",
        )
        if not deployed.served:
            return CycleOutcome.REJECTED, f"rejected: {deployed.reason}, {still}", serving_before
        return CycleOutcome.DEPLOYED, f"serving v{deployed.serving_version}", deployed.serving_version

    def _with_replay_summary(self) -> EventSink:
        """``record``, with "agreement with the previous version 0.97, p99 ×1.1" added to the
        ``swapped`` event when captured traffic of the champion was replayed (asked before the
        swap, while the champion still serves)."""
        shadow = self.pipe.shadow
        summary = shadow.summary() if shadow is not None else None
        if shadow is None or summary is None:
            return self.record
        report = shadow.report.to_json() if shadow.report is not None else {}

        def record(event: Event) -> None:
            if event.kind == "swapped":
                event = replace(
                    event, message=f"{event.message}; {summary}", data={**event.data, "replay": report}
                )
            self.record(event)

        return record

    def _cancel_outcome(self) -> tuple[CycleOutcome, str, str | None]:
        self.record(Event("cancelled", "cycle cancelled by a newer change", run_id=self.run_id))
        return CycleOutcome.CANCELLED, _CANCELLED, None

    def _close(
        self,
        outcome: CycleOutcome,
        reason: str,
        mlflow_status: str,
        *,
        serving_version: str | None = None,
        manifest: Manifest | None = None,
    ) -> CycleResult:
        fields: dict[str, Any] = {}
        if manifest is not None:
            fields = {
                "bundle_id": manifest.bundle_id,
                "version": manifest.version,
                "gates_passed": all(g.passed for g in manifest.gates),
                "deployed": outcome is CycleOutcome.DEPLOYED,
                "metrics": dict(manifest.metrics),
                "params": dict(manifest.params),
                "git_commit": manifest.lineage.git_commit,
                "dirty_hash": manifest.lineage.dirty_hash,
                "data_hashes": dict(manifest.lineage.data_hashes),
            }
        failed = outcome in (CycleOutcome.REJECTED, CycleOutcome.FAILED, CycleOutcome.CANCELLED)
        closed = self.rec.close_run(
            self.run_id,
            mlflow_status,
            status=RUN_STATUS[outcome],
            error=reason if failed else None,
            tracked=self.tracked,
            **fields,
        )
        self._stored(closed)
        return replace(
            self.result,
            outcome=outcome,
            reason=reason,
            serving_version=serving_version,
            total_s=time.monotonic() - self.started,
        )

    def _cancelled(self, message: str) -> CycleResult:
        self.record(Event("cancelled", message, run_id=self.run_id))
        return self._close(CycleOutcome.CANCELLED, _CANCELLED, "KILLED")

    def _fail(self, message: str, tail: str) -> CycleResult:
        self.record(
            Event(
                "failed",
                message.splitlines()[0],
                run_id=self.run_id,
                error=message,
                data={"output_tail": tail} if tail else {},
            )
        )
        return self._close(CycleOutcome.FAILED, message, "FAILED")


def run_cycle(
    project: Project,
    *,
    backend: StackBackend | None,
    emit: EventSink = null_sink,
    runner: TrainingRunner | None = None,
    cancel: threading.Event | None = None,
    deploy: bool = True,
    changed: tuple[str, ...] = (),
    clients: ClientSource | StackClients | None = None,
) -> CycleResult:
    """One cycle with fresh connections (``mlplat train``); the dev loop keeps a ``Pipeline``."""
    pipeline = Pipeline(project, backend, runner=runner, clients=clients)
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
