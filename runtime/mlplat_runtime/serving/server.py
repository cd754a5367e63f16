"""Run the serving process: the inference port and the admin port in one process, one uvloop
event loop (two ``http.serve_http`` servers under ``asyncio.wait``), one repository.

The sockets are bound here before anything starts, so a port in use is a clear error and
not a half-started server. The start-up load (a BUNDLE on the command line) happens before
the ports open: when ``/v2/health/live`` answers, the model is already warm. It skips the
child-process check (nothing is serving yet that a crash could take down); the warm check
process is started right after, off the start-up path, for the hot swaps that follow.

Descriptors: the soft ``RLIMIT_NOFILE`` is raised to the hard one at start-up, and each port's
connection cap is kept below what is left after a reserve for model files, pipes and logs, so
a flood of connections meets a clear refusal (or drops a stalled connection) instead of
``accept`` failing with EMFILE for everyone. ``memory_budget_mb`` bounds what clients can make
the process hold: request bodies buffered at once get an eighth of it, a warm-up a quarter.

Stopping (SIGTERM): readiness turns false first (``/v2/health/ready`` and gRPC ServerReady
answer not ready, everything else still serves) for ``drain_delay_s``, so a load balancer or
a rolling update stops sending new work; then the port stops accepting, idle keep-alive
connections close, in-flight requests get ``grace_s`` to finish, and the process exits 0.
SIGINT (Ctrl-C) skips the delay. With ``workers > 1`` ``run_server`` starts the supervisor of
``workers.py`` instead (N of these processes sharing the port, one admin API); ``workers == 1``
is this process alone, exactly as before.

No access log: a log line costs more than a tabular inference; ``/metrics`` counts requests.
Why our own small HTTP protocol rather than uvicorn: see ``http.py``.

Must not import textual, mlflow, docker or mlplat_tui.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import os
import resource
import signal
import socket
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlplat_runtime.errors import ServiceError
from mlplat_runtime.identity import StackIdentity
from mlplat_runtime.monitoring.predlog import LogConfig, PredictionLog
from mlplat_runtime.serving.admin import AdminHandler, ensure_admin_token
from mlplat_runtime.serving.app import InferenceHandler
from mlplat_runtime.serving.batching import BatchingConfig
from mlplat_runtime.serving.checker import Checker
from mlplat_runtime.serving.decoder import DecoderProcess
from mlplat_runtime.serving.http import BACKLOG, HttpLimits, serve_http
from mlplat_runtime.serving.metrics import ServingMetrics
from mlplat_runtime.serving.repository import Repository

if TYPE_CHECKING:
    from mlplat_runtime.serving.workers import WorkerLink

log = logging.getLogger("mlplat.serving")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7802
DEFAULT_ADMIN_PORT = 7803
CHECKER_DELAY_S = 1.0
DEFAULT_MAX_CONNECTIONS = 1024
DEFAULT_MEMORY_BUDGET_MB = 2048
ADMIN_MAX_CONNECTIONS = 32
DEFAULT_DRAIN_DELAY_S = 0.5  # readiness false -> stop accepting (raise it to the probe period)
DEFAULT_GRACE_S = 5.0  # in-flight requests may take this long to finish after a stop
FD_RESERVE = 64  # descriptors kept free for model files, the check process, logs


@dataclass(frozen=True)
class ServerConfig:
    bundle: Path | None = None
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    admin_host: str = DEFAULT_HOST
    admin_port: int = DEFAULT_ADMIN_PORT
    admin_token_file: Path | None = None
    providers: list[str] | None = None
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    memory_budget_mb: int = DEFAULT_MEMORY_BUDGET_MB
    identity: StackIdentity | None = None  # the project it serves, for ``GET /identity``
    batching: BatchingConfig | None = None  # dynamic batching for models that can (opt-in)
    grpc_port: int | None = None  # OIP v2 gRPC on this port (on ``host``), opt-in; 0 = any
    # the gRPC repository extension (admin token) on this port, on ``admin_host``; opt-in; 0 = any
    admin_grpc_port: int | None = None
    workers: int = 1  # serving processes sharing the ports (>1: a supervisor, workers.py)
    drain_delay_s: float = DEFAULT_DRAIN_DELAY_S
    grace_s: float = DEFAULT_GRACE_S
    log: LogConfig | None = None  # the prediction log (``--log-dir``); None = off


class ServingRepository(Repository):
    """The repository a serving process serves from: readiness also turns false while it drains."""

    draining = False

    def ready(self) -> bool:
        return not self.draining and super().ready()


def raise_fd_limit() -> int:
    """Raise the soft descriptor limit to the hard one; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def port_limits(config: ServerConfig, fd_limit: int) -> tuple[HttpLimits, HttpLimits]:
    """(inference, admin) limits: connection caps that fit the descriptors, the body budget."""
    room = max(8, fd_limit - FD_RESERVE)
    admin_cap = max(2, min(ADMIN_MAX_CONNECTIONS, room // 8))
    main_cap = max(2, min(config.max_connections, room - admin_cap))
    budget = config.memory_budget_mb * 1024 * 1024
    main = HttpLimits(max_connections=main_cap, body_budget=max(budget // 8, 1024 * 1024))
    admin = HttpLimits(max_connections=admin_cap, max_body=1024 * 1024, body_budget=8 * 1024 * 1024)
    return main, admin


def warmup_budget_bytes(config: ServerConfig) -> int:
    """How much memory one warm-up (a model load plus its sample run) may take."""
    return config.memory_budget_mb * 1024 * 1024 // 4


def bind(host: str, port: int, what: str, *, reuse_port: bool = False, listen: bool = True) -> socket.socket:
    """A listening TCP socket, or ServiceError naming the port and what to do.

    ``reuse_port``: SO_REUSEPORT, for the workers that share one port (the kernel spreads new
    connections over them); ``listen=False`` only holds the port (the supervisor's reservation).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
        if listen:
            sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        busy = exc.errno == errno.EADDRINUSE
        raise ServiceError(
            f"cannot listen on {host}:{port} for the {what}: {exc.strerror}",
            hint="another process holds the port; stop it or pick another port" if busy else None,
        ) from None
    sock.set_inheritable(False)
    return sock


def startup_line(url: str, repo: Repository, admin_url: str, token_path: Path) -> str:
    models = repo.models()
    if models:
        m = models[0]
        what = f"model={m.name} version={m.version} provider={m.provider}"
    else:
        what = "model=- version=- provider=-"
    return f"mlplat serving url={url} {what} admin={admin_url} admin_token={token_path}"


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def serve(
    config: ServerConfig,
    *,
    echo: Callable[[str], None] = print,
    stop: asyncio.Event | None = None,
    link: WorkerLink | None = None,
) -> None:
    """Load the start-up bundle, open both ports, serve until ``stop`` is set or a signal comes.

    ``link``: this process is one of ``--workers N`` (``workers.py``): no admin port (the
    supervisor has it), no check process (the supervisor checks each bundle once), the
    supervisor's models loaded before the port opens, the port shared with SO_REUSEPORT.
    """
    if config.grpc_port is not None or (config.admin_grpc_port is not None and link is None):
        why = grpc_missing()
        if why is not None:
            raise ServiceError(f"the gRPC API cannot start: {why}")
    main_limits, admin_limits = port_limits(config, raise_fd_limit())
    admin_sock: socket.socket | None = None
    main_sock: socket.socket | None = None
    token, token_path = "", Path()
    if link is None:
        token, token_path = ensure_admin_token(config.admin_token_file)
        main_sock = bind(config.host, config.port, "inference API")
        try:
            admin_sock = bind(config.admin_host, config.admin_port, "admin API")
        except ServiceError:
            main_sock.close()
            raise
    metrics = ServingMetrics()
    predlog = PredictionLog(config.log) if config.log is not None else None
    if predlog is not None:
        metrics.collectors.append(predlog.metric_lines)
    warmup_budget = warmup_budget_bytes(config)
    checker = None if link is not None else Checker(providers=config.providers, max_bytes=warmup_budget)
    repo = (link.repository if link is not None else ServingRepository)(
        checker=checker, metrics=metrics, providers=config.providers, batching=config.batching
    )
    executor = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="mlplat-infer")
    decode_pool = ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="mlplat-decode", initializer=_background
    )
    decoder = DecoderProcess()
    stop = stop or asyncio.Event()
    grpc_server = admin_grpc = None
    admin_grpc_line = ""
    try:
        inference = InferenceHandler(
            repo,
            metrics,
            executor=executor,
            decode_executor=decode_pool,
            decoder=decoder,
            identity=config.identity,
            predlog=predlog,
        )
        # gRPC starts before any thread of ours exists (the start-up load runs on one): started
        # after it, grpc.aio's ``server.start()`` never returned in 5 of 25 starts on a loaded
        # machine; started first, 0 of 25.
        if config.grpc_port is not None:
            from mlplat_runtime.serving.grpc_service import start_grpc

            if link is not None:
                grpc_server, grpc_port = await link.start_grpc(start_grpc, inference, config)
            else:
                grpc_server, grpc_port = await start_grpc(inference, config.host, config.grpc_port)
                host = f"[{config.host}]" if ":" in config.host else config.host
                echo(f"mlplat serving grpc={host}:{grpc_port}")
        if config.admin_grpc_port is not None and link is None:  # workers: the supervisor's
            from mlplat_runtime.serving.grpc_service import start_admin_grpc

            admin_grpc, port = await start_admin_grpc(repo, token, config.admin_host, config.admin_grpc_port)
            host = f"[{config.admin_host}]" if ":" in config.admin_host else config.admin_host
            # said after the start-up line: a reader that selects on the pipe stops at that one
            admin_grpc_line = f"mlplat serving admin_grpc={host}:{port}"
        if predlog is not None:
            try:
                predlog.start()  # after gRPC: see above
            except ServiceError as exc:  # the log must never keep the model from serving
                log.error("serving without the prediction log: %s", exc)
                metrics.collectors.remove(predlog.metric_lines)
                inference.predlog = predlog = None
        if config.bundle is not None:
            await asyncio.to_thread(_startup_load, repo, config.bundle, warmup_budget)
        if link is not None:
            await asyncio.to_thread(link.initial_loads, repo, warmup_budget)
            main_sock = bind(config.host, config.port, "inference API", reuse_port=True)
        assert main_sock is not None
        # Everything alive now (modules, the model) lives as long as the process: keep it out
        # of the collector's full passes, which would otherwise walk it and show up as p99.
        gc.freeze()
        loop = asyncio.get_running_loop()
        drain = _Drain(repo, stop, config.drain_delay_s, loop)
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, drain.begin)
            loop.add_signal_handler(signal.SIGINT, stop.set)
        opened: list[str] = []
        wanted = 1 if admin_sock is None else 2

        def on_ready(which: str) -> Callable[[], None]:
            def ready() -> None:
                opened.append(which)
                if len(opened) < wanted:
                    return
                if link is not None:
                    assert main_sock is not None
                    link.serving(loop, repo, metrics, drain, _url(main_sock))
                    loop.call_later(CHECKER_DELAY_S, decoder.start)
                    return
                assert admin_sock is not None and main_sock is not None and checker is not None
                echo(startup_line(_url(main_sock), repo, _url(admin_sock), token_path))
                if admin_grpc_line:
                    echo(admin_grpc_line)
                # the warm child for hot swaps: started a moment after we are ready, so its
                # fork and imports do not compete with the first requests (or a ready probe)
                loop.call_later(CHECKER_DELAY_S, checker.start)
                loop.call_later(CHECKER_DELAY_S, decoder.start)

            return ready

        tasks = [
            asyncio.ensure_future(
                serve_http(inference, main_sock, stop=stop, limits=main_limits, grace_s=config.grace_s,
                           on_ready=on_ready("inference"))
            ),
        ]  # fmt: skip
        if admin_sock is not None:
            tasks.append(
                asyncio.ensure_future(
                    serve_http(AdminHandler(repo, token), admin_sock, stop=stop, limits=admin_limits,
                               on_ready=on_ready("admin"))
                )
            )  # fmt: skip
        keeper = asyncio.ensure_future(_keep_warm(checker, stop)) if checker is not None else None
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        stop.set()  # one server failed (or a signal came): end the other too
        results = await asyncio.gather(*tasks, return_exceptions=True)
        if keeper is not None:
            keeper.cancel()
        for result in results:
            if isinstance(result, BaseException):
                raise ServiceError(f"serving stopped: {result}") from result
    finally:
        for server in (grpc_server, admin_grpc):
            if server is not None:
                await server.stop(grace=2.0)
        if predlog is not None:
            await asyncio.to_thread(predlog.close)  # what is queued becomes closed segments
        if checker is not None:
            checker.close()
        repo.close()
        executor.shutdown(wait=False, cancel_futures=True)
        decode_pool.shutdown(wait=False, cancel_futures=True)
        decoder.close()
        if main_sock is not None:
            main_sock.close()
        if admin_sock is not None:
            admin_sock.close()


class _Drain:
    """SIGTERM: readiness false now, stop accepting ``delay_s`` later (``serve_http`` then lets
    in-flight requests finish). A second SIGTERM changes nothing (a worker gets one from its
    supervisor and one from ``kill`` of the process group); SIGINT stops at once."""

    def __init__(
        self, repo: Repository, stop: asyncio.Event, delay_s: float, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.repo, self.stop, self.delay_s, self.loop = repo, stop, delay_s, loop
        self.started = False

    def begin(self) -> None:
        if self.started:
            return
        self.started = True
        if isinstance(self.repo, ServingRepository):
            self.repo.draining = True
        log.info("draining: not ready now, closing the port in %.1f s", self.delay_s)
        self.loop.call_later(self.delay_s, self.stop.set)


def grpc_missing() -> str | None:
    """Why the gRPC port cannot start in this environment (None when it can)."""
    try:
        import grpc  # noqa: F401
        import tritonclient.grpc.service_pb2_grpc  # noqa: F401
    except ImportError as exc:
        return f"{exc}; install the grpc extra: pip install 'mlplat[grpc]'"
    return None


def _background() -> None:
    """Run this thread at a lower CPU priority (Linux: a thread has its own nice value): bulk
    decoding yields the CPU to the event loop, whose requests take microseconds."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


def _startup_load(repo: Repository, bundle: Path, budget: int, **load: Any) -> None:
    """The start-up load, in this process (no check child yet), its warm-up measured after the
    fact: over the budget, the model is dropped again and serving does not start."""
    from mlplat_runtime.serving.checker import reset_peak_rss, status_bytes

    base = reset_peak_rss()
    result = repo.load(bundle, check=False, **load)
    peak = max(0, status_bytes("VmHWM") - base)
    if peak > budget:
        repo.unload(result.name)
        gc.collect()
        raise ServiceError(
            f"the start-up bundle's warm-up took {peak >> 20} MiB, over the warm-up memory budget of"
            f" {budget >> 20} MiB",
            hint="start with a larger --memory-budget-mb, or make the model or its samples smaller",
        )


async def _keep_warm(checker: Checker, stop: asyncio.Event, every_s: float = 2.0) -> None:
    """Restart the check process soon after it dies (OOM killer, a crash), not at the next load."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every_s)
        if not stop.is_set() and checker.started and not checker.alive:
            log.warning("the check process exited; starting a new one")
            checker.start()


def run_server(config: ServerConfig, *, echo: Callable[[str], None] = print) -> None:
    """Blocking entry point used by ``python -m mlplat_runtime.serving`` and ``mlplat serve``."""
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    if config.workers > 1:
        from mlplat_runtime.serving.workers import run_supervisor

        run_supervisor(config, echo=echo)
        return
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; plain asyncio still works
        asyncio.run(serve(config, echo=echo))
        return
    uvloop.run(serve(config, echo=echo))
