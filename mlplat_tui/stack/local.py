"""The ``local`` backend, the embedded default: the three services as plain processes.

Each service runs in its own process group, started with this Python interpreter; its pidfile
(JSON: pid, port, started_at, command) and log live under ``<project>/.mlplat/stack/``. ``up``
holds a file lock so two ``mlplat up`` cannot race, reuses services that are already healthy,
and stops everything it started itself when any service fails, so nothing is left half-up.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from mlplat_runtime.errors import NotFoundError, StackError
from mlplat_tui.project.config import Project
from mlplat_tui.stack.base import (
    SERVICES,
    Ports,
    Progress,
    Service,
    ServiceStatus,
    StackStatus,
    port_clash,
    port_in_use,
)

HEALTH_PATHS = {Service.TRACKER: "/health", Service.METADATA: "/health", Service.SERVING: "/v2/health/live"}
START_TIMEOUT_S = {Service.TRACKER: 90.0, Service.METADATA: 30.0, Service.SERVING: 30.0}


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
        self.dir = project.paths.stack

    # -- paths ---------------------------------------------------------------------------
    def pidfile(self, service: Service) -> Path:
        return self.dir / f"{service}.pid"

    def logfile(self, service: Service) -> Path:
        return self.dir / f"{service}.log"

    @property
    def admin_token_file(self) -> Path:
        return self.dir / "admin.token"

    @property
    def metadata_db(self) -> Path:
        return self.dir / "metadata.duckdb"

    def port(self, service: Service) -> int:
        return {
            Service.TRACKER: self.ports.tracker,
            Service.METADATA: self.ports.metadata,
            Service.SERVING: self.ports.serving,
        }[service]

    def health_url(self, service: Service) -> str:
        return self.ports.url(service) + HEALTH_PATHS[service]

    def command(self, service: Service) -> list[str]:
        host, py = self.ports.host, sys.executable
        if service is Service.TRACKER:
            store = self.dir / "tracker"
            return [
                py,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                f"sqlite:///{store / 'mlflow.db'}",
                "--serve-artifacts",
                "--artifacts-destination",
                str(store / "artifacts"),
                "--host",
                host,
                "--port",
                str(self.ports.tracker),
                "--workers",
                "1",
            ]
        if service is Service.METADATA:
            return [
                py,
                "-m",
                "mlplat_runtime.metadata",
                "--db",
                str(self.metadata_db),
                "--host",
                host,
                "--port",
                str(self.ports.metadata),
            ]
        return [
            py,
            "-m",
            "mlplat_runtime.serving",
            "--host",
            host,
            "--port",
            str(self.ports.serving),
            "--admin-port",
            str(self.ports.admin),
            "--admin-token-file",
            str(self.admin_token_file),
        ]

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

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "up.lock", "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                holder = fh.read().strip() or "another process"
                raise StackError(
                    f"another `mlplat up`/`down` is already running for project '{self.project.name}' "
                    f"(pid {holder})",
                    hint="wait for it to finish, then run `mlplat status`",
                ) from None
            fh.seek(0)
            fh.truncate()
            fh.write(str(os.getpid()))
            fh.flush()
            try:
                yield
            finally:
                fh.seek(0)
                fh.truncate()
                fcntl.flock(fh, fcntl.LOCK_UN)

    # -- lifecycle -----------------------------------------------------------------------
    def _start(self, service: Service) -> PidInfo:
        (self.dir / "tracker").mkdir(parents=True, exist_ok=True)
        cmd = self.command(service)
        env = dict(os.environ, PYTHONUNBUFFERED="1", MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING="false")
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
        with self._lock():
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
                ports = [self.port(service)] + ([self.ports.admin] if service is Service.SERVING else [])
                for port in ports:
                    if port_in_use(self.ports.host, port):
                        raise port_clash(service, self.ports.host, port)
            started: list[Service] = []
            try:
                for service in to_start:
                    self._start(service)
                    started.append(service)
                    say(f"{service}: starting on {self.ports.url(service)}")
                self._wait_healthy(started, say)
            except BaseException:
                for service in started:
                    self._stop(service)
                raise
            if Service.SERVING in started:
                from mlplat_tui.deploy.restore import restore_serving

                restore_serving(self, say)
        return self.status()

    def _wait_healthy(self, services: list[Service], say: Progress) -> None:
        pending = set(services)
        begun = time.monotonic()
        last_note = begun
        while pending:
            for service in list(pending):
                info = self.read_pid(service)
                if info is None or not _pid_alive(info.pid):
                    raise StackError(
                        f"{service} exited during start-up. Last lines of its log "
                        f"({self.logfile(service)}):\n{self.log_tail(service)}",
                        hint=f"see `mlplat logs {service}`",
                    )
                if self._healthy(service, timeout=0.5):
                    pending.discard(service)
                    say(f"{service}: healthy after {time.monotonic() - begun:.1f}s")
                elif time.monotonic() - begun > START_TIMEOUT_S[service]:
                    raise StackError(
                        f"{service} did not become healthy within {START_TIMEOUT_S[service]:.0f}s. "
                        f"Last lines of its log:\n{self.log_tail(service)}",
                        hint=f"see `mlplat logs {service}`",
                    )
            if pending:
                if time.monotonic() - last_note > 3:
                    last_note = time.monotonic()
                    say(f"waiting for {', '.join(sorted(pending))} ({time.monotonic() - begun:.0f}s)")
                time.sleep(0.1)

    def down(self, *, volumes: bool = False, progress: Progress | None = None) -> None:
        say = progress or _quiet
        with self._lock():
            for service in reversed(SERVICES):
                if self._stop(service):
                    say(f"{service}: stopped")
            if volumes:
                import shutil

                for sub in ("tracker", "bundles"):
                    shutil.rmtree(self.dir / sub, ignore_errors=True)
                self.metadata_db.unlink(missing_ok=True)
                say("data removed")

    def status(self) -> StackStatus:
        services = tuple(self._service_status(s) for s in SERVICES)
        return StackStatus(project=self.project.name, backend=self.name, services=services, gpu=_gpu())

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
