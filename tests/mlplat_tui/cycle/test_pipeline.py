"""End to end through the real stack: train → bundle → gates → MLflow + DuckDB → serving.

Both sample projects are trained for real; every service is the real one.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import httpx
import numpy as np
import pytest

from mlplat_runtime.bundle import open_bundle
from mlplat_tui.clients.metadata import MetadataClient
from mlplat_tui.cycle.pipeline import CycleOutcome, Pipeline
from mlplat_tui.deploy.restore import up_and_restore
from mlplat_tui.events import Event
from mlplat_tui.project.config import load_project
from mlplat_tui.stack.base import Service
from tests.helpers.stack import copy_sample, started_stack

pytestmark = pytest.mark.integration


def _infer(base: str, model: str, rows: np.ndarray) -> dict:
    body = {
        "inputs": [
            {"name": "input", "datatype": "FP32", "shape": list(rows.shape), "data": rows.ravel().tolist()}
        ]
    }
    resp = httpx.post(f"{base}/v2/models/{model}/infer", json=body, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _served_version(base: str, model: str) -> str:
    meta = httpx.get(f"{base}/v2/models/{model}", timeout=5).json()
    return str(meta["versions"][-1])


def test_churn_end_to_end_gate_miss_and_crash_keep_serving(tmp_path: Path) -> None:
    root = copy_sample("churn", tmp_path)
    project = load_project(root)
    model = project.config.model.name
    with started_stack(root) as stack:
        events: list[Event] = []
        pipe = Pipeline(project, stack)
        first = pipe.run_cycle(emit=events.append)
        assert first.error is None, first.error
        assert first.tracked and first.passed and first.deployed
        assert first.serving_version == first.version == "1"
        kinds = [e.kind for e in events if e.kind != "output"]
        assert kinds == ["training", "trained", "bundled", "gated", "swapped"], kinds

        # OIP v2: the served model answers like the bundle's own expected outputs.
        serving = stack.ports.url(Service.SERVING)
        bundle = open_bundle(first.bundle_path)
        inputs, expected = bundle.samples()
        out = _infer(serving, model, inputs["input"])
        assert out["model_version"] == "1"
        label = next(o for o in out["outputs"] if o["datatype"] == "INT64")
        expected_label = next(v for v in expected.values() if v.dtype == np.int64)
        assert label["data"] == expected_label.ravel().tolist()

        # MLflow's own client finds the run, its metrics and the bundle artifact.
        import mlflow

        mlflow.set_tracking_uri(stack.ports.url(Service.TRACKER))
        runs = mlflow.search_runs(experiment_names=[project.name], output_format="list")
        run = next(r for r in runs if r.info.run_id == first.run_id)
        assert run.data.metrics["roc_auc"] >= 0.85
        assert run.data.tags["mlplat.bundle_id"] == first.bundle_id
        artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(first.run_id, "bundle")}
        assert "bundle/manifest.json" in artifacts and "bundle/model.onnx" in artifacts

        # The metadata store has the same run with its lineage.
        meta = MetadataClient(
            stack.ports.url(Service.METADATA), token_file=stack.project.paths.metadata_token
        )
        rows = meta.sql(f"SELECT status, bundle_id, data_hashes FROM runs WHERE run_id = '{first.run_id}'")
        assert rows.rows[0][0] == "deployed"
        assert rows.rows[0][1] == first.bundle_id
        assert "data/churn.csv" in str(rows.rows[0][2])
        assert meta.current_deployment(model).version == "1"

        # A gate miss is recorded with the reason and not served.
        toml = root / "mlplat.toml"
        toml.write_text(
            toml.read_text().replace('"metrics.roc_auc" = ">= 0.85"', '"metrics.roc_auc" = ">= 0.9999"')
        )
        pipe.project = load_project(root)
        events.clear()
        missed = pipe.run_cycle(emit=events.append)
        assert not missed.passed and not missed.deployed
        assert "metrics.roc_auc" in (missed.error or "") and "still serving v1" in (missed.error or "")
        assert any(e.kind == "rejected" for e in events)
        assert meta.run(missed.run_id).status == "rejected"
        assert _served_version(serving, model) == "1"

        # A crashing training command leaves the serving model untouched and shows its error.
        (root / "train.py").write_text("raise RuntimeError('boom from train.py')\n")
        crashed = pipe.run_cycle(emit=events.append)
        assert crashed.error and "boom from train.py" in crashed.error
        assert meta.run(crashed.run_id).status == "failed"
        assert _served_version(serving, model) == "1"
        assert _infer(serving, model, inputs["input"])["model_version"] == "1"

        # A restarted stack serves the last deployed version again, not nothing.
        stack.down()
        notes: list[str] = []
        up_and_restore(stack, notes.append)
        assert any("restored" in n and "v1" in n for n in notes), notes
        assert _served_version(serving, model) == "1"


def test_digits_torch_project_trains_and_serves(tmp_path: Path) -> None:
    root = copy_sample("digits", tmp_path)
    project = load_project(root)
    with started_stack(root) as stack:
        result = Pipeline(project, stack).run_cycle()
        assert result.error is None, result.error
        assert result.deployed and result.metrics.get("accuracy", 0) >= 0.9
        inputs, _ = open_bundle(result.bundle_path).samples()
        name, rows = next(iter(inputs.items()))
        body = {
            "inputs": [
                {"name": name, "datatype": "FP32", "shape": list(rows.shape), "data": rows.ravel().tolist()}
            ]
        }
        resp = httpx.post(
            f"{stack.ports.url(Service.SERVING)}/v2/models/{project.config.model.name}/infer",
            json=body,
            timeout=10,
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["outputs"][0]["shape"][0] == rows.shape[0]


def test_training_without_a_stack_still_bundles_and_gates(tmp_path: Path) -> None:
    root = copy_sample("churn", tmp_path)
    events: list[Event] = []
    result = Pipeline(load_project(root), None).run_cycle(emit=events.append)
    assert not result.tracked and not result.deployed
    assert result.passed and result.bundle_path and (result.bundle_path / "manifest.json").exists()
    assert events[0].kind == "stack" and "mlplat up" in events[0].message


def test_serving_that_refuses_our_token_is_a_rejection_not_a_crash(tmp_path: Path) -> None:
    root = copy_sample("churn", tmp_path)
    project = load_project(root)
    with started_stack(root) as stack:
        token_file = project.state_dir / "stack" / "admin.token"
        good = token_file.read_text()
        token_file.write_text("not-the-token-" + "x" * 40 + "\n")  # strong enough to be sent
        try:
            result = Pipeline(project, stack).run_cycle()
        finally:
            token_file.write_text(good)
        assert result.passed and not result.deployed
        assert result.error and "rejected" in result.error and "token" in result.error
        meta = MetadataClient(stack.ports.url(Service.METADATA))
        assert meta.run(result.run_id).status == "rejected"
        assert meta.current_deployment(project.config.model.name) is None


def _kill_tree(pid: int) -> None:
    import psutil

    proc = psutil.Process(pid)
    procs = [*proc.children(recursive=True), proc]
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(procs, timeout=10)


def test_mlflow_gone_mid_session_the_store_still_records_and_up_restores(tmp_path: Path) -> None:
    """Bugs: a 30 s connection cache reported "tracked" after the tracker was gone (then an
    AttributeError was reported as "MLflow refused to create the run"); with MLflow down the
    deployment was recorded for a bundle the store never heard of, so the next champion lookup
    failed and a restarted stack could not restore the model."""
    root = copy_sample("churn", tmp_path)
    project = load_project(root)
    model = project.config.model.name
    with started_stack(root) as stack:
        pipe = Pipeline(project, stack)
        first = pipe.run_cycle()
        assert first.deployed and first.tracked, first.reason
        tracker = stack.status().service(Service.TRACKER)
        assert tracker is not None and tracker.ident
        _kill_tree(int(tracker.ident))

        events: list[Event] = []
        second = pipe.run_cycle(emit=events.append)  # well within 30 s of the first
        assert second.outcome is CycleOutcome.DEPLOYED, second.reason
        assert not second.tracked and second.recorded and second.serving_version == "2"
        notes = " ".join(e.message for e in events if e.kind == "stack")
        assert "tracker is not up" in notes and "refused" not in notes, notes
        assert "without tracking or serving" not in notes

        meta = MetadataClient(stack.ports.url(Service.METADATA))
        assert meta.run(second.run_id).status == "deployed"
        assert meta.bundle(second.bundle_id).version == "2"
        current = meta.current_deployment(model, target="local")
        assert current is not None and current.bundle_id == second.bundle_id
        champion = pipe.champion(model)
        assert champion is not None and getattr(champion, "version", None) == "2"
        pipe.close()
        meta.close()

        stack.down()
        notes_up: list[str] = []
        up_and_restore(stack, notes_up.append)
        assert _served_version(stack.ports.url(Service.SERVING), model) == "2", notes_up
