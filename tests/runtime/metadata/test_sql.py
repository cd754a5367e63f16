"""``MetadataStore.sql``: one read-only statement, refused writes, capped rows."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from mlplat_runtime.errors import MetadataError, RequestError
from mlplat_runtime.metadata.records import RunRecord
from mlplat_runtime.metadata.store import MetadataStore


@pytest.fixture
def filled(store: MetadataStore) -> MetadataStore:
    store.record_runs(
        [
            RunRecord(
                run_id=f"r{i}",
                model_name="m",
                status="finished",
                metrics={"auc": 0.5 + i / 10},
                created_at=datetime(2026, 1, 1, 0, i, tzinfo=UTC),
            )
            for i in range(3)
        ]
    )
    return store


@pytest.mark.parametrize(
    ("query", "kind"),
    [
        ("INSERT INTO runs (run_id, status, created_at) VALUES ('x', 'running', now())", "INSERT"),
        ("UPDATE runs SET status = 'failed'", "UPDATE"),
        ("DELETE FROM runs", "DELETE"),
        ("DROP TABLE runs", "DROP"),
        ("CREATE TABLE evil AS SELECT * FROM runs", "CREATE"),
        ("ALTER TABLE runs ADD COLUMN x INTEGER", "ALTER"),
        ("COPY runs TO '/tmp/runs.csv'", "COPY"),
        ("ATTACH '/tmp/other.duckdb' AS other", "ATTACH"),
        ("DETACH other", "DETACH"),
        ("PRAGMA enable_profiling", "PRAGMA"),
        ("PRAGMA threads = 1", "SET"),  # DuckDB parses PRAGMA x = y as SET
        ("SET threads = 1", "SET"),
        ("CHECKPOINT", "CALL"),
        ("INSTALL httpfs", "LOAD"),
        ("EXPORT DATABASE '/tmp/dump'", "EXPORT"),
        ("VACUUM", "VACUUM"),
        ("EXPLAIN ANALYZE DELETE FROM runs", "EXPLAIN of DELETE"),
        ("/* a comment */ explain analyze update runs set status = 'x'", "EXPLAIN of UPDATE"),
        ("-- innocent\nDELETE FROM runs", "DELETE"),
    ],
)
def test_writes_are_refused_and_change_nothing(filled: MetadataStore, query: str, kind: str) -> None:
    with pytest.raises(MetadataError, match=f"mlplat sql is read-only: {kind} refused") as info:
        filled.sql(query)
    assert "only SELECT" in str(info.value)
    assert filled.count_runs() == 3
    assert {r.status for r in filled.runs()} == {"finished"}


def test_multiple_statements_are_refused_even_when_all_read(filled: MetadataStore) -> None:
    with pytest.raises(MetadataError, match="one statement at a time: got 2"):
        filled.sql("SELECT 1; DELETE FROM runs")
    with pytest.raises(MetadataError, match="got 2"):
        filled.sql("SELECT 1; SELECT 2")
    assert filled.count_runs() == 3


def test_what_slips_past_the_parser_still_cannot_write_or_read_files(filled: MetadataStore) -> None:
    # nextval() writes a sequence from inside a SELECT: the READ ONLY transaction stops it.
    with pytest.raises(MetadataError, match="tried to write"):
        filled.sql("SELECT nextval('events_id_seq')")
    # File access from a SELECT: external access is off for the whole database.
    with pytest.raises(MetadataError, match="cannot reach files"):
        filled.sql("SELECT * FROM read_csv('/etc/passwd')")
    with pytest.raises(MetadataError, match="cannot reach files"):
        filled.sql("SELECT * FROM read_text('/etc/hostname')")
    # The event id sequence was not advanced by the refused nextval().
    from mlplat_runtime.metadata.records import EventRecord

    assert filled.record_event(EventRecord(kind="stack")).id == 1


@pytest.mark.parametrize(
    "query",
    [
        "SELECT run_id FROM runs ORDER BY run_id",
        "WITH r AS (SELECT * FROM runs) SELECT run_id FROM r ORDER BY run_id",
        "FROM runs SELECT run_id ORDER BY run_id",
        "  select run_id from runs order by run_id;  -- trailing comment",
    ],
)
def test_reads_are_allowed(filled: MetadataStore, query: str) -> None:
    result = filled.sql(query)
    assert result.columns == ["run_id"]
    assert result.rows == [["r0"], ["r1"], ["r2"]] and not result.truncated


def test_describe_show_explain_summarize(filled: MetadataStore) -> None:
    described = filled.sql("DESCRIBE runs")
    assert described.columns[0] == "column_name" and described.rows[0][:1] == ["run_id"]
    tables = {row[0] for row in filled.sql("SHOW TABLES").rows}
    assert {"runs", "bundles", "gate_results", "deployments", "events", "schema_version"} <= tables
    explained = filled.sql("EXPLAIN SELECT * FROM runs WHERE model_name = 'm'")
    assert explained.columns == ["explain_key", "explain_value"]
    assert explained.rows[0][0] == "physical_plan"
    assert filled.sql("EXPLAIN ANALYZE SELECT count(*) FROM runs").rows[0][0] == "analyzed_plan"
    assert filled.sql("SUMMARIZE runs").rows


def test_values_come_back_as_plain_json(filled: MetadataStore) -> None:
    result = filled.sql(
        "SELECT run_id, metrics->>'auc' AS auc, (metrics->>'auc')::DOUBLE AS auc_num, created_at,"
        " 1.25::DECIMAL(5, 2) AS dec, 'ab'::BLOB AS blob, [1, 2] AS list, {'k': 1} AS struct"
        " FROM runs WHERE run_id = 'r1'"
    )
    assert result.columns == ["run_id", "auc", "auc_num", "created_at", "dec", "blob", "list", "struct"]
    assert result.rows == [["r1", "0.6", 0.6, "2026-01-01T00:01:00", 1.25, "base64:YWI=", [1, 2], {"k": 1}]]


def test_rows_are_capped_and_truncation_is_said(db_path: Path) -> None:
    with MetadataStore(db_path, sql_row_cap=5) as store:
        capped = store.sql("SELECT * FROM range(12)")
        assert len(capped.rows) == 5 and capped.truncated
        exact = store.sql("SELECT * FROM range(5)")
        assert len(exact.rows) == 5 and not exact.truncated


def test_a_runaway_query_is_interrupted(db_path: Path) -> None:
    with MetadataStore(db_path, sql_timeout_s=0.3) as store:
        with pytest.raises(MetadataError, match="ran too long"):
            store.sql("SELECT sum(a.range * b.range) FROM range(1000000) a, range(1000000) b")
        assert store.sql("SELECT 42").rows == [[42]]  # the store still answers


def test_bad_queries_are_clear_errors(filled: MetadataStore) -> None:
    with pytest.raises(RequestError, match="empty"):
        filled.sql("   ")
    with pytest.raises(RequestError, match="no statement"):
        filled.sql("-- just a comment")
    with pytest.raises(MetadataError, match=r"query failed: .*no_such_table"):
        filled.sql("SELECT * FROM no_such_table")
    with pytest.raises(MetadataError, match="cannot parse"):
        filled.sql("SELEC oops")
