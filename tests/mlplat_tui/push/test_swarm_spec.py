"""The swarm engine's written-out spec and the edge's HAProxy configuration, without an engine:
every field mlplat relies on is set explicitly, so no engine default decides how an update runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlplat_runtime.errors import UsageError
from mlplat_tui.push.edge import proxy_config
from mlplat_tui.push.swarm import HealthTiming, service_name, service_spec

PINNED = "127.0.0.1:5001/mlplat/m@sha256:" + "a" * 64


def _spec(**kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "name": "mlplat-p-prod-m", "image": PINNED, "labels": {"io.mlplat.version": "3"}, "replicas": 2,
        "publish": "edge", "port": 8802, "network": "mlplat-p-prod-net", "cpus": None, "memory": None,
        "gpu": 0, "health": HealthTiming(),
    }  # fmt: skip
    return service_spec(**{**args, **kw})


def test_update_and_rollback_are_start_first_one_at_a_time_and_health_gated() -> None:
    spec = _spec()
    health = HealthTiming()
    assert spec["UpdateConfig"] == {
        "Parallelism": 1, "Delay": 0, "FailureAction": "rollback", "Monitor": int(health.monitor_s * 1e9),
        "MaxFailureRatio": 0, "Order": "start-first",
    }  # fmt: skip
    assert spec["RollbackConfig"]["Order"] == "start-first" and spec["RollbackConfig"]["Parallelism"] == 1
    check = spec["TaskTemplate"]["ContainerSpec"]["Healthcheck"]
    assert check["Test"][-1] == "/opt/mlplat/healthcheck.py"  # readiness, with the image's python
    # the monitor outlasts the start period plus the failures that mark a replica unhealthy
    assert spec["UpdateConfig"]["Monitor"] > check["StartPeriod"] + check["Interval"] * check["Retries"]
    assert spec["TaskTemplate"]["RestartPolicy"]["Condition"] == "on-failure"
    assert spec["TaskTemplate"]["RestartPolicy"]["MaxAttempts"] > 0
    assert spec["TaskTemplate"]["ContainerSpec"]["StopGracePeriod"] >= 10 * 10**9  # room to drain
    assert spec["TaskTemplate"]["ContainerSpec"]["Image"] == PINNED
    assert spec["Mode"] == {"Replicated": {"Replicas": 2}}


def test_resources_are_reserved_and_limited_and_gpus_are_generic_resources() -> None:
    spec = _spec(cpus=1.5, memory="512m", gpu=2)
    res = spec["TaskTemplate"]["Resources"]
    assert res["Limits"] == {"NanoCPUs": 1_500_000_000, "MemoryBytes": 512 << 20}
    assert (
        res["Reservations"]["NanoCPUs"] == 1_500_000_000 and res["Reservations"]["MemoryBytes"] == 512 << 20
    )
    assert res["Reservations"]["GenericResources"] == [
        {"DiscreteResourceSpec": {"Kind": "NVIDIA-GPU", "Value": 2}}
    ]
    assert "GenericResources" not in _spec()["TaskTemplate"]["Resources"]["Reservations"]
    with pytest.raises(UsageError):
        _spec(memory="lots")


def test_edge_is_dnsrr_on_the_overlay_and_ingress_publishes_the_port() -> None:
    edge = _spec()
    assert edge["EndpointSpec"] == {"Mode": "dnsrr", "Ports": []}
    assert edge["TaskTemplate"]["Networks"] == [{"Target": "mlplat-p-prod-net"}]
    ingress = _spec(publish="ingress", network=None)
    assert ingress["EndpointSpec"]["Mode"] == "vip"
    assert ingress["EndpointSpec"]["Ports"] == [
        {"Protocol": "tcp", "TargetPort": 7802, "PublishedPort": 8802, "PublishMode": "ingress"}
    ]


def test_the_proxy_resolves_tasks_checks_readiness_and_retries_once_elsewhere() -> None:
    text = proxy_config("mlplat-p-prod-m", replicas=2)
    assert "nameserver docker 127.0.0.11:53" in text
    assert "server-template replica 6 tasks.mlplat-p-prod-m:7802" in text  # spare slots for start-first
    assert "option httpchk GET /v2/health/ready" in text
    assert "retries 1" in text and "option redispatch" in text


def test_service_names_are_dns_labels() -> None:
    assert service_name("Shop", "prod", "churn_classifier") == "mlplat-shop-prod-churn-classifier"
    long = service_name("p" * 60, "prod", "m" * 60)
    assert len(long) <= 63 and long != service_name("p" * 60, "prod", "m" * 59)


# -- docker errors become TargetError (a fake of the docker SDK client: the third party failing) --


class _FailingApi:
    """docker-py's low-level client, failing the way a lost or refusing engine does."""

    def __init__(self, error: Exception, *, services: list[dict[str, Any]] | None = None) -> None:
        self.error = error
        self._services = services

    def services(self, filters: dict[str, str]) -> list[dict[str, Any]]:
        if self._services is None:
            raise self.error
        return self._services

    def tasks(self, filters: dict[str, str]) -> list[dict[str, Any]]:
        raise self.error

    def inspect_service(self, service_id: str) -> dict[str, Any]:
        raise self.error

    # the raw calls the engine posts its written-out spec with (services/create answers)
    def _url(self, path: str) -> str:
        return path

    def _post_json(self, url: str, **_: Any) -> str:
        return url

    def _result(self, res: str, json: bool) -> dict[str, str]:
        return {"ID": "created-1"}


class _FailingClient:
    def __init__(self, api: _FailingApi) -> None:
        self.api = api

    def info(self) -> dict[str, Any]:
        raise self.api.error


def _engine(client: Any) -> Any:
    from mlplat_tui.project.targets import SwarmTarget
    from mlplat_tui.push.swarm import SwarmEngine

    class _Project:
        name = "shop"

    target = SwarmTarget.model_validate(
        {"kind": "swarm", "stage": "prod", "registry": "http://127.0.0.1:5000", "docker_host": "unix:///x"}
    )
    return SwarmEngine(_Project(), "prod", target, None, client=client)  # type: ignore[arg-type]


def _errors() -> list[Exception]:
    import docker
    import requests

    return [
        docker.errors.APIError("500 Server Error: rpc error: code = Unavailable"),
        requests.exceptions.ConnectionError("Connection aborted: the engine went away"),
    ]


@pytest.mark.parametrize("which", [0, 1])
def test_a_docker_or_connection_error_is_a_target_error(which: int) -> None:
    from mlplat_runtime.errors import TargetError

    error = _errors()[which]
    engine = _engine(_FailingClient(_FailingApi(error)))
    with pytest.raises(TargetError, match="target prod: the Docker engine failed while it checked access"):
        engine.check_access()
    # a service that is found, then its tasks cannot be read (the call mid-way through `current`)
    found = [{"ID": "s1", "Spec": {"Name": "mlplat-shop-prod-m", "Labels": {}}, "UpdatedAt": None}]
    engine = _engine(_FailingClient(_FailingApi(error, services=found)))
    with pytest.raises(TargetError, match="read what serves") as info:
        engine.current("m")
    assert str(error).split(":")[0] in str(info.value)


def test_an_engine_lost_mid_rollout_is_a_target_error_not_a_traceback() -> None:
    from mlplat_runtime.errors import TargetError
    from mlplat_tui.push.engine import ImageRef, RolloutRequest

    error = _errors()[1]
    engine = _engine(_FailingClient(_FailingApi(error, services=[])))  # nothing serves yet
    request = RolloutRequest(
        model_name="m", version="1", bundle_id="sha256:" + "b" * 64, bundle_path=Path("."),
        image=ImageRef("127.0.0.1:5001/mlplat/m", "sha256:" + "a" * 64), previous=None, deadline_s=5,
    )  # fmt: skip
    with pytest.raises(TargetError, match="failed while it rolled out: Connection aborted"):
        engine.rollout(request, lambda _: None)  # created, then watching it loses the engine
