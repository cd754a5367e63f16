"""``MetadataClient``: the control plane's typed client of the metadata service.

The metadata service is the one process that owns the DuckDB file, so the CLI, the pipeline
and the dashboard all read and write through this client. Requests and answers are the pydantic
records of ``mlplat_runtime.metadata.records``. Errors come back as the same class of the one
exception tree the service raised (``NotFoundError`` for an unknown run, ``MetadataError`` for a
refused query...), with the server's message; a service that cannot be reached is a
``ServiceError`` whose hint says to start the stack.

The httpx transport is injectable (httpx's own test seam). Imports httpx and pydantic only:
no textual, no mlflow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from mlplat_runtime import errors
from mlplat_runtime.bundle.manifest import GateResult
from mlplat_runtime.errors import MlplatError, ServiceError
from mlplat_runtime.metadata.monitor_records import AlertInfo, Histogram, MonitorReport, WindowPoint
from mlplat_runtime.metadata.records import (
    WIRE,
    BundleRecord,
    DeploymentRecord,
    EventRecord,
    GateRecord,
    RunDetail,
    RunRecord,
    SqlResult,
    dump_json,
)
from mlplat_runtime.metadata.runs_query import RunsPage, RunsQuery
from mlplat_tui.events import Event

# Classes the service may name in "type"; ConfigError's constructor differs, so it comes back
# as its base class.
_ERRORS: dict[str, type[MlplatError]] = {
    cls.__name__: cls
    for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, MlplatError) and cls is not errors.ConfigError
}
_ERRORS["ConfigError"] = errors.UsageError
_BY_STATUS: dict[int, type[MlplatError]] = {
    400: errors.RequestError,
    401: errors.AuthError,
    404: errors.NotFoundError,
    405: errors.RequestError,
    503: errors.ServiceError,
}
_UP_HINT = "start the stack with `mlplat up`"


class MetadataClient:
    """Talks to ``python -m mlplat_runtime.metadata`` at ``base_url`` (e.g. http://127.0.0.1:7801)."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 5.0,
        transport: httpx.BaseTransport | None = None,
        token: str | None = None,
        token_file: Path | None = None,
    ) -> None:
        """``token`` (or the one in ``token_file``, when that file exists) is sent as a bearer
        token: a service started with ``--token-file`` refuses writes without it."""
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        if token is None and token_file is not None and Path(token_file).is_file():
            from mlplat_runtime.tokens import read_token_file

            try:
                token = read_token_file(Path(token_file))
            except MlplatError:
                # A file the service would refuse too (too short, not ours): send no token; a
                # service that needs one answers writes with a 401 that says so, reads still work.
                token = None
        headers = {"authorization": f"Bearer {token}"} if token else None
        # Our services are on loopback: a proxy from the environment must never see them.
        self._http = httpx.Client(
            base_url=self.base_url, timeout=timeout, transport=transport, trust_env=False, headers=headers
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> MetadataClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing -------------------------------------------------------------------------

    def _request(
        self, method: str, path: str, *, params: Mapping[str, Any] | None = None, body: Any = None
    ) -> Any:
        content = None if body is None else dump_json(body)
        headers = {"content-type": "application/json"} if content is not None else None
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            try:
                response = self._http.request(method, path, params=query, content=content, headers=headers)
            except httpx.RemoteProtocolError:
                # A kept-alive connection the service closed as the request went out: a read is
                # safe to send again, once, on a new connection; a write is not (it may have landed).
                if not _is_read(method, path):
                    raise
                response = self._http.request(method, path, params=query, content=content, headers=headers)
        except httpx.TimeoutException:
            raise ServiceError(
                f"the metadata service at {self.base_url} did not answer {method} {path}"
                f" within {self.timeout:g}s",
                hint="see `mlplat logs metadata`",
            ) from None
        except httpx.TransportError as exc:
            raise ServiceError(
                f"cannot reach the metadata service at {self.base_url}: {exc}", hint=_UP_HINT
            ) from None
        if response.status_code >= 400:
            raise self._error(response)
        try:
            return WIRE.validate_json(response.content)
        except ValidationError:
            raise ServiceError(
                f"the metadata service at {self.base_url} sent a body that is not JSON"
                f" for {method} {path}: {response.text[:200]!r}",
                hint="is another program listening on this port? see `mlplat status`",
            ) from None

    def _error(self, response: httpx.Response) -> MlplatError:
        try:
            data = WIRE.validate_json(response.content)
        except ValidationError:
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("error"), str):
            cls = _BY_STATUS.get(response.status_code, ServiceError)
            return cls(f"metadata service answered {response.status_code}: {response.text[:200]}")
        cls = _ERRORS.get(str(data.get("type")), _BY_STATUS.get(response.status_code, MlplatError))
        hint = data.get("hint")
        return cls(data["error"], hint=hint if isinstance(hint, str) else None)

    @staticmethod
    def _id(value: str) -> str:
        return quote(value, safe="")

    # -- API ------------------------------------------------------------------------------

    def health(self) -> bool:
        """True when the service answers ``GET /health`` with status ok; never raises."""
        try:
            response = self._http.get("/health")
            return response.status_code == 200 and response.json().get("status") == "ok"
        except (httpx.HTTPError, ValueError, AttributeError):
            return False

    def record_run(self, run: RunRecord) -> RunRecord:
        """Insert the run, or replace the recorded run with the same id."""
        return RunRecord.model_validate(self._request("POST", "/runs", body=run))

    def update_run(self, run_id: str, **fields: Any) -> RunRecord:
        """Change some fields of a recorded run, e.g. ``update_run(rid, status="finished")``."""
        return RunRecord.model_validate(self._request("PATCH", f"/runs/{self._id(run_id)}", body=fields))

    def record_bundle(self, bundle: BundleRecord) -> BundleRecord:
        return BundleRecord.model_validate(self._request("POST", "/bundles", body=bundle))

    def record_gates(
        self, bundle_id: str, run_id: str | None, gates: Sequence[GateResult]
    ) -> list[GateRecord]:
        """Record a bundle's gate results (replacing those recorded for it before)."""
        body = {"bundle_id": bundle_id, "run_id": run_id, "gates": list(gates)}
        data = self._request("POST", "/gates", body=body)
        return [GateRecord.model_validate(g) for g in data["gates"]]

    def record_deployment(self, deployment: DeploymentRecord) -> DeploymentRecord:
        """Record a deploy/rollback/undeploy; the answer carries the id the store gave it."""
        return DeploymentRecord.model_validate(self._request("POST", "/deployments", body=deployment))

    def record_event(self, event: Event | EventRecord | Mapping[str, Any]) -> EventRecord | None:
        """Record an event; ``output`` events (single lines of training output) are not stored."""
        if isinstance(event, Event):
            body: Any = event.to_json()
        elif isinstance(event, EventRecord):
            body = event
        else:
            body = dict(event)
        kind = body.kind if isinstance(body, EventRecord) else body.get("kind")
        if kind == "output":
            return None
        return EventRecord.model_validate(self._request("POST", "/events", body=body))

    def runs(self, limit: int = 100, offset: int = 0, search: str | None = None) -> list[RunRecord]:
        """Runs, newest first; ``search`` is the runs query's (``runs_query.SEARCH_COLUMNS``):
        the one search definition, through ``query_runs``."""
        page = self.query_runs(RunsQuery(search=search or "", limit=limit, offset=offset))
        return [row.run for row in page.rows]

    def query_runs(self, query: RunsQuery | None = None, **fields: Any) -> RunsPage:
        """The one runs query: a page of runs, each with the targets it serves on now.

        ``query_runs(RunsQuery(search="v3"))`` or ``query_runs(search="v3", limit=20)``.
        """
        query = query or RunsQuery(**fields)
        return RunsPage.model_validate(self._request("POST", "/runs/query", body=query))

    def run(self, run_id: str) -> RunRecord:
        """One run; ``NotFoundError`` when there is none with this id."""
        return self.run_detail(run_id).run

    def run_detail(self, run_id: str) -> RunDetail:
        """One run with its bundle and gate results (what `mlplat show` prints)."""
        return RunDetail.model_validate(self._request("GET", f"/runs/{self._id(run_id)}"))

    def gates(self, bundle_id: str) -> list[GateRecord]:
        data = self._request("GET", "/gates", params={"bundle_id": bundle_id})
        return [GateRecord.model_validate(g) for g in data["gates"]]

    def bundle(self, bundle_id: str) -> BundleRecord:
        return BundleRecord.model_validate(self._request("GET", f"/bundles/{self._id(bundle_id)}"))

    def events(self, after_id: int = 0, limit: int = 200) -> list[EventRecord]:
        """Events with an id above ``after_id``, oldest first: poll with the last id seen."""
        data = self._request("GET", "/events", params={"after_id": after_id, "limit": limit})
        return [EventRecord.model_validate(e) for e in data["events"]]

    def latest_events(self, limit: int = 200) -> list[EventRecord]:
        """The newest ``limit`` events, oldest first: where to start before polling ``events``."""
        data = self._request("GET", "/events/latest", params={"limit": limit})
        return [EventRecord.model_validate(e) for e in data["events"]]

    def deployments(
        self, model: str | None = None, limit: int = 100, *, target: str | None = None
    ) -> list[DeploymentRecord]:
        """Deployment history, newest first."""
        data = self._request("GET", "/deployments", params={"model": model, "limit": limit, "target": target})
        return [DeploymentRecord.model_validate(d) for d in data["deployments"]]

    def current_deployment(self, model: str, *, target: str | None = None) -> DeploymentRecord | None:
        """What serves ``model`` now (last successful deploy/rollback), None when nothing does."""
        data = self._request("GET", "/deployments/current", params={"model": model, "target": target})
        return None if data["deployment"] is None else DeploymentRecord.model_validate(data["deployment"])

    def deployed_at(
        self, model: str, ts: datetime | str | float, *, target: str | None = None
    ) -> DeploymentRecord | None:
        """What served ``model`` at ``ts`` (a datetime, ISO 8601 string or unix seconds)."""
        stamp = ts.isoformat() if isinstance(ts, datetime) else str(ts)
        data = self._request("GET", "/deployments/at", params={"model": model, "ts": stamp, "target": target})
        return None if data["deployment"] is None else DeploymentRecord.model_validate(data["deployment"])

    def sql(self, query: str) -> SqlResult:
        """One read-only statement; a write is refused with ``MetadataError``."""
        return SqlResult.model_validate(self._request("POST", "/sql", body={"query": query}))

    def next_version(self, model: str) -> str:
        """The version the next bundle of ``model`` gets ("1" for a new model)."""
        return str(self._request("GET", "/versions/next", params={"model": model})["version"])

    # -- monitoring (the service's /monitor routes: ``mlplat_runtime.metadata.monitor``) ---

    def monitor_process(self, *, cut: bool = False) -> dict[str, Any]:
        """Read closed log segments now; ``cut`` evaluates everything pending as one window."""
        return dict(self._request("POST", "/monitor/process", body={"cut": cut}))

    def register_reference(
        self, bundle_id: str, model: str, version: str, reference: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Give the monitor a bundle's reference v2 (when it cannot read the bundle folder)."""
        body = {"bundle_id": bundle_id, "model": model, "version": version, "reference": dict(reference)}
        return dict(self._request("POST", "/monitor/references", body=body))

    def monitor_report(self, window: str = "15m", model: str | None = None) -> MonitorReport:
        """What ``mlplat monitor`` prints: per version traffic, latency, drift, open alerts."""
        data = self._request("GET", "/monitor/report", params={"window": window, "model": model})
        return MonitorReport.model_validate(data)

    def monitor_alerts(self, *, open_only: bool = False, model: str | None = None) -> list[AlertInfo]:
        data = self._request(
            "GET", "/monitor/alerts", params={"open": "1" if open_only else None, "model": model}
        )
        return [AlertInfo.model_validate(a) for a in data["alerts"]]

    def monitor_history(self, model: str, feature: str | None = None, limit: int = 200) -> list[WindowPoint]:
        """Drift per evaluated window, oldest first (one feature, or every feature)."""
        data = self._request(
            "GET", "/monitor/history", params={"model": model, "feature": feature, "limit": limit}
        )
        return [WindowPoint.model_validate(w) for w in data["windows"]]

    def monitor_histogram(self, model: str, version: str, feature: str, window: str = "15m") -> Histogram:
        """Training vs live counts in one feature's reference slots."""
        params = {"model": model, "version": version, "feature": feature, "window": window}
        return Histogram.model_validate(self._request("GET", "/monitor/histogram", params=params))


def _is_read(method: str, path: str) -> bool:
    """GETs, and the POSTed queries (``/runs/query``, ``/sql``): nothing they do changes the store."""
    return method in ("GET", "HEAD") or path.rstrip("/").endswith(("/query", "/sql"))
