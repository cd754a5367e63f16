"""MetadataStore on a real DuckDB file: records, migrations, versions, deployments, events."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from mlplat_runtime.bundle.manifest import GateResult
from mlplat_runtime.errors import MetadataError, NotFoundError, RequestError, ServiceError
from mlplat_runtime.metadata.records import (
    BundleRecord,
    DeploymentRecord,
    EventRecord,
    RunRecord,
)
from mlplat_runtime.metadata.schema import MIGRATIONS, SCHEMA_VERSION
from mlplat_runtime.metadata.store import MetadataStore
from mlplat_tui.events import Event

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _run(run_id: str = "r1", **fields: object) -> RunRecord:
    base: dict[str, object] = {
        "run_id": run_id,
        "project": "churn",
        "model_name": "churn-clf",
        "created_at": T0,
    }
    return RunRecord.model_validate({**base, **fields})


def test_run_round_trip_keeps_every_field(store: MetadataStore) -> None:
    run = RunRecord(
        run_id="abc123",
        project="churn",
        model_name="churn-clf",
        status="finished",
        created_at="2026-03-01T12:00:00+02:00",  # type: ignore[arg-type]  # ISO text is accepted
        finished_at=T0 + timedelta(minutes=1),
        command="python train.py",
        params={"C": "1.0"},
        metrics={"roc_auc": 0.91, "loss": math.nan, "ratio": math.inf},
        git_commit="deadbeef",
        dirty_hash="sha256:00",
        data_hashes={"data/churn.csv": "sha256:11"},
        tracker_uri="http://127.0.0.1:7800",
        bundle_id="sha256:b",
        version="3",
        gates_passed=True,
        deployed=True,
        error=None,
    )
    store.record_run(run)
    back = store.run("abc123")
    assert back.created_at == datetime(2026, 3, 1, 10, 0, tzinfo=UTC)  # +02:00 normalised to UTC
    assert math.isnan(back.metrics["loss"]) and back.metrics["ratio"] == math.inf
    assert back.model_dump(exclude={"metrics"}) == run.model_dump(exclude={"metrics"})
    assert back.metrics["roc_auc"] == 0.91


def test_record_run_upserts_and_update_run_changes_fields(store: MetadataStore) -> None:
    store.record_run(_run(status="running"))
    store.record_run(_run(status="failed", error="boom"))
    assert store.count_runs() == 1
    assert store.run("r1").error == "boom"

    updated = store.update_run("r1", {"status": "finished", "error": None, "version": "2"})
    assert (updated.status, updated.error, updated.version) == ("finished", None, "2")
    assert store.run("r1") == updated

    with pytest.raises(RequestError, match="nope"):
        store.update_run("r1", {"nope": 1})
    with pytest.raises(RequestError, match="run_id"):
        store.update_run("r1", {"run_id": "other"})
    with pytest.raises(RequestError, match="invalid run update"):
        store.update_run("r1", {"status": "exploded"})
    with pytest.raises(NotFoundError, match="missing"):
        store.update_run("missing", {"status": "finished"})


def test_bundle_and_gates_round_trip_and_run_detail(store: MetadataStore) -> None:
    store.record_run(_run(bundle_id="sha256:b1"))
    bundle = BundleRecord(
        bundle_id="sha256:b1",
        run_id="r1",
        model_name="churn-clf",
        version="1",
        path="/x/b1",
        size_bytes=1234,
        created_at=T0,
        manifest={"metrics": {"auc": math.nan}, "files": {"model.onnx": "s"}},
    )
    store.record_bundle(bundle)
    got = store.bundle("sha256:b1")
    assert got.size_bytes == 1234 and got.manifest["files"] == {"model.onnx": "s"}
    assert got.manifest["metrics"]["auc"] == "NaN"  # strict JSON keeps it as text

    gates = [
        GateResult(name="metrics.roc_auc", measured=0.9, threshold=">= 0.85", passed=True),
        GateResult(name="signature", measured="compatible", threshold="compatible with v0", passed=True),
        GateResult(name="size_mb", measured=None, threshold="<= 50", passed=False, detail="no file"),
    ]
    store.record_gates("sha256:b1", "r1", gates)
    assert [g.to_result() for g in store.gates("sha256:b1")] == sorted(gates, key=lambda g: g.name)
    # Re-gating replaces, it does not append.
    store.record_gates("sha256:b1", "r1", gates[:1])
    assert [g.name for g in store.gates("sha256:b1")] == ["metrics.roc_auc"]

    detail = store.run_detail("r1")
    assert detail.bundle == got and len(detail.gates) == 1
    with pytest.raises(NotFoundError):
        store.bundle("sha256:none")


def test_migrations_upgrade_a_v1_file_and_keep_its_data(db_path: Path) -> None:
    with MetadataStore(db_path, migrations=MIGRATIONS[:1]) as old:
        assert old.schema_version == 1
        old.record_run(_run("kept"))
    con = duckdb.connect(str(db_path))
    assert con.execute(
        "SELECT count(*) FROM duckdb_indexes() WHERE index_name = 'runs_model_idx'"
    ).fetchone() == (0,)
    con.close()

    with MetadataStore(db_path) as new:
        assert new.schema_version == SCHEMA_VERSION == 5
        assert new.run("kept").project == "churn"
        indexes = new.sql("SELECT index_name FROM duckdb_indexes() ORDER BY index_name").rows
        assert ["runs_model_idx"] in indexes
        versions = new.sql("SELECT version FROM schema_version ORDER BY version").rows
        assert versions == [[n] for n in range(1, SCHEMA_VERSION + 1)]
    # Reopening applies nothing twice.
    with MetadataStore(db_path) as again:
        assert again.sql("SELECT count(*) FROM schema_version").rows == [[SCHEMA_VERSION]]


def test_gate_fields_round_trip(store: MetadataStore) -> None:
    gates = [
        GateResult(
            name="metrics.roc_auc",
            measured=0.9,
            threshold=">= 0.88",
            passed=True,
            op=">=",
            bound=0.88,
            policy_floor=True,
        ),
        GateResult(
            name="no_regression",
            measured=None,
            threshold="not worse than the champion",
            passed=False,
            evaluated=False,
            detail="champion unknown",
        ),
        GateResult(name="size_mb", measured=3.5, threshold="< 50", passed=True, op="<", bound=50.0),
    ]
    store.record_gates("sha256:b1", "r1", gates)
    back = store.gates("sha256:b1")
    assert [g.to_result() for g in back] == sorted(gates, key=lambda g: g.name)
    auc = back[0]
    assert (auc.op, auc.bound, auc.evaluated, auc.policy_floor) == (">=", 0.88, True, True)
    regression = back[1]
    assert (regression.op, regression.bound, regression.evaluated) == (None, None, False)
    # SQL sees them as columns of their own.
    rows = store.sql("SELECT name, op, bound, evaluated, policy_floor FROM gate_results ORDER BY name").rows
    assert rows == [
        ["metrics.roc_auc", ">=", 0.88, True, True],
        ["no_regression", None, None, False, False],
        ["size_mb", "<", 50.0, True, False],
    ]


def test_gates_recorded_before_v3_migrate_with_the_defaults(db_path: Path) -> None:
    old_gate = GateResult(name="metrics.roc_auc", measured=0.9, threshold=">= 0.85", passed=True)
    with MetadataStore(db_path, migrations=MIGRATIONS[:2]) as old:
        assert old.schema_version == 2
    # The v2 store's own statement: the eight text columns only.
    con = duckdb.connect(str(db_path))
    con.execute(
        "INSERT INTO gate_results VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        ["sha256:b1", "r1", "metrics.roc_auc", 0.9, None, ">= 0.85", True, ""],
    )
    con.close()
    with MetadataStore(db_path) as new:
        assert new.schema_version == SCHEMA_VERSION
        (gate,) = new.gates("sha256:b1")
        assert gate.to_result() == old_gate
        assert (gate.op, gate.bound, gate.evaluated, gate.policy_floor) == (None, None, True, False)
        # and the migrated table takes the typed fields from now on
        typed = old_gate.model_copy(update={"op": ">=", "bound": 0.85})
        new.record_gates("sha256:b1", "r1", [typed])
        assert [g.to_result() for g in new.gates("sha256:b1")] == [typed]


def test_a_failing_migration_leaves_the_file_at_its_old_version(db_path: Path) -> None:
    MetadataStore(db_path).close()
    broken = (*MIGRATIONS, ("CREATE TABLE half_done (a INTEGER)", "SELECT * FROM no_such_table"))
    with pytest.raises(duckdb.CatalogException):
        MetadataStore(db_path, migrations=broken)
    with MetadataStore(db_path) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert store.sql("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'half_done'").rows == [[0]]


def test_a_file_from_a_newer_mlplat_is_refused(db_path: Path) -> None:
    MetadataStore(db_path).close()
    with pytest.raises(MetadataError, match=f"schema is v{SCHEMA_VERSION}, this mlplat knows up to v1"):
        MetadataStore(db_path, migrations=MIGRATIONS[:1])


def test_a_second_store_on_the_same_file_is_a_clear_error(db_path: Path, tmp_path: Path) -> None:
    # DuckDB's lock is per process; another process holding the file is what the service sees.
    import subprocess
    import sys

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]);"
            " print('ok', flush=True); time.sleep(30)",
            str(db_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        db_path.parent.mkdir(parents=True, exist_ok=True)
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ok"
        with pytest.raises(ServiceError, match="cannot open the metadata store") as info:
            MetadataStore(db_path)
        assert "mlplat down" in str(info.value)
    finally:
        holder.kill()
        holder.wait(5)


def test_next_version_counts_integer_versions_per_model(store: MetadataStore) -> None:
    assert store.next_version("churn-clf") == "1"
    for bundle_id, model, version in [
        ("b1", "churn-clf", "1"),
        ("b2", "churn-clf", "10"),
        ("b3", "churn-clf", "byo-3f2a"),
        ("b4", "other", "41"),
    ]:
        store.record_bundle(
            BundleRecord(bundle_id=bundle_id, model_name=model, version=version, path="/p", size_bytes=1)
        )
    assert store.next_version("churn-clf") == "11"
    assert store.next_version("other") == "42"
    assert store.next_version("new-model") == "1"


def _deploy(store: MetadataStore, version: str, minutes: int, **kw: object) -> DeploymentRecord:
    rec = DeploymentRecord.model_validate(
        {
            "model_name": "churn-clf",
            "version": version,
            "bundle_id": f"sha256:{version}",
            "ts": T0 + timedelta(minutes=minutes),
            **kw,
        }
    )
    return store.record_deployment(rec)


def test_current_and_at_time_deployments(store: MetadataStore) -> None:
    assert store.current_deployment("churn-clf") is None
    first = _deploy(store, "1", 0)
    assert first.id is not None
    _deploy(store, "2", 10)
    _deploy(store, "3", 20, status="failed", reason="load refused")
    _deploy(store, "1", 30, action="rollback", reason="regression")
    _deploy(store, "2", 15, target="prod")

    current = store.current_deployment("churn-clf")
    assert current is not None and (current.version, current.action) == ("1", "rollback")
    prod = store.current_deployment("churn-clf", target="prod")
    assert prod is not None and prod.version == "2"

    def at(minutes: float, target: str | None = "local") -> str | None:
        found = store.deployed_at("churn-clf", T0 + timedelta(minutes=minutes), target=target)
        return None if found is None else found.version

    assert at(-1) is None
    assert at(0) == "1"
    assert at(12) == "2"
    assert at(25) == "2"  # the failed deploy of v3 changed nothing
    assert at(31) == "1"
    assert at(16, target="prod") == "2" and at(14, target="prod") is None

    _deploy(store, "1", 40, action="undeploy")
    assert store.current_deployment("churn-clf", target="local") is None
    assert at(35) == "1" and at(41) is None

    history = store.deployments("churn-clf", limit=3)
    assert [(d.version, d.action) for d in history] == [("1", "undeploy"), ("1", "rollback"), ("3", "deploy")]
    assert len(store.deployments(target="prod")) == 1
    assert store.deployments("unknown") == []


def test_events_from_event_json_and_polling(store: MetadataStore) -> None:
    gate = GateResult(name="size_mb", measured=1.5, threshold="<= 50", passed=True)
    event = Event(
        kind="gated",
        message="gates ok",
        ts=T0.timestamp(),
        run_id="r1",
        version="2",
        gates=(gate,),
        duration_s=0.25,
        data={"files": ["train.py"]},
    )
    first = store.record_event(event.to_json())
    second = store.record_event(EventRecord(kind="swapped", message="v2 serving"))
    assert first.id is not None and second.id is not None and second.id > first.id

    polled = store.events(after_id=0)
    assert [e.kind for e in polled] == ["gated", "swapped"]
    got = polled[0]
    assert got.ts == T0 and got.run_id == "r1" and got.version == "2"
    assert got.payload["duration_s"] == 0.25 and got.payload["data"] == {"files": ["train.py"]}
    assert got.payload["gates"][0]["name"] == "size_mb" and "time" not in got.payload
    assert [e.kind for e in store.events(after_id=first.id)] == ["swapped"]
    assert store.events(after_id=second.id) == []
    assert len(store.events(limit=1)) == 1


def test_listing_ten_thousand_runs_pages_and_searches(store: MetadataStore) -> None:
    runs = [
        _run(
            f"run-{i:05d}",
            model_name=f"model-{i % 4}",
            status="failed" if i % 10 == 0 else "finished",
            created_at=T0 + timedelta(seconds=i),
            metrics={"auc": i / 10_000},
        )
        for i in range(10_000)
    ]
    assert store.record_runs(runs) == 10_000
    assert store.count_runs() == 10_000

    page = store.runs(limit=50)
    assert [r.run_id for r in page[:2]] == ["run-09999", "run-09998"] and len(page) == 50
    tail = store.runs(limit=100, offset=9_990)
    assert [r.run_id for r in tail] == [f"run-{i:05d}" for i in range(9, -1, -1)]

    model_3 = store.runs(limit=10_000, search="MODEL-3")
    assert len(model_3) == 2_500 and {r.model_name for r in model_3} == {"model-3"}
    assert len(store.runs(limit=10_000, search="failed")) == 1_000
    assert [r.run_id for r in store.runs(search="run-0004")][-1] == "run-00040"
    # LIKE wildcards in the search text are literal.
    assert store.runs(search="run_0") == [] and store.runs(search="%") == []

    with pytest.raises(RequestError, match="limit"):
        store.runs(limit=0)
    with pytest.raises(RequestError, match="offset"):
        store.runs(offset=-1)


def test_close_checkpoints_and_refuses_later_calls(db_path: Path) -> None:
    store = MetadataStore(db_path)
    store.record_run(_run())
    store.close()
    store.close()  # twice is fine
    assert not db_path.with_name(db_path.name + ".wal").exists()
    with pytest.raises(ServiceError, match="closed"):
        store.run("r1")
    with MetadataStore(db_path) as reopened:
        assert reopened.run("r1").run_id == "r1"


def test_deployments_recorded_before_v4_read_as_local_ones(db_path: Path) -> None:
    with MetadataStore(db_path, migrations=MIGRATIONS[:3]) as old:
        assert old.schema_version == 3
    # The v3 store's own statement: the ten columns it had.
    con = duckdb.connect(str(db_path))
    con.execute(
        "INSERT INTO deployments (model_name, version, bundle_id, run_id, target, action, status, reason, ts)"
        " VALUES ('m', '1', 'sha256:b1', NULL, 'local', 'deploy', 'ok', '', now()::TIMESTAMP)"
    )
    con.close()
    with MetadataStore(db_path) as new:
        assert new.schema_version == SCHEMA_VERSION
        (old_row,) = new.deployments("m")
        assert (old_row.registry_version, old_row.image_digest, old_row.pushed_by, old_row.receipt_path) == (
            None,
            None,
            "",
            None,
        )
        pushed = new.record_deployment(
            DeploymentRecord(
                model_name="m",
                version="2",
                bundle_id="sha256:b2",
                target="staging",
                registry_version="7",
                image_digest="sha256:" + "a" * 64,
                pushed_by="ana",
                receipt_path="/r.json",
            )
        )
        current = new.current_deployment("m", target="staging")
        assert current == pushed
