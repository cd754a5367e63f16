"""The one runs query on a real DuckDB file: served now per target, was deployed, search, sort."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from mlplat_runtime.bundle.manifest import GateResult
from mlplat_runtime.metadata.records import DeploymentRecord, RunRecord
from mlplat_runtime.metadata.runs_query import RunsQuery
from mlplat_runtime.metadata.store import MetadataStore

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MODEL = "churn-clf"


def _runs(store: MetadataStore, n: int) -> None:
    for i in range(1, n + 1):
        store.record_run(
            RunRecord(
                run_id=f"run{i}",
                project="churn",
                model_name=MODEL,
                status="finished",
                created_at=T0 + timedelta(minutes=i),
                bundle_id=f"sha256:b{i}",
                version=str(i),
                metrics={"roc_auc": 0.8 + i / 100},
            )
        )


def _deploy(store: MetadataStore, i: int, minute: int, *, target: str = "local", **kw: object) -> None:
    store.record_deployment(
        DeploymentRecord.model_validate(
            {
                "model_name": MODEL,
                "version": str(i),
                "bundle_id": f"sha256:b{i}",
                "run_id": f"run{i}",
                "target": target,
                "ts": T0 + timedelta(hours=1, minutes=minute),
                **kw,
            }
        )
    )


def _by_run(store: MetadataStore, **query: object) -> dict[str, tuple[tuple[str, ...], bool]]:
    page = store.query_runs(RunsQuery.model_validate(query))
    return {row.run.run_id: (row.served_on, row.was_deployed) for row in page.rows}


def test_served_means_serving_now_per_target_and_was_deployed_is_apart(store: MetadataStore) -> None:
    _runs(store, 4)
    _deploy(store, 1, 1)
    _deploy(store, 2, 2)  # replaces v1 locally
    _deploy(store, 3, 3, status="failed", reason="serving refused")  # never served
    _deploy(store, 1, 4, target="prod")  # prod serves v1; that is not "served locally"
    rows = _by_run(store)
    assert rows["run1"] == (("prod",), True)
    assert rows["run2"] == (("local",), True)
    assert rows["run3"] == ((), False)
    assert rows["run4"] == ((), False)

    _deploy(store, 1, 5, action="rollback")  # a local rollback to v1
    rows = _by_run(store)
    assert rows["run1"] == (("local", "prod"), True)
    assert rows["run2"] == ((), True)

    _deploy(store, 1, 6, action="undeploy")
    assert _by_run(store)["run1"] == (("prod",), True)


def test_search_sort_paging_and_total(store: MetadataStore) -> None:
    _runs(store, 12)
    store.record_gates(
        "sha256:b3",
        "run3",
        [GateResult(name="size_mb", measured=90.0, threshold="<= 50", passed=False)],
    )
    page = store.query_runs(RunsQuery(limit=5, offset=5))
    assert page.total == 12 and [r.run.run_id for r in page.rows] == [f"run{i}" for i in range(7, 2, -1)]
    assert next(r for r in page.rows if r.run.run_id == "run3").gates_failed == ("size_mb",)

    # one search over run id, model, project, status, version and bundle id; taken literally
    assert {r.run.run_id for r in store.query_runs(RunsQuery(search="B1")).rows} == {
        "run1",
        "run10",
        "run11",
        "run12",
    }
    assert store.query_runs(RunsQuery(search="%")).total == 0

    by_metric = store.query_runs(RunsQuery(sort="metric:roc_auc", descending=False, limit=2))
    assert [r.run.run_id for r in by_metric.rows] == ["run1", "run2"]
    by_version = store.query_runs(RunsQuery(sort="version", limit=1))
    assert by_version.rows[0].run.version == "12"

    past = store.query_runs(RunsQuery(limit=5, offset=50))
    assert past.rows == () and past.total == 12


def test_an_unknown_sort_is_refused() -> None:
    with pytest.raises(ValidationError, match="sort must be one of"):
        RunsQuery(sort="created_at; DROP TABLE runs")


def test_version_filters_exactly(store: MetadataStore) -> None:
    _runs(store, 12)
    assert [r.run.run_id for r in store.query_runs(RunsQuery(version="1")).rows] == ["run1"]
    assert store.query_runs(RunsQuery(search="1")).total > 1  # what a substring search gives
    assert store.query_runs(RunsQuery(version="1", model="other")).total == 0
    assert store.query_runs(RunsQuery(version="13")).total == 0


def test_run_id_prefix_filters_on_the_start_of_the_id_only(store: MetadataStore) -> None:
    _runs(store, 12)  # run1 .. run12
    for run_id in ("xrun1", "Run1", "run_%", "runX%"):
        store.record_run(RunRecord(run_id=run_id, model_name=MODEL, created_at=T0))

    def ids(**query: object) -> list[str]:
        page = store.query_runs(RunsQuery.model_validate({"sort": "run_id", "descending": False, **query}))
        return [r.run.run_id for r in page.rows]

    assert ids(run_id_prefix="run1") == ["run1", "run10", "run11", "run12"]  # not xrun1, not Run1
    assert ids(search="run1") == ["Run1", "run1", "run10", "run11", "run12", "xrun1"]
    assert ids(run_id_prefix="run_") == ["run_%"]  # "_" and "%" are not wildcards
    assert ids(run_id_prefix="run12") == ["run12"]
    assert ids(run_id_prefix="run1", model="other") == []
    assert store.query_runs(RunsQuery(run_id_prefix="run1", limit=1)).total == 4
    with pytest.raises(ValidationError):
        RunsQuery(run_id_prefix="")
