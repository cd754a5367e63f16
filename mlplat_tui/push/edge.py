"""``publish = "edge"``: a Swarm target's endpoint without the routing mesh.

The routing mesh (``publish = "ingress"``) needs IPVS in the kernel; where it is missing a
service published in ingress mode takes no connection. The edge does the mesh's job in user
space: the service runs with ``endpoint_mode = "dnsrr"`` on an attachable overlay network,
and HAProxy (Debian's package, ``dockerfiles/edge.Dockerfile``) runs in a plain container on
that network, published on ``127.0.0.1:<port>`` only. HAProxy

- finds the replicas by asking Docker's DNS (``127.0.0.11``) for ``tasks.<service>`` every
  second (``server-template``: a slot per address, more slots than replicas so a start-first
  update's extra task has one),
- checks each one on ``/v2/health/ready`` every second and sends nothing to a replica that is
  not ready (a draining replica turns unready first), and
- retries a failed connection once, on another replica (``retries 1``, ``option redispatch``).

Its counters (``edge_stats``) give the raw failures a client never saw: connection errors and
the retries and redispatches that hid them.

Imports docker inside functions; never imports textual.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlplat_runtime.errors import MlplatError, UsageError
from mlplat_tui.push.engine import Progress

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container

__all__ = [
    "EDGE_PACKAGES",
    "EdgeStats",
    "edge_stats",
    "ensure_edge",
    "ensure_edge_image",
    "ensure_network",
    "proxy_config",
    "remove_edge",
]

DOCKERFILE = Path(__file__).resolve().parents[2] / "dockerfiles" / "edge.Dockerfile"
# haproxy and what it needs beyond a bookworm minbase + python3 (the base images).
EDGE_PACKAGES = ("haproxy", "liblua5.3-0", "libopentracing-c-wrapper0", "libopentracing1")
PROXY_PORT = 8080  # inside the container
SERVING_PORT = 7802  # the bundle image's inference port
CONFIG_DIR = "/etc/mlplat-edge"
STATS_SOCKET = "/run/haproxy/admin.sock"
LABEL_CONFIG = "io.mlplat.edge.config"
READY_TIMEOUT_S = 60.0
DEB_CACHE = Path.home() / ".cache" / "mlplat" / "edge-debs"

TEMPLATE = """\
# written by mlplat (push/edge.py) for the Swarm service {service}
global
    maxconn 4096
    stats socket {stats_socket} mode 600 level operator
    log stdout format raw local0 notice

resolvers docker
    nameserver docker 127.0.0.11:53
    resolve_retries 3
    timeout resolve 1s
    timeout retry 1s
    hold valid 1s
    hold other 1s
    hold refused 1s
    hold nx 1s
    hold timeout 1s
    hold obsolete 2s
    accepted_payload_size 8192

defaults
    mode http
    log global
    option httplog
    option dontlognull
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    # a failed connection is tried once more, on another replica
    retries 1
    option redispatch 1
    retry-on conn-failure empty-response

frontend edge
    bind :{proxy_port}
    default_backend replicas

backend replicas
    balance roundrobin
    option httpchk GET /v2/health/ready
    http-check expect status 200
    default-server check inter 1s fastinter 500ms downinter 1s fall 1 rise 1
    default-server resolvers docker init-addr none resolve-prefer ipv4
    server-template replica {slots} tasks.{service}:{serving_port}
"""


def proxy_config(service: str, replicas: int) -> str:
    """The HAProxy configuration of one service's edge (slots for a start-first surplus)."""
    slots = max(4, 2 * replicas + 2)
    return TEMPLATE.format(
        service=service,
        slots=slots,
        stats_socket=STATS_SOCKET,
        proxy_port=PROXY_PORT,
        serving_port=SERVING_PORT,
    )


def _debs(progress: Progress, cache: Path = DEB_CACHE) -> list[Path]:
    """The packages' .deb files, downloaded once by the host's apt into ``cache``."""
    cache.mkdir(parents=True, exist_ok=True)
    have = {p.name.split("_", 1)[0]: p for p in cache.glob("*.deb")}
    missing = [name for name in EDGE_PACKAGES if name not in have]
    if missing:
        if shutil.which("apt-get") is None:
            raise UsageError(
                "the edge proxy image needs Debian's haproxy packages, and this machine has no apt-get",
                hint=f"put the .deb files of {', '.join(EDGE_PACKAGES)} (bookworm) in {cache}",
            )
        progress(f"[edge] downloading {', '.join(missing)} with apt-get into {cache}")
        out = subprocess.run(
            ["apt-get", "download", "-q", *missing], cwd=cache, capture_output=True, text=True, timeout=300
        )
        if out.returncode != 0:
            raise MlplatError(
                f"apt-get download {' '.join(missing)} failed: {out.stderr.strip()[-500:]}",
                hint="run `apt-get update` (or point apt at a mirror), then push again",
            )
        have = {p.name.split("_", 1)[0]: p for p in cache.glob("*.deb")}
    return sorted(have[name] for name in EDGE_PACKAGES)


def _default_base(client: docker.DockerClient) -> str:
    import docker

    with contextlib.suppress(docker.errors.ImageNotFound):
        client.images.get("mlplat-base:bookworm")
        return "mlplat-base:bookworm"
    return "python:3.11-slim"


def ensure_edge_image(
    client: docker.DockerClient, progress: Progress, *, base_image: str | None = None
) -> str:
    """The edge image's tag (``mlplat-edge:<content hash>``), built on this engine when missing."""
    import docker

    base = base_image or _default_base(client)
    debs = _debs(progress)
    h = hashlib.sha256(base.encode() + b"\0" + DOCKERFILE.read_bytes())
    for deb in debs:
        h.update(deb.name.encode())
    tag = f"mlplat-edge:{h.hexdigest()[:12]}"
    with contextlib.suppress(docker.errors.ImageNotFound):
        client.images.get(tag)
        return tag
    progress(f"[edge] building {tag} on {base} (haproxy from {len(debs)} Debian packages)")
    ctx = io.BytesIO()
    with tarfile.open(fileobj=ctx, mode="w") as tar:
        tar.add(DOCKERFILE, arcname="Dockerfile")
        for deb in debs:
            tar.add(deb, arcname=f"debs/{deb.name}")
    ctx.seek(0)
    try:
        for chunk in client.api.build(
            fileobj=ctx, custom_context=True, tag=tag, buildargs={"BASE_IMAGE": base}, decode=True,
            rm=True, forcerm=True, pull=False,
        ):  # fmt: skip
            if "error" in chunk:
                raise MlplatError(f"building the edge image failed: {chunk['error'].strip()}")
    except docker.errors.APIError as exc:
        raise MlplatError(f"building the edge image failed: {exc.explanation or exc}") from None
    return tag


def ensure_network(client: docker.DockerClient, name: str, labels: dict[str, str]) -> str:
    """An attachable overlay network (the service and its edge share it); its id."""
    import docker

    found = client.networks.list(names=[name])
    for net in found:
        if net.name == name:
            return str(net.id)
    try:
        net = client.networks.create(
            name, driver="overlay", attachable=True, labels=labels, check_duplicate=True
        )
    except docker.errors.APIError as exc:
        raise MlplatError(
            f"could not create the overlay network {name}: {exc.explanation or exc}",
            hint="overlay networks need the engine in Swarm mode (`docker swarm init`)",
        ) from None
    return str(net.id)


def _config_tar(text: str) -> bytes:
    buf = io.BytesIO()
    data = text.encode()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("haproxy.cfg")
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def ensure_edge(
    client: docker.DockerClient,
    *,
    name: str,
    service: str,
    network: str,
    port: int,
    replicas: int,
    labels: dict[str, str],
    progress: Progress,
    base_image: str | None = None,
) -> Container:
    """The edge container ``name`` for ``service``, running with this exact configuration.

    One already running with the same image, port and configuration is kept (it resolves the
    replicas itself; a rollout needs no reload): a second push does not drop connections."""
    import docker

    image = ensure_edge_image(client, progress, base_image=base_image)
    text = proxy_config(service, replicas)
    digest = hashlib.sha256(f"{image}\0{port}\0{network}\0{text}".encode()).hexdigest()[:16]
    with contextlib.suppress(docker.errors.NotFound):
        old = client.containers.get(name)
        if (old.labels or {}).get(LABEL_CONFIG) == digest and old.status == "running":
            return old
        progress(f"[edge] replacing {name} (its configuration changed)")
        old.remove(force=True)
    try:
        container = client.containers.create(
            image, name=name, detach=True, network=network,
            ports={f"{PROXY_PORT}/tcp": ("127.0.0.1", port)},
            labels={**labels, LABEL_CONFIG: digest}, restart_policy={"Name": "unless-stopped"},
        )  # fmt: skip
        container.put_archive(CONFIG_DIR, _config_tar(text))
        container.start()
    except docker.errors.APIError as exc:
        with contextlib.suppress(docker.errors.APIError):
            client.containers.get(name).remove(force=True)
        text_ = str(exc.explanation or exc)
        hint = (
            f"another program holds 127.0.0.1:{port}: free it or set the target's port"
            if "address already in use" in text_ or "port is already allocated" in text_
            else "see the engine's message"
        )
        raise MlplatError(f"could not start the edge proxy {name}: {text_}", hint=hint) from None
    _wait_ready(client, name, replicas, progress)
    progress(f"[edge] {name} answers on 127.0.0.1:{port} for tasks.{service}")
    return container


def _wait_ready(client: docker.DockerClient, name: str, replicas: int, progress: Progress) -> None:
    """Until HAProxy has resolved the replicas and found them ready (its first DNS answers and
    checks take a second or two): a smoke test right after must not find an empty backend."""
    import time

    deadline = time.monotonic() + READY_TIMEOUT_S
    up = 0
    while time.monotonic() < deadline:
        with contextlib.suppress(MlplatError, docker_errors()):
            up = edge_stats(client, name).servers_up
            if up >= replicas:
                return
        time.sleep(0.25)
    raise MlplatError(
        f"the edge proxy {name} found {up} of {replicas} replicas ready within {READY_TIMEOUT_S:.0f}s",
        hint=f"see its log: docker logs {name}",
    )


def docker_errors() -> type[Exception]:
    import docker

    return docker.errors.DockerException


def remove_edge(client: docker.DockerClient, name: str) -> None:
    import docker

    with contextlib.suppress(docker.errors.NotFound):
        client.containers.get(name).remove(force=True)


@dataclass(frozen=True)
class EdgeStats:
    """The backend's counters since the proxy started (HAProxy's ``show stat``)."""

    requests: int  # HTTP responses the backend gave
    connection_errors: int  # econ: connections to a replica that failed (before any retry)
    response_errors: int  # eresp: replies that broke off
    retries: int  # wretr: connections tried again
    redispatches: int  # wredis: tries moved to another replica
    servers_up: int

    @property
    def raw_failures(self) -> int:
        """What clients would have seen without the retry: failed connections and replies."""
        return self.connection_errors + self.response_errors


def _int(row: dict[str, str], key: str) -> int:
    try:
        return int(row.get(key) or 0)
    except ValueError:
        return 0


def edge_stats(client: docker.DockerClient, name: str) -> EdgeStats:
    """Ask the edge's HAProxy (stats socket, read inside the container) for its counters."""
    script = (
        "import socket,sys;s=socket.socket(socket.AF_UNIX);s.connect(sys.argv[1]);"
        "s.sendall(b'show stat\\n');d=b''\nwhile True:\n c=s.recv(65536)\n if not c: break\n d+=c\n"
        "sys.stdout.write(d.decode())"
    )
    container = client.containers.get(name)
    res = container.exec_run(["python3", "-c", script, STATS_SOCKET], user="haproxy")
    if res.exit_code != 0:
        raise MlplatError(f"could not read the edge's counters: {bytes(res.output).decode(errors='replace')}")
    lines = bytes(res.output).decode().strip().splitlines()
    header = lines[0].lstrip("# ").split(",")
    rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:]]
    backend = next((r for r in rows if r.get("pxname") == "replicas" and r.get("svname") == "BACKEND"), {})
    servers = [
        r for r in rows if r.get("pxname") == "replicas" and r.get("svname") not in ("BACKEND", "FRONTEND")
    ]
    return EdgeStats(
        requests=_int(backend, "hrsp_2xx") + _int(backend, "hrsp_4xx") + _int(backend, "hrsp_5xx"),
        connection_errors=_int(backend, "econ"),
        response_errors=_int(backend, "eresp"),
        retries=_int(backend, "wretr"),
        redispatches=_int(backend, "wredis"),
        servers_up=sum(1 for r in servers if r.get("status", "").startswith("UP")),
    )


def stats_of(value: Any) -> dict[str, int]:
    """``EdgeStats`` as a plain dict (for receipts and ``--json``)."""
    return {k: int(v) for k, v in vars(value).items()}
