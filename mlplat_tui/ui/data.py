"""``DashboardData``: the one place the dashboard reads and changes the platform.

Widgets never call HTTP, DuckDB or processes: the screens run these methods in workers and
hand the typed snapshots (``snapshots.py``) down to the widgets. Reading never raises for a
service that is down (that is a state to show, carried in the snapshot's ``error``); actions
(start, stop, train, serve) raise from the one exception tree and the screen shows a toast.

``DataSource`` is the protocol the screens depend on; ``DashboardData`` implements it over the
real stack backend, metadata service and serving runtime. Heavy imports (httpx, the stack
backend, the pipeline, onnxruntime via bundles) happen inside the methods, so importing this
module costs nothing at start-up. No textual here.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from mlplat_runtime.errors import MlplatError, NotFoundError, ServiceError, UsageError
from mlplat_tui.project.config import Project
from mlplat_tui.stack.base import Ports, Progress, Service
from mlplat_tui.ui.snapshots import (
    SORT_GATES,
    SORT_RUN,
    SORT_TIME,
    SORT_VERSION,
    BundleView,
    EventsBatch,
    RunDetail,
    RunRow,
    RunsPage,
    RunsQuery,
    ServingSnapshot,
    StackSnapshot,
)

if TYPE_CHECKING:  # mlplat_tui.events and the manifest load numpy: imported where used instead
    from mlplat_runtime.bundle.manifest import GateResult
    from mlplat_runtime.metadata.records import EventRecord
    from mlplat_tui.clients.metadata import MetadataClient
    from mlplat_tui.events import Event, EventSink
    from mlplat_tui.stack.base import StackBackend

_METRIC_NAME = re.compile(r"^[A-Za-z0-9_.\-/ ]{1,100}$")
_MAX_KEY_METRICS = 3
_INITIAL_EVENTS = 200


class DataSource(Protocol):
    """What the screens ask of the platform (``DashboardData``, or a fixed one for snapshots)."""

    project_name: str
    model_name: str
    backend_name: str

    def now(self) -> float: ...

    def stack(self) -> StackSnapshot: ...

    def start_stack(self, progress: Progress) -> StackSnapshot: ...

    def stop_stack(self, progress: Progress) -> None: ...

    def runs(self, query: RunsQuery) -> RunsPage: ...

    def run_detail(self, run_id: str) -> RunDetail: ...

    def serving(self) -> ServingSnapshot: ...

    def events_since(self, after_id: int | None) -> EventsBatch: ...

    def bundle_view(self, ref: str) -> BundleView: ...

    def logs(self, service: str, *, follow: bool, tail: int = 200) -> Iterator[str]: ...

    def train_now(self, emit: EventSink, cancel: threading.Event) -> str: ...

    def serve_run(self, run_id: str, emit: EventSink | None = None) -> str: ...

    def close(self) -> None: ...


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _epoch(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def event_from_record(rec: EventRecord) -> Event:
    """A stored event back in the shape the dev loop emits it."""
    from mlplat_runtime.bundle.manifest import GateResult
    from mlplat_tui.events import Event

    payload = dict(rec.payload)
    gates: tuple[GateResult, ...] = ()
    raw_gates = payload.get("gates")
    if isinstance(raw_gates, list):
        try:
            gates = tuple(GateResult.model_validate(g) for g in raw_gates)
        except ValueError:
            gates = ()
    duration = payload.get("duration_s")
    data = payload.get("data")
    return Event(
        kind=rec.kind,
        message=rec.message,
        ts=rec.ts.timestamp(),
        run_id=rec.run_id,
        bundle_id=rec.bundle_id,
        version=rec.version,
        gates=gates,
        duration_s=float(duration) if isinstance(duration, int | float) else None,
        error=payload.get("error") if isinstance(payload.get("error"), str) else None,
        data=data if isinstance(data, dict) else {},
    )


class DashboardData:
    """The real platform behind the dashboard. Thread-safe enough for one worker per method."""

    def __init__(
        self,
        project: Project,
        *,
        backend: StackBackend | None = None,
        backend_name: str | None = None,
        clock: Callable[[], float] = time.time,
        timeout_s: float = 2.0,
    ) -> None:
        from mlplat_tui.ui.promstats import TrafficHistory

        self.project = project
        self.project_name = project.name
        self.model_name = project.config.model.name
        self.backend_name = (
            backend.name if backend is not None else (backend_name or project.config.stack.backend)
        )
        self.ports = backend.ports if backend is not None else Ports.from_project(project)
        self._backend = backend
        self._backend_arg = backend_name
        self._clock = clock
        self._timeout = timeout_s
        self._lock = threading.Lock()
        self._meta: MetadataClient | None = None
        self._http: Any = None
        self._traffic = TrafficHistory()
        self._live_bundle: str | None = None  # what serving reports it serves, from /metrics
        self._provider: str | None = None

    # -- plumbing ---------------------------------------------------------------------------
    def now(self) -> float:
        return self._clock()

    def backend(self) -> StackBackend:
        with self._lock:
            if self._backend is None:
                from mlplat_tui.stack.base import get_backend

                self._backend = get_backend(self.project, self._backend_arg)
            return self._backend

    def metadata(self) -> MetadataClient:
        with self._lock:
            if self._meta is None:
                from mlplat_tui.clients.metadata import MetadataClient

                self._meta = MetadataClient(
                    self.ports.url(Service.METADATA),
                    timeout=self._timeout,
                    token_file=self.project.paths.admin_token,  # writes need the stack's token
                )
            return self._meta

    def _get(self, url: str) -> Any:
        import httpx

        with self._lock:
            if self._http is None:
                self._http = httpx.Client(timeout=self._timeout, trust_env=False)
            http = self._http
        return http.get(url)

    def close(self) -> None:
        with self._lock:
            if self._meta is not None:
                self._meta.close()
            if self._http is not None:
                self._http.close()
            self._meta = self._http = None

    # -- stack ------------------------------------------------------------------------------
    def stack(self) -> StackSnapshot:
        try:
            status = self.backend().status()
        except MlplatError as exc:
            return StackSnapshot(self.now(), None, provider=self._provider, error=str(exc))
        return StackSnapshot(self.now(), status, provider=self._provider)

    def start_stack(self, progress: Progress) -> StackSnapshot:
        from mlplat_tui.deploy.restore import up_and_restore

        status = up_and_restore(self.backend(), progress)
        return StackSnapshot(self.now(), status, provider=self._provider)

    def stop_stack(self, progress: Progress) -> None:
        self.backend().down(progress=progress)
        self._traffic.reset()
        self._live_bundle = self._provider = None

    def logs(self, service: str, *, follow: bool, tail: int = 200) -> Iterator[str]:
        return self.backend().logs(Service(service), follow=follow, tail=tail)

    # -- runs -------------------------------------------------------------------------------
    def _key_metrics(self, seen: list[str]) -> tuple[str, ...]:
        gates = self.project.config.gates
        names = [k.removeprefix("metrics.") for k in gates.thresholds if k.startswith("metrics.")]
        if gates.no_regression is not None:
            names.append(gates.no_regression.metric)
        names += seen
        out: list[str] = []
        for n in names:
            if n not in out and _METRIC_NAME.match(n):
                out.append(n)
        return tuple(out[:_MAX_KEY_METRICS])

    def _order(self, query: RunsQuery) -> str:
        direction = "DESC" if query.descending else "ASC"
        if query.sort.startswith("metric:") and _METRIC_NAME.match(name := query.sort[len("metric:") :]):
            column = f"TRY_CAST(json_extract_string(metrics, {_sql_text('$.' + json.dumps(name))}) AS DOUBLE)"
        else:
            column = {
                SORT_TIME: "created_at",
                SORT_RUN: "run_id",
                SORT_GATES: "gates_passed",
                SORT_VERSION: "TRY_CAST(version AS BIGINT)",
            }.get(query.sort, "created_at")
        return f"{column} {direction} NULLS LAST, created_at DESC, run_id DESC"

    def runs(self, query: RunsQuery) -> RunsPage:
        """One page of runs, sorted and filtered in the store (read-only SQL), plus the total."""
        now = self.now()
        where = ""
        if query.search:
            needle = "%" + query.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            like = f"ILIKE {_sql_text(needle)} ESCAPE '\\'"
            where = "WHERE " + " OR ".join(
                f"{c} {like}" for c in ("run_id", "model_name", "project", "status", "version", "bundle_id")
            )
        sql = (
            "SELECT run_id, epoch(created_at), status, CAST(metrics AS VARCHAR), gates_passed, bundle_id,"
            " version, (SELECT string_agg(g.name, ',' ORDER BY g.name) FROM gate_results g"
            "  WHERE g.bundle_id = r.bundle_id AND NOT g.passed), count(*) OVER ()"
            f" FROM runs r {where} ORDER BY {self._order(query)}"
            f" LIMIT {int(query.limit)} OFFSET {int(query.offset)}"
        )
        try:
            meta = self.metadata()
            result = meta.sql(sql)  # one round trip: the total rides along as a window count
            if result.rows:
                total = int(result.rows[0][-1])
            else:  # past the last page, or nothing matches
                total = int(meta.sql(f"SELECT count(*) FROM runs {where}").rows[0][0]) if query.offset else 0
        except MlplatError as exc:
            return RunsPage(query, (), 0, self._key_metrics([]), taken_at=now, error=str(exc))
        served = self._served_bundle()
        rows: list[RunRow] = []
        seen: list[str] = []
        for run_id, created, status, metrics_text, passed, bundle_id, version, failed, _ in result.rows:
            metrics = {
                k: float(v) for k, v in json.loads(metrics_text or "{}").items() if isinstance(v, int | float)
            }
            seen += [m for m in metrics if m not in seen]
            rows.append(
                RunRow(
                    run_id=str(run_id),
                    started_at=float(created) if created is not None else None,
                    status=str(status),
                    metrics=metrics,
                    gates_passed=passed if isinstance(passed, bool) else None,
                    gates_failed=tuple(failed.split(",")) if failed else (),
                    bundle_id=bundle_id,
                    version=version,
                    served=bool(bundle_id) and bundle_id == served,
                )
            )
        return RunsPage(query, tuple(rows), total, self._key_metrics(seen), taken_at=now)

    def _served_bundle(self) -> str | None:
        """What serves the model now: what serving itself reports, else the last recorded deploy."""
        if self._live_bundle:
            return self._live_bundle
        try:
            current = self.metadata().current_deployment(self.model_name)
        except MlplatError:
            return None
        return current.bundle_id if current else None

    def _tracker_url(self, run_id: str, tracker_uri: str | None) -> str:
        base = (tracker_uri or self.ports.url(Service.TRACKER)).rstrip("/")
        try:
            resp = self._get(f"{base}/api/2.0/mlflow/runs/get?run_id={run_id}")
            exp = resp.json()["run"]["info"]["experiment_id"] if resp.status_code == 200 else None
        except Exception:  # the link is a convenience: an unreachable tracker still gives one
            exp = None
        return f"{base}/#/experiments/{exp}/runs/{run_id}" if exp else f"{base}/#/runs/{run_id}"

    def run_detail(self, run_id: str) -> RunDetail:
        detail = self.metadata().run_detail(run_id)
        run, bundle = detail.run, detail.bundle
        bundle_id = bundle.bundle_id if bundle else run.bundle_id
        # The bundle's manifest carries the lineage when the run record does not.
        lineage = bundle.manifest.get("lineage") if bundle else None
        lin: dict[str, Any] = lineage if isinstance(lineage, dict) else {}
        return RunDetail(
            run_id=run.run_id,
            status=run.status,
            started_at=_epoch(run.created_at),
            finished_at=_epoch(run.finished_at),
            params=dict(run.params),
            metrics=dict(run.metrics),
            gates=tuple(g.to_result() for g in detail.gates),
            bundle_id=bundle_id,
            bundle_path=bundle.path if bundle else None,
            version=bundle.version if bundle else run.version,
            served=bool(bundle_id) and bundle_id == self._served_bundle(),
            git_commit=run.git_commit or lin.get("git_commit"),
            dirty_hash=run.dirty_hash or lin.get("dirty_hash"),
            data_hashes=dict(run.data_hashes or lin.get("data_hashes") or {}),
            training_command=run.command or lin.get("training_command"),
            tracker_url=self._tracker_url(run.run_id, run.tracker_uri),
            error=run.error,
        )

    # -- serving ----------------------------------------------------------------------------
    def serving(self) -> ServingSnapshot:
        """Scrape ``/metrics`` once; traffic series come from the deltas between scrapes."""
        from mlplat_tui.ui.promstats import parse_scrape

        now = self.now()
        try:
            resp = self._get(f"{self.ports.url(Service.SERVING)}/metrics")
            if resp.status_code != 200:
                raise ServiceError(f"serving answered {resp.status_code} on /metrics")
            scrape = parse_scrape(resp.text, time.monotonic(), model=self.model_name)
        except Exception as exc:
            self._traffic.reset()
            self._live_bundle = None
            message = exc.message if isinstance(exc, MlplatError) else "not reachable"
            return ServingSnapshot(now, self.model_name, error=message)
        self._traffic.add(scrape)
        self._live_bundle, self._provider = scrape.bundle_id, scrape.provider
        over = self._traffic.over_window()
        t = self._traffic
        return ServingSnapshot(
            taken_at=now,
            model=self.model_name,
            version=scrape.version,
            bundle_id=scrape.bundle_id,
            provider=scrape.provider,
            ready=scrape.version is not None,
            req_per_s=tuple(t.req_per_s),
            p50_ms=tuple(t.p50_ms),
            p99_ms=tuple(t.p99_ms),
            error_rate=tuple(t.error_rate),
            window_s=over.seconds if over else t.window_s,
            window_req_per_s=over.req_per_s if over else None,
            window_p50_ms=over.p50_ms if over else None,
            window_p99_ms=over.p99_ms if over else None,
            window_error_rate=over.error_rate if over else None,
        )

    # -- events -----------------------------------------------------------------------------
    def events_since(self, after_id: int | None) -> EventsBatch:
        """Recorded events newer than ``after_id``; the last few hundred when it is None."""
        meta = self.metadata()
        try:
            if after_id is None:
                last = meta.sql("SELECT coalesce(max(id), 0) FROM events").rows[0][0]
                after_id = max(0, int(last) - _INITIAL_EVENTS)
            records = meta.events(after_id=after_id, limit=_INITIAL_EVENTS)
        except MlplatError:
            return EventsBatch((), after_id)
        last_id = max((r.id for r in records if r.id is not None), default=after_id)
        return EventsBatch(tuple(event_from_record(r) for r in records), last_id)

    # -- bundles ----------------------------------------------------------------------------
    def bundle_view(self, ref: str) -> BundleView:
        """``ref`` is a bundle id (looked up in the store) or a bundle path."""
        from mlplat_runtime.bundle import open_bundle, verify_bundle

        path = Path(ref)
        if not path.exists():
            path = Path(self.metadata().bundle(ref).path)
            if not path.exists():
                raise NotFoundError(
                    f"bundle {ref} was recorded at {path}, which no longer exists",
                    hint="train again to rebuild it",
                )
        bundle = open_bundle(path)
        sizes = {
            rel: (bundle.root / rel).stat().st_size
            for rel in bundle.manifest.files
            if (bundle.root / rel).is_file()
        }
        return BundleView(str(path), bundle.manifest, sizes, tuple(verify_bundle(path)))

    # -- actions ----------------------------------------------------------------------------
    def train_now(self, emit: EventSink, cancel: threading.Event) -> str:
        from mlplat_tui.cycle.pipeline import run_cycle

        result = run_cycle(self.project, backend=self.backend(), emit=emit, cancel=cancel)
        if result.cancelled:
            return "training cancelled"
        if result.error:
            return result.error.splitlines()[0]
        if result.deployed:
            return f"v{result.version} is serving"
        failed = [g.name for g in result.gates if not g.passed]
        return f"v{result.version} rejected: {', '.join(failed) or 'not deployed'}"

    def serve_run(self, run_id: str, emit: EventSink | None = None) -> str:
        """Hot-swap serving to this run's bundle, and record the deployment."""
        from mlplat_runtime.metadata.records import DeploymentRecord
        from mlplat_tui.clients.serving import ServingAdmin
        from mlplat_tui.events import Event, null_sink

        emit = emit or null_sink

        meta = self.metadata()
        detail = meta.run_detail(run_id)
        bundle = detail.bundle
        if bundle is None:
            raise UsageError(
                f"run {run_id} has no bundle to serve",
                hint="only runs that trained and bundled can be served",
            )
        failed = [g.name for g in detail.gates if not g.passed]
        if failed:
            raise UsageError(
                f"v{bundle.version} failed its gates ({', '.join(failed)}): not served",
                hint="the guardrails decide what serves; fix the model and train again",
            )
        if not Path(bundle.path).exists():
            raise NotFoundError(
                f"the bundle of run {run_id} is gone from {bundle.path}", hint="train again to rebuild it"
            )
        backend = self.backend()
        admin = ServingAdmin.from_token_file(self.ports.url("admin"), self.project.paths.admin_token)
        current = meta.current_deployment(bundle.model_name)
        action: Literal["deploy", "rollback"] = "deploy"
        if (
            current
            and current.version.isdigit()
            and bundle.version.isdigit()
            and int(bundle.version) < int(current.version)
        ):
            action = "rollback"
        record = DeploymentRecord(
            model_name=bundle.model_name,
            version=bundle.version,
            bundle_id=bundle.bundle_id,
            run_id=run_id,
            action=action,
        )
        try:
            loaded = admin.load(bundle.model_name, backend.serving_bundle_path(Path(bundle.path)))
        except MlplatError as exc:
            meta.record_deployment(record.model_copy(update={"status": "failed", "reason": exc.message}))
            still = f"still serving v{current.version}" if current else "nothing serving"
            event = Event(
                "rejected",
                f"serving refused v{bundle.version}: {exc.message}, {still}",
                run_id=run_id,
                bundle_id=bundle.bundle_id,
                version=bundle.version,
            )
            emit(event)
            meta.record_event(event)
            raise
        finally:
            admin.close()
        meta.record_deployment(record)
        message = f"serving v{loaded.version} on {loaded.provider}"
        event = Event(
            "swapped",
            message,
            run_id=run_id,
            bundle_id=bundle.bundle_id,
            version=bundle.version,
            duration_s=(loaded.swap_ms or 0) / 1000,
            data={"provider": loaded.provider, "by": "dashboard"},
        )
        emit(event)
        meta.record_event(event)
        self._live_bundle = bundle.bundle_id
        return message
