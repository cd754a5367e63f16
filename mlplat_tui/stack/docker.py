"""The ``docker`` backend: the three services as containers of the project's images, the same
images a production cluster runs (``Dockerfile``, ``mlplat images build``).

Per project ``P``: containers ``mlplat-P-tracker|metadata|serving`` on the network ``mlplat-P``,
labelled ``io.mlplat.project`` / ``io.mlplat.service`` (plus the project folder and a digest of
the container's settings), named volumes ``mlplat-P-tracker|metadata|bundles`` for the MLflow
store, the DuckDB file and staged bundles, ports published on ``[stack] host`` (127.0.0.1)
at the same numbers as the local backend, so clients cannot tell the backends apart. The
stack's two tokens, ``.mlplat/stack/admin.token`` (serving's admin API) and ``metadata.token``
(metadata writes), live on the host (0600) and are copied into their one container before it
starts: never an environment variable, which ``docker inspect`` shows.

What each service runs, its ports, health path, start timeout and data folder come from
``stack/services.py`` (the specs the local backend renders too). ``up`` takes the project lock
(shared with the local backend), refuses while the local stack is up, and does not restore
serving (``deploy.restore.up_and_restore`` does, above this layer).

``up`` is idempotent and all-or-nothing: it checks images, names and ports before creating
anything, keeps running containers whose settings are unchanged, and on any failure removes
what it created and raises ``StackError`` with the failing service's log tail. A container
whose settings digest (image, command, ports, GPU, token) differs from what ``up`` would
create now is replaced, so ``mlplat images build`` then ``mlplat up`` runs the new images.
GPU: serving gets every NVIDIA GPU when ``[stack] gpu = "on"``, or ``"auto"`` finds one
(nvidia-smi) and the engine can pass it (nvidia runtime or container toolkit hook).

Engine plumbing (connecting, stats, tars, bundle staging) is in ``mlplat_tui.docker.engine``.
Imports docker inside functions (``mlplat --help`` stays fast); never imports textual.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlplat_runtime.errors import NotFoundError, StackError
from mlplat_tui.docker.engine import (
    connect,
    engine_errors,
    engine_has_gpu_support,
    epoch,
    explain,
    stage_bundle,
    start_hint,
    tar_bytes,
    usage,
)
from mlplat_tui.project.config import Project
from mlplat_tui.stack.base import (
    SERVICES,
    Ports,
    Progress,
    Service,
    ServiceStatus,
    StackStatus,
    foreign_holder,
    port_clash,
    port_in_use,
    refuse_other_backend,
)
from mlplat_tui.stack.services import (
    INTERNAL_PORTS,
    SPECS,
    Health,
    Placement,
    Probe,
    command,
    wait_healthy,
)
from mlplat_tui.stack.state import forget_backend, project_lock, record_backend, remove_data

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container

LABEL_PROJECT = "io.mlplat.project"
LABEL_SERVICE = "io.mlplat.service"
LABEL_ROOT = "io.mlplat.root"
LABEL_SPEC = "io.mlplat.spec"
# service -> (volume suffix, mount point): the spec's data folder, one named volume each
VOLUMES = {s: (SPECS[s].data, SPECS[s].mount) for s in SERVICES}
# The prediction log: serving writes it, the metadata service's monitor reads it (one volume in both).
MONITORING_VOLUME = ("monitoring", "/var/lib/mlplat/monitoring")
MONITORING_USERS = (Service.SERVING, Service.METADATA)
TOKEN_DIR_IN_CONTAINER = "/etc/mlplat"
TOKEN_IN_CONTAINER = f"{TOKEN_DIR_IN_CONTAINER}/admin.token"
METADATA_TOKEN_IN_CONTAINER = f"{TOKEN_DIR_IN_CONTAINER}/metadata.token"
# Two secrets: serving's admin API (swap the model) and the metadata service's writes.
TOKEN_HOLDERS = {Service.SERVING: "admin.token", Service.METADATA: "metadata.token"}


def _quiet(_: str) -> None:
    return None


class DockerBackend:
    """Containers of the project's images; see the module docstring for names and guarantees."""

    name = "docker"

    def __init__(self, project: Project, *, client: docker.DockerClient | None = None) -> None:
        self.project = project
        self.ports = Ports.from_project(project)
        self.paths = project.paths
        self.dir = project.paths.stack
        self._client = client
        # Inside a container every service binds 0.0.0.0 on the spec's ports; only the published
        # host ports, on [stack] host, reach it from outside.
        self.placement = Placement(
            python=("python",),
            host="0.0.0.0",
            admin_host="0.0.0.0",
            ports=INTERNAL_PORTS,
            data={
                **{spec.data: spec.mount for spec in SPECS.values()},
                MONITORING_VOLUME[0]: MONITORING_VOLUME[1],
            },
            admin_token_file=TOKEN_IN_CONTAINER,
            metadata_token_file=METADATA_TOKEN_IN_CONTAINER,
            project=project.name,
            project_root=str(project.root),
            serving_workers=project.config.serving.workers,
            serving_log_flags=project.config.monitor.serving_log_flags(),
        )

    # -- names ---------------------------------------------------------------------------
    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = connect()
        return self._client

    @property
    def network_name(self) -> str:
        return f"mlplat-{self.project.name}"

    def container_name(self, service: Service) -> str:
        return f"mlplat-{self.project.name}-{service}"

    def volume_name(self, service: Service) -> str:
        return f"mlplat-{self.project.name}-{VOLUMES[service][0]}"

    @property
    def monitoring_volume(self) -> str:
        return f"mlplat-{self.project.name}-{MONITORING_VOLUME[0]}"

    @property
    def admin_token_file(self) -> Path:
        return self.paths.admin_token

    def image(self, service: Service) -> str:
        s = self.project.config.stack
        return s.tracker_image if service is Service.TRACKER else s.runtime_image

    def _labels(self, **extra: str) -> dict[str, str]:
        return {LABEL_PROJECT: self.project.name, LABEL_ROOT: str(self.project.root), **extra}

    def _host_ports(self, service: Service) -> dict[str, tuple[str, int]]:
        host = "127.0.0.1" if self.ports.host == "localhost" else self.ports.host
        published = {
            "tracker": self.ports.tracker,
            "metadata": self.ports.metadata,
            "serving": self.ports.serving,
            "admin": self.ports.admin,
        }
        # The admin API takes loads: loopback only, whatever [stack] host says.
        return {
            f"{INTERNAL_PORTS[role]}/tcp": ("127.0.0.1" if role == "admin" else host, published[role])
            for role in SPECS[service].ports
        }

    def command(self, service: Service) -> list[str]:
        """Each service's entry point inside its container (``stack/services.py``)."""
        return command(SPECS[service], self.placement)

    # -- helpers -------------------------------------------------------------------------
    def _tokens(self) -> dict[Service, str]:
        """Each token holder's token, created on the host (0600) when missing."""
        from mlplat_runtime.serving.admin import ensure_admin_token

        self.dir.mkdir(parents=True, exist_ok=True)
        files = {Service.SERVING: self.admin_token_file, Service.METADATA: self.paths.metadata_token}
        return {service: ensure_admin_token(files[service])[0] for service in TOKEN_HOLDERS}

    def _want_gpu(self) -> bool:
        mode = self.project.config.stack.gpu
        if mode != "auto":
            return mode == "on"
        from mlplat_runtime.providers import gpu_info

        return gpu_info() is not None and engine_has_gpu_support(self.client.info())

    def containers(self) -> dict[Service, Container]:
        found = self.client.containers.list(
            all=True, filters={"label": f"{LABEL_PROJECT}={self.project.name}"}
        )
        out: dict[Service, Container] = {}
        for c in found:
            svc = (c.labels or {}).get(LABEL_SERVICE)
            if svc in {s.value for s in SERVICES} and c.name == self.container_name(Service(svc)):
                out[Service(svc)] = c
        return out

    def _spec(
        self, service: Service, image_id: str, gpu: bool, token: str | None
    ) -> tuple[dict[str, Any], str]:
        import docker

        path = VOLUMES[service][1]
        kwargs: dict[str, Any] = {
            "image": image_id,
            "command": self.command(service),
            "name": self.container_name(service),
            "hostname": str(service),
            # MLPLAT_SERVICE and MLPLAT_PORT tell the image's HEALTHCHECK what to probe.
            "environment": {
                "MLPLAT_SERVICE": str(service),
                "MLPLAT_PORT": str(INTERNAL_PORTS[SPECS[service].ports[0]]),
                **SPECS[service].env,
            },
            "ports": self._host_ports(service),
            "volumes": {
                self.volume_name(service): {"bind": path, "mode": "rw"},
                **(
                    {self.monitoring_volume: {"bind": MONITORING_VOLUME[1], "mode": "rw"}}
                    if service in MONITORING_USERS
                    else {}
                ),
            },
            "network": self.network_name,
            # Other containers on the network reach it by service name (tracker, metadata, serving).
            "networking_config": {
                self.network_name: self.client.api.create_endpoint_config(aliases=[str(service)])
            },
            "init": True,  # forwards SIGTERM (python as PID 1 ignores it) and reaps children
            "detach": True,
        }
        if gpu and service is Service.SERVING:
            kwargs["device_requests"] = [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])]
        described = {k: v for k, v in kwargs.items() if k != "device_requests"}
        described["gpu"] = "device_requests" in kwargs
        if token is not None:
            described["token"] = hashlib.sha256(token.encode()).hexdigest()
        digest = hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()[:16]
        kwargs["labels"] = self._labels(**{LABEL_SERVICE: str(service), LABEL_SPEC: digest})
        return kwargs, digest

    def _log_tail(self, container: Container, lines: int = 20) -> str:
        with contextlib.suppress(Exception):
            return bytes(container.logs(tail=lines)).decode("utf-8", "replace").rstrip()
        return "(no log)"

    def _probe(self, service: Service, timeout: float = 1.0) -> bool:
        import httpx

        url = self.ports.url(service) + SPECS[service].health_path
        try:
            return httpx.get(url, timeout=timeout, trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False

    # -- lifecycle -----------------------------------------------------------------------
    def _preflight(self) -> tuple[dict[Service, str], dict[Service, Container]]:
        """Images present, no foreign owner of our names: checked before anything is created."""
        import docker

        client = self.client
        image_ids: dict[Service, str] = {}
        missing: dict[str, list[str]] = {}
        for service in SERVICES:
            tag = self.image(service)
            try:
                image_ids[service] = client.images.get(tag).id
            except docker.errors.ImageNotFound:
                missing.setdefault(tag, []).append(str(service))
        if missing:
            what = "; ".join(f"{tag} (for {', '.join(svcs)})" for tag, svcs in missing.items())
            raise StackError(
                f"image not found in the Docker engine: {what}",
                hint="build the images first: `mlplat images build` (see docs/docker.md)",
            )
        ours = self.containers()
        for service in SERVICES:
            if service in ours:
                root = (ours[service].labels or {}).get(LABEL_ROOT)
                if root and root != str(self.project.root):
                    raise StackError(
                        f"a stack named '{self.project.name}' from another folder ({root}) owns "
                        f"the container {self.container_name(service)}",
                        hint="run `mlplat down` in that folder, or give this project another [project] name",
                    )
                continue
            with contextlib.suppress(docker.errors.NotFound):
                other = client.containers.get(self.container_name(service))
                raise StackError(
                    f"a container named {other.name} already exists and is not part of mlplat's "
                    f"'{self.project.name}' stack (image {other.attrs.get('Config', {}).get('Image', '?')})",
                    hint=f"remove or rename it (`docker rm -f {other.name}`), or give this project another "
                    "[project] name in mlplat.toml",
                )
        for net in client.networks.list(names=[self.network_name]):
            if (
                net.name == self.network_name
                and (net.attrs.get("Labels") or {}).get(LABEL_PROJECT) != self.project.name
            ):
                raise StackError(
                    f"a network named {self.network_name} already exists and was not made by mlplat",
                    hint=f"remove it (`docker network rm {self.network_name}`) or rename this project",
                )
        for service in SERVICES:
            with contextlib.suppress(docker.errors.NotFound):
                vol = client.volumes.get(self.volume_name(service))
                if (vol.attrs.get("Labels") or {}).get(LABEL_PROJECT) != self.project.name:
                    raise StackError(
                        f"a volume named {vol.name} already exists and was not made by mlplat; "
                        "mlplat will not write into it",
                        hint=f"remove or rename it (`docker volume rm {vol.name}`), or rename this project",
                    )
        return image_ids, ours

    def up(self, progress: Progress | None = None) -> StackStatus:
        say = progress or _quiet
        with project_lock(self.project):
            refuse_other_backend(self.project, "docker")
            image_ids, ours = self._preflight()
            tokens = self._tokens()
            gpu = self._want_gpu()
            specs = {s: self._spec(s, image_ids[s], gpu, tokens.get(s)) for s in SERVICES}
            keep: list[Service] = []
            replace: list[Service] = []
            for service in SERVICES:
                c = ours.get(service)
                if c is None:
                    continue
                if c.status == "running" and (c.labels or {}).get(LABEL_SPEC) == specs[service][1]:
                    keep.append(service)
                    say(f"{service}: container {c.name} already running")
                else:
                    replace.append(service)
            to_create = [s for s in SERVICES if s not in keep]
            # Ports first: a clash must leave nothing behind, and our own old containers
            # (about to be replaced) hold their ports legitimately.
            held = {
                int(b["HostPort"])
                for s in replace
                for bs in (ours[s].attrs.get("HostConfig", {}).get("PortBindings") or {}).values()
                for b in bs or []
            }
            for service in to_create:
                for host, port in specs[service][0]["ports"].values():
                    if port not in held and port_in_use(host, port):
                        raise port_clash(self.project, self.ports, service, host, port)
            for service in replace:
                say(f"{service}: settings or image changed, or not running: recreating {ours[service].name}")
                ours[service].remove(force=True)
            created: list[Container] = []
            made_network = False
            made_volumes: list[str] = []
            try:
                made_network = self._ensure_network()
                made_volumes = self._ensure_volumes()
                for service in to_create:
                    created.append(self._create(service, specs[service][0], tokens.get(service), say))
                self._wait_healthy(keep + to_create, say, announce=set(to_create))
            except BaseException as exc:
                tails = {c.name: self._log_tail(c) for c in created}
                self._remove(created, made_volumes, made_network)
                if created or made_network or made_volumes:
                    say("removed what this `up` created")
                if isinstance(exc, StackError) or not isinstance(exc, Exception):
                    raise
                import docker

                if isinstance(exc, docker.errors.DockerException):
                    logs = "\n".join(f"--- {n} ---\n{t}" for n, t in tails.items() if t)
                    raise StackError(
                        f"the Docker engine refused: {exc}" + (f"\n{logs}" if logs else ""),
                        hint="see the message above; `mlplat up` again once fixed",
                    ) from None
                raise
            record_backend(self.paths, "docker")
        # Memory only: a CPU sample costs the engine a second per container, and up is timed.
        return self.status(cpu=False)

    def _ensure_network(self) -> bool:
        if any(n.name == self.network_name for n in self.client.networks.list(names=[self.network_name])):
            return False
        self.client.networks.create(self.network_name, driver="bridge", labels=self._labels())
        return True

    def _ensure_volumes(self) -> list[str]:
        import docker

        made = []
        wanted = [(self.volume_name(s), VOLUMES[s][0]) for s in SERVICES]
        for name, data in [*wanted, (self.monitoring_volume, MONITORING_VOLUME[0])]:
            try:
                self.client.volumes.get(name)
            except docker.errors.NotFound:
                self.client.volumes.create(name, labels=self._labels(**{"io.mlplat.volume": data}))
                made.append(name)
        return made

    def _create(
        self, service: Service, kwargs: dict[str, Any], token: str | None, say: Progress
    ) -> Container:
        import docker

        container = self.client.containers.create(**kwargs)
        try:
            if token is not None:
                blob = tar_bytes(TOKEN_HOLDERS[service], (token + "\n").encode(), 0o600)
                container.put_archive(TOKEN_DIR_IN_CONTAINER, blob)
            container.start()
        except docker.errors.APIError as exc:
            container.remove(force=True)
            raise StackError(f"cannot start {service}: {explain(exc)}", hint=start_hint(exc)) from None
        say(f"{service}: started {container.name} ({kwargs['image'][7:19]}) on {self.ports.url(service)}")
        return container

    def _wait_healthy(self, services: list[Service], say: Progress, announce: set[Service]) -> None:
        wait_healthy(
            services,
            self._start_probe,
            log_tail=self._service_log_tail,
            hint=lambda s: "the stack was removed again; fix the cause shown in the log, then `mlplat up`",
            say=say,
            announce=[s for s in services if s in announce],
            interval_s=0.2,
        )

    def _service_log_tail(self, service: Service) -> str:
        c = self.containers().get(service)
        return self._log_tail(c) if c is not None else "(no log)"

    def _start_probe(self, service: Service) -> Probe:
        c = self.containers().get(service)
        if c is None:
            raise StackError(
                f"{service}: its container {self.container_name(service)} disappeared",
                hint="something removed it; run `mlplat up` again",
            )
        state = c.attrs.get("State", {})
        health = (state.get("Health") or {}).get("Status")
        if c.status in ("exited", "dead"):
            return Probe(Health.FAILED, f"its container exited with status {state.get('ExitCode')}")
        if health == "unhealthy":
            return Probe(Health.FAILED, "its container reported unhealthy")
        if health == "healthy" or (c.status == "running" and self._probe(service, timeout=0.5)):
            return Probe(Health.HEALTHY)
        return Probe(Health.STARTING)

    def _remove(self, containers: list[Container], volumes: list[str], network: bool) -> None:
        import docker

        for c in containers:
            with contextlib.suppress(docker.errors.DockerException):
                c.remove(force=True)
        for name in volumes:
            with contextlib.suppress(docker.errors.DockerException):
                self.client.volumes.get(name).remove(force=True)
        if network:
            for net in self.client.networks.list(names=[self.network_name]):
                with contextlib.suppress(docker.errors.DockerException):
                    net.remove()

    def down(self, *, volumes: bool = False, progress: Progress | None = None) -> None:
        import docker

        say = progress or _quiet
        with project_lock(self.project), engine_errors("stopping the stack"):
            ours = self.containers()

            def remove(service: Service) -> None:
                c = ours[service]
                with contextlib.suppress(docker.errors.NotFound):
                    if c.status == "running":
                        c.stop(timeout=10)  # SIGTERM first: metadata checkpoints DuckDB
                    c.remove(force=True)
                    say(f"{service}: removed {c.name}")

            # In parallel: nothing depends on the order, and each stop waits for a clean exit.
            with ThreadPoolExecutor(max_workers=len(SERVICES)) as pool:
                list(pool.map(remove, [s for s in reversed(SERVICES) if s in ours]))
            for net in self.client.networks.list(filters={"label": f"{LABEL_PROJECT}={self.project.name}"}):
                if net.name == self.network_name:
                    with contextlib.suppress(docker.errors.NotFound):
                        net.remove()
                        say(f"network {net.name} removed")
            if volumes:
                for vol in self.client.volumes.list(
                    filters={"label": f"{LABEL_PROJECT}={self.project.name}"}
                ):
                    if vol.name in {self.volume_name(s) for s in SERVICES} | {self.monitoring_volume}:
                        with contextlib.suppress(docker.errors.NotFound):
                            vol.remove(force=True)
                            say(f"volume {vol.name} removed")
                # Bundles and runs are written on the host, whichever backend serves them.
                remove_data(self.paths, say)
            forget_backend(self.paths, "docker")

    # -- looking -------------------------------------------------------------------------
    def status(self, *, cpu: bool = True) -> StackStatus:
        """State, health and usage of each service; ``cpu=False`` skips the CPU sample (faster)."""
        with engine_errors("reading the stack's status"):
            return self._status(cpu)

    def _status(self, cpu: bool) -> StackStatus:
        ours = self.containers()
        running = [c for c in ours.values() if c.status == "running"]
        with ThreadPoolExecutor(max_workers=max(1, len(running))) as pool:
            used = dict(
                zip(
                    [c.id for c in running],
                    pool.map(functools.partial(usage, cpu=cpu), running),
                    strict=True,
                )
            )
        services = tuple(self._service_status(s, ours.get(s), used) for s in SERVICES)
        gpu = None
        serving = ours.get(Service.SERVING)
        if serving is not None and serving.attrs.get("HostConfig", {}).get("DeviceRequests"):
            from mlplat_runtime.providers import gpu_info

            gpu = gpu_info()
        extra = {
            "network": self.network_name,
            "runtime_image": self.image(Service.SERVING),
            "tracker_image": self.image(Service.TRACKER),
            "volumes": ", ".join(self.volume_name(s) for s in SERVICES),
        }
        status = StackStatus(
            project=self.project.name, backend=self.name, services=services, gpu=gpu, extra=extra
        )
        if not status.up:
            status = replace(status, held_by=foreign_holder(self.project, self.ports))
        return status

    def _service_status(
        self, service: Service, c: Container | None, used: dict[str, tuple[float | None, int | None]]
    ) -> ServiceStatus:
        address = self.ports.url(service)
        if c is None:
            return ServiceStatus(service, self.name, "stopped", False, address)
        state = c.attrs.get("State", {})
        health = (state.get("Health") or {}).get("Status")
        if c.status == "running":
            healthy = health == "healthy" or self._probe(service, timeout=0.5)
            label = "running" if healthy else ("unhealthy" if health == "unhealthy" else "starting")
        else:
            healthy = False
            label = {"exited": "exited", "dead": "exited", "restarting": "starting"}.get(c.status, "stopped")
        cpu, mem = used.get(c.id, (None, None))
        detail = f"container {c.name}, health {health or 'none'}"
        if label == "exited":
            detail += f", exit status {state.get('ExitCode')}"
        return ServiceStatus(
            service,
            self.name,
            label,
            healthy,
            address,
            ident=c.short_id,
            started_at=epoch(state.get("StartedAt")) if c.status == "running" else None,
            cpu_percent=cpu,
            memory_bytes=mem,
            detail=detail,
        )

    def logs(self, service: Service, *, follow: bool = False, tail: int = 200) -> Iterator[str]:
        with engine_errors(f"reading the {service} log"):
            yield from self._logs(Service(service), follow, tail)

    def _logs(self, service: Service, follow: bool, tail: int) -> Iterator[str]:
        c = self.containers().get(service)
        if c is None:
            raise NotFoundError(
                f"no {service} container in the docker stack of '{self.project.name}'",
                hint="start the stack with `mlplat up --backend docker`",
            )
        if not follow:
            text = bytes(c.logs(tail=tail)).decode("utf-8", "replace")
            yield from text.splitlines()
            return
        buf = ""
        for chunk in c.logs(stream=True, follow=True, tail=tail):
            buf += bytes(chunk).decode("utf-8", "replace")
            *lines, buf = buf.split("\n")
            yield from (line.rstrip("\r") for line in lines)
        if buf:
            yield buf

    def serving_bundle_path(self, bundle_dir: Path) -> str:
        """Copy the bundle into the bundles volume (through the serving container) once; returns
        ``/bundles/<bundle id hex>`` (a ``.mlbundle`` archive: ``/bundles/<name>-<sha>.mlbundle``)."""
        src = Path(bundle_dir).resolve()
        c = self.containers().get(Service.SERVING)
        if c is None or c.status != "running":
            raise StackError(
                f"serving is not running in the docker stack of '{self.project.name}'",
                hint="start the stack: `mlplat up --backend docker`",
            )
        with engine_errors(f"staging {src.name} in the serving container"):
            return stage_bundle(c, src)
