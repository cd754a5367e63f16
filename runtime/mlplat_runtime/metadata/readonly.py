"""The guard in front of ``mlplat sql``: one statement, and only one that reads.

DuckDB's own parser classifies the statement (``duckdb.extract_statements``), so comments,
string literals and odd spacing cannot hide a write. The parser check gives the clear refusal;
the store then runs the query in a READ ONLY transaction on a database opened with external
access off, so whatever slips past the check still cannot write or touch files.

Imports duckdb only; used by ``store.py``.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import re
import uuid
from decimal import Decimal
from typing import Any

import duckdb

from mlplat_runtime.errors import MetadataError, MlplatError, RequestError, ServiceError

ALLOWED = "SELECT, WITH … SELECT, FROM …, EXPLAIN, DESCRIBE, SHOW and SUMMARIZE"
_HINT = (
    "tables: runs, bundles, gate_results, deployments, events; the monitor's profiles, traffic,"
    " drift, alerts; the prediction log's predictions, feedback (`DESCRIBE runs` lists columns)"
)

# EXPLAIN [ANALYZE] [(options)] <statement>, after any leading comments.
_EXPLAIN = re.compile(
    r"^(?:\s+|--[^\n]*\n?|/\*.*?\*/)*EXPLAIN\s+(?:ANALY[SZ]E\s+)?(?:\([^)]*\)\s*)?",
    re.IGNORECASE | re.DOTALL,
)


def _kind(statement: duckdb.Statement) -> str:
    return str(statement.type.name)


def check_read_only(query: str) -> str:
    """Return the single read-only statement in ``query``; raise ``MetadataError`` otherwise."""
    if not query.strip():
        raise RequestError("empty query", hint="e.g. mlplat sql 'SELECT run_id, status FROM runs'")
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as exc:
        raise MetadataError(f"cannot parse the query: {exc}", hint=_HINT) from None
    if not statements:
        raise RequestError("the query holds no statement (only comments?)", hint=_HINT)
    if len(statements) > 1:
        kinds = ", ".join(_kind(s) for s in statements)
        raise MetadataError(
            f"mlplat sql runs one statement at a time: got {len(statements)} ({kinds}) refused",
            hint="send the statements one by one",
        )
    statement = statements[0]
    kind = _kind(statement)
    if kind == "EXPLAIN":
        # EXPLAIN ANALYZE runs its statement: judge what it explains.
        match = _EXPLAIN.match(statement.query)
        if match:
            try:
                inner = duckdb.extract_statements(statement.query[match.end() :])
            except duckdb.Error:
                inner = []
            if len(inner) == 1 and _kind(inner[0]) != "SELECT":
                raise MetadataError(
                    f"mlplat sql is read-only: EXPLAIN of {_kind(inner[0])} refused;"
                    f" only {ALLOWED} are allowed",
                    hint=_HINT,
                )
    elif kind != "SELECT":
        raise MetadataError(
            f"mlplat sql is read-only: {kind} refused; only {ALLOWED} are allowed", hint=_HINT
        )
    return statement.query


def refusal_from(exc: duckdb.Error, why: str | None = None, timeout_s: float = 0.0) -> MlplatError:
    """Turn a DuckDB error raised while running a checked query into a ``MetadataError``.

    ``why`` says who interrupted it: "timeout", "cancelled" (the client went away) or
    "shutdown" (the service is stopping).
    """
    text = str(exc)
    if isinstance(exc, duckdb.TransactionException) and "read-only" in text:
        return MetadataError(f"mlplat sql is read-only: the query tried to write ({text})", hint=_HINT)
    if isinstance(exc, duckdb.PermissionException):
        return MetadataError(f"mlplat sql cannot reach files or other databases: {text}", hint=_HINT)
    if isinstance(exc, duckdb.InterruptException):
        if why == "shutdown":
            return ServiceError("the query was stopped: the metadata service is shutting down")
        if why == "cancelled":
            return MetadataError("the query was cancelled")
        return MetadataError(
            f"the query ran too long and was stopped (limit {timeout_s:g} s)", hint="add a WHERE or a LIMIT"
        )
    if isinstance(exc, duckdb.OutOfMemoryException):
        return MetadataError(
            f"the query needs more memory than the metadata service allows: {text.splitlines()[0]}",
            hint="aggregate in the query (count, avg, LIMIT) instead of building large lists",
        )
    return MetadataError(f"query failed: {text}", hint=_HINT)


def to_jsonable(value: Any) -> Any:
    """A DuckDB result value -> plain JSON-friendly Python (what ``SqlResult.rows`` holds)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return "base64:" + base64.b64encode(bytes(value)).decode()
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return str(value)
