"""In-process fakes of the tracker, the metadata service and the serving admin.

- ``FakeMetadata`` is the real ``MetadataStore`` (a DuckDB file in a temp folder) called in
  process instead of over HTTP, so its answers are the service's own; ``up = False`` makes it
  behave like a service that went away (``health()`` False, every call a ``ServiceError``).
- ``FakeTracker`` keeps MLflow runs in a dict (params a run logged itself are not re-logged,
  as MLflow refuses to change a param).
- ``FakeServingAdmin`` serves by reading the bundle's manifest; ``refuse = "why"`` makes every
  load fail with ``ModelLoadError`` as serving does, and the old version keeps serving.

Every fake's ``up`` can be switched between calls to model a service that stops mid-session,
and ``fail`` (method name -> error) makes one method raise while the others answer: a service
that dies between two steps of a cycle, or one that refuses writes (``FakeMetadata.WRITES``
with ``AuthError``, as a service whose token does not match answers 401).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from mlplat_runtime.bundle.manifest import GateResult
from mlplat_runtime.errors import MlplatError, ModelLoadError, NotFoundError, ServiceError
from mlplat_runtime.metadata.records import (
    BundleRecord,
    DeploymentRecord,
    EventRecord,
    GateRecord,
    RunDetail,
    RunRecord,
)
from mlplat_runtime.metadata.runs_query import RunsPage, RunsQuery
from mlplat_runtime.metadata.store import MetadataStore
from mlplat_tui.clients.factory import StackClients
from mlplat_tui.clients.protocols import LoadedVersion, ModelState
from mlplat_tui.events import Event


class _Switch:
    up: bool = True
    what: str = "service"
    fail: Mapping[str, MlplatError] = MappingProxyType({})  # method name -> what each call raises

    def _check(self, method: str = "") -> None:
        if not self.up:
            raise ServiceError(f"cannot reach the {self.what} (fake, switched off)", hint="`mlplat up`")
        error = self.fail.get(method)
        if error is not None:
            raise error

    def health(self) -> bool:
        return self.up

    def close(self) -> None:
        self.closed = True


class FakeMetadata(_Switch):
    """``MetadataApi`` over a real store in this process."""

    what = "metadata service"
    WRITES = (
        "record_run",
        "update_run",
        "record_bundle",
        "record_gates",
        "record_deployment",
        "record_event",
    )

    def __init__(self, db: Path) -> None:
        self.store = MetadataStore(db)
        self.base_url = f"fake://{db}"
        self.up = True

    def record_run(self, run: RunRecord) -> RunRecord:
        self._check("record_run")
        return self.store.record_run(run)

    def update_run(self, run_id: str, **fields: Any) -> RunRecord:
        self._check("update_run")
        return self.store.update_run(run_id, fields)

    def record_bundle(self, bundle: BundleRecord) -> BundleRecord:
        self._check("record_bundle")
        return self.store.record_bundle(bundle)

    def record_gates(
        self, bundle_id: str, run_id: str | None, gates: Sequence[GateResult]
    ) -> list[GateRecord]:
        self._check("record_gates")
        return self.store.record_gates(bundle_id, run_id, gates)

    def record_deployment(self, deployment: DeploymentRecord) -> DeploymentRecord:
        self._check("record_deployment")
        return self.store.record_deployment(deployment)

    def record_event(self, event: Event | EventRecord | Mapping[str, Any]) -> EventRecord | None:
        self._check("record_event")
        body: Any = event.to_json() if isinstance(event, Event) else event
        kind = body.kind if isinstance(body, EventRecord) else body.get("kind")
        return None if kind == "output" else self.store.record_event(body)

    def run_detail(self, run_id: str) -> RunDetail:
        self._check("run_detail")
        return self.store.run_detail(run_id)

    def bundle(self, bundle_id: str) -> BundleRecord:
        self._check("bundle")
        return self.store.bundle(bundle_id)

    def next_version(self, model: str) -> str:
        self._check("next_version")
        return self.store.next_version(model)

    def current_deployment(self, model: str, *, target: str | None = None) -> DeploymentRecord | None:
        self._check("current_deployment")
        return self.store.current_deployment(model, target)

    def deployments(
        self, model: str | None = None, limit: int = 100, *, target: str | None = None
    ) -> list[DeploymentRecord]:
        self._check("deployments")
        return self.store.deployments(model, limit, target)

    def query_runs(self, query: RunsQuery | None = None, **fields: Any) -> RunsPage:
        self._check("query_runs")
        return self.store.query_runs(query or RunsQuery(**fields))

    def register_reference(
        self, bundle_id: str, model: str, version: str, reference: Mapping[str, Any]
    ) -> dict[str, Any]:
        """As a metadata service started without ``--monitor-dir``: it has no monitor (404)."""
        self._check("register_reference")
        raise NotFoundError("this metadata service has no monitor (fake: started without --monitor-dir)")

    def close(self) -> None:  # the store outlives the clients a cycle is given, as the service does
        self.closed = True

    def shutdown(self) -> None:
        self.store.close()


@dataclass
class FakeRun:
    tags: dict[str, str]
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    status: str = "RUNNING"
    artifacts: list[str] = field(default_factory=list)


class FakeTracker(_Switch):
    """``TrackerApi`` in memory."""

    what = "tracker"

    def __init__(self, uri: str = "http://tracker.fake") -> None:
        self.uri = uri
        self.up = True
        self.runs: dict[str, FakeRun] = {}

    def start_run(self, run_name: str, tags: Mapping[str, str]) -> str:
        self._check("start_run")
        run_id = uuid.uuid4().hex
        self.runs[run_id] = FakeRun(tags={"mlflow.runName": run_name, **tags})
        return run_id

    def _run(self, run_id: str) -> FakeRun:
        self._check("_run")
        if run_id not in self.runs:
            raise NotFoundError(f"no MLflow run {run_id}")
        return self.runs[run_id]

    def log(
        self, run_id: str, *, params: Mapping[str, Any], metrics: Mapping[str, float], tags: Mapping[str, str]
    ) -> None:
        run = self._run(run_id)
        run.params.update({k: str(v) for k, v in params.items() if k not in run.params})
        run.metrics.update({k: float(v) for k, v in metrics.items()})
        run.tags.update({k: str(v) for k, v in tags.items()})

    def log_bundle(self, run_id: str, bundle_dir: Path) -> None:
        run = self._run(run_id)
        run.artifacts += [f"bundle/{p.relative_to(bundle_dir)}" for p in bundle_dir.rglob("*") if p.is_file()]

    def finish(self, run_id: str, status: str) -> None:
        self._run(run_id).status = status

    def run_url(self, run_id: str) -> str:
        return f"{self.uri}/#/runs/{run_id}"


class FakeServingAdmin(_Switch):
    """``ServingAdminApi`` that serves by reading manifests."""

    what = "serving admin API"

    def __init__(self) -> None:
        self.up = True
        self.refuse: str | None = None
        self.serving: dict[str, ModelState] = {}
        self.loads: list[tuple[str, str]] = []

    def load(self, name: str, bundle_path: str) -> LoadedVersion:
        self._check("load")
        self.loads.append((name, bundle_path))
        if self.refuse is not None:
            raise ModelLoadError(f"load of {name}: {self.refuse}")
        try:
            manifest = json.loads((Path(bundle_path) / "manifest.json").read_text())
        except OSError as exc:
            raise ModelLoadError(f"load of {name}: cannot open the bundle: {exc.strerror}") from None
        version, bundle_id = str(manifest["version"]), str(manifest["bundle_id"])
        self.serving[name] = ModelState(name, version, "READY", "", bundle_id, "CPUExecutionProvider")
        return LoadedVersion(name, version, bundle_id, "CPUExecutionProvider", swap_ms=1.0)

    def index(self) -> list[ModelState]:
        self._check("index")
        return list(self.serving.values())

    def served_version(self, name: str) -> str | None:
        state = self.serving.get(name)
        return state.version if state else None


def fake_clients(
    tracker: FakeTracker | None, metadata: FakeMetadata | None, admin: FakeServingAdmin | None
) -> StackClients:
    """The clients a cycle gets when only the services that are up answer (as the factory does)."""
    return StackClients(
        tracker=tracker if tracker is not None and tracker.up else None,
        metadata=metadata if metadata is not None and metadata.up else None,
        admin=admin if admin is not None and admin.up else None,
    )


class FakeConnector:
    """A ``ClientSource`` over the fakes: each cycle gets the ones that are up at that moment."""

    def __init__(
        self,
        tracker: FakeTracker | None = None,
        metadata: FakeMetadata | None = None,
        admin: FakeServingAdmin | None = None,
    ) -> None:
        self.tracker, self.metadata, self.admin = tracker, metadata, admin
        self.connects = 0

    def connect(self) -> StackClients:
        self.connects += 1
        return fake_clients(self.tracker, self.metadata, self.admin)

    def close(self) -> None:
        return None
