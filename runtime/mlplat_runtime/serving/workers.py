"""``--workers N``: N serving processes on one port, one admin API that swaps them all at once.

Layout::

    supervisor (this module, ``run_supervisor``)      worker k (``python -m ...serving.workers``)
      admin API (loopback, bearer token)                 server.serve(link=WorkerLink): the
      the check process (one per machine)                inference port (and gRPC) bound with
      holds the inference/gRPC ports (SO_REUSEPORT,      SO_REUSEPORT: the kernel spreads new
        bound, not listening)                            connections over the workers
      one control channel per worker  <-- socketpair --> a control thread (blocking reads)

The data plane is the single-process server unchanged: a worker's requests go through exactly
the code ``--workers 1`` runs, with no per-request check of anything shared. The control
channel is an unnamed ``socketpair`` inherited by that one child (nothing to connect to, so no
token on it); messages are a 4-byte length and an orjson object.

A swap (``WorkerPool.load``) is two-phase. The supervisor opens the bundle, checks the name and
the signature and runs it in the check process (a model that crashes ONNX Runtime takes down
that child only); then every worker *prepares*: loads, warms up and checks the version off to
the side, in a throw-away ``Repository``. Any refusal aborts all: the prepared versions are
dropped and the old one keeps serving everywhere. When all have prepared, the *switch*: each
worker's control thread pauses its event loop (a callback that blocks on an event), the
supervisor waits until every loop is paused, then releases them all; each loop switches the
model in before it serves anything else. While one worker serves the new version, no other can
still answer with the old one: every loop is paused between the first switch and the last, so
a request that begins after any client saw the new version is answered by the new version,
whichever worker it reaches (a request already running when the switch came finishes on the
version it started with, as in one process). The pause lasts one round trip over the control
channels (well under a millisecond idle, a few on a loaded machine); the admin call answers
only after every worker has switched. A worker that does not pause in time aborts the swap; a
worker that paused but missed the release is killed and restarted on the active version.

A dead worker (any exit the supervisor did not ask for) is restarted with the versions active
now; the restart holds the swap lock, and a restarted worker opens its port only once it has
loaded them, so it never serves an older version than the others. Metrics: see ``metrics.py``
(each worker's snapshot collected every ``METRICS_PERIOD_S``; a scrape on any worker answers
the sum). SIGTERM: the supervisor stops restarting, passes SIGTERM on (each worker drains:
readiness false, stop accepting, in-flight requests finish), waits for them, closes the admin
port and exits 0.

Must not import textual, mlflow, docker or mlplat_tui.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import dataclasses
import logging
import os
import shutil
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from mlplat_runtime.bundle.manifest import Signature
from mlplat_runtime.bundle.signature import compatibility_problems
from mlplat_runtime.errors import MlplatError, ModelLoadError, NotFoundError, RequestError, ServiceError
from mlplat_runtime.identity import StackIdentity
from mlplat_runtime.providers import ENV_WORKERS
from mlplat_runtime.serving.admin import AdminHandler, ensure_admin_token
from mlplat_runtime.serving.batching import BatchingConfig
from mlplat_runtime.serving.checker import Checker
from mlplat_runtime.serving.http import serve_http
from mlplat_runtime.serving.metrics import ServingMetrics, Snapshot, merge_snapshots
from mlplat_runtime.serving.model import LoadedModel
from mlplat_runtime.serving.repository import IndexEntry, LoadResult, ModelState, Repository
from mlplat_runtime.serving.server import (
    ServerConfig,
    ServingRepository,
    _startup_load,
    _url,
    bind,
    grpc_missing,
    port_limits,
    raise_fd_limit,
    warmup_budget_bytes,
)

log = logging.getLogger("mlplat.serving")

METRICS_PERIOD_S = 0.5  # how often the supervisor collects the workers' metrics
PAUSE_TIMEOUT_S = 2.0  # every worker's loop must pause within this for a switch
HOLD_TIMEOUT_S = 5.0  # a paused loop waits this long for the release, then resumes unswitched
READY_TIMEOUT_S = 120.0  # a worker's start: imports, the active models loaded and warmed up
RESTART_BACKOFF_S = (0.2, 10.0)  # first and longest wait before restarting a dead worker
MAX_WORKERS = 64
_HEADER = struct.Struct(">I")
MAX_MESSAGE = 64 * 1024 * 1024
_SIGNATURE_HINT = 'unload the model first, or load with "parameters": {"allow_signature_change": true}'


def auto_workers(providers: list[str] | None = None) -> int:
    """The ``workers = "auto"`` count: one per usable core on CPU (at most 8: past that the
    kernel's spreading and the shared caches give little); one with CUDA (more processes on one
    GPU multiply its memory, and dynamic batching is what feeds a GPU)."""
    from mlplat_runtime.providers import choose_providers

    chosen = providers or choose_providers()
    if chosen and chosen[0] == "CUDAExecutionProvider":
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


# -- the control channel: length-prefixed orjson -------------------------------------------------


def _frame(obj: object) -> bytes:
    body = orjson.dumps(obj)
    return _HEADER.pack(len(body)) + body


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    parts, got = [], 0
    while got < n:
        chunk = sock.recv(n - got)
        if not chunk:
            return None
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def recv_message(sock: socket.socket) -> dict[str, Any] | None:
    """The next message on a blocking socket; None when the other end closed it."""
    head = _recv_exact(sock, _HEADER.size)
    if head is None:
        return None
    (size,) = _HEADER.unpack(head)
    if size > MAX_MESSAGE:
        raise ServiceError(f"control message of {size} bytes is over the limit")
    body = _recv_exact(sock, size)
    if body is None:
        return None
    msg = orjson.loads(body)
    return msg if isinstance(msg, dict) else None


def batching_to_json(batching: BatchingConfig | bool | None) -> object:
    return dataclasses.asdict(batching) if isinstance(batching, BatchingConfig) else batching


def batching_from_json(value: object) -> BatchingConfig | bool | None:
    if isinstance(value, dict):
        value = dict(value)
        value["preferred_batch_sizes"] = tuple(value.get("preferred_batch_sizes", ()))
        return BatchingConfig(**value)
    return value if isinstance(value, bool) else None


def config_to_json(c: ServerConfig, *, port: int, grpc_port: int | None) -> dict[str, Any]:
    """What a worker needs of the server's settings (the admin side stays in the supervisor)."""
    return {
        "host": c.host,
        "port": port,
        "grpc_port": grpc_port,
        "providers": c.providers,
        "max_connections": c.max_connections,
        "memory_budget_mb": c.memory_budget_mb,
        "identity": c.identity.model_dump() if c.identity is not None else None,
        "batching": batching_to_json(c.batching),
        "drain_delay_s": c.drain_delay_s,
        "grace_s": c.grace_s,
    }


def config_from_json(doc: dict[str, Any]) -> ServerConfig:
    batching = batching_from_json(doc["batching"])
    return ServerConfig(
        host=doc["host"],
        port=doc["port"],
        grpc_port=doc["grpc_port"],
        providers=doc["providers"],
        max_connections=doc["max_connections"],
        memory_budget_mb=doc["memory_budget_mb"],
        identity=StackIdentity(**doc["identity"]) if doc["identity"] else None,
        batching=batching if isinstance(batching, BatchingConfig) else None,
        drain_delay_s=doc["drain_delay_s"],
        grace_s=doc["grace_s"],
    )


def _error_reply(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, MlplatError):
        return {"ok": False, "error": exc.message, "status": exc.http_status, "hint": exc.hint}
    return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "status": 500, "hint": None}


class WorkerRefused(MlplatError):
    """A worker's refusal, passed on with its own HTTP status."""

    def __init__(self, message: str, status: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.http_status = status


def _discard(bundle: object) -> None:
    """Remove the folder ``open_bundle`` extracted an archive into (folders are kept)."""
    if bundle is not None and getattr(bundle, "extracted", False):
        shutil.rmtree(bundle.root, ignore_errors=True)  # type: ignore[attr-defined]


# -- worker side ------------------------------------------------------------------------------


class WorkerRepository(ServingRepository):
    """A worker's repository: versions are prepared off to the side and switched in on the
    supervisor's word, never loaded in place."""

    def prepare(
        self,
        bundle: str,
        *,
        name: str,
        allow_signature_change: bool,
        batching: BatchingConfig | bool | None,
    ) -> LoadedModel:
        """Load, warm up and check ``bundle`` in a throw-away repository (this one is untouched)."""
        shadow = Repository(
            checker=None, metrics=ServingMetrics(), providers=self.providers, batching=self.default_batching
        )
        shadow.load(bundle, name=name, check=False, allow_signature_change=True, batching=batching)
        model = shadow.find(name)
        assert model is not None
        current = self.find(name)
        if current is not None and not allow_signature_change:
            diffs = compatibility_problems(
                current.signature, model.signature, label=f"serving v{current.version}"
            )
            if diffs:
                _discard(model.keep)
                raise ModelLoadError(
                    "the new version's signature is incompatible with the serving one: "
                    + "; ".join(map(str, diffs)),
                    hint=_SIGNATURE_HINT,
                )
        return model

    def install(self, model: LoadedModel) -> LoadedModel | None:
        """Switch a prepared model in (the old one is returned, for its files to be removed)."""
        old = super().install(model)
        return old if old is not model else None


class _Hold:
    """One switch on a worker: the event loop paused by ``run`` until the release comes."""

    def __init__(self, action: str, name: str, model: LoadedModel | None) -> None:
        self.action, self.name, self.model = action, name, model
        self.paused = threading.Event()
        self.release = threading.Event()
        self.done = threading.Event()
        self.commit = False
        self.applied = False
        self.old: LoadedModel | None = None
        self.error: str | None = None

    def run(self, repo: WorkerRepository) -> None:  # on the event loop thread
        self.paused.set()
        if self.release.wait(HOLD_TIMEOUT_S) and self.commit:
            try:
                if self.action == "install":
                    assert self.model is not None
                    self.old = repo.install(self.model)
                else:
                    repo.unload(self.name)
                self.applied = True
            except Exception as exc:  # reported to the supervisor, which restarts us
                self.error = f"{type(exc).__name__}: {exc}"
        self.done.set()


class WorkerLink:
    """A worker's end of its control channel (see the module docstring)."""

    repository = WorkerRepository

    def __init__(self, sock: socket.socket, init: dict[str, Any]) -> None:
        self.sock = sock
        self.slot = int(init["worker"])
        self.loads: list[dict[str, Any]] = init["loads"]
        self._send_lock = threading.Lock()
        self._prepared: dict[str, LoadedModel] = {}
        self._hold: _Hold | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.repo: WorkerRepository | None = None
        self.metrics: ServingMetrics | None = None
        self._drain: Any = None

    def send(self, msg: dict[str, Any]) -> None:
        data = _frame(msg)
        with self._send_lock:
            self.sock.sendall(data)

    def initial_loads(self, repo: Repository, budget: int) -> None:
        """The supervisor's active versions, loaded before the port opens."""
        for spec in self.loads:
            batching = batching_from_json(spec["batching"])
            _startup_load(repo, Path(spec["bundle"]), budget, name=spec["name"], batching=batching)

    async def start_grpc(self, start: Callable[..., Any], inference: Any, config: ServerConfig) -> Any:
        return await start(inference, config.host, config.grpc_port, reuse_port=True)

    def serving(
        self,
        loop: asyncio.AbstractEventLoop,
        repo: Repository,
        metrics: ServingMetrics,
        drain: Any,
        url: str,
    ) -> None:
        """Called on the loop once the port accepts: start the control thread, say ready."""
        assert isinstance(repo, WorkerRepository)
        self.loop, self.repo, self.metrics, self._drain = loop, repo, metrics, drain
        metrics.own_models = False  # the supervisor counts loads and swaps, once
        threading.Thread(target=self._run, name="mlplat-control", daemon=True).start()
        models = [
            {"name": m.name, "version": m.version, "bundle_id": m.bundle_id, "provider": m.provider}
            for m in repo.models()
        ]
        self.send({"op": "ready", "url": url, "pid": os.getpid(), "models": models})

    def _run(self) -> None:
        try:
            while True:
                msg = recv_message(self.sock)
                if msg is None:
                    break
                self._handle(msg)
        except (OSError, ServiceError) as exc:
            log.warning("worker %d: control channel failed: %s", self.slot, exc)
        assert self.loop is not None
        log.info("worker %d: the supervisor is gone; stopping", self.slot)
        with contextlib.suppress(RuntimeError):  # the loop may be closed already
            self.loop.call_soon_threadsafe(self._drain.begin)

    def _reply(self, msg: dict[str, Any], **fields: Any) -> None:
        self.send({"id": msg["id"], "ok": True, **fields})

    def _handle(self, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        try:
            if op == "prepare":
                threading.Thread(target=self._prepare, args=(msg,), daemon=True).start()
            elif op == "abort":
                _discard(getattr(self._prepared.pop(msg["name"], None), "keep", None))
                self._reply(msg)
            elif op == "pause":
                self._pause(msg)
            elif op == "release":
                self._release(msg)
            elif op == "metrics":
                assert self.metrics is not None
                self.metrics.peers = msg["others"]
                self._reply(msg, snapshot=self.metrics.snapshot())
            else:
                self.send({"id": msg.get("id", 0), **_error_reply(RequestError(f"unknown op {op!r}"))})
        except Exception as exc:
            self.send({"id": msg.get("id", 0), **_error_reply(exc)})

    def _prepare(self, msg: dict[str, Any]) -> None:
        assert self.repo is not None
        try:
            model = self.repo.prepare(
                msg["bundle"],
                name=msg["name"],
                allow_signature_change=msg["allow_signature_change"],
                batching=batching_from_json(msg["batching"]),
            )
        except Exception as exc:
            if not isinstance(exc, MlplatError):
                log.exception("worker %d: preparing %s failed", self.slot, msg["name"])
            self.send({"id": msg["id"], **_error_reply(exc)})
            return
        _discard(getattr(self._prepared.pop(msg["name"], None), "keep", None))
        self._prepared[msg["name"]] = model
        self._reply(msg, version=model.version, bundle_id=model.bundle_id, provider=model.provider)

    def _pause(self, msg: dict[str, Any]) -> None:
        assert self.loop is not None and self.repo is not None
        action, name = msg["action"], msg["name"]
        model = self._prepared.pop(name, None) if action == "install" else None
        if action == "install" and model is None:
            raise ServiceError(f"worker {self.slot} has no prepared version of '{name}'")
        hold = self._hold = _Hold(action, name, model)
        self.loop.call_soon_threadsafe(hold.run, self.repo)
        if not hold.paused.wait(PAUSE_TIMEOUT_S):
            hold.release.set()  # when the callback does run, it returns at once, unswitched
            self._hold = None
            _discard(getattr(model, "keep", None))
            raise ServiceError(f"worker {self.slot}'s event loop did not pause for the switch")
        self._reply(msg)

    def _release(self, msg: dict[str, Any]) -> None:
        hold, self._hold = self._hold, None
        if hold is None:
            raise ServiceError(f"worker {self.slot} has no switch to release")
        hold.commit = bool(msg["commit"])
        hold.release.set()
        hold.done.wait(HOLD_TIMEOUT_S)
        self._reply(msg, applied=hold.applied, error=hold.error)
        _discard(getattr(hold.old, "keep", None))  # in-flight requests hold the session, not files
        if not hold.applied:
            _discard(getattr(hold.model, "keep", None))


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker when the supervisor dies (PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)


def worker_main(argv: list[str] | None = None) -> int:
    """``python -m mlplat_runtime.serving.workers --control-fd N`` (started by the supervisor)."""
    from mlplat_runtime.serving.server import serve

    p = argparse.ArgumentParser(prog="python -m mlplat_runtime.serving.workers")
    p.add_argument("--control-fd", type=int, required=True)
    p.add_argument("--parent", type=int, required=True)
    a = p.parse_args(argv)
    _die_with_parent()
    if os.getppid() != a.parent:
        return 1  # the supervisor died before we could ask to follow it
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    sock = socket.socket(fileno=a.control_fd)
    init = recv_message(sock)
    if init is None:
        return 1
    link = WorkerLink(sock, init)
    try:
        import uvloop

        uvloop.run(serve(config_from_json(init["config"]), echo=lambda _line: None, link=link))
    except MlplatError as exc:
        print(f"error: worker {link.slot}: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return 0


# -- supervisor side ---------------------------------------------------------------------------


class WorkerGone(ServiceError):
    """A worker's control channel closed (it exited) before it answered."""


class Channel:
    """The supervisor's end of one worker's control channel, and the process."""

    def __init__(self, slot: int, proc: asyncio.subprocess.Process, sock: socket.socket) -> None:
        self.slot, self.proc, self.sock = slot, proc, sock
        self.ready: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.next_id = 1
        self.snapshot: Snapshot = {}
        self.started = time.monotonic()
        self.writer: asyncio.StreamWriter | None = None
        self.reader_task: asyncio.Task[None] | None = None

    async def open(self, init: dict[str, Any]) -> None:
        reader, self.writer = await asyncio.open_unix_connection(sock=self.sock)
        self.writer.write(_frame(init))
        self.reader_task = asyncio.ensure_future(self._read(reader))

    @property
    def serving(self) -> bool:
        return (
            self.ready.done()
            and not self.ready.cancelled()
            and self.ready.exception() is None
            and (self.proc.returncode is None)
        )

    async def _read(self, reader: asyncio.StreamReader) -> None:
        gone = WorkerGone(f"worker {self.slot} (pid {self.proc.pid}) exited")
        try:
            while True:
                (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
                msg = orjson.loads(await reader.readexactly(size))
                if msg.get("op") == "ready":
                    if not self.ready.done():
                        self.ready.set_result(msg)
                    continue
                fut = self.pending.pop(msg.get("id", 0), None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
        except (asyncio.IncompleteReadError, OSError, orjson.JSONDecodeError):
            pass
        if not self.ready.done():
            self.ready.set_exception(gone)
            self.ready.exception()  # retrieved: a start-up failure is reported by whoever waits
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(gone)
        self.pending.clear()

    async def call(self, op: str, *, timeout: float | None = None, **fields: Any) -> dict[str, Any]:
        """Send one request and wait for its answer (a refusal raises ``WorkerRefused``)."""
        if self.writer is None or self.writer.is_closing() or self.proc.returncode is not None:
            raise WorkerGone(f"worker {self.slot} is not running")
        msg_id, self.next_id = self.next_id, self.next_id + 1
        fut = self.pending[msg_id] = asyncio.get_running_loop().create_future()
        self.writer.write(_frame({"id": msg_id, "op": op, **fields}))
        try:
            reply = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            self.pending.pop(msg_id, None)
            raise ServiceError(f"worker {self.slot} did not answer '{op}' within {timeout:g} s") from None
        if not reply.get("ok"):
            raise WorkerRefused(
                reply.get("error", "refused"), int(reply.get("status", 500)), reply.get("hint")
            )
        return reply

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.reader_task is not None:
            self.reader_task.cancel()


@dataclass(frozen=True)
class LoadSpec:
    """An active version, as a (re)started worker loads it."""

    name: str
    bundle: str
    batching: object  # batching_to_json of the load's setting

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "bundle": self.bundle, "batching": self.batching}


class WorkerPool:
    """The supervisor's workers, and the admin's ``ModelControl`` over all of them."""

    def __init__(self, config: ServerConfig, *, port: int, grpc_port: int | None) -> None:
        self.config = config
        self.port, self.grpc_port = port, grpc_port
        self.metrics = ServingMetrics()
        self.checker = Checker(providers=config.providers, max_bytes=warmup_budget_bytes(config))
        self.channels: list[Channel | None] = [None] * config.workers
        self.active: dict[str, LoadSpec] = {}
        self.signatures: dict[str, Signature] = {}
        self.entries: dict[str, IndexEntry] = {}
        self.retired: Snapshot = {}  # the last snapshots of dead workers: counters never go back
        self.restarts = 0
        self.stopping = False
        self.lock = asyncio.Lock()  # one swap, unload or worker start at a time
        self.collect_now = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # -- workers ---------------------------------------------------------------------------
    async def _spawn(self, slot: int) -> Channel:
        parent, child = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        env[ENV_WORKERS] = str(self.config.workers)  # a batched session's share of the cores
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "mlplat_runtime.serving.workers",
                "--control-fd", str(child.fileno()), "--parent", str(os.getpid()),
                pass_fds=(child.fileno(),), stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL, env=env,
            )  # fmt: skip
        finally:
            child.close()
        ch = Channel(slot, proc, parent)
        self.channels[slot] = ch
        init = {
            "worker": slot,
            "config": config_to_json(self.config, port=self.port, grpc_port=self.grpc_port),
            "loads": [spec.to_json() for spec in self.active.values()],
        }
        await ch.open(init)
        return ch

    async def _start(self, slot: int) -> Channel:
        """Start worker ``slot`` and wait until it serves (call with the lock held)."""
        ch = await self._spawn(slot)
        try:
            await asyncio.wait_for(asyncio.shield(ch.ready), READY_TIMEOUT_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                ch.proc.kill()
            raise ServiceError(f"worker {slot} did not start within {READY_TIMEOUT_S:g} s") from None
        except WorkerGone:
            rc = await ch.proc.wait()
            raise ServiceError(
                f"worker {slot} exited during its start (status {rc})", hint="its error is in the log above"
            ) from None
        return ch

    async def start(self) -> dict[str, Any]:
        """Start every worker; the first one's ready message (its models, for the start-up line)."""
        async with self.lock:
            first = await self._start(0)
            for slot in range(1, len(self.channels)):
                await self._start(slot)
        for slot in range(len(self.channels)):
            self._tasks.append(asyncio.ensure_future(self._watch(slot)))
        self._tasks.append(asyncio.ensure_future(self._collect()))
        self._tasks.append(asyncio.ensure_future(self._keep_checker()))
        return first.ready.result()

    def serving(self) -> list[Channel]:
        return [ch for ch in self.channels if ch is not None and ch.serving]

    async def _watch(self, slot: int) -> None:
        """Restart worker ``slot`` whenever it exits while we are not stopping."""
        backoff = RESTART_BACKOFF_S[0]
        while not self.stopping:
            ch = self.channels[slot]
            assert ch is not None
            rc = await ch.proc.wait()
            ch.close()
            if self.stopping:
                return
            self.retired = merge_snapshots(self.retired, ch.snapshot)
            ch.snapshot = {}
            up_s = time.monotonic() - ch.started
            backoff = RESTART_BACKOFF_S[0] if up_s > 30 else min(backoff * 2, RESTART_BACKOFF_S[1])
            log.warning("worker %d (pid %d) exited with status %s; restarting it", slot, ch.proc.pid, rc)
            await asyncio.sleep(backoff)
            async with self.lock:
                if self.stopping:
                    return
                try:
                    new = await self._start(slot)
                except ServiceError as exc:
                    log.error("restarting worker %d failed: %s", slot, exc.message)
                    continue
                self.restarts += 1
                log.info("worker %d restarted (pid %d)", slot, new.proc.pid)
            self.collect_now.set()

    async def _keep_checker(self, every_s: float = 2.0) -> None:
        await asyncio.sleep(1.0)
        self.checker.start()
        while not self.stopping:
            await asyncio.sleep(every_s)
            if self.checker.started and not self.checker.alive and not self.stopping:
                log.warning("the check process exited; starting a new one")
                self.checker.start()

    async def _collect(self) -> None:
        """Every worker's metrics snapshot in, the others' sum out (metrics.py)."""
        while not self.stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.collect_now.wait(), METRICS_PERIOD_S)
            self.collect_now.clear()
            await self.collect()

    async def collect(self) -> None:
        live = self.serving()
        self.metrics.workers = {
            "serving": len(live),
            "restarts": self.restarts,
            "requests": {str(ch.slot): _requests(ch.snapshot) for ch in live},
        }
        mine = self.metrics.snapshot()
        for ch in live:
            others = merge_snapshots(self.retired, mine, *(o.snapshot for o in live if o is not ch))
            with contextlib.suppress(ServiceError):
                ch.snapshot = (await ch.call("metrics", timeout=2.0, others=others))["snapshot"]

    async def stop(self, timeout_s: float) -> None:
        """Stop restarting, pass SIGTERM on, wait for the workers (SIGKILL after ``timeout_s``)."""
        self.stopping = True
        procs = [ch.proc for ch in self.channels if ch is not None and ch.proc.returncode is None]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        if procs:
            _, late = await asyncio.wait([asyncio.ensure_future(p.wait()) for p in procs], timeout=timeout_s)
            if late:
                log.warning("%d worker(s) did not stop within %.0f s; killing them", len(late), timeout_s)
                for proc in procs:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                await asyncio.wait(late, timeout=5)
        for task in self._tasks:
            task.cancel()
        for ch in self.channels:
            if ch is not None:
                ch.close()
        self.checker.close()

    # -- ModelControl ----------------------------------------------------------------------
    async def index(self) -> list[IndexEntry]:
        return [self.entries[name] for name in sorted(self.entries)]

    def adopt(self, bundle: Path) -> None:
        """The start-up bundle: opened here for its name; every worker loads it as it starts."""
        from mlplat_runtime.bundle import open_bundle

        b = open_bundle(bundle)
        try:
            m = b.manifest
            self.active[m.model_name] = LoadSpec(m.model_name, str(bundle), None)
            self.signatures[m.model_name] = m.signature
        finally:
            _discard(b)

    def started(self, first: dict[str, Any]) -> None:
        """Note what the workers serve after the start (the first worker's ready message)."""
        for m in first.get("models", []):
            name, version, bundle_id, provider = m["name"], m["version"], m["bundle_id"], m["provider"]
            self.metrics.set_active(name, version, bundle_id, provider)
            self.entries[name] = IndexEntry(name, version, ModelState.READY, "", bundle_id, provider)

    def _check(self, bundle: str, name: str, allow_signature_change: bool) -> Signature:
        """Before any worker loads: the bundle opens and verifies, its name and signature fit,
        and it runs in the check process (a crash there cannot take a worker down)."""
        from mlplat_runtime.bundle import open_bundle

        path = Path(bundle)
        if not path.exists():
            raise NotFoundError(
                f"bundle not found: {path}", hint="give the path as the serving process sees it"
            )
        b = open_bundle(path)
        try:
            manifest = b.manifest
            if manifest.model_name != name:
                raise RequestError(
                    f"the bundle is for model '{manifest.model_name}', not '{name}'",
                    hint=f"load it at /v2/repository/models/{manifest.model_name}/load",
                )
            current = self.signatures.get(name)
            entry = self.entries.get(name)
            if current is not None and not allow_signature_change:
                label = f"serving v{entry.version}" if entry is not None else "serving"
                diffs = compatibility_problems(current, manifest.signature, label=label)
                if diffs:
                    raise ModelLoadError(
                        "the new version's signature is incompatible with the serving one: "
                        + "; ".join(map(str, diffs)),
                        hint=_SIGNATURE_HINT,
                    )
            inputs, _ = b.samples()
            self.checker.check(b.model_path, inputs)
            return manifest.signature
        finally:
            _discard(b)

    async def load(
        self, bundle: str, *, name: str, allow_signature_change: bool, batching: BatchingConfig | bool | None
    ) -> LoadResult:
        async with self.lock:
            t0 = time.perf_counter()
            first = name not in self.active
            try:
                signature = await asyncio.to_thread(self._check, bundle, name, allow_signature_change)
                live = self.serving()
                if not live:
                    raise ServiceError("no worker is serving right now", hint="retry in a few seconds")
                fields: dict[str, Any] = {
                    "bundle": bundle,
                    "name": name,
                    "allow_signature_change": allow_signature_change,
                    "batching": batching_to_json(batching),
                }
                results = await asyncio.gather(
                    *(ch.call("prepare", **fields) for ch in live), return_exceptions=True
                )
                failed = [r for r in results if isinstance(r, BaseException)]
                if failed:
                    await asyncio.gather(*(ch.call("abort", timeout=5.0, name=name) for ch in live),
                                         return_exceptions=True)  # fmt: skip
                    raise _worst(failed)
                await self._switch(live, "install", name)
            except MlplatError as exc:
                self._note_failure(name, exc)
                raise
            reply: dict[str, Any] = next(r for r in results if isinstance(r, dict))
            self.active[name] = LoadSpec(name, bundle, batching_to_json(batching))
            self.signatures[name] = signature
            version, bundle_id, provider = reply["version"], reply["bundle_id"], reply["provider"]
            self.entries[name] = IndexEntry(name, version, ModelState.READY, "", bundle_id, provider)
            swap_ms = (time.perf_counter() - t0) * 1000.0
            self.metrics.set_active(name, version, bundle_id, provider)
            self.metrics.load_result(name, True, swap_ms / 1000.0, swapped=not first)
            log.info("all %d workers serve %s v%s after %.1f ms", len(live), name, version, swap_ms)
        self.collect_now.set()
        return LoadResult(name, version, bundle_id, provider, swap_ms, swapped=not first)

    async def unload(self, name: str) -> None:
        async with self.lock:
            if name not in self.active:
                raise NotFoundError(f"model '{name}' is not loaded")
            await self._switch(self.serving(), "unload", name)
            del self.active[name]
            self.signatures.pop(name, None)
            entry = self.entries.get(name)
            self.entries[name] = IndexEntry(
                name, entry.version if entry else "", ModelState.UNAVAILABLE, "unloaded",
                entry.bundle_id if entry else "", "",
            )  # fmt: skip
            self.metrics.clear_active(name)
        self.collect_now.set()

    async def _switch(self, live: list[Channel], action: str, name: str) -> None:
        """Pause every worker's loop, then release them all with the switch (module docstring)."""
        paused = await asyncio.gather(
            *(ch.call("pause", timeout=PAUSE_TIMEOUT_S + 1, action=action, name=name) for ch in live),
            return_exceptions=True,
        )
        ok = [ch for ch, r in zip(live, paused, strict=True) if not isinstance(r, BaseException)]
        commit = len(ok) == len(live)
        released = await asyncio.gather(
            *(ch.call("release", timeout=HOLD_TIMEOUT_S + 1, commit=commit) for ch in ok),
            return_exceptions=True,
        )
        if not commit:
            if action == "install":  # the ones that did not pause dropped theirs already
                await asyncio.gather(*(ch.call("abort", timeout=5.0, name=name) for ch in live),
                                     return_exceptions=True)  # fmt: skip
            raise _worst([r for r in paused if isinstance(r, BaseException)])
        for ch, r in zip(ok, released, strict=True):
            if isinstance(r, BaseException) or not r.get("applied"):
                # paused but not switched: it would serve the old version; a restart loads the new
                why = r if isinstance(r, BaseException) else r.get("error") or "the release came too late"
                log.error("worker %d missed the switch (%s); restarting it", ch.slot, why)
                with contextlib.suppress(ProcessLookupError):
                    ch.proc.kill()

    def _note_failure(self, name: str, exc: MlplatError) -> None:
        current = self.entries.get(name) if name in self.active else None
        self.entries[name] = IndexEntry.rejected(name, current, exc.message)
        self.metrics.load_result(name, False)
        kept = f", still serving v{current.version}" if current else ""
        log.warning("load of %s rejected: %s%s", name, exc.message, kept)


def _requests(snap: Snapshot) -> int:
    return sum(row[-1] for row in snap.get("requests", ()))


def _worst(errors: list[BaseException]) -> MlplatError:
    """The error to answer with: a refusal of the bundle (4xx) before a worker trouble (5xx)."""
    known = [e for e in errors if isinstance(e, MlplatError)]
    if not known:
        return ServiceError(f"a worker failed: {errors[0]!r}")
    return min(known, key=lambda e: (e.http_status >= 500, e.http_status))


def _reserve(host: str, port: int, what: str) -> socket.socket:
    """Hold ``port`` for the workers: first an exclusive bind (fails if anyone has it, with or
    without SO_REUSEPORT, so two servers never split one port's traffic), then a SO_REUSEPORT
    bind that is never listened on (the kernel only spreads connections over listeners)."""
    probe = bind(host, port, what, listen=False)
    chosen = probe.getsockname()[1]
    probe.close()
    return bind(host, chosen, what, reuse_port=True, listen=False)


def _grpc_shares_port() -> bool:
    import inspect

    from mlplat_runtime.serving.grpc_service import start_grpc

    return "reuse_port" in inspect.signature(start_grpc).parameters


async def supervise(
    config: ServerConfig, *, echo: Callable[[str], None] = print, stop: asyncio.Event | None = None
) -> None:
    """The supervisor: hold the ports, start the workers, serve the admin API, restart the dead."""
    if not 2 <= config.workers <= MAX_WORKERS:
        raise ServiceError(f"workers must be 2..{MAX_WORKERS} for a supervisor, got {config.workers}")
    if config.admin_grpc_port is not None and (why := grpc_missing()) is not None:
        raise ServiceError(f"the admin gRPC API cannot start: {why}")
    if config.grpc_port is not None:
        why = grpc_missing()
        if why is None and not _grpc_shares_port():
            why = "this build's gRPC server cannot share its port between workers; use --workers 1"
        if why is not None:
            raise ServiceError(f"the gRPC API cannot start: {why}")
    token, token_path = ensure_admin_token(config.admin_token_file)
    _, admin_limits = port_limits(config, raise_fd_limit())
    held = [_reserve(config.host, config.port, "inference API")]
    try:
        admin_sock = bind(config.admin_host, config.admin_port, "admin API")
        if config.grpc_port is not None:
            held.append(_reserve(config.host, config.grpc_port, "gRPC API"))
    except ServiceError:
        for s in held:
            s.close()
        raise
    port = held[0].getsockname()[1]
    grpc_port = held[1].getsockname()[1] if len(held) > 1 else None
    pool = WorkerPool(config, port=port, grpc_port=grpc_port)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []

    def on_signal(sig: int) -> None:
        if not stopping:
            log.info("stopping: draining %d workers", len(pool.channels))
            timeout = config.drain_delay_s + config.grace_s + 5.0
            if sig == signal.SIGINT:
                timeout = config.grace_s + 5.0
            stopping.append(asyncio.ensure_future(_stop_then(pool, timeout, stop)))

    admin_grpc = None
    admin_grpc_line = ""
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, on_signal, sig)
        if config.admin_grpc_port is not None:  # the repository extension over gRPC, on the pool
            from mlplat_runtime.serving.grpc_service import start_admin_grpc

            admin_grpc, bound = await start_admin_grpc(pool, token, config.admin_host, config.admin_grpc_port)
            admin_host = f"[{config.admin_host}]" if ":" in config.admin_host else config.admin_host
            admin_grpc_line = f"mlplat serving admin_grpc={admin_host}:{bound}"  # said after start-up
        if config.bundle is not None:
            await asyncio.to_thread(pool.adopt, config.bundle)
        host = f"[{config.host}]" if ":" in config.host else config.host
        if grpc_port is not None:  # a line of its own, well before the start-up line
            echo(f"mlplat serving grpc={host}:{grpc_port}")
        first = await pool.start()
        pool.started(first)
        pids = ", ".join(str(ch.proc.pid) for ch in pool.channels if ch is not None)
        log.info("%d workers serving (pids %s)", config.workers, pids)
        models = first.get("models", [])
        what = (
            f"model={models[0]['name']} version={models[0]['version']} provider={models[0]['provider']}"
            if models
            else "model=- version=- provider=-"
        )
        echo(
            f"mlplat serving url=http://{host}:{port} {what} admin={_url(admin_sock)}"
            f" admin_token={token_path}"
        )
        if admin_grpc_line:
            echo(admin_grpc_line)
        await serve_http(AdminHandler(pool, token), admin_sock, stop=stop, limits=admin_limits)
    finally:
        if admin_grpc is not None:
            await admin_grpc.stop(grace=2.0)
        if not pool.stopping:
            await pool.stop(config.grace_s + 5.0)
        for task in stopping:
            await task
        admin_sock.close()
        for s in held:
            s.close()


async def _stop_then(pool: WorkerPool, timeout_s: float, stop: asyncio.Event) -> None:
    try:
        await pool.stop(timeout_s)
    finally:
        stop.set()


def run_supervisor(config: ServerConfig, *, echo: Callable[[str], None] = print) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        asyncio.run(supervise(config, echo=echo))
        return
    uvloop.run(supervise(config, echo=echo))


if __name__ == "__main__":
    sys.exit(worker_main())
