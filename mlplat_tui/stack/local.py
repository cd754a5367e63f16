"""The ``local`` backend, the embedded default: the three services as plain processes.

Each service (``stack/services.py`` says what runs) runs in its own process group, started
with this Python interpreter; its pidfile (JSON: pid, port, started_at, command) and log live
under ``<project>/.mlplat/stack/`` (``project.paths``). ``up`` holds the project lock (the one
the docker backend takes too), reuses services that are already healthy, and stops
everything it started itself when any service fails, so nothing is left half-up. ``up`` does
not restore serving: ``deploy.restore.up_and_restore`` does, above this layer.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import httpx

from mlplat_runtime.errors import NotFoundError
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
from mlplat_tui.stack.services import SPECS, Health, Placement, Probe, command, wait_healthy
from mlplat_tui.stack.state import forget_backend, project_lock, record_backend, remove_data


def _quiet(_: str) -> None:
    return None


@dataclass(frozen=True)
class PidInfo:
    pid: int
    port: int
    started_at: float
    command: tuple[str, ...]
    created: float | None = None  # the process's own start time: tells our pid from a reused one


def _create_time(pid: int) -> float | None:
    try:
        import psutil

        return float(psutil.Process(pid).create_time())
    except Exception:
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as dead.
    try:
        import psutil

        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except Exception:
        return True


def _kill_group(pid: int, timeout_s: float = 8.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if not _group_alive(pid):
                return
            time.sleep(0.05)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _pid_alive(pgid) or _any_in_group(pgid)


def _any_in_group(pgid: int) -> bool:
    import psutil

    for proc in psutil.process_iter(["pid"]):
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(proc.info["pid"]) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                return True
    return False


class LocalBackend:
    """Plain processes on 127.0.0.1, state under ``.mlplat/stack/``."""

    name = "local"

    def __init__(self, project: Project) -> None:
        self.project = project
        self.ports = Ports.from_project(project)
        self.paths = project.paths
        self.dir = project.paths.stack

    # -- paths ---------------------------------------------------------------------------
    def pidfile(self, service: Service) -> Path:
        return self.paths.pidfile(service)

    def logfile(self, service: Service) -> Path:
        return self.paths.logfile(service)

    @property
    def admin_token_file(self) -> Path:
        return self.paths.admin_token

    @property
    def metadata_db(self) -> Path:
        return self.paths.metadata_db

    def port(self, service: Service) -> int:
        return self.placement.ports[SPECS[service].ports[0]]

    def service_ports(self, service: Service) -> list[int]:
        return [self.placement.ports[role] for role in SPECS[service].ports]

    def health_url(self, service: Service) -> str:
        return self.ports.url(service) + SPECS[service].health_path

    @functools.cached_property
    def placement(self) -> Placement:
        p = self.ports
        return Placement(
            python=(sys.executable,),
            host=p.host,
            admin_host="127.0.0.1",  # the admin API takes loads: loopback only
            ports={"tracker": p.tracker, "metadata": p.metadata, "serving": p.serving, "admin": p.admin},
            data={
                "tracker": str(self.paths.tracker),
                "metadata": str(self.paths.metadata_db.parent),
                "monitoring": str(self.paths.monitoring),
            },
            admin_token_file=str(self.admin_token_file),
            metadata_token_file=str(self.paths.metadata_token),
            project=self.project.name,
            project_root=str(self.project.root),
            serving_workers=self.project.config.serving.workers,
            serving_log_flags=self.project.config.monitor.serving_log_flags(),
        )

    def command(self, service: Service) -> list[str]:
        return command(SPECS[service], self.placement)

    # -- state ---------------------------------------------------------------------------
    def read_pid(self, service: Service) -> PidInfo | None:
        try:
            raw = json.loads(self.pidfile(service).read_text())
            created = raw.get("created")
            return PidInfo(
                int(raw["pid"]),
                int(raw["port"]),
                float(raw["started_at"]),
                tuple(raw["command"]),
                float(created) if created is not None else None,
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _running(self, service: Service) -> PidInfo | None:
        info = self.read_pid(service)
        if info is None:
            return None
        # A pidfile outlives a reboot; its pid may now be someone else's process. Only a
        # process with the same start time is ours, and only ours is ever signalled.
        if not _pid_alive(info.pid) or info.created is None or _create_time(info.pid) != info.created:
            self.pidfile(service).unlink(missing_ok=True)
            return None
        return info

    def _healthy(self, service: Service, timeout: float = 1.0) -> bool:
        try:
            return httpx.get(self.health_url(service), timeout=timeout, trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False

    def log_tail(self, service: Service, lines: int = 15) -> str:
        try:
            text = self.logfile(service).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- lifecycle -----------------------------------------------------------------------
    def _start(self, service: Service) -> PidInfo:
        self.paths.tracker.mkdir(parents=True, exist_ok=True)
        cmd = self.command(service)
        env = dict(os.environ, PYTHONUNBUFFERED="1", **SPECS[service].env)
        with open(self.logfile(service), "ab") as log:
            log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {service} ---\n".encode())
            log.flush()
            proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.project.root,
                env=env,
                start_new_session=True,
            )
        info = PidInfo(proc.pid, self.port(service), time.time(), tuple(cmd), _create_time(proc.pid))
        self.pidfile(service).write_text(
            json.dumps(
                {
                    "pid": info.pid,
                    "port": info.port,
                    "started_at": info.started_at,
                    "command": cmd,
                    "created": info.created,
                }
            )
        )
        return info

    def _stop(self, service: Service) -> bool:
        info = self._running(service)
        if info is None:
            return False
        _kill_group(info.pid)
        self.pidfile(service).unlink(missing_ok=True)
        return True

    def up(self, progress: Progress | None = None) -> StackStatus:
        say = progress or _quiet
        with project_lock(self.project):
            refuse_other_backend(self.project, "local")
            to_start: list[Service] = []
            for service in SERVICES:
                if self._running(service):
                    if self._healthy(service):
                        say(f"{service}: already running at {self.ports.url(service)}")
                        continue
                    # A process of ours that does not answer: restart it rather than guess.
                    say(f"{service}: not answering, restarting")
                    self._stop(service)
                to_start.append(service)
            # Check every port before starting anything, so a clash leaves nothing behind.
            for service in to_start:
                for port in self.service_ports(service):
                    if port_in_use(self.ports.host, port):
                        raise port_clash(self.project, self.ports, service, self.ports.host, port)
            if to_start:
                from mlplat_runtime.serving.admin import ensure_admin_token

                # Before any service starts: serving and metadata both read it, neither races
                # the other to create it.
                self.dir.mkdir(parents=True, exist_ok=True)
                ensure_admin_token(self.admin_token_file)
                ensure_admin_token(self.paths.metadata_token)
            started: list[Service] = []
            try:
                for service in to_start:
                    self._start(service)
                    started.append(service)
                    say(f"{service}: starting on {self.ports.url(service)}")
                wait_healthy(
                    started,
                    self._probe,
                    log_tail=self.log_tail,
                    hint=lambda s: f"see `mlplat logs {s}` ({self.logfile(s)})",
                    say=say,
                )
            except BaseException:
                for service in started:
                    self._stop(service)
                raise
            record_backend(self.paths, "local")
        return self.status()

    def _probe(self, service: Service) -> Probe:
        info = self.read_pid(service)
        if info is None or not _pid_alive(info.pid):
            return Probe(Health.FAILED, "it exited during start-up")
        return Probe(Health.HEALTHY if self._healthy(service, timeout=0.5) else Health.STARTING)

    def down(self, *, volumes: bool = False, progress: Progress | None = None) -> None:
        say = progress or _quiet
        with project_lock(self.project):
            for service in reversed(SERVICES):
                if self._stop(service):
                    say(f"{service}: stopped")
            forget_backend(self.paths, "local")
            if volumes:
                remove_data(self.paths, say)

    def status(self) -> StackStatus:
        services = tuple(self._service_status(s) for s in SERVICES)
        status = StackStatus(project=self.project.name, backend=self.name, services=services, gpu=_gpu())
        if not status.up:
            status = replace(status, held_by=foreign_holder(self.project, self.ports))
        return status

    def _service_status(self, service: Service) -> ServiceStatus:
        address = self.ports.url(service)
        info = self._running(service)
        if info is None:
            return ServiceStatus(service, self.name, "stopped", False, address)
        healthy = self._healthy(service, timeout=0.5)
        cpu, mem = _usage(info.pid)
        return ServiceStatus(
            service,
            self.name,
            "running" if healthy else "unhealthy",
            healthy,
            address,
            ident=str(info.pid),
            started_at=info.started_at,
            cpu_percent=cpu,
            memory_bytes=mem,
        )

    def logs(self, service: Service, *, follow: bool = False, tail: int = 200) -> Iterator[str]:
        path = self.logfile(service)
        if not path.exists():
            raise NotFoundError(
                f"no log for {service} yet: it has not been started in this project",
                hint="start the stack with `mlplat up`",
            )
        with open(path, errors="replace") as fh:
            lines = fh.readlines()
            yield from (line.rstrip("\n") for line in lines[-tail:])
            while follow:
                line = fh.readline()
                if line:
                    yield line.rstrip("\n")
                else:
                    time.sleep(0.2)

    def serving_bundle_path(self, bundle_dir: Path) -> str:
        return str(Path(bundle_dir).resolve())


_CPU_CACHE: dict[int, object] = {}


@functools.cache
def _gpu() -> str | None:
    """The GPU does not change while we run; ask nvidia-smi once, not on every status poll."""
    from mlplat_runtime.providers import gpu_info

    return gpu_info()


def _usage(pid: int) -> tuple[float | None, int | None]:
    """CPU % (since the last call for this pid) and RSS of the process and its children."""
    try:
        import psutil

        proc = _CPU_CACHE.get(pid)
        if not isinstance(proc, psutil.Process) or not proc.is_running():
            proc = psutil.Process(pid)
            _CPU_CACHE[pid] = proc
        procs = [proc, *proc.children(recursive=True)]
        cpu = 0.0
        mem = 0
        for p in procs:
            with contextlib.suppress(psutil.Error):
                cpu += p.cpu_percent(None)
                mem += p.memory_info().rss
        return cpu, mem
    except Exception:
        return None, None
