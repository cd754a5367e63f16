"""Bounds on ``mlplat sql``: one query cannot eat the machine, stall the service or outlive it.

Measured before: ``SELECT list(range) FROM range(200000000)`` took the service past 5 GB, a few
of them queued reached 17.4 GB, and the service ignored SIGTERM while they ran. Now:

- **memory**: DuckDB's ``memory_limit`` (set by the store for the whole database) makes such a
  query fail inside DuckDB with a clear error instead of growing;
- **the answer**: the query is wrapped so that at most ``rows + 1`` rows leave DuckDB, and any
  variable-length value (text, blob, list, struct, map) over ``cell_bytes`` is replaced by a
  note with its size before it is turned into Python objects; rows stop at ``total_bytes``.
  ``SqlResult.truncated`` and ``note`` say what was cut;
- **time and cancelling**: ``QueryControl`` interrupts the cursor on a timeout, when the client
  goes away, or at shutdown (``MetadataStore.interrupt_queries``).

The wrap reads the columns with ``DESCRIBE <query>`` (binding only, nothing runs) and renames
them positionally (``AS _q(c0, c1, ...)``), so duplicate names and any column type work; a
statement that cannot be described (EXPLAIN) runs as it is, within the same row and byte caps.

Imports duckdb only (and the read-only helpers).
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Any

import duckdb

from mlplat_runtime.metadata.readonly import to_jsonable
from mlplat_runtime.metadata.records import SqlResult

_FIXED_TYPES = (
    "BOOLEAN", "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
    "UINTEGER", "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE", "DATE", "TIME", "TIMESTAMP", "INTERVAL",
    "UUID", "DECIMAL",
)  # fmt: skip
_BATCH = 256


@dataclass(frozen=True)
class SqlCaps:
    rows: int = 10_000
    total_bytes: int = 16 * 1024 * 1024  # of the answer, values measured as DuckDB renders them
    cell_bytes: int = 1024 * 1024  # one variable-length value


class QueryControl:
    """A handle on one running query: ``cancel`` interrupts it from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cursor: duckdb.DuckDBPyConnection | None = None
        self.why: str | None = None

    def attach(self, cursor: duckdb.DuckDBPyConnection) -> None:
        with self._lock:
            self._cursor = cursor
            if self.why is not None:  # cancelled before it started
                cursor.interrupt()

    def detach(self) -> None:
        with self._lock:
            self._cursor = None

    def cancel(self, why: str = "cancelled") -> None:
        with self._lock:
            if self.why is None:
                self.why = why
            if self._cursor is not None:
                self._cursor.interrupt()


def bare_statement(statement: str) -> str:
    """The statement without trailing comments and semicolons (so it can sit in a subquery)."""
    end = len(statement)
    for start, kind in reversed(duckdb.tokenize(statement)):
        if kind == duckdb.token_type.comment or statement[start:end].strip() == ";":
            end = start
        else:
            break
    return statement[:end]


def _variable(column_type: str) -> bool:
    base = column_type.split("(", 1)[0].strip().upper()
    return not (base in _FIXED_TYPES or base.startswith("TIMESTAMP")) or column_type.endswith("]")


def _wrapped(statement: str, types: list[str], caps: SqlCaps) -> tuple[str, list[tuple[int, int]]]:
    """The capped query, and where each column's value and size sit in its rows (size -1 for
    fixed-size columns)."""
    names = ", ".join(f"c{i}" for i in range(len(types)))
    inner_sizes: list[str] = []
    outer: list[str] = []
    places: list[tuple[int, int]] = []
    for i, column_type in enumerate(types):
        if _variable(column_type):
            measure = (
                f"octet_length(c{i})" if column_type.upper() == "BLOB" else f"strlen(CAST(c{i} AS VARCHAR))"
            )
            inner_sizes.append(f"{measure} AS s{i}")
            outer += [f"CASE WHEN s{i} > {caps.cell_bytes} THEN NULL ELSE c{i} END", f"s{i}"]
            places.append((len(outer) - 2, len(outer) - 1))
        else:
            outer.append(f"c{i}")
            places.append((len(outer) - 1, -1))
    extra = (", " + ", ".join(inner_sizes)) if inner_sizes else ""
    query = (
        f"SELECT {', '.join(outer)} FROM (SELECT *{extra} FROM (\n{statement}\n) AS _q({names})) AS _s"
        f" LIMIT {caps.rows + 1}"
    )
    return query, places


def run_capped(cursor: duckdb.DuckDBPyConnection, statement: str, caps: SqlCaps) -> SqlResult:
    """Run ``statement`` in a READ ONLY transaction on ``cursor`` within ``caps``."""
    cursor.execute("BEGIN TRANSACTION READ ONLY")
    try:
        bare = bare_statement(statement)
        try:
            described = cursor.execute(f"DESCRIBE {bare}").fetchall()
        except duckdb.Error:  # not describable (or wrong): run it as it is, to say what is wrong
            described = None
            cursor.execute("ROLLBACK")
            cursor.execute("BEGIN TRANSACTION READ ONLY")
        if described is None:
            cursor.execute(statement)
            columns = [d[0] for d in cursor.description or ()]
            return _collect(cursor, columns, None, caps)
        columns = [str(row[0]) for row in described]
        query, places = _wrapped(bare, [str(row[1]) for row in described], caps)
        cursor.execute(query)
        return _collect(cursor, columns, places, caps)
    finally:
        with contextlib.suppress(duckdb.Error):
            cursor.execute("ROLLBACK")


def _collect(
    cursor: duckdb.DuckDBPyConnection,
    columns: list[str],
    places: list[tuple[int, int]] | None,
    caps: SqlCaps,
) -> SqlResult:
    rows: list[list[Any]] = []
    total = 0
    cut_cells = 0
    notes: list[str] = []
    truncated = False
    while not truncated:
        batch = cursor.fetchmany(_BATCH) if columns else []
        if not batch:
            break
        for raw in batch:
            if len(rows) >= caps.rows:
                truncated = True
                notes.append(f"stopped at {caps.rows} rows")
                break
            row, size = _row(raw, places, caps)
            cut_cells += sum(1 for v in row if isinstance(v, _Cut))
            if total + size > caps.total_bytes and rows:
                truncated = True
                notes.append(f"stopped at {len(rows)} rows: the answer reached {caps.total_bytes} bytes")
                break
            total += size
            rows.append([str(v) if isinstance(v, _Cut) else v for v in row])
    if cut_cells:
        notes.append(f"{cut_cells} value(s) over {caps.cell_bytes} bytes replaced by their size")
    return SqlResult(columns=columns, rows=rows, truncated=truncated, note="; ".join(notes) or None)


class _Cut(str):
    """A value left in DuckDB because it was over the cell cap; it stands in with its size."""


def _row(raw: tuple[Any, ...], places: list[tuple[int, int]] | None, caps: SqlCaps) -> tuple[list[Any], int]:
    if places is None:  # an unwrapped statement (EXPLAIN): small answers, measured as text
        row = [to_jsonable(v) for v in raw]
        return row, sum(len(str(v)) for v in row)
    out: list[Any] = []
    size = 0
    for value_at, size_at in places:
        cell = raw[size_at] if size_at >= 0 else None
        if cell is not None and cell > caps.cell_bytes:
            out.append(_Cut(f"<{cell} bytes: over the {caps.cell_bytes}-byte cell cap>"))
            size += 64
        else:
            out.append(to_jsonable(raw[value_at]))
            size += 8 if size_at < 0 else int(cell or 0)
    return out, size
