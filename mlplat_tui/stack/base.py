"""What every stack backend (local processes, docker containers) offers, and the typed status
values the CLI and the dashboard read.

A backend never prints: it reports progress through the ``progress`` callback so the CLI can
print lines and the dashboard can post messages.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from mlplat_runtime.errors import StackError
from mlplat_tui.project.config import Project

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
class StackStatus:
    project: str
    backend: str
    services: tuple[ServiceStatus, ...]
    gpu: str | None = None  # e.g. "NVIDIA H100 80GB (79 GiB)"; None when there is none
    extra: dict[str, str] = field(default_factory=dict)

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


def port_clash(service: Service | str, host: str, port: int) -> StackError:
    """The one error both backends give for a port another program holds."""
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


def get_backend(project: Project, backend: str | None = None) -> StackBackend:
    """The backend named on the command line, else ``[stack] backend`` in mlplat.toml."""
    name = backend or project.config.stack.backend
    if name == "docker":
        from mlplat_tui.stack.docker import DockerBackend

        return DockerBackend(project)
    from mlplat_tui.stack.local import LocalBackend

    return LocalBackend(project)
