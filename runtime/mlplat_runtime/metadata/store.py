"""``MetadataStore``: the only code that opens the metadata DuckDB file.

It answers "what models do we have, where did each come from, which one is serving, and what
was serving at time T". The metadata service is the one process that holds the file (DuckDB
allows one writer process); everything else goes through its HTTP API.

Threading: one DuckDB connection guarded by a lock for the typed calls (they are short); each
``sql()`` call gets its own cursor in a READ ONLY transaction so a slow query does not hold
the lock. Queries are bounded (``sqlcaps``): DuckDB's memory limit, a time limit, at most
``SQL_CONCURRENCY`` at once, rows, bytes and cells capped in the answer; each is cancellable,
and ``close`` interrupts the running ones first. The database is opened with external access
off (no file reads, COPY, ATTACH, extension installs) and its configuration locked, which the
store itself never needs.

Imports duckdb and pydantic only; never mlplat_tui.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson
from pydantic import ValidationError

from mlplat_runtime.bundle.manifest import GateResult
from mlplat_runtime.errors import NotFoundError, RequestError, ServiceError
from mlplat_runtime.metadata.readonly import check_read_only, refusal_from
from mlplat_runtime.metadata.records import (
    RUN_UPDATABLE,
    WIRE,
    BundleRecord,
    DeploymentRecord,
    EventRecord,
    GateRecord,
    RunDetail,
    RunRecord,
    SqlResult,
)
from mlplat_runtime.metadata.runs_query import RunsPage, RunsQuery, query_runs
from mlplat_runtime.metadata.schema import MIGRATIONS, Migration, migrate
from mlplat_runtime.metadata.sqlcaps import QueryControl, SqlCaps, run_capped

SQL_ROW_CAP = 10_000
SQL_TIMEOUT_S = 30.0
SQL_MEMORY_LIMIT = "1GB"  # DuckDB's own limit, for the whole database: queries and writes
SQL_TEMP_LIMIT = "2GB"  # what a query may spill to the .tmp folder beside the file
SQL_CONCURRENCY = 2  # queries running at once; the next one waits up to SQL_QUEUE_S
SQL_QUEUE_S = 5.0
MAX_LIMIT = 10_000
_BATCH = 500  # rows per multi-row INSERT

_RUN_COLUMNS = tuple(RunRecord.model_fields)
_RUN_JSON = frozenset({"params", "metrics", "data_hashes"})
_RUN_TIMES = frozenset({"created_at", "finished_at"})
_BUNDLE_COLUMNS = tuple(BundleRecord.model_fields)
_DEPLOY_COLUMNS = tuple(DeploymentRecord.model_fields)
_EVENT_COLUMNS = tuple(EventRecord.model_fields)


def _db_time(value: datetime | None) -> datetime | None:
    # Columns are TIMESTAMP in UTC: bind naive UTC so DuckDB never applies a session zone.
    return None if value is None else value.astimezone(UTC).replace(tzinfo=None)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value).replace("inf", "Infinity").replace("nan", "NaN")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _json_text(value: Any) -> str:
    # A JSON column holds strict JSON: NaN/Infinity become the strings pydantic parses back.
    return orjson.dumps(_finite(WIRE.dump_python(value, mode="json"))).decode()


def _bind(
    record: Any, columns: Sequence[str], *, json: Iterable[str] = (), times: Iterable[str] = ()
) -> list[Any]:
    """A record's values in column order, as DuckDB binds them: JSON text, naive-UTC times."""
    json, times = set(json), set(times)
    out: list[Any] = []
    for name in columns:
        value = getattr(record, name)
        if name in json:
            value = _json_text(value)
        elif name in times:
            value = _db_time(value)
        out.append(value)
    return out


def _json_value(text: str | None) -> Any:
    return WIRE.validate_json(text) if text else {}


def _event_record(row: Sequence[Any]) -> EventRecord:
    data = dict(zip(_EVENT_COLUMNS, row, strict=True))
    data["payload"] = _json_value(data["payload"])
    return EventRecord.model_validate(data)


def _limit(value: int) -> int:
    if not 1 <= value <= MAX_LIMIT:
        raise RequestError(f"limit must be between 1 and {MAX_LIMIT}, got {value}")
    return value


class MetadataStore:
    """Runs, bundles, gate results, deployments and events in one versioned DuckDB file."""

    def __init__(
        self,
        path: Path | str,
        *,
        migrations: Sequence[Migration] = MIGRATIONS,
        sql_row_cap: int = SQL_ROW_CAP,
        sql_timeout_s: float = SQL_TIMEOUT_S,
        memory_limit: str = SQL_MEMORY_LIMIT,
        sql_caps: SqlCaps | None = None,
        sql_concurrency: int = SQL_CONCURRENCY,
        sql_queue_s: float = SQL_QUEUE_S,
    ) -> None:
        self.path = Path(path)
        self.caps = sql_caps or SqlCaps(rows=sql_row_cap)
        self.sql_row_cap = self.caps.rows
        self.sql_timeout_s = sql_timeout_s
        self.sql_concurrency = sql_concurrency
        self.sql_queue_s = sql_queue_s
        self._sql_slots = threading.BoundedSemaphore(sql_concurrency)
        self._queries: set[QueryControl] = set()
        self._lock = threading.RLock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        config: dict[str, str | bool | int | float | list[str]] = {
            "enable_external_access": False,
            "memory_limit": memory_limit,
            "max_temp_directory_size": SQL_TEMP_LIMIT,
        }
        try:
            self._con = duckdb.connect(str(self.path), config=config)
        except duckdb.IOException as exc:
            raise ServiceError(
                f"cannot open the metadata store {self.path}: {exc}",
                hint="another metadata service may hold it: stop it with `mlplat down`",
            ) from None
        try:
            self._con.execute("SET lock_configuration = true")
            self.schema_version = migrate(self._con, migrations, where=str(self.path))
        except BaseException:
            self._con.close()
            raise
        self._closed = False
        self._reader: Callable[[str, QueryControl, SqlCaps], SqlResult] | None = None
        self._reader_tables: frozenset[str] = frozenset()

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Checkpoint (fold the WAL into the file) and close; safe to call twice."""
        self.interrupt_queries()  # a running query must not hold the close (or SIGTERM) up
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._con.execute("CHECKPOINT")
            finally:
                self._con.close()

    def __enter__(self) -> MetadataStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._lock:
            if self._closed:
                raise ServiceError(f"metadata store {self.path} is closed")
            self._con.execute("BEGIN TRANSACTION")
            try:
                yield self._con
                self._con.execute("COMMIT")
            except BaseException:
                self._con.execute("ROLLBACK")
                raise

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            if self._closed:
                raise ServiceError(f"metadata store {self.path} is closed")
            return self._con.execute(sql, list(params)).fetchall()

    # -- runs -----------------------------------------------------------------------------

    def _run_values(self, run: RunRecord) -> list[Any]:
        return _bind(run, _RUN_COLUMNS, json=_RUN_JSON, times=_RUN_TIMES)

    @staticmethod
    def _run_from_row(row: Sequence[Any]) -> RunRecord:
        data = dict(zip(_RUN_COLUMNS, row, strict=True))
        for name in _RUN_JSON:
            data[name] = _json_value(data[name])
        return RunRecord.model_validate(data)

    def record_run(self, run: RunRecord) -> RunRecord:
        """Insert the run, or replace every field of the run with the same id."""
        self.record_runs([run])
        return run

    def record_runs(self, runs: Sequence[RunRecord]) -> int:
        """Upsert many runs in one transaction (imports, backfills); the last of a repeated id wins.

        Multi-row INSERTs: DuckDB pays ~1 ms per executed statement, so a row at a time would
        make 10,000 runs take most of a minute.
        """
        unique = list({r.run_id: r for r in runs}.values())
        columns = ", ".join(_RUN_COLUMNS)
        row_marks = "(" + ", ".join("?" for _ in _RUN_COLUMNS) + ")"
        updates = ", ".join(f"{c} = excluded.{c}" for c in _RUN_COLUMNS if c != "run_id")
        with self._tx() as con:
            for start in range(0, len(unique), _BATCH):
                batch = unique[start : start + _BATCH]
                con.execute(
                    f"INSERT INTO runs ({columns}) VALUES {', '.join(row_marks for _ in batch)}"
                    f" ON CONFLICT (run_id) DO UPDATE SET {updates}",
                    [v for r in batch for v in self._run_values(r)],
                )
        return len(unique)

    def update_run(self, run_id: str, fields: Mapping[str, Any]) -> RunRecord:
        """Change some fields of a recorded run (validated as a whole ``RunRecord``)."""
        unknown = sorted(set(fields) - RUN_UPDATABLE)
        if unknown:
            raise RequestError(
                f"cannot update run field(s) {', '.join(unknown)}",
                hint=f"updatable: {', '.join(sorted(RUN_UPDATABLE))}",
            )
        with self._lock:
            current = self.run(run_id)
            try:
                updated = RunRecord.model_validate({**current.model_dump(), **fields})
            except ValidationError as exc:
                raise RequestError(f"invalid run update for {run_id}: {exc}") from None
            return self.record_run(updated)

    def interrupt_open_runs(self) -> int:
        """Mark every run still "running" as "interrupted"; how many. Called as the service starts.

        A run is "running" only while a cycle holds it; a service that starts again has lost
        every cycle that was talking to it. A cycle that is in fact still going (a dev loop
        across a restart) overwrites the mark when it records its outcome.
        """
        from mlplat_runtime.metadata.records import INTERRUPTED_REASON

        with self._lock:
            open_runs = self._con.execute("SELECT count(*) FROM runs WHERE status = 'running'").fetchone()
            count = int(open_runs[0]) if open_runs else 0
            if count:
                self._con.execute(
                    "UPDATE runs SET status = 'interrupted', error = coalesce(error, ?), "
                    "finished_at = coalesce(finished_at, ?) WHERE status = 'running'",
                    [INTERRUPTED_REASON, datetime.now(UTC).replace(tzinfo=None)],
                )
            return count

    def run(self, run_id: str) -> RunRecord:
        rows = self._rows(f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs WHERE run_id = ?", [run_id])
        if not rows:
            raise NotFoundError(
                f"no run {run_id!r} in the metadata store", hint="list runs with `mlplat runs`"
            )
        return self._run_from_row(rows[0])

    def run_detail(self, run_id: str) -> RunDetail:
        run = self.run(run_id)
        bundle: BundleRecord | None = None
        bundle_id = run.bundle_id
        if bundle_id is None:
            found = self._rows(
                "SELECT bundle_id FROM bundles WHERE run_id = ? ORDER BY created_at DESC LIMIT 1", [run_id]
            )
            bundle_id = found[0][0] if found else None
        if bundle_id is not None:
            try:
                bundle = self.bundle(bundle_id)
            except NotFoundError:
                bundle = None
        gates = self.gates(bundle_id) if bundle_id is not None else []
        return RunDetail(run=run, bundle=bundle, gates=tuple(gates))

    def runs(self, limit: int = 100, offset: int = 0, search: str | None = None) -> list[RunRecord]:
        """Newest first; ``search`` matches run id, project, model or status (case-insensitive)."""
        if offset < 0:
            raise RequestError(f"offset must be >= 0, got {offset}")
        where, params = "", []
        if search:
            # Escape LIKE wildcards so the text is matched literally.
            needle = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where = (
                "WHERE run_id ILIKE ? ESCAPE '\\' OR model_name ILIKE ? ESCAPE '\\'"
                " OR project ILIKE ? ESCAPE '\\' OR status ILIKE ? ESCAPE '\\'"
            )
            params = [needle] * 4
        rows = self._rows(
            f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs {where}"
            " ORDER BY created_at DESC, run_id DESC LIMIT ? OFFSET ?",
            [*params, _limit(limit), offset],
        )
        return [self._run_from_row(r) for r in rows]

    def query_runs(self, query: RunsQuery) -> RunsPage:
        """The one runs query (``runs_query.py``): a page of runs with what each serves now."""
        return query_runs(self._rows, query, columns=_RUN_COLUMNS, to_run=self._run_from_row)

    def count_runs(self) -> int:
        return int(self._rows("SELECT count(*) FROM runs")[0][0])

    # -- bundles and gates ----------------------------------------------------------------

    def record_bundle(self, bundle: BundleRecord) -> BundleRecord:
        """Insert or replace by bundle id (the id is a content hash: same content, same row)."""
        values = _bind(bundle, _BUNDLE_COLUMNS, json=("manifest",), times=("created_at",))
        with self._tx() as con:
            con.execute(
                f"INSERT OR REPLACE INTO bundles ({', '.join(_BUNDLE_COLUMNS)})"
                f" VALUES ({', '.join('?' for _ in _BUNDLE_COLUMNS)})",
                values,
            )
        return bundle

    def bundle(self, bundle_id: str) -> BundleRecord:
        rows = self._rows(
            f"SELECT {', '.join(_BUNDLE_COLUMNS)} FROM bundles WHERE bundle_id = ?", [bundle_id]
        )
        if not rows:
            raise NotFoundError(f"no bundle {bundle_id!r} in the metadata store")
        data = dict(zip(_BUNDLE_COLUMNS, rows[0], strict=True))
        data["manifest"] = _json_value(data["manifest"])
        return BundleRecord.model_validate(data)

    def record_gates(
        self, bundle_id: str, run_id: str | None, gates: Sequence[GateResult]
    ) -> list[GateRecord]:
        """Record a bundle's gate results, replacing the ones recorded for it before."""
        records = [GateRecord.from_result(bundle_id, run_id, g) for g in gates]
        with self._tx() as con:
            con.execute("DELETE FROM gate_results WHERE bundle_id = ?", [bundle_id])
            for g in records:
                number = float(g.measured) if isinstance(g.measured, int | float) else None
                text = g.measured if isinstance(g.measured, str) else None
                con.execute(
                    "INSERT INTO gate_results (bundle_id, run_id, name, measured, measured_text,"
                    " threshold, passed, detail, op, bound, evaluated, policy_floor)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        bundle_id,
                        run_id,
                        g.name,
                        number,
                        text,
                        g.threshold,
                        g.passed,
                        g.detail,
                        g.op,
                        g.bound,
                        g.evaluated,
                        g.policy_floor,
                    ],
                )
        return records

    def gates(self, bundle_id: str) -> list[GateRecord]:
        rows = self._rows(
            "SELECT bundle_id, run_id, name, measured, measured_text, threshold, passed, detail,"
            " op, bound, evaluated, policy_floor"
            " FROM gate_results WHERE bundle_id = ? ORDER BY name",
            [bundle_id],
        )
        return [
            GateRecord(
                bundle_id=b,
                run_id=r,
                name=n,
                measured=m if t is None else t,
                threshold=th,
                passed=p,
                detail=d,
                op=op,
                bound=bound,
                evaluated=ev,
                policy_floor=pf,
            )
            for b, r, n, m, t, th, p, d, op, bound, ev, pf in rows
        ]

    def next_version(self, model_name: str) -> str:
        """1 + the highest integer version of this model's bundles ("1" for a new model)."""
        rows = self._rows(
            "SELECT max(TRY_CAST(version AS BIGINT)) FROM bundles WHERE model_name = ?", [model_name]
        )
        highest = rows[0][0] if rows and rows[0][0] is not None else 0
        return str(int(highest) + 1)

    # -- deployments ----------------------------------------------------------------------

    def record_deployment(self, deployment: DeploymentRecord) -> DeploymentRecord:
        columns = [c for c in _DEPLOY_COLUMNS if c != "id"]
        values = _bind(deployment, columns, times=("ts",))
        with self._tx() as con:
            row = con.execute(
                f"INSERT INTO deployments ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"
                " RETURNING id",
                values,
            ).fetchone()
        assert row is not None
        return deployment.model_copy(update={"id": int(row[0])})

    def _deployments(self, where: str, params: Sequence[Any], limit: int) -> list[DeploymentRecord]:
        rows = self._rows(
            f"SELECT {', '.join(_DEPLOY_COLUMNS)} FROM deployments {where} ORDER BY ts DESC, id DESC LIMIT ?",
            [*params, limit],
        )
        return [DeploymentRecord.model_validate(dict(zip(_DEPLOY_COLUMNS, r, strict=True))) for r in rows]

    def deployments(
        self, model_name: str | None = None, limit: int = 100, target: str | None = None
    ) -> list[DeploymentRecord]:
        """Deployment history, newest first, optionally for one model and/or target."""
        clauses, params = [], []
        if model_name is not None:
            clauses.append("model_name = ?")
            params.append(model_name)
        if target is not None:
            clauses.append("target = ?")
            params.append(target)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        return self._deployments(where, params, _limit(limit))

    def deployed_at(
        self, model_name: str, ts: datetime, target: str | None = None
    ) -> DeploymentRecord | None:
        """What was serving ``model_name`` at ``ts``: the last successful action at or before it.

        A deploy or rollback means its version was serving; an undeploy means nothing was.
        """
        where = "WHERE model_name = ? AND status = 'ok' AND ts <= ?"
        params: list[Any] = [model_name, _db_time(ts)]
        if target is not None:
            where += " AND target = ?"
            params.append(target)
        found = self._deployments(where, params, 1)
        if not found or found[0].action == "undeploy":
            return None
        return found[0]

    def current_deployment(self, model_name: str, target: str | None = None) -> DeploymentRecord | None:
        """The version serving now: the last successful deploy or rollback, unless undeployed since."""
        where = "WHERE model_name = ? AND status = 'ok'"
        params: list[Any] = [model_name]
        if target is not None:
            where += " AND target = ?"
            params.append(target)
        found = self._deployments(where, params, 1)
        if not found or found[0].action == "undeploy":
            return None
        return found[0]

    # -- events ---------------------------------------------------------------------------

    def record_event(self, event: EventRecord | Mapping[str, Any]) -> EventRecord:
        """Append an event (an ``EventRecord`` or the JSON of ``Event.to_json()``); returns it with its id."""
        record = event if isinstance(event, EventRecord) else EventRecord.from_json(event)
        columns = [c for c in _EVENT_COLUMNS if c != "id"]
        values = _bind(record, columns, json=("payload",), times=("ts",))
        with self._tx() as con:
            row = con.execute(
                f"INSERT INTO events ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"
                " RETURNING id",
                values,
            ).fetchone()
        assert row is not None
        return record.model_copy(update={"id": int(row[0])})

    def events(self, after_id: int = 0, limit: int = 200) -> list[EventRecord]:
        """Events with an id above ``after_id``, oldest first (poll with the last id seen)."""
        rows = self._rows(
            f"SELECT {', '.join(_EVENT_COLUMNS)} FROM events WHERE id > ? ORDER BY id LIMIT ?",
            [after_id, _limit(limit)],
        )
        return [_event_record(row) for row in rows]

    def latest_events(self, limit: int = 200) -> list[EventRecord]:
        """The newest ``limit`` events, oldest first (where a reader starts before it polls)."""
        rows = self._rows(
            f"SELECT {', '.join(_EVENT_COLUMNS)} FROM"
            f" (SELECT {', '.join(_EVENT_COLUMNS)} FROM events ORDER BY id DESC LIMIT ?) ORDER BY id",
            [_limit(limit)],
        )
        return [_event_record(row) for row in rows]

    # -- monitoring (``monitor.py`` keeps its own SQL; it writes and reads through these) --

    def write(self) -> AbstractContextManager[duckdb.DuckDBPyConnection]:
        """A transaction on the store's connection, under its lock (the monitor's writes)."""
        return self._tx()

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of one statement of the store's own code (not user SQL: that is ``sql``)."""
        return self._rows(sql, params)

    def attach_reader(
        self, run: Callable[[str, QueryControl, SqlCaps], SqlResult], tables: Iterable[str]
    ) -> None:
        """Route ``sql()`` queries that name one of ``tables`` to ``run`` (the monitor's segment
        reader, a separate database that may read the prediction log and nothing else)."""
        self._reader, self._reader_tables = run, frozenset(tables)

    def _routed(self, statement: str) -> bool:
        if self._reader is None:
            return False
        try:
            with self._lock:
                names = self._con.get_table_names(statement)
        except duckdb.Error:
            return False
        return bool({n.lower() for n in names} & self._reader_tables)

    # -- read-only SQL --------------------------------------------------------------------

    def sql(self, query: str, control: QueryControl | None = None) -> SqlResult:
        """Run one read-only statement within the caps (``sqlcaps``); ``control`` cancels it."""
        statement = check_read_only(query)
        control = control or QueryControl()
        if not self._sql_slots.acquire(timeout=self.sql_queue_s):
            raise ServiceError(
                f"{self.sql_concurrency} queries are running already; retry when one has finished",
                hint="add a WHERE or a LIMIT to long queries",
            )
        try:
            if self._reader is not None and self._routed(statement):
                return self._reader_sql(statement, control)
            with self._lock:
                if self._closed:
                    raise ServiceError(f"metadata store {self.path} is closed")
                cursor = self._con.cursor()
                self._queries.add(control)
            # A runaway query is interrupted rather than holding a thread and memory forever.
            timer = threading.Timer(self.sql_timeout_s, control.cancel, kwargs={"why": "timeout"})
            timer.daemon = True
            timer.start()
            try:
                control.attach(cursor)
                return run_capped(cursor, statement, self.caps)
            except duckdb.Error as exc:
                raise refusal_from(exc, control.why, self.sql_timeout_s) from None
            finally:
                timer.cancel()
                control.detach()
                cursor.close()
                with self._lock:
                    self._queries.discard(control)
        finally:
            self._sql_slots.release()

    def _reader_sql(self, statement: str, control: QueryControl) -> SqlResult:
        assert self._reader is not None
        with self._lock:
            self._queries.add(control)
        timer = threading.Timer(self.sql_timeout_s, control.cancel, kwargs={"why": "timeout"})
        timer.daemon = True
        timer.start()
        try:
            return self._reader(statement, control, self.caps)
        except duckdb.Error as exc:
            raise refusal_from(exc, control.why, self.sql_timeout_s) from None
        finally:
            timer.cancel()
            with self._lock:
                self._queries.discard(control)

    def interrupt_queries(self) -> int:
        """Stop every running query (SIGTERM, close); returns how many there were."""
        with self._lock:
            running = list(self._queries)
        for control in running:
            control.cancel(why="shutdown")
        return len(running)
