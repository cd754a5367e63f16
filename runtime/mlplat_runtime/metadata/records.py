"""Typed records of the metadata store, shared by the service and the control-plane client.

They cross a process boundary (HTTP JSON), so they are pydantic models: frozen, ``extra="forbid"``
(a misspelt field is an error, not silently dropped). Timestamps are timezone-aware UTC
``datetime``s; ISO strings, naive datetimes (taken as UTC) and unix seconds are accepted.
Non-finite floats (a NaN loss) travel as the JSON constants ``NaN``/``Infinity``.

This module imports pydantic and the bundle manifest only: the control plane imports it,
so it must not pull in duckdb, uvicorn, or anything from ``mlplat_tui``.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import suppress
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter

from mlplat_runtime.bundle.manifest import GateOp, GateResult


def _as_utc(value: datetime) -> datetime:
    # Naive values are taken as UTC: the store keeps UTC, and mixing naive and aware
    # datetimes in comparisons raises.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]
_DATETIME = TypeAdapter(UtcDatetime)


def parse_ts(value: str | float | datetime) -> datetime:
    """An ISO 8601 string, unix seconds or a datetime -> aware UTC datetime (ValueError if not)."""
    if isinstance(value, str):
        with suppress(ValueError):
            value = float(value)
    return _DATETIME.validate_python(value)


# "interrupted": still "running" when the metadata service started again, so the cycle that
# owned it could not record how it ended (the service died, or the control plane did).
RunStatus = Literal["running", "finished", "failed", "rejected", "cancelled", "deployed", "interrupted"]
INTERRUPTED_REASON = (
    "the metadata service stopped while this run was in progress; how the run ended was not recorded"
)
DeployAction = Literal["deploy", "rollback", "undeploy"]
DeployStatus = Literal["ok", "failed"]


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="constants")


class RunRecord(_Record):
    """One training run: what was run, on which code and data, and how it ended."""

    run_id: str = Field(min_length=1)
    project: str = ""
    model_name: str = ""
    status: RunStatus = "running"
    created_at: UtcDatetime = Field(default_factory=utcnow)
    finished_at: UtcDatetime | None = None
    command: str = ""
    params: dict[str, str] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    git_commit: str | None = None
    dirty_hash: str | None = None
    data_hashes: dict[str, str] = Field(default_factory=dict)
    tracker_uri: str | None = None
    bundle_id: str | None = None
    version: str | None = None
    gates_passed: bool | None = None
    deployed: bool = False
    error: str | None = None


# Fields update_run may change; run_id is the key and never changes.
RUN_UPDATABLE = frozenset(RunRecord.model_fields) - {"run_id"}


class BundleRecord(_Record):
    """A built bundle: where it lies and its full manifest (as parsed JSON)."""

    bundle_id: str = Field(min_length=1)
    run_id: str | None = None
    model_name: str
    version: str
    path: str
    size_bytes: int = Field(ge=0)
    created_at: UtcDatetime = Field(default_factory=utcnow)
    manifest: dict[str, Any] = Field(default_factory=dict)


class GateRecord(_Record):
    """One guardrail result as recorded for a bundle (a ``GateResult`` plus its keys)."""

    bundle_id: str
    run_id: str | None = None
    name: str
    measured: float | str | None
    threshold: str
    passed: bool
    detail: str = ""
    # The typed comparison (see ``GateResult``), in columns of their own since schema v3.
    op: GateOp | None = None
    bound: float | None = None
    evaluated: bool = True
    policy_floor: bool = False

    @classmethod
    def from_result(cls, bundle_id: str, run_id: str | None, gate: GateResult) -> GateRecord:
        return cls(bundle_id=bundle_id, run_id=run_id, **gate.model_dump())

    def to_result(self) -> GateResult:
        return GateResult.model_validate(self.model_dump(exclude={"bundle_id", "run_id"}))


class GatesIn(_Record):
    """Body of ``POST /gates``: a bundle's gate results, replacing any recorded before."""

    bundle_id: str = Field(min_length=1)
    run_id: str | None = None
    gates: tuple[GateResult, ...]


class DeploymentRecord(_Record):
    """One deploy, rollback or undeploy on a target; ``id`` is given by the store."""

    id: int | None = None
    model_name: str
    version: str
    bundle_id: str
    run_id: str | None = None
    target: str = "local"
    action: DeployAction = "deploy"
    status: DeployStatus = "ok"
    reason: str = ""
    ts: UtcDatetime = Field(default_factory=utcnow)
    # Pushes to shared targets (schema v4): what the registry and image registry called it, who
    # asked, and the receipt written for it. Local deployments leave them empty.
    registry_version: str | None = None
    image_digest: str | None = None
    pushed_by: str = ""
    receipt_path: str | None = None


# Keys of ``mlplat_tui.events.Event.to_json()`` that become columns; the rest is payload.
_EVENT_COLUMNS = ("kind", "message", "run_id", "bundle_id", "version")


class EventRecord(_Record):
    """A platform event as stored; ``id`` increases in arrival order (for polling)."""

    id: int | None = None
    ts: UtcDatetime = Field(default_factory=utcnow)
    kind: str = Field(min_length=1)
    message: str = ""
    run_id: str | None = None
    bundle_id: str | None = None
    version: str | None = None
    payload: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EventRecord:
        """Accept an ``EventRecord`` dict or the JSON of ``Event.to_json()``.

        ``Event`` lives in the control plane, which the runtime may not import, so its JSON
        shape is mapped here: ``ts`` (unix seconds) is the time, ``time`` (its ISO copy) is
        dropped, and every other key (gates, duration_s, error, data) goes into ``payload``.
        """
        if "payload" in data or "id" in data:
            return cls.model_validate(dict(data))
        payload = {k: v for k, v in data.items() if k not in (*_EVENT_COLUMNS, "ts", "time")}
        fields: dict[str, Any] = {k: data[k] for k in _EVENT_COLUMNS if data.get(k) is not None}
        ts = data.get("ts", data.get("time"))
        if ts is not None:
            fields["ts"] = ts
        return cls.model_validate({**fields, "payload": payload})


class RunDetail(_Record):
    """``GET /runs/{id}``: the run with its bundle and gate results, when it has them."""

    run: RunRecord
    bundle: BundleRecord | None = None
    gates: tuple[GateRecord, ...] = ()


class SqlResult(_Record):
    """Rows of a read-only query; ``truncated`` when more rows matched than were returned."""

    columns: list[str]
    rows: list[list[Any]]
    truncated: bool = False
    note: str | None = None  # what was cut and why (rows, bytes or oversized cells), when anything was


# The wire format of every body: pydantic JSON (datetimes as ISO, NaN kept as a constant).
WIRE = TypeAdapter(Any, config=ConfigDict(ser_json_inf_nan="constants"))


def dump_json(value: Any) -> bytes:
    return WIRE.dump_json(value)
