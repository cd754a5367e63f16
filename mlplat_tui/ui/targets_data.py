"""What the dashboard reads and does on push targets: the Targets panel's rows, push and
rollback as actions, and the fleet.

A thin adapter over the push package, no platform logic of its own: what serves on a target and
how healthy it is comes from the fleet's per-target rows (``push.fleet``: each target's engine
asked ``current``), the last push and its outcome from the local metadata store's push history
(``push.history``) and that push's receipt (``push.receipt``); push and rollback are the
pipeline's ``push`` and ``rollback_target``, the same calls as ``mlplat push --target`` and
``mlplat rollback --target`` (a push that completed or rolled back adds the project to this
user's fleet index, as the CLI does). Every method blocks: the screens call them in workers.
``progress`` gets one line per step, ``emit`` one event per step, from the worker's thread.

``TargetsSource`` is the protocol the screens depend on; ``TargetsData`` implements it over the
real platform. No textual here; the push package is imported inside the methods.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from mlplat_runtime.errors import MlplatError, NotFoundError, UsageError

if TYPE_CHECKING:
    from mlplat_runtime.metadata.records import DeploymentRecord
    from mlplat_tui.clients.protocols import MetadataApi
    from mlplat_tui.events import EventSink
    from mlplat_tui.project.config import Project
    from mlplat_tui.push.fleet import FleetRow
    from mlplat_tui.push.pipeline import PushResult
    from mlplat_tui.ui.data import DataSource

Progress = Callable[[str], None]


@dataclass(frozen=True)
class LastPush:
    """The newest push or rollback recorded on a target."""

    action: str  # push | rollback
    version: str
    outcome: str  # completed | rolled_back | failed (the receipt's word when it can be read)
    at: float  # epoch seconds
    reason: str = ""
    by: str = ""


@dataclass(frozen=True)
class TargetRow:
    name: str
    kind: str
    stage: str
    requires: str | None
    version: str | None  # what the engine says serves now
    bundle_id: str | None
    replicas: int | None
    healthy: int | None
    health: str  # healthy | degraded | down | nothing | unreachable: why
    last: LastPush | None = None


@dataclass(frozen=True)
class TargetsSnapshot:
    taken_at: float
    model: str
    rows: tuple[TargetRow, ...]
    error: str | None = None  # the push history could not be read (last pushes unknown)

    def row(self, name: str) -> TargetRow | None:
        return next((r for r in self.rows if r.name == name), None)


@dataclass(frozen=True)
class FleetSnapshot:
    taken_at: float
    rows: tuple[FleetRow, ...]
    index: str  # where this user's fleet index is

    @property
    def serving(self) -> int:
        return sum(1 for r in self.rows if r.version is not None)


class TargetsSource(Protocol):
    """What the screens ask about push targets (``TargetsData``, or a fixed one for snapshots)."""

    names: tuple[str, ...]  # the [targets.NAME] of mlplat.toml, in file order

    def now(self) -> float: ...

    def targets(self) -> TargetsSnapshot: ...

    def served(self, target: str) -> tuple[LastPush, ...]: ...

    def push(self, target: str, bundle_id: str, progress: Progress, emit: EventSink) -> PushResult: ...

    def rollback(self, target: str, to: str | None, progress: Progress, emit: EventSink) -> PushResult: ...

    def fleet(self) -> FleetSnapshot: ...


def _last_of(record: DeploymentRecord) -> LastPush:
    from mlplat_tui.push.receipt import read_receipt

    outcome = "completed" if record.status == "ok" else "failed"
    if record.receipt_path:
        with contextlib.suppress(MlplatError, OSError, ValueError):
            outcome = read_receipt(Path(record.receipt_path)).outcome
    return LastPush(
        action="rollback" if record.action == "rollback" else "push",
        version=record.version,
        outcome=outcome,
        at=record.ts.timestamp(),
        reason=record.reason,
        by=record.pushed_by,
    )


class TargetsData:
    """The real push targets of one project, read and changed through the push package."""

    def __init__(
        self, project: Project, metadata_url: str, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.project = project
        self.metadata_url = metadata_url
        self.names = tuple(project.config.targets)
        self._clock = clock

    def now(self) -> float:
        return self._clock()

    def _metadata(self) -> MetadataApi | None:
        """The local store when it answers for this project, None when it is down."""
        from mlplat_tui.clients.factory import connect_metadata

        return connect_metadata(self.project, self.metadata_url)

    # -- reading ----------------------------------------------------------------------------
    def targets(self) -> TargetsSnapshot:
        from mlplat_tui.push import fleet

        model = self.project.config.model.name
        live = {r.target: r for r in fleet._rows_of(self.project.root, self.project.name)}
        last: dict[str, LastPush] = {}
        error: str | None = None
        try:
            metadata = self._metadata()
        except MlplatError as exc:
            metadata, error = None, exc.message
        if metadata is None:
            error = error or "the local metadata store is not up: last pushes unknown"
        else:
            try:
                for name in self.names:
                    records = metadata.deployments(model, limit=1, target=name)
                    if records:
                        last[name] = _last_of(records[0])
            except MlplatError as exc:
                error = exc.message
            finally:
                metadata.close()
        rows = []
        for name, target in self.project.config.targets.items():
            seen = live.get(name)
            rows.append(
                TargetRow(
                    name=name,
                    kind=target.kind,
                    stage=target.stage,
                    requires=target.requires,
                    version=seen.version if seen else None,
                    bundle_id=seen.bundle_id if seen else None,
                    replicas=seen.replicas if seen else None,
                    healthy=seen.healthy if seen else None,
                    health=seen.health if seen else "unreachable: not asked",
                    last=last.get(name),
                )
            )
        return TargetsSnapshot(self.now(), model, tuple(rows), error)

    def served(self, target: str) -> tuple[LastPush, ...]:
        """Every version the target served successfully, newest first (what rollback may pick)."""
        from mlplat_tui.push import history

        metadata = self._metadata()
        if metadata is None:
            raise UsageError(
                "the local metadata store is not up: it holds what the target served",
                hint="start the stack (u), then try again",
            )
        try:
            records = history.served(metadata, self.project.config.model.name, target)  # type: ignore[arg-type]
        finally:
            metadata.close()
        return tuple(_last_of(r) for r in records)

    def fleet(self) -> FleetSnapshot:
        from mlplat_tui.push.fleet import fleet_rows, index_path

        return FleetSnapshot(self.now(), tuple(fleet_rows()), str(index_path()))

    # -- actions ----------------------------------------------------------------------------
    def _check(self, target: str) -> None:
        if target not in self.project.config.targets:
            names = ", ".join(self.names) or "none: add a [targets.NAME] table"
            raise UsageError(f"no target {target!r} in {self.project.config_path}", hint=f"targets: {names}")

    def _remember(self, target: str, result: PushResult) -> None:
        from mlplat_tui.push.fleet import remember
        from mlplat_tui.push.pipeline import PushOutcome

        if not result.dry_run and result.outcome in (PushOutcome.COMPLETED, PushOutcome.ROLLED_BACK):
            with contextlib.suppress(OSError):
                remember(self.project.root, self.project.name, target)

    def push(self, target: str, bundle_id: str, progress: Progress, emit: EventSink) -> PushResult:
        """``mlplat push <bundle> --target NAME`` for the bundle the local store knows by id."""
        from mlplat_tui.push.pipeline import PushOptions
        from mlplat_tui.push.pipeline import push as run_push

        self._check(target)
        metadata = self._metadata()
        if metadata is None:
            raise UsageError(
                "the local metadata store is not up: it knows where the run's bundle is",
                hint="start the stack (u), then push again",
            )
        try:
            path = Path(metadata.bundle(bundle_id).path)
            if not path.exists():
                raise NotFoundError(
                    f"bundle {bundle_id[:19]} was recorded at {path}, which no longer exists",
                    hint="train again to rebuild it",
                )
            result = run_push(
                self.project,
                target,
                path,
                metadata=metadata,
                options=PushOptions(),
                progress=progress,
                emit=emit,
            )
        finally:
            metadata.close()
        self._remember(target, result)
        return result

    def rollback(self, target: str, to: str | None, progress: Progress, emit: EventSink) -> PushResult:
        """``mlplat rollback --target NAME [--to VERSION]``."""
        from mlplat_tui.push.pipeline import PushOptions
        from mlplat_tui.push.rollback import rollback_target

        self._check(target)
        metadata = self._metadata()
        try:
            result = rollback_target(
                self.project,
                target,
                to,
                metadata=metadata,
                options=PushOptions(),
                progress=progress,
                emit=emit,
            )
        finally:
            if metadata is not None:
                metadata.close()
        self._remember(target, result)
        return result


def targets_for(data: DataSource) -> TargetsData | None:
    """The real targets of the dashboard's project (None for a data source without a project)."""
    from mlplat_tui.stack.base import Service
    from mlplat_tui.ui.data import DashboardData

    if not isinstance(data, DashboardData):
        return None
    return TargetsData(data.project, data.ports.url(Service.METADATA), clock=data.now)
