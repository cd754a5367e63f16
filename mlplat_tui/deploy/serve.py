"""The one deploy use case: serve this bundle on this target, recorded as a deployment or rollback.

The training cycle, the restore after ``up``, the dashboard's "serve this run" and
``mlplat rollback`` all go through ``serve_bundle``; before, the dashboard had its own copy that
decided "rollback" differently and recorded deployments without their target.

- A **target** (``DeployTarget``) is where a bundle is served: ``LocalTarget`` loads it into the
  local stack's serving admin (checked in a child process, warmed up, swapped atomically; a
  refused load leaves the old version serving). Push adds its engines as more targets.
- The **record**: every attempt is a ``DeploymentRecord`` (``ok`` or ``failed`` with serving's
  reason) on the target's name, so "what serves on ``local``" and "on ``prod``" stay apart.
  The store must know the bundle first: ``serve_bundle`` records it when the caller has not.
- The **outcome** is a ``DeployOutcome`` with a reason, never a string to parse; the events
  (``swapped`` / ``rejected``) are emitted here, once, for every caller.

Never raises for a refusal (that is the ``REFUSED`` outcome); raises ``MlplatError`` only for
what the caller asked wrongly (``UsageError``: no such run, gates failed).

Imports the client protocols, the records and the events; never the cycle or the front ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from mlplat_runtime.errors import MlplatError
from mlplat_tui.clients.protocols import LoadedVersion, MetadataApi, ServingAdminApi
from mlplat_tui.events import Event, EventSink, null_sink

if TYPE_CHECKING:
    from mlplat_runtime.bundle.manifest import Manifest
    from mlplat_runtime.metadata.records import BundleRecord

DeployAction = Literal["deploy", "rollback"]
LOCAL = "local"


class DeployOutcome(StrEnum):
    SERVED = "served"  # the target serves the bundle now (and it is recorded, when a store is up)
    REFUSED = "refused"  # the target refused it (load failed, unreachable, wrong token): old one serves


@dataclass(frozen=True)
class BundleToServe:
    """What to serve: a built bundle and where it came from."""

    model_name: str
    version: str
    bundle_id: str
    path: Path
    run_id: str | None = None


@dataclass(frozen=True)
class DeployResult:
    outcome: DeployOutcome
    reason: str  # why it was refused; "" when served
    target: str
    action: DeployAction
    bundle: BundleToServe
    serving_version: str | None  # what serves on the target after this attempt (None: unknown/none)
    provider: str = ""
    swap_s: float | None = None
    recorded: bool = False  # a DeploymentRecord was written (False: no store, or it refused)

    @property
    def served(self) -> bool:
        return self.outcome is DeployOutcome.SERVED


class DeployTarget(Protocol):
    """Somewhere a bundle can serve. ``serve`` raises ``MlplatError`` with the target's reason."""

    @property
    def name(self) -> str: ...

    def serve(self, bundle: BundleToServe) -> LoadedVersion: ...


@dataclass(frozen=True)
class LocalTarget:
    """The local stack's serving, through its admin port.

    ``stage`` turns a bundle folder into the path serving reads (the docker backend copies it
    into the stack's volume first): ``StackBackend.serving_bundle_path``.
    """

    admin: ServingAdminApi
    stage: Callable[[Path], str]
    name: str = LOCAL

    def serve(self, bundle: BundleToServe) -> LoadedVersion:
        return self.admin.load(bundle.model_name, self.stage(bundle.path))


def serve_bundle(
    target: DeployTarget,
    bundle: BundleToServe,
    *,
    metadata: MetadataApi | None,
    action: DeployAction = "deploy",
    record: bool = True,
    emit: EventSink = null_sink,
    serving_before: str | None = None,
    by: str = "",
) -> DeployResult:
    """Serve ``bundle`` on ``target``; record the attempt (unless ``record`` is False) and emit
    ``swapped`` or ``rejected``.

    ``serving_before`` is the version the caller knows serves now (for "still serving vN");
    ``by`` names who asked (``cycle``, ``dashboard``, ``rollback``, ``restore``) in the event.
    """
    data = {"target": target.name, "action": action, **({"by": by} if by else {})}
    try:
        loaded = target.serve(bundle)
    except MlplatError as exc:
        still = f"still serving v{serving_before}" if serving_before else "nothing serving"
        reason = f"{target.name} serving refused v{bundle.version}: {exc.message}"
        recorded = record and _record(metadata, bundle, target.name, action, ok=False, reason=exc.message)
        emit(
            Event(
                "rejected",
                f"rejected: serving refused the bundle: {exc.message}, {still}",
                run_id=bundle.run_id,
                bundle_id=bundle.bundle_id,
                version=bundle.version,
                data=data,
            )
        )
        return DeployResult(
            DeployOutcome.REFUSED, reason, target.name, action, bundle, serving_before, recorded=recorded
        )
    recorded = record and _record(metadata, bundle, target.name, action, ok=True, reason="")
    swap_s = (loaded.swap_ms or 0) / 1000
    word = "rolled back to" if action == "rollback" else "serving"
    on = f" on {loaded.provider}" if loaded.provider else ""
    emit(
        Event(
            "swapped",
            f"{word} v{loaded.version}{on}",
            run_id=bundle.run_id,
            bundle_id=bundle.bundle_id,
            version=bundle.version,
            duration_s=swap_s,
            data={**data, "provider": loaded.provider},
        )
    )
    return DeployResult(
        DeployOutcome.SERVED,
        "",
        target.name,
        action,
        bundle,
        loaded.version,
        provider=loaded.provider,
        swap_s=swap_s,
        recorded=recorded,
    )


def _record(
    metadata: MetadataApi | None,
    bundle: BundleToServe,
    target: str,
    action: DeployAction,
    *,
    ok: bool,
    reason: str,
) -> bool:
    """Best effort: serving has already answered; a store that refuses does not change that."""
    if metadata is None:
        return False
    from mlplat_runtime.metadata.records import DeploymentRecord

    try:
        ensure_bundle_recorded(metadata, bundle)
        metadata.record_deployment(
            DeploymentRecord(
                model_name=bundle.model_name,
                version=bundle.version,
                bundle_id=bundle.bundle_id,
                run_id=bundle.run_id,
                target=target,
                action=action,
                status="ok" if ok else "failed",
                reason=reason,
            )
        )
    except MlplatError:
        return False
    return True


def ensure_bundle_recorded(metadata: MetadataApi, bundle: BundleToServe) -> None:
    """Record the bundle when the store does not know it: a deployment of an unknown bundle
    can be neither restored after ``up`` nor the next cycle's champion."""
    from mlplat_runtime.bundle import open_bundle
    from mlplat_runtime.errors import NotFoundError

    try:
        metadata.bundle(bundle.bundle_id)
        return
    except NotFoundError:
        pass
    metadata.record_bundle(bundle_record(open_bundle(bundle.path).manifest, bundle.path, bundle.run_id))


def bundle_record(manifest: Manifest, path: Path, run_id: str | None) -> BundleRecord:
    """The store's record of a bundle folder: where it lies, its size and its manifest."""
    from mlplat_runtime.metadata.records import BundleRecord

    size = 0
    with contextlib.suppress(OSError):
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return BundleRecord(
        bundle_id=manifest.bundle_id,
        run_id=run_id,
        model_name=manifest.model_name,
        version=manifest.version,
        path=str(path),
        size_bytes=size,
        created_at=datetime.fromisoformat(manifest.created_at),
        manifest=manifest.model_dump(mode="json"),
    )
