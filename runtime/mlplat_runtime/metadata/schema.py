"""The metadata schema as an ordered list of migration steps, and the code that applies them.

The schema version of a file is the number of steps applied to it (recorded, one row per step,
in ``schema_version``). Opening a file applies the missing steps in one transaction, so a file
is either at its old version or fully migrated. Steps are append-only: never edit a released
step, add a new one.

Only ``store.py`` calls this; it imports nothing but duckdb (passed in as a connection).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from mlplat_runtime.errors import MetadataError

if TYPE_CHECKING:
    import duckdb

# One step = the SQL statements that take the schema from version N to N+1.
Migration = tuple[str, ...]

# Timestamps are TIMESTAMP holding UTC (no TIMESTAMPTZ: it depends on the ICU extension and the
# session time zone). Dicts are JSON so `mlplat sql` can say `metrics->>'roc_auc'`.
_V1_TABLES: Migration = (
    """CREATE TABLE runs (
        run_id VARCHAR PRIMARY KEY,
        project VARCHAR NOT NULL DEFAULT '',
        model_name VARCHAR NOT NULL DEFAULT '',
        status VARCHAR NOT NULL,
        created_at TIMESTAMP NOT NULL,
        finished_at TIMESTAMP,
        command VARCHAR NOT NULL DEFAULT '',
        params JSON NOT NULL DEFAULT '{}',
        metrics JSON NOT NULL DEFAULT '{}',
        git_commit VARCHAR,
        dirty_hash VARCHAR,
        data_hashes JSON NOT NULL DEFAULT '{}',
        tracker_uri VARCHAR,
        bundle_id VARCHAR,
        version VARCHAR,
        gates_passed BOOLEAN,
        deployed BOOLEAN NOT NULL DEFAULT false,
        error VARCHAR
    )""",
    """CREATE TABLE bundles (
        bundle_id VARCHAR PRIMARY KEY,
        run_id VARCHAR,
        model_name VARCHAR NOT NULL,
        version VARCHAR NOT NULL,
        path VARCHAR NOT NULL,
        size_bytes BIGINT NOT NULL,
        created_at TIMESTAMP NOT NULL,
        manifest JSON NOT NULL DEFAULT '{}'
    )""",
    # measured is a number or a text ("compatible with v3"): a DOUBLE for SQL comparisons plus
    # the text form when it is not a number.
    """CREATE TABLE gate_results (
        bundle_id VARCHAR NOT NULL,
        run_id VARCHAR,
        name VARCHAR NOT NULL,
        measured DOUBLE,
        measured_text VARCHAR,
        threshold VARCHAR NOT NULL,
        passed BOOLEAN NOT NULL,
        detail VARCHAR NOT NULL DEFAULT '',
        PRIMARY KEY (bundle_id, name)
    )""",
    "CREATE SEQUENCE deployments_id_seq START 1",
    """CREATE TABLE deployments (
        id BIGINT PRIMARY KEY DEFAULT nextval('deployments_id_seq'),
        model_name VARCHAR NOT NULL,
        version VARCHAR NOT NULL,
        bundle_id VARCHAR NOT NULL,
        run_id VARCHAR,
        target VARCHAR NOT NULL DEFAULT 'local',
        action VARCHAR NOT NULL,
        status VARCHAR NOT NULL,
        reason VARCHAR NOT NULL DEFAULT '',
        ts TIMESTAMP NOT NULL
    )""",
    "CREATE SEQUENCE events_id_seq START 1",
    """CREATE TABLE events (
        id BIGINT PRIMARY KEY DEFAULT nextval('events_id_seq'),
        ts TIMESTAMP NOT NULL,
        kind VARCHAR NOT NULL,
        message VARCHAR NOT NULL DEFAULT '',
        run_id VARCHAR,
        bundle_id VARCHAR,
        version VARCHAR,
        payload JSON NOT NULL DEFAULT '{}'
    )""",
)

# Lookups by model (next version, current deployment, history) and by run. DuckDB scans
# ordered listings fast without help; these serve the point lookups.
_V2_INDEXES: Migration = (
    "CREATE INDEX runs_model_idx ON runs (model_name)",
    "CREATE INDEX bundles_model_idx ON bundles (model_name)",
    "CREATE INDEX bundles_run_idx ON bundles (run_id)",
    "CREATE INDEX deployments_model_idx ON deployments (model_name)",
    "CREATE INDEX events_run_idx ON events (run_id)",
)

# The typed comparison of a gate (``GateResult.op``/``bound``/``evaluated``/``policy_floor``).
# Rows recorded before it read as what ``GateResult`` defaults to: no comparison, evaluated, the
# project's own bound.
_V3_GATE_FIELDS: Migration = (
    "ALTER TABLE gate_results ADD COLUMN op VARCHAR",
    "ALTER TABLE gate_results ADD COLUMN bound DOUBLE",
    "ALTER TABLE gate_results ADD COLUMN evaluated BOOLEAN NOT NULL DEFAULT true",
    "ALTER TABLE gate_results ADD COLUMN policy_floor BOOLEAN NOT NULL DEFAULT false",
)

# Pushes (``mlplat push``): a deployment on a shared target names its registry version, the image
# digest it rolled out, who pushed and its receipt; rows before it read as a local deployment.
# DuckDB refuses ALTER TABLE on a table with an index, so the v2 index is dropped and made again.
_V4_PUSH_FIELDS: Migration = (
    "DROP INDEX deployments_model_idx",
    "ALTER TABLE deployments ADD COLUMN registry_version VARCHAR",
    "ALTER TABLE deployments ADD COLUMN image_digest VARCHAR",
    "ALTER TABLE deployments ADD COLUMN pushed_by VARCHAR NOT NULL DEFAULT ''",
    "ALTER TABLE deployments ADD COLUMN receipt_path VARCHAR",
    "CREATE INDEX deployments_model_idx ON deployments (model_name)",
    "CREATE INDEX deployments_target_idx ON deployments (target)",
)

# Monitoring (``monitor.py``). ``monitor_segments``: the closed log segments already turned into
# profiles (by name, so a restart does not count a segment twice). ``profiles``: per minute,
# model, version and feature, the counts in the reference's bins (``counts[i]`` is slot i:
# underflow, the bins, overflow, missing — or the top categories, "other", missing) plus the
# data-quality counts; ``window_id`` is NULL until a window has been evaluated over them, and a
# minute may have several rows (one per segment batch): sum them. Two pseudo-features hold the
# traffic: ``__output__`` (the class mix, or the probability histogram) and ``__latency__`` (the
# latency histogram, ms bins ``monitor.LATENCY_EDGES_MS``). ``traffic``: requests, errors and
# uncertain predictions (top-2 margin < 0.1) per minute. ``drift``: one row per evaluated window
# and feature. ``alerts``: one row per alert key (``drift:<model>:<version>:<feature>``), its
# streaks and whether it is open; each opening and resolving is also an event.
_V5_MONITOR: Migration = (
    """CREATE TABLE monitor_segments (
        path VARCHAR PRIMARY KEY,
        kind VARCHAR NOT NULL,
        rows BIGINT NOT NULL,
        processed_at TIMESTAMP NOT NULL
    )""",
    """CREATE TABLE monitor_references (
        bundle_id VARCHAR PRIMARY KEY,
        model_name VARCHAR NOT NULL,
        version VARCHAR NOT NULL,
        reference JSON NOT NULL
    )""",
    """CREATE TABLE profiles (
        model_name VARCHAR NOT NULL,
        version VARCHAR NOT NULL,
        bundle_id VARCHAR NOT NULL,
        minute TIMESTAMP NOT NULL,
        feature VARCHAR NOT NULL,
        kind VARCHAR NOT NULL,
        rows BIGINT NOT NULL,
        missing BIGINT NOT NULL DEFAULT 0,
        out_of_range BIGINT NOT NULL DEFAULT 0,
        unseen BIGINT NOT NULL DEFAULT 0,
        counts BIGINT[] NOT NULL,
        window_id BIGINT
    )""",
    "CREATE INDEX profiles_model_idx ON profiles (model_name, version)",
    """CREATE TABLE traffic (
        model_name VARCHAR NOT NULL,
        version VARCHAR NOT NULL,
        bundle_id VARCHAR NOT NULL,
        minute TIMESTAMP NOT NULL,
        requests BIGINT NOT NULL,
        errors BIGINT NOT NULL,
        uncertain BIGINT NOT NULL,
        sampled_weight DOUBLE NOT NULL,
        scored BIGINT NOT NULL DEFAULT 0,
        confidence_sum DOUBLE NOT NULL DEFAULT 0,
        window_id BIGINT
    )""",
    "CREATE SEQUENCE drift_window_seq START 1",
    """CREATE TABLE drift (
        window_id BIGINT NOT NULL,
        model_name VARCHAR NOT NULL,
        version VARCHAR NOT NULL,
        window_start TIMESTAMP NOT NULL,
        window_end TIMESTAMP NOT NULL,
        feature VARCHAR NOT NULL,
        kind VARCHAR NOT NULL,
        rows BIGINT NOT NULL,
        psi DOUBLE,
        js DOUBLE,
        ks DOUBLE,
        score DOUBLE,
        state VARCHAR NOT NULL,
        missing_share DOUBLE,
        out_of_range_share DOUBLE,
        unseen_share DOUBLE,
        PRIMARY KEY (window_id, feature)
    )""",
    """CREATE TABLE alerts (
        dedupe_key VARCHAR PRIMARY KEY,
        model_name VARCHAR NOT NULL,
        version VARCHAR NOT NULL,
        feature VARCHAR NOT NULL,
        open BOOLEAN NOT NULL,
        severity VARCHAR NOT NULL,
        over_streak INTEGER NOT NULL,
        under_streak INTEGER NOT NULL,
        score DOUBLE,
        opened_at TIMESTAMP,
        resolved_at TIMESTAMP,
        updated_at TIMESTAMP NOT NULL
    )""",
)

MIGRATIONS: tuple[Migration, ...] = (
    _V1_TABLES,
    _V2_INDEXES,
    _V3_GATE_FIELDS,
    _V4_PUSH_FIELDS,
    _V5_MONITOR,
)
SCHEMA_VERSION = len(MIGRATIONS)


def current_version(con: duckdb.DuckDBPyConnection) -> int:
    row = con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
    return int(row[0]) if row else 0


def migrate(con: duckdb.DuckDBPyConnection, migrations: Sequence[Migration], *, where: str) -> int:
    """Bring the open database up to ``len(migrations)``; returns the version it is now at.

    A file written by a newer mlplat (more steps than we know) is refused rather than used,
    since our queries may not match its tables.
    """
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            " version INTEGER PRIMARY KEY, applied_at TIMESTAMP NOT NULL)"
        )
        have = current_version(con)
        if have > len(migrations):
            raise MetadataError(
                f"{where}: metadata schema is v{have}, this mlplat knows up to v{len(migrations)}",
                hint="upgrade mlplat, or point the stack at a fresh data folder",
            )
        for number, step in enumerate(migrations[have:], start=have + 1):
            for statement in step:
                con.execute(statement)
            con.execute(
                "INSERT INTO schema_version VALUES (?, ?)",
                [number, datetime.now(UTC).replace(tzinfo=None)],
            )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return max(have, len(migrations))
