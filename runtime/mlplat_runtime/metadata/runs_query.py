"""The one runs query: search, sort and paging of runs, with what each run serves now.

``mlplat runs`` and the dashboard both list runs through it, so they agree on two questions
that had drifted apart when each wrote its own SQL:

- **served now**, per target: a run serves on a target when the last successful deploy,
  rollback or undeploy of its model on that target put its bundle there (an undeploy means
  nothing serves). A run that was deployed once and replaced since is *was deployed*, not
  served. Targets stay apart: a version pushed to ``prod`` is never "served" locally.
- **search**: one case-insensitive substring match over ``SEARCH_COLUMNS``, taken literally
  (``%`` and ``_`` are not wildcards). ``model`` and ``version`` filter exactly
  (``mlplat rollback --to 1`` must find version 1, not the runs whose text contains a 1), and
  ``run_id_prefix`` keeps the runs whose id starts with it (case-sensitive, taken literally:
  ``mlplat rollback --to <prefix>`` counts every match, not the first page of a search).

The query and its answer are pydantic records (they cross HTTP); the SQL is built here and run
by ``MetadataStore.query_runs`` (the store is the only code that holds the DuckDB connection,
so this module takes a ``rows`` callable and imports no duckdb). Never imports mlplat_tui.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import Field, field_validator

from mlplat_runtime.metadata.records import RunRecord, _Record

MAX_PAGE = 10_000
SEARCH_COLUMNS = ("run_id", "model_name", "project", "status", "version", "bundle_id")
SORTS = ("created_at", "run_id", "status", "version", "gates_passed")
METRIC_SORT = "metric:"
_METRIC_NAME = re.compile(r"^[A-Za-z0-9_.\-/ ]{1,100}$")

Rows = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]


class RunsQuery(_Record):
    """Which runs, in which order, which page. ``sort`` is one of ``SORTS`` or ``metric:<name>``."""

    search: str = ""
    model: str | None = None
    version: str | None = None  # exactly this version
    run_id_prefix: str | None = Field(default=None, min_length=1)  # ids that start with it
    sort: str = "created_at"
    descending: bool = True
    limit: int = Field(default=100, ge=1, le=MAX_PAGE)
    offset: int = Field(default=0, ge=0)

    @field_validator("sort")
    @classmethod
    def _known_sort(cls, value: str) -> str:
        if value in SORTS:
            return value
        if value.startswith(METRIC_SORT) and _METRIC_NAME.match(value[len(METRIC_SORT) :]):
            return value
        raise ValueError(f"sort must be one of {', '.join(SORTS)} or metric:<name>, got {value!r}")


class RunRow(_Record):
    """One run as listed: the run record plus its gate misses and its deployments."""

    run: RunRecord
    gates_failed: tuple[str, ...] = ()  # names of the gates its bundle missed
    served_on: tuple[str, ...] = ()  # targets where this run serves now (e.g. ("local",))
    deployed_on: tuple[str, ...] = ()  # targets it was ever deployed to successfully
    was_deployed: bool = False  # deployed_on is not empty (or an old record says deployed)

    def served(self, target: str = "local") -> bool:
        return target in self.served_on


class RunsPage(_Record):
    """One page of runs and how many match the query across all pages."""

    query: RunsQuery
    rows: tuple[RunRow, ...]
    total: int


def _like(search: str) -> str:
    # Escape LIKE wildcards so the text is matched literally.
    return "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def where_clause(query: RunsQuery) -> tuple[str, list[Any]]:
    """The WHERE of the query (``r`` is the runs table) and its parameters."""
    clauses: list[str] = []
    params: list[Any] = []
    if query.search:
        clauses.append("(" + " OR ".join(f"r.{c} ILIKE ? ESCAPE '\\'" for c in SEARCH_COLUMNS) + ")")
        params += [_like(query.search)] * len(SEARCH_COLUMNS)
    if query.model is not None:
        clauses.append("r.model_name = ?")
        params.append(query.model)
    if query.version is not None:
        clauses.append("r.version = ?")
        params.append(query.version)
    if query.run_id_prefix is not None:
        clauses.append("starts_with(r.run_id, ?)")
        params.append(query.run_id_prefix)
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


def _order(query: RunsQuery) -> tuple[str, list[Any]]:
    direction = "DESC" if query.descending else "ASC"
    params: list[Any] = []
    if query.sort.startswith(METRIC_SORT):
        column = "TRY_CAST(json_extract_string(r.metrics, ?) AS DOUBLE)"
        params.append("$." + json.dumps(query.sort[len(METRIC_SORT) :]))
    elif query.sort == "version":
        column = "TRY_CAST(r.version AS BIGINT)"
    else:
        column = f"r.{query.sort}"
    return f"{column} {direction} NULLS LAST, r.created_at DESC, r.run_id DESC", params


# The state of each (model, target): its last successful action. A deployment names its run
# when it has one; an old record without a run is matched by bundle id.
_MATCH = (
    "d.model_name = r.model_name"
    " AND (d.run_id = r.run_id OR (d.run_id IS NULL AND d.bundle_id = r.bundle_id))"
)
_SQL = f"""
WITH last AS (
    SELECT model_name, target, run_id, bundle_id, action,
           row_number() OVER (PARTITION BY model_name, target ORDER BY ts DESC, id DESC) AS n
    FROM deployments WHERE status = 'ok'
), serving AS (
    SELECT * FROM last WHERE n = 1 AND action <> 'undeploy'
)
SELECT {{columns}},
    (SELECT list(g.name ORDER BY g.name) FROM gate_results g
        WHERE g.bundle_id = r.bundle_id AND NOT g.passed) AS gates_failed,
    (SELECT list(DISTINCT d.target ORDER BY d.target) FROM serving d WHERE {_MATCH}) AS served_on,
    (SELECT list(DISTINCT d.target ORDER BY d.target) FROM deployments d
        WHERE d.status = 'ok' AND d.action <> 'undeploy' AND {_MATCH}) AS deployed_on,
    count(*) OVER () AS total
FROM runs r {{where}}
ORDER BY {{order}}
LIMIT ? OFFSET ?
"""


def query_runs(
    rows: Rows, query: RunsQuery, *, columns: Sequence[str], to_run: Callable[[Sequence[Any]], RunRecord]
) -> RunsPage:
    """Run ``query`` through ``rows`` (the store's locked executor); ``to_run`` parses a run row."""
    where, params = where_clause(query)
    order, order_params = _order(query)
    sql = _SQL.format(columns=", ".join(f"r.{c}" for c in columns), where=where, order=order)
    found = rows(sql, [*params, *order_params, query.limit, query.offset])
    width = len(columns)
    if found:
        total = int(found[0][-1])
    elif query.offset:  # past the last page: the window count is not there to say how many match
        total = int(rows(f"SELECT count(*) FROM runs r {where}", params)[0][0])
    else:
        total = 0
    out = []
    for row in found:
        run = to_run(row[:width])
        failed, served, deployed = (tuple(v or ()) for v in row[width : width + 3])
        out.append(
            RunRow(
                run=run,
                gates_failed=failed,
                served_on=served,
                deployed_on=deployed,
                was_deployed=bool(deployed) or run.deployed,
            )
        )
    return RunsPage(query=query, rows=tuple(out), total=total)
