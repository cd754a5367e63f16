"""The docker backend against the real engine and the project's real images, on a copy of the
churn sample: up, serve a bundle, a full train-gate-deploy cycle, track, record, status, logs,
restart a dead service, down with and without the data."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any, cast

import httpx
import numpy as np
import pytest

from mlplat_runtime.bundle import open_bundle
from mlplat_tui.clients.metadata import MetadataClient
from mlplat_tui.stack.base import SERVICES, Service
from mlplat_tui.stack.docker import MONITORING_USERS, MONITORING_VOLUME, VOLUMES, DockerBackend
from tests.helpers.models import make_bundle
from tests.mlplat_tui.stack.conftest import project_objects

pytestmark = [pytest.mark.docker, pytest.mark.xdist_group("docker"), pytest.mark.timeout(900)]


def _infer(backend: DockerBackend, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    body = {
        "inputs": [
            {"name": k, "datatype": "FP32", "shape": list(v.shape), "data": v.ravel().tolist()}
            for k, v in inputs.items()
        ]
    }
    r = httpx.post(f"{backend.ports.url('serving')}/v2/models/{model}/infer", json=body, timeout=10)
    assert r.status_code == 200, r.text
    return {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in r.json()["outputs"]}


def _track_a_run(url: str, tmp: Path) -> str:
    """Log params, a metric and an artifact through the containerised tracker; read them back."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=url)
    exp = client.create_experiment(f"docker-{os.getpid()}-{time.time_ns()}")
    run = client.create_run(exp)
    client.log_param(run.info.run_id, "depth", "3")
    client.log_metric(run.info.run_id, "roc_auc", 0.91)
    note = tmp / "note.txt"
    note.write_text("tracked in a container")
    client.log_artifact(run.info.run_id, str(note))
    got = client.get_run(run.info.run_id)
    assert got.data.params == {"depth": "3"} and got.data.metrics == {"roc_auc": 0.91}
    back = client.download_artifacts(run.info.run_id, "note.txt", tempfile.mkdtemp(dir=tmp))
    assert Path(back).read_text() == "tracked in a container"
    return str(run.info.run_id)


def _wait_engine_health(backend: DockerBackend, timeout: float = 30) -> dict[str, Any]:
    """The images' own HEALTHCHECKs (run by the engine) agree that every service is healthy."""
    deadline = time.monotonic() + timeout
    health: dict[str, Any] = {}
    while time.monotonic() < deadline:
        health = {
            s: (c.attrs["State"].get("Health") or {}).get("Status") for s, c in backend.containers().items()
        }
        if len(health) == 3 and all(h == "healthy" for h in health.values()):
            return health
        time.sleep(0.5)
    return health


def test_docker_stack_lifecycle(docker_project, docker_client, mlplat_images, tmp_path: Path) -> None:
    project = docker_project(sample="churn")
    backend = DockerBackend(project, client=docker_client)
    name = project.name
    lines: list[str] = []
    begun = time.monotonic()
    status = backend.up(progress=lines.append)
    up_s = time.monotonic() - begun
    print(
        f"\nup (fresh volumes) to all healthy: {up_s:.1f}s; images ready in {mlplat_images['seconds']:.1f}s"
    )
    assert status.up, status
    assert status.backend == "docker" and status.gpu is None  # no GPU on the test machine
    assert any("tracker: healthy" in line for line in lines), lines

    # Three labelled containers of the right images, on one network, ports on loopback only.
    containers = backend.containers()
    assert set(containers) == set(SERVICES)
    runtime_id = docker_client.images.get(mlplat_images["runtime"]).id
    tracker_id = docker_client.images.get(mlplat_images["tracker"]).id
    expected_ports = {
        Service.TRACKER: {"7800/tcp": backend.ports.tracker},
        Service.METADATA: {"7801/tcp": backend.ports.metadata},
        Service.SERVING: {"7802/tcp": backend.ports.serving, "7803/tcp": backend.ports.admin},
    }
    for service, c in containers.items():
        assert c.name == f"mlplat-{name}-{service}"
        assert c.labels["io.mlplat.project"] == name and c.labels["io.mlplat.service"] == service
        assert c.image.id == (tracker_id if service is Service.TRACKER else runtime_id)
        assert c.attrs["Config"]["User"] == "mlplat"
        bindings = c.attrs["HostConfig"]["PortBindings"]
        assert {k: int(v[0]["HostPort"]) for k, v in bindings.items()} == expected_ports[service]
        assert all(b["HostIp"] == "127.0.0.1" for v in bindings.values() for b in v)
        assert list(c.attrs["NetworkSettings"]["Networks"]) == [f"mlplat-{name}"]
        assert str(service) in c.attrs["NetworkSettings"]["Networks"][f"mlplat-{name}"]["Aliases"]
        mounts = {m["Name"]: m["Destination"] for m in c.attrs["Mounts"]}
        shared = {backend.monitoring_volume: MONITORING_VOLUME[1]} if service in MONITORING_USERS else {}
        assert mounts == {backend.volume_name(service): VOLUMES[service][1], **shared}
    assert project_objects(docker_client, name)["volumes"] == sorted(
        f"mlplat-{name}-{v}" for v in ("bundles", "metadata", "monitoring", "tracker")
    )
    token_file = project.state_dir / "stack" / "admin.token"
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    token = token_file.read_text().strip()

    # Serving: stage a bundle in the volume, load it through the admin API, infer.
    bundle_dir = make_bundle(tmp_path, name="churn")
    in_container = backend.serving_bundle_path(bundle_dir)
    bundle = open_bundle(bundle_dir)
    assert in_container == "/bundles/" + bundle.bundle_id.split(":")[-1]
    assert backend.serving_bundle_path(bundle_dir) == in_container  # staged once
    admin = backend.ports.url("admin") + "/v2/repository/models/churn/load"
    refused = httpx.post(admin, json={"parameters": {"bundle": in_container}}, timeout=30)
    assert refused.status_code == 401
    loaded = httpx.post(
        admin,
        json={"parameters": {"bundle": in_container}},
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )
    assert loaded.status_code == 200, loaded.text
    assert loaded.json()["bundle_id"] == bundle.bundle_id
    inputs, expected = bundle.samples()
    outputs = _infer(backend, "churn", inputs)
    np.testing.assert_allclose(outputs["probabilities"], expected["probabilities"], rtol=1e-5)
    # An .mlbundle archive is staged as a file and loads the same way.
    archive = make_bundle(tmp_path, name="arch", out=tmp_path / "arch.mlbundle", archive=True)
    staged_archive = backend.serving_bundle_path(archive)
    assert staged_archive.startswith("/bundles/arch-") and staged_archive.endswith(".mlbundle")
    loaded = httpx.post(
        backend.ports.url("admin") + "/v2/repository/models/arch/load",
        json={"parameters": {"bundle": staged_archive}},
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )
    assert loaded.status_code == 200, loaded.text

    # The whole cycle on the containers: train on the host, track in the containerised MLflow,
    # record in the containerised metadata service, stage the bundle, hot-load, serve.
    from mlplat_tui.cycle.pipeline import run_cycle

    cycle = run_cycle(project, backend=backend)
    assert cycle.error is None, cycle.error
    assert cycle.tracked and cycle.passed and cycle.deployed and cycle.serving_version == "1"
    trained = open_bundle(cycle.bundle_path)  # type: ignore[arg-type]
    inputs, expected = trained.samples()
    r = httpx.post(
        f"{backend.ports.url('serving')}/v2/models/{project.config.model.name}/infer",
        json={"inputs": [{"name": k, "datatype": "FP32", "shape": list(v.shape), "data": v.ravel().tolist()}
                         for k, v in inputs.items()]},
        timeout=10,
    )  # fmt: skip
    assert r.status_code == 200 and r.json()["model_version"] == "1", r.text
    label = next(o for o in r.json()["outputs"] if o["datatype"] == "INT64")
    assert label["data"] == next(v for v in expected.values() if v.dtype == np.int64).ravel().tolist()
    current = MetadataClient(backend.ports.url("metadata")).current_deployment(project.config.model.name)
    assert current is not None and current.version == "1"

    # Tracker and metadata answer at the same host addresses the local backend uses.
    run_id = _track_a_run(backend.ports.url("tracker"), tmp_path)
    meta = MetadataClient(backend.ports.url("metadata"), token_file=backend.paths.metadata_token)
    assert meta.health()
    recorded = meta.record_event({"kind": "note", "message": "kept across down/up"})
    assert recorded is not None and recorded.id is not None

    # Status from the engine: health, usage, ids; logs from the containers.
    st = backend.status()
    for svc in st.services:
        assert svc.state == "running" and svc.healthy, svc
        assert svc.ident == containers[svc.name].short_id
        assert svc.cpu_percent is not None and svc.cpu_percent >= 0
        assert svc.memory_bytes is not None and svc.memory_bytes > 1_000_000
        assert svc.started_at is not None and abs(svc.started_at - time.time()) < 600
    assert st.extra["network"] == f"mlplat-{name}"
    serving_log = list(backend.logs(Service.SERVING, tail=100))
    assert any("mlplat serving" in line for line in serving_log), serving_log
    assert list(backend.logs(Service.TRACKER, tail=5))
    following = cast(Generator[str, None, None], backend.logs(Service.METADATA, follow=True, tail=3))
    assert next(following)  # the tail comes at once; following would then wait for more
    following.close()
    assert _wait_engine_health(backend) == {s: "healthy" for s in SERVICES}

    # Idempotent: a second up keeps every container.
    ids = {s: c.id for s, c in containers.items()}
    again: list[str] = []
    backend.up(progress=again.append)
    assert {s: c.id for s, c in backend.containers().items()} == ids
    assert all("already running" in line for line in again), again

    # A dead service is replaced, the others are kept.
    containers[Service.SERVING].stop(timeout=5)
    assert backend.status().service(Service.SERVING).state == "exited"  # type: ignore[union-attr]
    backend.up()
    now = {s: c.id for s, c in backend.containers().items()}
    assert now[Service.TRACKER] == ids[Service.TRACKER] and now[Service.METADATA] == ids[Service.METADATA]
    assert now[Service.SERVING] != ids[Service.SERVING]

    # down keeps the data: after another up the run, the event and the staged bundle are there.
    backend.down()
    left = project_objects(docker_client, name)
    assert left["containers"] == [] and left["networks"] == []
    assert len(left["volumes"]) == 4
    begun = time.monotonic()
    assert backend.up().up
    print(f"up (kept volumes) to all healthy: {time.monotonic() - begun:.1f}s")
    import mlflow

    assert mlflow.MlflowClient(tracking_uri=backend.ports.url("tracker")).get_run(run_id).data.params
    events = MetadataClient(backend.ports.url("metadata")).events()
    assert any(e.message == "kept across down/up" for e in events)
    staged = backend.containers()[Service.SERVING].exec_run(["test", "-f", f"{in_container}/model.onnx"])
    assert staged.exit_code == 0

    backend.down(volumes=True)
    assert project_objects(docker_client, name) == {"containers": [], "networks": [], "volumes": []}
    assert not any(n.name == f"mlplat-{name}" for n in docker_client.networks.list())
