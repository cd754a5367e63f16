"""``mlplat targets`` as a user runs it (a subprocess): every target with its kind, stage,
address and requirements; what it serves from the real metadata store, or "unknown" when the
store is down."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mlplat_runtime.metadata.records import DeploymentRecord
from mlplat_tui.clients.metadata import MetadataClient
from tests.helpers.metadata import start_metadata
from tests.helpers.stack import free_port_base
from tests.mlplat_tui.cli.test_cli import mlplat
from tests.runtime.metadata.test_guard import Service

DIGEST = "sha256:" + "ab" * 32


def _project(tmp_path: Path, base: int) -> Path:
    root = tmp_path / "tp"
    root.mkdir()
    (root / "mlplat.toml").write_text(
        f"""
[project]
name = "tp"
[model]
name = "churn"
[gates]
"metrics.roc_auc" = ">= 0.85"
[stack]
port_base = {base}

[targets.staging]
kind = "local"
stage = "staging"
port_base = {base + 4}
gates = {{ "metrics.roc_auc" = ">= 0.87" }}

[targets.prod]
kind = "swarm"
stage = "prod"
requires = "staging"
registry = "http://127.0.0.1:5000"
image_registry = "127.0.0.1:5001"
docker_host = "unix:///var/run/docker.sock"
replicas = 2
publish = "edge"
port = 8802
credentials = {{ env = "MLPLAT_PROD_TOKEN" }}

[targets.k8s]
kind = "gitops-k8s"
stage = "prod"
repo = "../gitops"
path = "models/churn"
kubernetes_version = "1.33"
image_registry = "127.0.0.1:5001"
"""
    )
    return root


def _json(root: Path) -> dict[str, dict]:
    out = mlplat("targets", "--json", cwd=root, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert isinstance(rows, list)
    return {r["name"]: r for r in rows}


def test_with_the_stack_down_every_target_is_listed_and_what_it_serves_is_unknown(tmp_path: Path) -> None:
    base = free_port_base(8)
    root = _project(tmp_path, base)
    rows = _json(root)
    assert list(rows) == ["staging", "prod", "k8s"]
    staging, prod, k8s = rows["staging"], rows["prod"], rows["k8s"]
    assert (staging["kind"], staging["stage"], prod["kind"], k8s["kind"]) == (
        "local",
        "staging",
        "swarm",
        "gitops-k8s",
    )
    ports = {"tracker": base + 4, "metadata": base + 5, "serving": base + 6, "admin": base + 7}
    assert staging["address"] == {"host": "127.0.0.1", **ports}
    assert prod["address"] == {"docker_host": "unix:///var/run/docker.sock", "port": 8802}
    assert k8s["address"] == {"repo": "../gitops", "path": "models/churn"}
    assert (staging["required_by"], prod["requires"], prod["required_by"]) == (["prod"], "staging", [])
    assert staging["gates"] == {"metrics.roc_auc": ">= 0.87"}
    assert (prod["config"]["replicas"], prod["config"]["publish"]) == (2, "edge")
    assert prod["config"]["credentials"] == {"env": "MLPLAT_PROD_TOKEN", "file": None}
    for row in rows.values():
        assert row["serves"] is None and row["serves_known"] is False
        assert row["unknown_reason"] == "the metadata store is not reachable"

    table = mlplat("targets", cwd=root, timeout=60)
    assert table.returncode == 0, table.stderr
    lines = {line.split()[0]: line for line in table.stdout.splitlines() if line.strip()}
    assert "TARGET" in lines and "REQUIRED BY" in lines["TARGET"]
    assert f"127.0.0.1:{base + 4}-{base + 7}" in lines["staging"] and "prod" in lines["staging"]
    assert "unix:///var/run/docker.sock port 8802" in lines["prod"]
    assert "../gitops models/churn" in lines["k8s"]
    for name in ("staging", "prod", "k8s"):
        assert "unknown: the metadata store is not reachable" in lines[name]


def test_no_targets_and_a_bad_target_key(tmp_path: Path) -> None:
    (tmp_path / "mlplat.toml").write_text('[project]\nname = "n"\n[model]\nname = "m"\n')
    out = mlplat("targets", cwd=tmp_path, timeout=60)
    assert out.returncode == 0 and "no targets" in out.stdout
    assert json.loads(mlplat("targets", "--json", cwd=tmp_path, timeout=60).stdout) == []
    with (tmp_path / "mlplat.toml").open("a") as f:
        f.write('[targets.prod]\nkind = "swarm"\nregistry = "http://r:5000"\n')
        f.write('docker_host = "unix:///x"\nreplicaz = 2\n')
    bad = mlplat("targets", cwd=tmp_path, timeout=60)
    assert bad.returncode == 2 and "mlplat.toml: key 'targets.prod.replicaz'" in bad.stderr


def test_help_has_an_example(tmp_path: Path) -> None:
    out = mlplat("targets", "--help", cwd=tmp_path, timeout=60)
    assert out.returncode == 0 and "mlplat targets --json" in out.stdout
    top = mlplat("--help", cwd=tmp_path, timeout=60)
    assert "targets" in top.stdout


@pytest.mark.integration
def test_what_a_target_serves_comes_from_the_real_metadata_store(tmp_path: Path) -> None:
    base = free_port_base(8)
    root = _project(tmp_path, base)
    service = start_metadata(tmp_path / "metadata.duckdb", port=base + 1)  # the project's metadata port
    try:
        now = datetime.now(UTC)
        with MetadataClient(service.url) as client:
            for rec in (
                DeploymentRecord(model_name="churn", version="3", bundle_id=DIGEST, target="staging", ts=now),
                DeploymentRecord(  # a later failed push does not replace what serves
                    model_name="churn",
                    version="4",
                    bundle_id="sha256:" + "cd" * 32,
                    target="staging",
                    status="failed",
                    ts=now + timedelta(seconds=1),
                ),
                DeploymentRecord(model_name="churn", version="9", bundle_id=DIGEST, target="local", ts=now),
                DeploymentRecord(model_name="other", version="7", bundle_id=DIGEST, target="prod", ts=now),
            ):
                client.record_deployment(rec)
        rows = _json(root)
        staging = rows["staging"]
        assert staging["serves_known"] is True and staging["unknown_reason"] is None
        assert (staging["serves"]["version"], staging["serves"]["bundle_id"]) == ("3", DIGEST)
        assert staging["serves"]["target"] == "staging"
        for name in ("prod", "k8s"):  # known, and nothing of this model serves there
            assert (rows[name]["serves_known"], rows[name]["serves"]) == (True, None)

        table = mlplat("targets", cwd=root, timeout=60)
        assert table.returncode == 0, table.stderr
        lines = {line.split()[0]: line for line in table.stdout.splitlines() if line.strip()}
        assert "v3 sha256:abababababab" in lines["staging"]
        assert "nothing yet" in lines["prod"] and "nothing yet" in lines["k8s"]
    finally:
        assert service.stop() == 0, service.log.read_text()


@pytest.mark.integration
def test_a_metadata_store_of_another_project_on_the_ports_is_refused_naming_it(tmp_path: Path) -> None:
    base = free_port_base(8)
    root = _project(tmp_path, base)
    other = tmp_path / "other"
    service = Service(
        tmp_path / "other.duckdb",
        *("--port", str(base + 1), "--project", "other", "--project-root", str(other)),
    )
    try:
        out = mlplat("targets", "--json", cwd=root, timeout=60)
        assert out.returncode == 1 and out.stdout == ""
        assert "answers for project 'other'" in out.stderr and str(other) in out.stderr
    finally:
        assert service.stop() == 0, service.log.read_text()
