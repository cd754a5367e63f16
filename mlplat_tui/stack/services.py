"""The three services of a stack, described once: what runs, on which ports, its one health
path, how long it may take to start, where it keeps its data.

Every backend renders these specs: the local backend as processes (``stack/local.py``), the
docker backend as containers (``stack/docker.py``), and later Swarm services and Kubernetes
manifests. Two copies of this knowledge had already drifted (the local tracker ran MLflow's
job runner, which the docker one switched off; the two backends probed serving on different
health paths), so a backend only supplies a ``Placement`` (addresses, ports, data folders,
the interpreter) and ``command`` builds the argument list. The image's ``HEALTHCHECK``, its
``CMD``, ``EXPOSE`` and data folders (``Dockerfile``, ``dockerfiles/healthcheck.py``) are
checked against these specs by a test.

``wait_healthy`` is the one start-up wait both backends use: a backend gives a ``probe``
(is the process or container alive, does the health path answer), the loop owns the timing,
the progress notes and the error.

Imports the standard library and ``stack.base`` only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from mlplat_runtime.errors import StackError
from mlplat_tui.stack.base import Progress, Service

# The ports inside a container (and the defaults of a local stack at port_base 7800): a
# service's role -> port. Serving has two: the inference API and the admin API.
INTERNAL_PORTS: Mapping[str, int] = {"tracker": 7800, "metadata": 7801, "serving": 7802, "admin": 7803}


@dataclass(frozen=True)
class ServiceSpec:
    """One service, whatever runs it."""

    service: Service
    image: str  # which project image runs it: "tracker" | "runtime"
    module: str  # started as ``python -m <module>``
    ports: tuple[str, ...]  # port roles, the first is the one the health path answers on
    health_path: str
    start_timeout_s: float
    data: str  # the name of what it keeps (a volume, a folder): "tracker" | "metadata" | "bundles"
    mount: str  # where that data lives inside a container
    env: Mapping[str, str] = field(default_factory=dict)
    identity: bool = False  # takes --project/--project-root and answers GET /identity


SPECS: Mapping[Service, ServiceSpec] = {
    Service.TRACKER: ServiceSpec(
        Service.TRACKER,
        image="tracker",
        module="mlflow",
        ports=("tracker",),
        health_path="/health",
        start_timeout_s=180.0,
        data="tracker",
        mount="/var/lib/mlplat/tracker",
        # MLflow's job runner starts seven huey consumers for GenAI scorers the platform never
        # uses: 2.4 GB of a local stack's 2.6 GB. System metrics would sample in the server.
        env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING": "false"},
    ),
    Service.METADATA: ServiceSpec(
        Service.METADATA,
        image="runtime",
        module="mlplat_runtime.metadata",
        ports=("metadata",),
        health_path="/health",
        start_timeout_s=60.0,
        data="metadata",
        mount="/var/lib/mlplat/metadata",
        identity=True,
    ),
    Service.SERVING: ServiceSpec(
        Service.SERVING,
        image="runtime",
        module="mlplat_runtime.serving",
        ports=("serving", "admin"),
        # Ready, not live: true only once every loaded model is warm (and with none loaded).
        health_path="/v2/health/ready",
        start_timeout_s=60.0,
        data="bundles",
        mount="/bundles",
        identity=True,
    ),
}

from mlplat_tui.project.paths import METADATA_DB  # noqa: E402 (the store's file, named in paths.py)


@dataclass(frozen=True)
class Placement:
    """Where one backend puts the services: what ``command`` needs besides the spec."""

    python: tuple[str, ...]  # the interpreter: (sys.executable,) locally, ("python",) in an image
    host: str  # the address the services bind
    admin_host: str  # serving's admin API: loopback unless inside a container
    ports: Mapping[str, int]  # port role -> port to listen on
    data: Mapping[str, str]  # data name -> its folder
    admin_token_file: str
    # The metadata service's write token (a second secret beside the admin token), when set.
    metadata_token_file: str | None = None
    project: str | None = None  # None: no --project (an image's default CMD)
    project_root: str | None = None
    serving_workers: int | str = 1  # [serving] workers: a count or "auto" (--workers)
    # serving's prediction log: the flags after ``--log-dir`` ([monitor]); None = log off
    serving_log_flags: tuple[str, ...] | None = None


def command(spec: ServiceSpec, at: Placement) -> list[str]:
    """The argument list that starts ``spec`` placed ``at``."""
    head = [*at.python, "-m", spec.module]
    data = at.data.get(spec.data, spec.mount)
    port = str(at.ports[spec.ports[0]])
    if spec.service is Service.TRACKER:
        args = [
            "server",
            "--backend-store-uri",
            f"sqlite:///{data}/mlflow.db",
            "--serve-artifacts",
            "--artifacts-destination",
            f"{data}/artifacts",
            "--host",
            at.host,
            "--port",
            port,
            "--workers",
            "1",
        ]
    elif spec.service is Service.METADATA:
        args = ["--db", f"{data}/{METADATA_DB}", "--host", at.host, "--port", port]
        if at.metadata_token_file is not None:
            args += ["--token-file", at.metadata_token_file]
        monitoring = at.data.get("monitoring")
        if monitoring is not None:  # the prediction log serving writes: the monitor reads it
            args += ["--monitor-dir", f"{monitoring}/predictions"]
    else:
        args = [
            "--host",
            at.host,
            "--port",
            port,
            "--admin-host",
            at.admin_host,
            "--admin-port",
            str(at.ports["admin"]),
            "--admin-token-file",
            at.admin_token_file,
        ]
        if at.serving_workers != 1:
            args += ["--workers", str(at.serving_workers)]
        monitoring = at.data.get("monitoring")
        if monitoring is not None and at.serving_log_flags is not None:  # the folder the monitor reads
            args += ["--log-dir", f"{monitoring}/predictions", *at.serving_log_flags]
    if spec.identity and at.project is not None and at.project_root is not None:
        args += ["--project", at.project, "--project-root", at.project_root]
    return head + args


# -- the one wait -------------------------------------------------------------------------------


class Health(StrEnum):
    HEALTHY = "healthy"
    STARTING = "starting"
    FAILED = "failed"


@dataclass(frozen=True)
class Probe:
    health: Health
    reason: str = ""  # why it FAILED, e.g. "its container exited with status 1"


def wait_healthy(
    services: Sequence[Service],
    probe: Callable[[Service], Probe],
    *,
    log_tail: Callable[[Service], str],
    hint: Callable[[Service], str],
    say: Progress,
    announce: Sequence[Service] | None = None,
    interval_s: float = 0.1,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Probe each service until all are healthy; a failed or late one raises ``StackError``
    with the last lines of its log. ``announce`` (default: all) get a "healthy after" note."""
    pending = list(services)
    noted = set(services if announce is None else announce)
    begun = clock()
    last_note = begun
    while pending:
        for service in list(pending):
            result = probe(service)
            elapsed = clock() - begun
            if result.health is Health.HEALTHY:
                pending.remove(service)
                if service in noted:
                    say(f"{service}: healthy after {elapsed:.1f}s")
            elif result.health is Health.FAILED:
                raise StackError(
                    f"{service} failed to start: {result.reason}. Last lines of its log:\n"
                    f"{log_tail(service)}",
                    hint=hint(service),
                )
            elif elapsed > SPECS[service].start_timeout_s:
                raise StackError(
                    f"{service} did not become healthy within {SPECS[service].start_timeout_s:.0f}s. "
                    f"Last lines of its log:\n{log_tail(service)}",
                    hint=hint(service),
                )
        if pending:
            if clock() - last_note > 3:
                last_note = clock()
                say(f"waiting for {', '.join(sorted(pending))} ({clock() - begun:.0f}s)")
            sleep(interval_s)
