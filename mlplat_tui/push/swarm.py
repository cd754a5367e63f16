"""The ``swarm`` engine: one Docker Swarm service per model, the image by digest, start-first.

The service spec is written out in full (``service_spec``), never left to docker-py's or the
engine's defaults (which update every replica at once and carry on past a failure):

- replicated, ``target.replicas``; the image pinned by digest; labels naming the project,
  target, model, version, bundle id and image (``current`` reads them back);
- a healthcheck on readiness (``/v2/health/ready`` through the image's stdlib
  ``healthcheck.py``: the base image has no curl);
- ``UpdateConfig(parallelism=1, order="start-first", failure_action="rollback",
  monitor`` longer than the health start period``, max_failure_ratio=0)`` and a start-first
  ``RollbackConfig``; a bounded on-failure restart policy;
- reservations and limits from ``target.resources``; GPUs as generic resources
  (``NVIDIA-GPU``) when ``target.gpu > 0``;
- ``stop_grace_period`` longer than serving's drain on SIGTERM (readiness false first, then
  in-flight requests finish);
- ``publish = "ingress"``: the routing mesh on ``target.port``; ``publish = "edge"``:
  ``endpoint_mode = "dnsrr"`` on an attachable overlay network with the HAProxy edge
  (``push/edge.py``) in front, on 127.0.0.1.

The outcome is watched with mlplat's own deadline: the service's ``UpdateStatus`` and every
task state change are recorded as ``Transition``\\ s with the engine's timestamps. Swarm's own
rollback (a replica that never turns healthy) reports ``rolled_back`` with the failed task's
error; a task that can never be scheduled (stuck PENDING, e.g. a reservation larger than any
node) is rolled back at the deadline by re-applying the spec read before the update, and the
reason names the scheduler's words. Manual rollback re-applies a spec recorded in mlplat's
history (``Deployed.spec``): Swarm itself keeps only one previous spec.

Imports docker inside functions; never imports textual.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from mlplat_runtime.errors import MlplatError, TargetError, UsageError
from mlplat_tui.push import edge
from mlplat_tui.push.engine import (
    Deployed,
    ImageRef,
    Progress,
    RolloutOutcome,
    RolloutRequest,
    RolloutResult,
    Transition,
)
from mlplat_tui.push.image import Secret, auth_config, check_login

if TYPE_CHECKING:
    import docker

    from mlplat_tui.project.config import Project
    from mlplat_tui.project.targets import SwarmTarget

__all__ = ["HealthTiming", "SwarmEngine", "service_name", "service_spec"]

_P = ParamSpec("_P")
_R = TypeVar("_R")

NS = 1_000_000_000
SERVING_PORT = 7802
LABEL_PROJECT = "io.mlplat.project"
LABEL_TARGET = "io.mlplat.target"
LABEL_MODEL = "io.mlplat.model"
LABEL_VERSION = "io.mlplat.version"
LABEL_BUNDLE = "io.mlplat.bundle"
LABEL_IMAGE = "io.mlplat.image"
LABEL_PUSHED = "io.mlplat.pushed_at"
TERMINAL = ("completed", "rollback_completed", "paused", "rollback_paused")
POLL_S = 0.5


@dataclass(frozen=True)
class HealthTiming:
    """The healthcheck and the update monitor (seconds). ``monitor`` must outlast the start
    period plus the failures that mark a replica unhealthy, or Swarm would call a replica good
    before its healthcheck could fail."""

    interval_s: float = 2.0
    timeout_s: float = 2.0
    retries: int = 3
    start_period_s: float = 20.0
    stop_grace_s: float = 30.0  # serving drains within this on SIGTERM

    @property
    def monitor_s(self) -> float:
        return self.start_period_s + self.interval_s * self.retries + 5.0


@contextlib.contextmanager
def docker_errors(target: str, what: str) -> Iterator[None]:
    """The one place the engine's Docker and HTTP errors become ``TargetError``: a refusal or a
    lost connection mid-rollout is an outcome the pipeline handles (step 8), not a traceback."""
    import docker
    import requests

    try:
        yield
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        text = str(getattr(exc, "explanation", None) or exc).strip() or type(exc).__name__
        raise TargetError(
            f"target {target}: the Docker engine failed while it {what}: {text}"[:600],
            hint="check the engine (docker_host) and try again; the outcome says what serves",
        ) from None


def _wrapped(what: str) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """``docker_errors`` around one of the engine's entry points."""

    def deco(fn: Callable[_P, _R]) -> Callable[_P, _R]:
        @functools.wraps(fn)
        def inner(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            engine = args[0]
            with docker_errors(str(getattr(engine, "name", "?")), what):
                return fn(*args, **kwargs)

        return inner

    return deco


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-") or "x"


def _short(name: str, limit: int = 63) -> str:
    if len(name) <= limit:
        return name
    tail = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: limit - 9].rstrip('-')}-{tail}"


def service_name(project: str, target: str, model: str) -> str:
    """``mlplat-<project>-<target>-<model>`` (a DNS label: at most 63 characters)."""
    return _short(f"mlplat-{_slug(project)}-{_slug(target)}-{_slug(model)}")


def _bytes(size: str) -> int:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([kmgKMG]?)", size)
    if not m:
        raise UsageError(f"a memory size like 512m or 2g, got {size!r}")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2).lower()]
    return int(float(m.group(1)) * scale)


def _parse_time(stamp: str | None) -> datetime:
    if not stamp or stamp.startswith("0001-"):
        return datetime.now(UTC)
    text = re.sub(r"(\.\d{6})\d+", r"\1", stamp.replace("Z", "+00:00"))
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return datetime.now(UTC)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _image_of(pinned: str) -> ImageRef | None:
    repo, sep, digest = pinned.partition("@")
    return ImageRef(repository=repo, digest=digest) if sep and digest.startswith("sha256:") else None


def service_spec(
    *,
    name: str,
    image: str,
    labels: dict[str, str],
    replicas: int,
    publish: str,
    port: int | None,
    network: str | None,
    cpus: float | None,
    memory: str | None,
    gpu: int,
    health: HealthTiming,
) -> dict[str, Any]:
    """The whole service spec, every field mlplat relies on set explicitly."""
    resources: dict[str, Any] = {"Limits": {}, "Reservations": {}}
    if cpus is not None:
        resources["Limits"]["NanoCPUs"] = resources["Reservations"]["NanoCPUs"] = int(cpus * NS)
    if memory is not None:
        resources["Limits"]["MemoryBytes"] = resources["Reservations"]["MemoryBytes"] = _bytes(memory)
    if gpu > 0:
        resources["Reservations"]["GenericResources"] = [
            {"DiscreteResourceSpec": {"Kind": "NVIDIA-GPU", "Value": gpu}}
        ]
    monitor = int(health.monitor_s * NS)
    endpoint: dict[str, Any]
    if publish == "edge":
        endpoint = {"Mode": "dnsrr", "Ports": []}
    else:
        ports = [] if port is None else [
            {"Protocol": "tcp", "TargetPort": SERVING_PORT, "PublishedPort": port, "PublishMode": "ingress"}
        ]  # fmt: skip
        endpoint = {"Mode": "vip", "Ports": ports}
    return {
        "Name": name,
        "Labels": labels,
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": image,
                "Labels": labels,
                "Env": ["MLPLAT_SERVICE=serving", f"MLPLAT_PORT={SERVING_PORT}"],
                "StopSignal": "SIGTERM",
                "StopGracePeriod": int(health.stop_grace_s * NS),
                "Healthcheck": {
                    "Test": ["CMD", "/opt/mlplat/bin/python", "-I", "/opt/mlplat/healthcheck.py"],
                    "Interval": int(health.interval_s * NS),
                    "Timeout": int(health.timeout_s * NS),
                    "Retries": health.retries,
                    "StartPeriod": int(health.start_period_s * NS),
                },
                "Init": True,
            },
            "Resources": resources,
            "RestartPolicy": {
                "Condition": "on-failure",
                "Delay": 2 * NS,
                "MaxAttempts": 3,
                "Window": int(health.monitor_s * NS),
            },
            "Placement": {"Constraints": []},
            "Networks": [{"Target": network}] if network else [],
            "ForceUpdate": 0,
        },
        "Mode": {"Replicated": {"Replicas": replicas}},
        "UpdateConfig": {
            "Parallelism": 1,
            "Delay": 0,
            "FailureAction": "rollback",
            "Monitor": monitor,
            "MaxFailureRatio": 0,
            "Order": "start-first",
        },
        "RollbackConfig": {
            "Parallelism": 1,
            "Delay": 0,
            "FailureAction": "pause",
            "Monitor": monitor,
            "MaxFailureRatio": 0,
            "Order": "start-first",
        },
        "EndpointSpec": endpoint,
    }


class SwarmEngine:
    """A Swarm target's engine (``push/engine.py``'s ``Engine``)."""

    kind = "swarm"
    needs_image = True

    def __init__(
        self,
        project: Project,
        name: str,
        target: SwarmTarget,
        credentials: Secret | None,
        *,
        client: docker.DockerClient | None = None,
        health: HealthTiming | None = None,
        edge_base_image: str | None = None,
    ) -> None:
        self.project_name = project.name
        self.name = name
        self.target = target
        self.credentials = credentials
        self.health = health or HealthTiming()
        self.edge_base_image = edge_base_image
        self._client = client

    # ------------------------------------------------------------------ the engine's address
    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = self._connect()
        return self._client

    def _connect(self) -> docker.DockerClient:
        import docker

        host = self.target.docker_host
        try:
            env = docker.utils.kwargs_from_env()  # DOCKER_TLS_VERIFY / DOCKER_CERT_PATH give TLS
            tls = env.get("tls", False) if host.startswith("tcp://") else False
            client = docker.DockerClient(base_url=host, tls=tls, timeout=60)
            client.ping()
        except docker.errors.DockerException as exc:
            raise TargetError(
                f"target {self.name}: no Docker engine answers at {host} ({exc})",
                hint="check the target's docker_host (and DOCKER_TLS_VERIFY / DOCKER_CERT_PATH for TLS)",
            ) from None
        return client

    @property
    def _project_label(self) -> str:
        return self.project_name

    def _service(self, model_name: str) -> str:
        return service_name(self.project_name, self.name, model_name)

    def _network(self) -> str:
        return _short(f"mlplat-{_slug(self.project_name)}-{_slug(self.name)}-net")

    def _edge(self, model_name: str) -> str:
        return f"{self._service(model_name)[:58]}-edge"

    def _base_labels(self) -> dict[str, str]:
        return {LABEL_PROJECT: self.project_name, LABEL_TARGET: self.name}

    # ------------------------------------------------------------------ Engine
    @_wrapped("checked access")
    def check_access(self) -> None:
        """The engine answers, is a Swarm manager, and the image registry takes the credentials."""
        info = self.client.info()
        swarm = info.get("Swarm") or {}
        if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
            raise TargetError(
                f"target {self.name}: the engine at {self.target.docker_host} is not a Swarm manager "
                f"(swarm: {swarm.get('LocalNodeState') or 'inactive'})",
                hint="point docker_host at a manager node, or `docker swarm init` on it",
            )
        if self.target.image_registry:
            try:
                check_login(self.client, self.target.image_registry, self.credentials)
            except TargetError as exc:
                raise TargetError(f"target {self.name}: {exc.message}", hint=exc.hint) from None

    def endpoint(self, model_name: str) -> str | None:
        if self.target.port is None:
            return None
        host = "127.0.0.1"
        m = re.match(r"^(?:tcp|ssh)://(?:[^@/]+@)?([^:/]+)", self.target.docker_host)
        if m and self.target.publish == "ingress":
            host = m.group(1)  # the mesh answers on every node; the edge on the manager's loopback
        return f"http://{host}:{self.target.port}"

    def _find(self, model_name: str) -> dict[str, Any] | None:
        import docker

        try:
            found = self.client.api.services(filters={"name": self._service(model_name)})
        except docker.errors.APIError as exc:
            raise TargetError(f"target {self.name}: the engine refused to list services: {exc}") from None
        for svc in found:
            if svc["Spec"]["Name"] == self._service(model_name):
                return dict(svc)
        return None

    @_wrapped("read what serves")
    def current(self, model_name: str) -> Deployed | None:
        svc = self._find(model_name)
        if svc is None:
            return None
        return self._deployed(svc)

    def _deployed(self, svc: dict[str, Any]) -> Deployed:
        labels = svc["Spec"].get("Labels") or {}
        tasks = self._tasks(svc["ID"])
        running = [t for t in tasks if t["DesiredState"] == "running" and t["Status"]["State"] == "running"]
        return Deployed(
            model_name=labels.get(LABEL_MODEL, ""),
            version=labels.get(LABEL_VERSION, ""),
            bundle_id=labels.get(LABEL_BUNDLE, ""),
            image=_image_of(labels.get(LABEL_IMAGE, "")),
            replicas=int(((svc["Spec"].get("Mode") or {}).get("Replicated") or {}).get("Replicas") or 0),
            healthy=sum(1 for t in running if self._healthy(t)),
            since=_parse_time(svc.get("UpdatedAt")),
            spec=svc["Spec"],
        )

    def _tasks(self, service_id: str) -> list[dict[str, Any]]:
        return [dict(t) for t in self.client.api.tasks(filters={"service": service_id})]

    def _healthy(self, task: dict[str, Any]) -> bool:
        """A running task whose container reports healthy (read where the engine can see it)."""
        import docker

        cid = ((task.get("Status") or {}).get("ContainerStatus") or {}).get("ContainerID")
        if not cid:
            return False
        try:
            state = self.client.api.inspect_container(cid)["State"]
        except docker.errors.NotFound:
            return True  # on another node: Swarm reports running only once the check passed
        return bool((state.get("Health") or {}).get("Status") == "healthy")

    def _spec_for(self, request: RolloutRequest) -> dict[str, Any]:
        if request.image is None:
            raise UsageError(
                f"target {self.name}: a Swarm rollout needs the bundle's image (pinned by digest)"
            )
        t = self.target
        if t.publish == "edge" and t.port is None:
            raise UsageError(
                f'target {self.name}: publish = "edge" needs a port (targets.{self.name}.port)',
                hint="add port = 8802 (or another free port) to the target",
            )
        labels = {
            **self._base_labels(),
            LABEL_MODEL: request.model_name,
            LABEL_VERSION: request.version,
            LABEL_BUNDLE: request.bundle_id,
            LABEL_IMAGE: request.image.pinned,
            LABEL_PUSHED: datetime.now(UTC).isoformat(timespec="seconds"),
        }
        return service_spec(
            name=self._service(request.model_name), image=request.image.pinned, labels=labels,
            replicas=t.replicas, publish=t.publish, port=t.port,
            network=self._network() if t.publish == "edge" else None,
            cpus=t.resources.cpus, memory=t.resources.memory, gpu=t.gpu, health=self.health,
        )  # fmt: skip

    @_wrapped("rolled out")
    def rollout(self, request: RolloutRequest, progress: Progress) -> RolloutResult:
        return self._apply(self._spec_for(request), request, progress, what="rollout")

    @_wrapped("rolled back")
    def rollback(self, request: RolloutRequest, progress: Progress) -> RolloutResult:
        """Re-apply the spec mlplat recorded for that version when it has one (``previous.spec``
        naming the same bundle), else the spec this engine writes for it now."""
        spec: dict[str, Any] | None = None
        recorded = request.previous
        if recorded is not None and recorded.spec and recorded.bundle_id == request.bundle_id:
            spec = json.loads(json.dumps(recorded.spec))
            spec.setdefault("Labels", {})[LABEL_PUSHED] = datetime.now(UTC).isoformat(timespec="seconds")
        return self._apply(spec or self._spec_for(request), request, progress, what="rollback")

    # ------------------------------------------------------------------ applying and watching
    def _registry_header(self) -> dict[str, str]:
        auth = auth_config(self.credentials)
        if auth is None:
            return {}
        if self.target.image_registry:
            auth = {**auth, "serveraddress": self.target.image_registry.split("/", 1)[0]}
        raw = json.dumps(auth).encode()
        return {"X-Registry-Auth": base64.urlsafe_b64encode(raw).decode()}

    def _post(self, path: str, spec: dict[str, Any], params: dict[str, Any] | None = None) -> Any:
        import docker

        api = self.client.api
        try:
            res = api._post_json(api._url(path), data=spec, params=params, headers=self._registry_header())
            return api._result(res, json=True)
        except docker.errors.APIError as exc:
            raise TargetError(
                f"target {self.name}: the engine refused the service spec: {exc.explanation or exc}",
                hint="the message names the field it refused",
            ) from None

    def _apply(
        self, spec: dict[str, Any], request: RolloutRequest, progress: Progress, what: str
    ) -> RolloutResult:
        name = spec["Name"]
        before = self._find(request.model_name)
        labels = spec.get("Labels") or {}
        if before is not None:
            old = before["Spec"].get("Labels") or {}
            same = all(old.get(k) == labels.get(k) for k in (LABEL_BUNDLE, LABEL_IMAGE, LABEL_VERSION))
            if same and self._converged(before, labels.get(LABEL_IMAGE, "")):
                progress(f"[swarm] {name} already serves version {request.version}; nothing to roll out")
                if self.target.publish == "edge":
                    self._ensure_edge(request.model_name, progress)
                return RolloutResult(
                    RolloutOutcome.COMPLETED,
                    "",
                    (),
                    self._deployed(before),
                    self.endpoint(request.model_name),
                )
        if self.target.publish == "edge":
            edge.ensure_network(self.client, self._network(), self._base_labels())
        watch = _Watch(self, progress)
        deadline = time.monotonic() + request.deadline_s
        if before is None:
            progress(f"[swarm] creating {name} ({spec['Mode']['Replicated']['Replicas']} replicas, {what})")
            created = self._post("/services/create", spec)
            service_id = str(created["ID"])
            result = self._wait_created(service_id, spec, deadline, watch, request)
        else:
            service_id = before["ID"]
            progress(f"[swarm] updating {name} to version {request.version} (start-first, one at a time)")
            prior = (before.get("UpdateStatus") or {}).get("StartedAt")
            self._post(f"/services/{service_id}/update", spec, {"version": before["Version"]["Index"]})
            result = self._wait_updated(service_id, prior, deadline, watch, before["Spec"], request)
        if result.outcome is RolloutOutcome.COMPLETED and self.target.publish == "edge":
            try:
                self._ensure_edge(request.model_name, progress)
            except MlplatError as exc:  # the new version serves behind no edge: the caller rolls back
                raise TargetError(
                    f"target {self.name}: version {request.version} is up, but its edge did not start: "
                    f"{exc.message}",
                    hint=exc.hint,
                ) from None
        return result

    def _ensure_edge(self, model_name: str, progress: Progress) -> None:
        assert self.target.port is not None
        edge.ensure_edge(
            self.client, name=self._edge(model_name), service=self._service(model_name),
            network=self._network(), port=self.target.port, replicas=self.target.replicas,
            labels={**self._base_labels(), LABEL_MODEL: model_name}, progress=progress,
            base_image=self.edge_base_image,
        )  # fmt: skip

    def _converged(self, svc: dict[str, Any], pinned: str) -> bool:
        want = int(svc["Spec"]["Mode"]["Replicated"]["Replicas"])
        state = (svc.get("UpdateStatus") or {}).get("State")
        if state not in (None, "completed"):
            return False
        tasks = [
            t
            for t in self._tasks(svc["ID"])
            if t["DesiredState"] == "running"
            and t["Status"]["State"] == "running"
            and t["Spec"]["ContainerSpec"]["Image"] == pinned
        ]
        return len(tasks) == want and all(self._healthy(t) for t in tasks)

    def _inspect(self, service_id: str) -> dict[str, Any]:
        return dict(self.client.api.inspect_service(service_id))

    def _wait_created(
        self, service_id: str, spec: dict[str, Any], deadline: float, watch: _Watch, request: RolloutRequest
    ) -> RolloutResult:
        pinned = spec["TaskTemplate"]["ContainerSpec"]["Image"]
        while True:
            svc = self._inspect(service_id)
            watch.see(svc)
            if self._converged(svc, pinned):
                watch.progress(f"[swarm] every replica of version {request.version} is healthy")
                return RolloutResult(
                    RolloutOutcome.COMPLETED, "", watch.record(), self._deployed(svc),
                    self.endpoint(request.model_name),
                )  # fmt: skip
            if time.monotonic() > deadline:
                why = watch.stuck_reason() or "the replicas did not turn healthy"
                reason = f"mlplat's deadline of {request.deadline_s:.0f}s passed: {why}"
                watch.progress(
                    f"[swarm] {reason}; removing the new service, edge and network (nothing served before)"
                )
                self.remove(request.model_name)
                watch.add("removed", reason, spec["Name"])
                return RolloutResult(RolloutOutcome.ROLLED_BACK, reason, watch.record(), None, None)
            time.sleep(POLL_S)

    def _wait_updated(
        self,
        service_id: str,
        prior: str | None,
        deadline: float,
        watch: _Watch,
        previous_spec: dict[str, Any],
        request: RolloutRequest,
    ) -> RolloutResult:
        while True:
            svc = self._inspect(service_id)
            watch.see(svc)
            status = svc.get("UpdateStatus") or {}
            fresh = status.get("StartedAt") != prior
            state = status.get("State")
            if fresh and state == "completed":
                pinned = svc["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
                if self._converged(svc, pinned):
                    watch.progress(
                        f"[swarm] update completed: every replica serves version {request.version}"
                    )
                    return RolloutResult(
                        RolloutOutcome.COMPLETED, "", watch.record(), self._deployed(svc),
                        self.endpoint(request.model_name),
                    )  # fmt: skip
            elif fresh and state == "rollback_completed":
                reason = f"Swarm rolled back: {status.get('Message', '')}".strip()
                failed = watch.failure_reason()
                if failed:
                    reason += f" ({failed})"
                watch.progress(f"[swarm] {reason}")
                return RolloutResult(
                    RolloutOutcome.ROLLED_BACK, reason, watch.record(), self._deployed(svc),
                    self.endpoint(request.model_name),
                )  # fmt: skip
            elif fresh and state in ("paused", "rollback_paused"):
                reason = f"Swarm {state.replace('_', ' ')}: {status.get('Message', '')}"
                if state == "paused":
                    return self._deadline_rollback(service_id, previous_spec, watch, request, reason)
                return RolloutResult(
                    RolloutOutcome.FAILED, reason, watch.record(), self._deployed(svc),
                    self.endpoint(request.model_name),
                )  # fmt: skip
            if time.monotonic() > deadline:
                why = watch.stuck_reason() or watch.failure_reason() or "the update did not finish"
                reason = f"mlplat's deadline of {request.deadline_s:.0f}s passed: {why}"
                return self._deadline_rollback(service_id, previous_spec, watch, request, reason)
            time.sleep(POLL_S)

    def _deadline_rollback(
        self,
        service_id: str,
        previous_spec: dict[str, Any],
        watch: _Watch,
        request: RolloutRequest,
        reason: str,
    ) -> RolloutResult:
        """Put the spec read before the update back, and wait for it (a budget of its own)."""
        watch.progress(f"[swarm] {reason}; re-applying the previous spec")
        watch.add("mlplat_rollback", reason, previous_spec.get("Name", ""))
        svc = self._inspect(service_id)
        prior = (svc.get("UpdateStatus") or {}).get("StartedAt")
        self._post(f"/services/{service_id}/update", previous_spec, {"version": svc["Version"]["Index"]})
        pinned = previous_spec["TaskTemplate"]["ContainerSpec"]["Image"]
        budget = time.monotonic() + max(60.0, 2 * self.health.monitor_s * self.target.replicas + 30.0)
        while time.monotonic() < budget:
            svc = self._inspect(service_id)
            watch.see(svc)
            status = svc.get("UpdateStatus") or {}
            if (
                status.get("StartedAt") != prior
                and status.get("State") == "completed"
                and self._converged(svc, pinned)
            ):
                return RolloutResult(
                    RolloutOutcome.ROLLED_BACK, reason, watch.record(), self._deployed(svc),
                    self.endpoint(request.model_name),
                )  # fmt: skip
            time.sleep(POLL_S)
        return RolloutResult(
            RolloutOutcome.FAILED,
            f"{reason}; re-applying the previous spec did not converge either",
            watch.record(),
            self._deployed(self._inspect(service_id)),
            self.endpoint(request.model_name),
        )

    def _remove(self, service_id: str) -> None:
        import docker

        with contextlib.suppress(docker.errors.NotFound):
            self.client.api.remove_service(service_id)

    @_wrapped("removed the model")
    def remove(self, model_name: str) -> None:
        """Take the model off the target: its service and edge (the network when unused)."""
        import docker

        svc = self._find(model_name)
        if svc is not None:
            self._remove(svc["ID"])
        edge.remove_edge(self.client, self._edge(model_name))
        with contextlib.suppress(docker.errors.APIError):
            for net in self.client.networks.list(names=[self._network()]):
                if net.name == self._network():
                    net.remove()


class _Watch:
    """Every state change seen while watching one rollout, in the order seen."""

    def __init__(self, engine: SwarmEngine, progress: Progress) -> None:
        self.engine = engine
        self.progress = progress
        self.transitions: list[Transition] = []
        self._update: tuple[str, str] | None = None
        self._tasks: dict[str, str] = {}
        self._errors: dict[str, str] = {}
        self._pending: dict[str, str] = {}

    def add(self, state: str, message: str, subject: str, at: datetime | None = None) -> None:
        self.transitions.append(
            Transition(at=at or datetime.now(UTC), state=state, message=message, subject=subject)
        )

    def see(self, svc: dict[str, Any]) -> None:
        status = svc.get("UpdateStatus") or {}
        if status:
            key = (str(status.get("State")), str(status.get("Message", "")))
            if key != self._update:
                self._update = key
                at = _parse_time(status.get("CompletedAt") or status.get("StartedAt"))
                self.add(key[0], key[1], f"service {svc['Spec']['Name']}", at)
                self.progress(f"[swarm] update {key[0]}: {key[1]}")
        for task in self.engine._tasks(svc["ID"]):
            st = task.get("Status") or {}
            state = str(st.get("State"))
            tid = str(task["ID"])
            # The scheduler's reason (Err) often comes a moment after the state: a change too.
            message = str(st.get("Err") or st.get("Message") or "")
            if self._tasks.get(tid) == f"{state}\0{message}":
                continue
            self._tasks[tid] = f"{state}\0{message}"
            image = str(task["Spec"]["ContainerSpec"]["Image"])
            version = (task["Spec"]["ContainerSpec"].get("Labels") or {}).get(LABEL_VERSION, "?")
            subject = f"task {task.get('Slot', '?')}.{tid[:12]} v{version} {image.rpartition('@')[2][:19]}"
            self.add(state, message, subject, _parse_time(st.get("Timestamp")))
            self.progress(f"[swarm] {subject}: {state}" + (f" ({message})" if message else ""))
            if state in ("failed", "rejected") and st.get("Err"):
                self._errors[tid] = f"task {tid[:12]}: {st['Err']}"
            if state == "pending" and task["DesiredState"] == "running":
                self._pending[tid] = f"task {tid[:12]} pending: {message or 'not scheduled'}"
            else:
                self._pending.pop(tid, None)

    def failure_reason(self) -> str:
        return "; ".join(list(self._errors.values())[-2:])

    def stuck_reason(self) -> str:
        return "; ".join(list(self._pending.values())[-2:])

    def record(self) -> tuple[Transition, ...]:
        return tuple(self.transitions)
