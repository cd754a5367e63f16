"""``DashboardData``: the one place the dashboard reads and changes the platform.

Widgets never call HTTP, DuckDB or processes: the screens run these methods in workers and
hand the typed snapshots (``snapshots.py``) down to the widgets. Reading never raises for a
service that is down (that is a state to show, carried in the snapshot's ``error``); actions
(start, stop, train, serve) raise from the one exception tree and the screen shows a toast.

``DataSource`` is the protocol the screens depend on; ``DashboardData`` implements it over the
real stack backend, metadata service and serving runtime. It owns no platform logic of its
own: runs come from the one runs query (``MetadataClient.query_runs``, the same answer as
``mlplat runs``: "served" is per target, and a version serving on ``prod`` is never shown as
serving locally); "serve this run" is the one deploy use case (``deploy.runs.serve_run`` on
the local target, as ``mlplat rollback``); the backend is ``get_backend``'s (the stack that is
up, else the configured one), asked again on every stack poll unless one was named. The
metadata service must say it serves this project before its answers are shown. Heavy imports
(httpx, the stack backend, the pipeline, onnxruntime via bundles) happen inside the methods,
so importing this module costs nothing at start-up. No textual here.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mlplat_runtime.errors import MlplatError, NotFoundError, ServiceError
from mlplat_tui.project.config import Project
from mlplat_tui.stack.base import Progress, Service
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
    from mlplat_runtime.metadata import runs_query as rq
    from mlplat_runtime.metadata.records import EventRecord
    from mlplat_tui.clients.metadata import MetadataClient
    from mlplat_tui.events import Event, EventSink
    from mlplat_tui.stack.base import StackBackend

_METRIC_NAME = re.compile(r"^[A-Za-z0-9_.\-/ ]{1,100}$")
_MAX_KEY_METRICS = 3
_INITIAL_EVENTS = 200
# the table's sort keys -> the runs query's ("metric:<name>" is the same in both)
_QUERY_SORT = {
    SORT_TIME: "created_at",
    SORT_RUN: "run_id",
    SORT_GATES: "gates_passed",
    SORT_VERSION: "version",
}


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
        # A backend given, or named (--backend), is kept; otherwise get_backend is asked again
        # on every stack poll, so a stack brought up with the other backend is the one shown.
        self._pinned = backend is not None or backend_name is not None
        if backend is None:
            from mlplat_tui.stack.base import get_backend

            backend = get_backend(project, backend_name)
        self._backend: StackBackend = backend
        self.backend_name = backend.name
        self.ports = backend.ports
        self._ours: set[str] = set()  # service URLs that said they serve this project
        self._clock = clock
        self._timeout = timeout_s
        self._lock = threading.Lock()
        self._meta: MetadataClient | None = None
        self._http: Any = None
        self._traffic = TrafficHistory()
        self._provider: str | None = None

    # -- plumbing ---------------------------------------------------------------------------
    def now(self) -> float:
        return self._clock()

    def backend(self) -> StackBackend:
        """The backend the dashboard acts on: the one given or named, else ``get_backend``'s."""
        with self._lock:
            return self._backend

    def _refresh_backend(self) -> StackBackend:
        if not self._pinned:
            from mlplat_tui.stack.base import get_backend

            current = get_backend(self.project)
            with self._lock:
                if current.name != self._backend.name:
                    self._backend, self.backend_name = current, current.name
        return self.backend()

    def metadata(self) -> MetadataClient:
        """The metadata client, once the service said it serves this project.

        ``StackError`` naming the holder when the ports answer for another project; a service
        that does not answer yet is asked again next time.
        """
        url = self.ports.url(Service.METADATA)
        self._check_ours(url)
        with self._lock:
            if self._meta is None:
                from mlplat_tui.clients.metadata import MetadataClient

                self._meta = MetadataClient(
                    url,
                    timeout=self._timeout,
                    token_file=self.project.paths.metadata_token,  # writes need the metadata token
                )
            return self._meta

    def _check_ours(self, url: str) -> None:
        """``StackError`` naming the holder when the service at ``url`` is another project's.

        Asked until the service answers, then not again until it stops answering (another
        stack may come up on the same port then)."""
        if url in self._ours:
            return
        from mlplat_tui.clients.identity import fetch_identity, foreign_stack_error, is_ours

        holder = fetch_identity(url, timeout=self._timeout)
        if holder is None:
            return
        if not is_ours(holder, self.project):
            raise foreign_stack_error(url, holder, self.project)
        self._ours.add(url)

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
            status = self._refresh_backend().status()
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
        self._provider = None
        self._ours.clear()  # whatever answers on these ports next must say who it is

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

    def runs(self, query: RunsQuery) -> RunsPage:
        """One page of runs through the one runs query (what ``mlplat runs`` lists)."""
        from mlplat_runtime.metadata.runs_query import RunsQuery as StoreQuery

        now = self.now()
        try:
            store_query = StoreQuery(
                search=query.search,
                sort=_QUERY_SORT.get(query.sort, query.sort),
                descending=query.descending,
                limit=query.limit,
                offset=query.offset,
            )
        except ValueError:  # a metric name the query does not take: newest first instead
            store_query = StoreQuery(search=query.search, limit=query.limit, offset=query.offset)
        try:
            page = self.metadata().query_runs(store_query)
        except MlplatError as exc:
            self._ours.discard(self.ports.url(Service.METADATA))
            return RunsPage(query, (), 0, self._key_metrics([]), taken_at=now, error=str(exc))
        rows = tuple(_run_row(r) for r in page.rows)
        seen: list[str] = []
        for row in rows:
            seen += [m for m in row.metrics if m not in seen]
        return RunsPage(query, rows, page.total, self._key_metrics(seen), taken_at=now)

    def _listed(self, run_id: str) -> rq.RunRow | None:
        """The runs query's row of one run (where it serves now), None when it is not listed."""
        page = self.metadata().query_runs(search=run_id, limit=50)
        return next((r for r in page.rows if r.run.run_id == run_id), None)

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
        listed = self._listed(run_id)
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
            served_on=tuple(listed.served_on) if listed else (),
            was_deployed=listed.was_deployed if listed else False,
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
        url = self.ports.url(Service.SERVING)
        try:
            self._check_ours(url)
            resp = self._get(f"{url}/metrics")
            if resp.status_code != 200:
                raise ServiceError(f"serving answered {resp.status_code} on /metrics")
            scrape = parse_scrape(resp.text, time.monotonic(), model=self.model_name)
        except Exception as exc:
            self._traffic.reset()
            self._ours.discard(url)
            message = exc.message if isinstance(exc, MlplatError) else "not reachable"
            return ServingSnapshot(now, self.model_name, error=message)
        self._traffic.add(scrape)
        self._provider = scrape.provider
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
                records = meta.latest_events(limit=_INITIAL_EVENTS)
            else:
                records = meta.events(after_id=after_id, limit=_INITIAL_EVENTS)
        except MlplatError:
            return EventsBatch((), after_id)
        last_id = max((r.id for r in records if r.id is not None), default=after_id or 0)
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
        """One cycle now (no dev loop runs); what to tell the user, from the cycle's outcome."""
        from mlplat_tui.cycle.outcome import CycleOutcome
        from mlplat_tui.cycle.pipeline import run_cycle

        result = run_cycle(self.project, backend=self.backend(), emit=emit, cancel=cancel)
        reason = result.reason.splitlines()[0] if result.reason else ""
        if result.outcome is CycleOutcome.DEPLOYED:
            return f"v{result.version} is serving"
        if result.outcome is CycleOutcome.CANCELLED:
            return "training cancelled"
        if result.outcome is CycleOutcome.PASSED:
            return f"v{result.version} passed its gates; not deployed" + (f" ({reason})" if reason else "")
        return reason or result.outcome.value

    def serve_run(self, run_id: str, emit: EventSink | None = None) -> str:
        """Serve this run's bundle on the local stack through the one deploy use case (as
        ``mlplat rollback``): recorded as a deployment, or a rollback when the run is older than
        what serves. Raises when it did not serve, with serving's (or the gates') reason."""
        from mlplat_tui.clients.factory import Endpoints, connect_admin
        from mlplat_tui.deploy.runs import serve_run
        from mlplat_tui.deploy.serve import LocalTarget
        from mlplat_tui.events import null_sink

        meta, show = self.metadata(), emit or null_sink

        def emit_and_record(event: Event) -> None:
            show(event)
            with contextlib.suppress(MlplatError):  # the outcome counts; the history is best effort
                meta.record_event(event)

        backend = self.backend()
        admin = connect_admin(Endpoints.of(self.project, self.ports))
        if admin is None:
            raise ServiceError(
                f"serving admin at {self.ports.url('admin')} is not answering: nothing was served",
                hint="start the stack (u), then serve again",
            )
        try:
            target = LocalTarget(admin, stage=backend.serving_bundle_path)
            result = serve_run(meta, target, run_id, emit=emit_and_record, by="dashboard")
        finally:
            admin.close()
        if not result.served:
            raise ServiceError(result.reason, hint="the version that served before still serves")
        word = "rolled back to" if result.action == "rollback" else "serving"
        on = f" on {result.provider}" if result.provider else ""
        return f"{word} v{result.serving_version}{on}"


def _run_row(row: rq.RunRow) -> RunRow:
    """A runs-query row as the table shows it (numeric metrics only)."""
    run = row.run
    return RunRow(
        run_id=run.run_id,
        started_at=_epoch(run.created_at),
        status=run.status,
        metrics={k: float(v) for k, v in run.metrics.items() if isinstance(v, int | float)},
        gates_passed=run.gates_passed,
        gates_failed=tuple(row.gates_failed),
        bundle_id=run.bundle_id,
        version=run.version,
        served_on=tuple(row.served_on),
        was_deployed=row.was_deployed,
    )
