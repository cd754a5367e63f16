"""The cycle's record of a bundle hands its reference v2 to the store's monitor: the real
metadata service (``--monitor-dir``) over the real ``MetadataClient``, so drift has a reference
whether or not the service can read the bundle folder (the docker backend's cannot)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mlplat_runtime.bundle.manifest import Manifest
from mlplat_runtime.metadata.records import RunRecord
from mlplat_runtime.monitoring.reference import compute_reference
from mlplat_tui.clients.metadata import MetadataClient
from mlplat_tui.cycle.recording import Recorder
from mlplat_tui.project.config import load_project
from tests.helpers.metadata import start_metadata
from tests.helpers.models import make_bundle

pytestmark = pytest.mark.integration

FEATURES = ["age", "income", "flag", "score"]


def _bundle(tmp_path: Path, version: str, reference: object) -> tuple[Manifest, Path]:
    bundle = make_bundle(tmp_path / f"v{version}", version=version, reference=reference)
    return Manifest.model_validate_json((bundle / "manifest.json").read_text()), bundle


def _recorder(tmp_path: Path, client: MetadataClient) -> Recorder:
    root = tmp_path / "project"
    root.mkdir()
    (root / "mlplat.toml").write_text(
        '[project]\nname = "p"\n[train]\ncommand = "python train.py"\n[model]\nname = "m"\n'
    )
    rec = Recorder(load_project(root))
    rec.metadata = client
    return rec


def _run(rec: Recorder, run_id: str) -> None:
    assert rec.metadata is not None
    rec.metadata.record_run(RunRecord(run_id=run_id, project="p", model_name="m", status="running"))


def test_record_bundle_registers_the_reference_with_the_monitor(tmp_path: Path) -> None:
    x = np.random.default_rng(0).normal(size=(500, 4)).astype(np.float32)
    v2 = json.loads(compute_reference({"input": x}, feature_names=FEATURES).model_dump_json())
    service = start_metadata(tmp_path / "meta.duckdb", extra=("--monitor-dir", str(tmp_path / "monitoring")))
    try:
        with MetadataClient(service.url) as client:
            rec = _recorder(tmp_path, client)
            manifest, bundle = _bundle(tmp_path, "1", v2)
            _run(rec, "a" * 32)
            assert rec.record_bundle("a" * 32, manifest, bundle) and rec.refusal is None
            shutil.rmtree(bundle)  # the service must not need the folder (docker: another filesystem)
            old, old_bundle = _bundle(tmp_path, "2", None)  # no reference v2: nothing to register
            _run(rec, "b" * 32)
            assert rec.record_bundle("b" * 32, old, old_bundle)
            assert not rec.register_reference(old, old_bundle)
            got = client.sql("SELECT bundle_id, model_name, version, reference FROM monitor_references")
    finally:
        service.stop()
    assert [r[:3] for r in got.rows] == [[manifest.bundle_id, "m", "1"]]
    stored = got.rows[0][3]
    stored = json.loads(stored) if isinstance(stored, str) else stored
    assert sorted(stored["features"]) == sorted(FEATURES)


def test_a_store_without_a_monitor_still_records_the_bundle(tmp_path: Path) -> None:
    x = np.random.default_rng(1).normal(size=(200, 4)).astype(np.float32)
    v2 = json.loads(compute_reference({"input": x}, feature_names=FEATURES).model_dump_json())
    service = start_metadata(tmp_path / "meta.duckdb")  # no --monitor-dir: /monitor answers 404
    try:
        with MetadataClient(service.url) as client:
            rec = _recorder(tmp_path, client)
            manifest, bundle = _bundle(tmp_path, "1", v2)
            _run(rec, "c" * 32)
            assert rec.record_bundle("c" * 32, manifest, bundle) and rec.refusal is None
            assert not rec.register_reference(manifest, bundle)
            assert client.bundle(manifest.bundle_id).bundle_id == manifest.bundle_id
    finally:
        service.stop()
