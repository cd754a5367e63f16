"""What the control plane needs of each stack service, as protocols: tracker, metadata, serving admin.

A training cycle, the deploy use case and the CLI are *given* these clients (Harlequin's
adapter, httpx's transport): production hands them the real ones from ``factory.py``; the fast
test tier hands them the fakes in ``tests/fakes/``, and one contract suite
(``tests/mlplat_tui/clients/test_contracts.py``) runs the same assertions against both, so a
fake cannot drift from what the real service does. A client that is ``None`` means the service
is not up: each caller says what it does without it.

Every method raises from the one exception tree (``ServiceError`` when the service cannot be
reached), never a library's own exception; ``health()`` never raises.

Imports only the records and the standard library: no httpx, mlflow or textual here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from mlplat_runtime.bundle.manifest import GateResult
    from mlplat_runtime.metadata.records import (
        BundleRecord,
        DeploymentRecord,
        EventRecord,
        GateRecord,
        RunDetail,
        RunRecord,
    )
    from mlplat_runtime.metadata.runs_query import RunsPage, RunsQuery
    from mlplat_tui.events import Event


@dataclass(frozen=True)
class LoadedVersion:
    """What serving answered to a load: the version now serving and where it runs."""

    name: str
    version: str
    bundle_id: str
    provider: str
    swap_ms: float | None = None


@dataclass(frozen=True)
class ModelState:
    name: str
    version: str | None
    state: str
    reason: str
    bundle_id: str | None
    provider: str | None


@runtime_checkable
class TrackerApi(Protocol):
    """MLflow as the cycle uses it: one run per training run, created before training starts."""

    uri: str

    def health(self) -> bool: ...

    def start_run(self, run_name: str, tags: Mapping[str, str]) -> str: ...

    def log(
        self, run_id: str, *, params: Mapping[str, Any], metrics: Mapping[str, float], tags: Mapping[str, str]
    ) -> None: ...

    def log_bundle(self, run_id: str, bundle_dir: Path) -> None: ...

    def finish(self, run_id: str, status: str) -> None:
        """status: FINISHED | FAILED | KILLED"""
        ...

    def run_url(self, run_id: str) -> str: ...

    def close(self) -> None: ...


@runtime_checkable
class MetadataApi(Protocol):
    """The metadata store as the control plane uses it (``MetadataClient`` over HTTP)."""

    base_url: str

    def health(self) -> bool: ...

    def record_run(self, run: RunRecord) -> RunRecord: ...

    def update_run(self, run_id: str, **fields: Any) -> RunRecord: ...

    def record_bundle(self, bundle: BundleRecord) -> BundleRecord: ...

    def record_gates(
        self, bundle_id: str, run_id: str | None, gates: Sequence[GateResult]
    ) -> list[GateRecord]: ...

    def record_deployment(self, deployment: DeploymentRecord) -> DeploymentRecord: ...

    def record_event(self, event: Event | EventRecord | Mapping[str, Any]) -> EventRecord | None: ...

    def run_detail(self, run_id: str) -> RunDetail: ...

    def bundle(self, bundle_id: str) -> BundleRecord: ...

    def next_version(self, model: str) -> str: ...

    def current_deployment(self, model: str, *, target: str | None = None) -> DeploymentRecord | None: ...

    def deployments(
        self, model: str | None = None, limit: int = 100, *, target: str | None = None
    ) -> list[DeploymentRecord]: ...

    def query_runs(self, query: RunsQuery | None = None, **fields: Any) -> RunsPage: ...

    def register_reference(
        self, bundle_id: str, model: str, version: str, reference: Mapping[str, Any]
    ) -> dict[str, Any]:
        """A bundle's reference v2 for the store's monitor; NotFoundError from a service that
        has no monitor (started without ``--monitor-dir``)."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class ServingAdminApi(Protocol):
    """Serving's admin port: load a bundle (checked, warmed up and swapped atomically)."""

    def health(self) -> bool: ...

    def load(self, name: str, bundle_path: str) -> LoadedVersion: ...

    def index(self) -> list[ModelState]: ...

    def close(self) -> None: ...
