"""The service specs are the one description of the stack: the image (``Dockerfile`` and its
HEALTHCHECK script) must agree with them, both backends render them, and the one wait loop
reports a dead or late service with its log."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

from mlplat_runtime.errors import StackError
from mlplat_tui.project.config import load_project
from mlplat_tui.stack.base import SERVICES, Service
from mlplat_tui.stack.docker import DockerBackend
from mlplat_tui.stack.local import LocalBackend
from mlplat_tui.stack.services import (
    INTERNAL_PORTS,
    SPECS,
    Health,
    Placement,
    Probe,
    command,
    wait_healthy,
)

REPO = Path(__file__).resolve().parents[3]


def _stages() -> dict[str, list[str]]:
    """Dockerfile stage name -> its instructions, continuation lines joined."""
    text = (REPO / "Dockerfile").read_text()
    text = re.sub(r"\\\n\s*", " ", text)
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.I)
        if m:
            current = stages.setdefault(m.group(1), [])
        current.append(line)
    return stages


def _one(stage: list[str], instruction: str) -> str:
    found = [line[len(instruction) :].strip() for line in stage if line.startswith(instruction + " ")]
    assert len(found) == 1, f"{instruction}: {found}"
    return found[0]


def _env(stage: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in stage:
        if line.startswith("ENV "):
            env.update(dict(re.findall(r"(\w+)=(\S+)", line[4:])))
    return env


def _healthcheck_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("healthcheck", REPO / "dockerfiles" / "healthcheck.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


IMAGE_DEFAULT = Placement(
    python=("python",),
    host="0.0.0.0",
    admin_host="0.0.0.0",
    ports=INTERNAL_PORTS,
    data={s.data: s.mount for s in SPECS.values()},
    admin_token_file="/etc/mlplat/admin.token",
)


@pytest.mark.parametrize("service", SERVICES)
def test_the_image_healthcheck_probes_the_spec_health_path_and_port(service: Service) -> None:
    spec = SPECS[service]
    port, path = _healthcheck_module().CHECKS[str(service)]
    assert (port, path) == (INTERNAL_PORTS[spec.ports[0]], spec.health_path)
    stage = _stages()[spec.image]
    check = _one(stage, "HEALTHCHECK")
    assert "/opt/mlplat/healthcheck.py" in check
    start_period = float(re.search(r"--start-period=(\d+)s", check).group(1))  # type: ignore[union-attr]
    # The engine may call it unhealthy only after `up` would have given up waiting anyway.
    assert start_period <= spec.start_timeout_s


@pytest.mark.parametrize("service", SERVICES)
def test_the_image_exposes_the_spec_ports_and_holds_its_data_folder(service: Service) -> None:
    spec = SPECS[service]
    stages = _stages()
    exposed = {int(p) for p in _one(stages[spec.image], "EXPOSE").split()}
    assert {INTERNAL_PORTS[role] for role in spec.ports} <= exposed
    made = " ".join(line for line in stages["base"] if line.startswith("RUN "))
    assert spec.mount in made.split(), f"the base stage does not create {spec.mount}"


@pytest.mark.parametrize("image", ["tracker", "runtime"])
def test_the_image_default_command_and_environment_are_the_spec(image: str) -> None:
    stage = _stages()[image]
    env = _env(stage)
    service = Service(env["MLPLAT_SERVICE"])
    spec = SPECS[service]
    assert spec.image == image
    assert json.loads(_one(stage, "CMD")) == command(spec, IMAGE_DEFAULT)
    for key, value in spec.env.items():
        assert env.get(key) == value, f"{image} image: ENV {key} is {env.get(key)!r}, spec says {value!r}"


def test_the_tracker_runs_without_mlflow_job_execution() -> None:
    assert SPECS[Service.TRACKER].env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"


def _project(tmp_path: Path):  # type: ignore[no-untyped-def]
    (tmp_path / "mlplat.toml").write_text(
        '[project]\nname = "specs"\n[model]\nname = "m"\n[stack]\nport_base = 30000\n'
    )
    return load_project(tmp_path)


def test_both_backends_render_the_same_spec(tmp_path: Path) -> None:
    project = _project(tmp_path)
    local, docker = LocalBackend(project), DockerBackend(project)
    for service in SERVICES:
        here, there = local.command(service), docker.command(service)
        module = SPECS[service].module
        assert here[1:3] == ["-m", module] and there[:3] == ["python", "-m", module]
        if SPECS[service].identity:
            for argv in (here, there):
                i = argv.index("--project")
                assert argv[i : i + 4] == ["--project", "specs", "--project-root", str(project.root)]
    assert "--port" in local.command(Service.TRACKER)
    assert local.command(Service.TRACKER)[local.command(Service.TRACKER).index("--port") + 1] == "30000"
    assert f"sqlite:///{project.paths.tracker}/mlflow.db" in local.command(Service.TRACKER)
    assert f"{project.paths.metadata_db}" in local.command(Service.METADATA)
    assert local.health_url(Service.SERVING).endswith(SPECS[Service.SERVING].health_path)
    # Docker publishes each spec port on loopback at the project's port.
    assert docker._host_ports(Service.SERVING) == {
        "7802/tcp": ("127.0.0.1", 30002),
        "7803/tcp": ("127.0.0.1", 30003),
    }


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s


def test_wait_healthy_names_a_service_that_died_with_its_log() -> None:
    clock = _Clock()
    probes = {Service.TRACKER: Probe(Health.HEALTHY), Service.METADATA: Probe(Health.FAILED, "it exited")}
    notes: list[str] = []
    with pytest.raises(StackError) as err:
        wait_healthy(
            [Service.TRACKER, Service.METADATA],
            probes.__getitem__,
            log_tail=lambda s: f"last words of {s}",
            hint=lambda s: f"see {s}",
            say=notes.append,
            clock=clock,
            sleep=clock.sleep,
        )
    assert str(err.value).startswith("metadata failed to start: it exited. Last lines of its log:\n")
    assert "last words of metadata" in str(err.value) and err.value.hint == "see metadata"
    assert notes == ["tracker: healthy after 0.0s"]


def test_wait_healthy_gives_up_after_the_spec_timeout() -> None:
    clock = _Clock()
    notes: list[str] = []
    with pytest.raises(StackError) as err:
        wait_healthy(
            [Service.METADATA],
            lambda s: Probe(Health.STARTING),
            log_tail=lambda s: "still opening",
            hint=lambda s: "",
            say=notes.append,
            clock=clock,
            sleep=clock.sleep,
            interval_s=1.0,
        )
    timeout = SPECS[Service.METADATA].start_timeout_s
    assert f"metadata did not become healthy within {timeout:.0f}s" in str(err.value)
    assert clock.now > timeout
    assert any(n.startswith("waiting for metadata") for n in notes)
