"""What every stack backend (local processes, docker containers) offers, and the typed status
values the CLI and the dashboard read.

A backend never prints: it reports progress through the ``progress`` callback so the CLI can
print lines and the dashboard can post messages. The backends are found through a table of
module names (``BACKENDS``), never imported here: they import this module.
"""

from __future__ import annotations

import importlib
import socket
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from mlplat_runtime.errors import MlplatError, StackError
from mlplat_tui.clients.identity import fetch_identity, foreign_stack_error, is_ours
from mlplat_tui.project.config import Project
from mlplat_tui.stack.state import BackendName, other_backend_up, recorded_backend

Progress = Callable[[str], None]


class Service(StrEnum):
    TRACKER = "tracker"
    METADATA = "metadata"
    SERVING = "serving"


SERVICES: tuple[Service, ...] = (Service.TRACKER, Service.METADATA, Service.SERVING)


@dataclass(frozen=True)
class Ports:
    host: str
    tracker: int
    metadata: int
    serving: int
    admin: int

    @classmethod
    def from_project(cls, project: Project) -> Ports:
        s = project.config.stack
        b = s.port_base
        return cls(host=s.host, tracker=b, metadata=b + 1, serving=b + 2, admin=b + 3)

    def url(self, service: Service | str) -> str:
        port = {
            "tracker": self.tracker,
            "metadata": self.metadata,
            "serving": self.serving,
            "admin": self.admin,
        }[str(service)]
        return f"http://{self.host}:{port}"


@dataclass(frozen=True)
class ServiceStatus:
    name: Service
    backend: str
    state: str  # "running" | "starting" | "stopped" | "unhealthy" | "exited"
    healthy: bool
    address: str
    ident: str | None = None  # pid or container id
    started_at: float | None = None  # epoch seconds
    cpu_percent: float | None = None
    memory_bytes: int | None = None
    detail: str = ""


@dataclass(frozen=True)
class Holder:
    """Another project whose stack answers on this project's ports."""

    project: str
    project_root: str


@dataclass(frozen=True)
class StackStatus:
    project: str
    backend: str
    services: tuple[ServiceStatus, ...]
    gpu: str | None = None  # e.g. "NVIDIA H100 80GB (79 GiB)"; None when there is none
    extra: dict[str, str] = field(default_factory=dict)
    held_by: Holder | None = None  # set when this stack is not up and another project's is

    @property
    def up(self) -> bool:
        return bool(self.services) and all(s.healthy for s in self.services)

    def service(self, name: Service | str) -> ServiceStatus | None:
        return next((s for s in self.services if s.name == name), None)


def port_in_use(host: str, port: int) -> bool:
    """True when something already listens on (or holds) ``host:port``."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def foreign_holder(project: Project, ports: Ports) -> Holder | None:
    """The other project whose metadata or serving service answers on our ports, if any."""
    for service in (Service.METADATA, Service.SERVING):
        identity = fetch_identity(ports.url(service), timeout=0.5)
        if identity is not None and not is_ours(identity, project):
            return Holder(identity.project, identity.project_root)
    return None


def port_clash(project: Project, ports: Ports, service: Service | str, host: str, port: int) -> StackError:
    """The one error both backends give for a port that is held: by another project's stack
    (named, with how to stop it), by this project's own stack of the other backend, or by
    another program."""
    for probe in (Service.METADATA, Service.SERVING):
        url = ports.url(probe)
        identity = fetch_identity(url, timeout=0.5)
        if identity is None:
            continue
        if not is_ours(identity, project):
            err = foreign_stack_error(url, identity, project)
            return StackError(f"cannot start {service}: {err.message}", hint=err.hint)
        return StackError(
            f"cannot start {service}: port {host}:{port} is held by another stack of this project "
            f"('{project.name}'), started without this backend's records",
            hint="stop it with `mlplat down --backend local` or `mlplat down --backend docker`",
        )
    return StackError(
        f"cannot start {service}: port {host}:{port} is already in use by another program",
        hint="stop that program, or set [stack] port_base in mlplat.toml to the start "
        "of a free range of 4 ports",
    )


class StackBackend(Protocol):
    """One way to run the three services. ``up`` is idempotent and all-or-nothing."""

    name: str
    project: Project
    ports: Ports

    def up(self, progress: Progress | None = None) -> StackStatus: ...

    def down(self, *, volumes: bool = False, progress: Progress | None = None) -> None: ...

    def status(self) -> StackStatus: ...

    def logs(self, service: Service, *, follow: bool = False, tail: int = 200) -> Iterator[str]: ...

    def serving_bundle_path(self, bundle_dir: Path) -> str:
        """Where the serving service can read this bundle (stages it first when needed)."""
        ...


# name -> "module:class"; imported on first use (``mlplat --help`` stays fast, and the
# protocol's module never imports an implementation).
BACKENDS: Mapping[str, str] = {
    "local": "mlplat_tui.stack.local:LocalBackend",
    "docker": "mlplat_tui.stack.docker:DockerBackend",
}


def backend_class(name: str) -> Callable[[Project], StackBackend]:
    module, _, cls = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), cls)  # type: ignore[no-any-return]


def get_backend(project: Project, backend: str | None = None) -> StackBackend:
    """The backend named on the command line, else the one whose stack is up for this project
    (``paths.stack_state``), else ``[stack] backend`` in mlplat.toml."""
    name: BackendName | str = backend or recorded_backend(project.paths) or project.config.stack.backend
    return backend_class(name)(project)


def anything_running(status: StackStatus) -> bool:
    """Whether any service of this stack still runs (healthy or not), holding its ports."""
    return any(s.state in ("running", "starting", "unhealthy") for s in status.services)


def refuse_other_backend(project: Project, backend: BackendName) -> None:
    """``up`` of ``backend`` while the project's stack of the other backend runs: StackError."""

    def is_up(name: BackendName) -> bool:
        try:
            return anything_running(backend_class(name)(project).status())
        except MlplatError:  # e.g. no engine: then no container of it runs either
            return False

    err = other_backend_up(project, backend, is_up)
    if err is not None:
        raise err
