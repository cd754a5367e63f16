"""``WarmWorkerRunner``: run ``python train.py`` without paying for its imports on every save.

Most of a small training run's wall time is importing numpy, scikit-learn, skl2onnx, torch or
mlflow. The warm worker (``worker_main.py``) is a separate, single-threaded Python process that
imports those once and then ``fork()``s a child per run, so every run starts from the same clean,
pre-imported state — globals mutated by one run are fresh in the next, and the project's own
modules are never preloaded, so edits to them are always seen.

The worker is started with ``subprocess`` (fork + exec), never forked from this process: the dev
loop has threads, and forking a threaded process is unsafe. Commands that are not
``python X.py ...`` / ``python -m mod ...``, or a worker that fails to start, fall back to the
``SubprocessRunner``. ``[train] warm_worker = false`` or ``mlplat dev --no-warm`` turns it off.

Environment variables a library reads *at import time* come from the worker's start environment,
not the run's; ``MLPLAT_*``/``MLFLOW_*`` are read when used, so they are per run.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from mlplat_runtime.errors import TrainingError
from mlplat_tui.cycle.training import (
    LineSplitter,
    OutputSink,
    SubprocessRunner,
    TrainingCancelled,
    TrainingRunner,
)

WORKER_MAIN = Path(__file__).with_name("worker_main.py")
# Libraries that start threads or grab devices when imported: never preload them in a process
# that will fork.
NEVER_PRELOAD = frozenset({"tensorflow", "jax", "jaxlib", "ray", "keras", "multiprocessing"})
_PYTHONS = ("python", "python3", f"python{sys.version_info.major}.{sys.version_info.minor}")


@dataclass(frozen=True)
class PythonCommand:
    """``python X.py args`` (``script``) or ``python -m mod args`` (``module``)."""

    args: tuple[str, ...]
    script: str | None = None
    module: str | None = None


def parse_python_command(command: str) -> PythonCommand | None:
    """The script or module a training command runs, when the warm worker can run it."""
    try:
        argv = shlex.split(command)
    except ValueError:
        return None
    if len(argv) < 2:
        return None
    exe = argv[0]
    same_python = exe in _PYTHONS or (
        os.path.sep in exe and os.path.realpath(exe) == os.path.realpath(sys.executable)
    )
    if not same_python:
        return None
    rest = argv[1:]
    while rest and rest[0] == "-u":  # we stream unbuffered anyway
        rest = rest[1:]
    if len(rest) >= 2 and rest[0] == "-m":
        return PythonCommand(args=tuple(rest[2:]), module=rest[1])
    if rest and rest[0].endswith(".py") and not rest[0].startswith("-"):
        return PythonCommand(args=tuple(rest[1:]), script=rest[0])
    return None


def _is_local(name: str, dirs: Sequence[Path]) -> Path | None:
    for d in dirs:
        if (d / f"{name}.py").is_file():
            return d / f"{name}.py"
        if (d / name).is_dir():
            init = d / name / "__init__.py"
            return init if init.is_file() else d / name
    return None


def guess_preload(script: Path, project_root: Path, *, max_files: int = 50) -> tuple[str, ...]:
    """Third-party modules the script (and the project modules it imports) import.

    Project-local modules are followed, never listed: they must be imported fresh in every run.
    Entries are ``module`` or ``module:name,...`` (names that may be submodules).
    """
    dirs = [script.parent.resolve(), project_root.resolve()]
    seen_files: set[Path] = set()
    todo = [script.resolve()]
    found: dict[str, set[str]] = {}
    while todo and len(seen_files) < max_files:
        path = todo.pop()
        if path in seen_files or not path.is_file():
            continue
        seen_files.add(path)
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        except (OSError, SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            pairs: list[tuple[str, tuple[str, ...]]] = []
            if isinstance(node, ast.Import):
                pairs = [(a.name, ()) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                pairs = [(node.module, tuple(a.name for a in node.names if a.name != "*"))]
            for name, subs in pairs:
                top = name.split(".")[0]
                if top in ("__future__", "__main__") or top in NEVER_PRELOAD:
                    continue
                local = _is_local(top, dirs)
                if local is not None:
                    if local.is_file():
                        todo.append(local.resolve())
                    continue
                found.setdefault(name, set()).update(subs)
    return tuple(f"{name}:{','.join(sorted(subs))}" if subs else name for name, subs in sorted(found.items()))


def _modules(entries: Sequence[str]) -> set[str]:
    return {e.partition(":")[0] for e in entries}


class _Worker:
    """One running worker process and the thread that reads its replies."""

    def __init__(self, preload: tuple[str, ...], cwd: Path, log_path: Path | None) -> None:
        self.preload = preload
        self.replies: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.info: dict[str, Any] = {}
        log: IO[bytes] | int = subprocess.DEVNULL
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log = open(log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            self.proc = subprocess.Popen(
                [sys.executable, str(WORKER_MAIN), json.dumps(list(preload))],
                cwd=cwd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,  # Ctrl-C in the terminal is ours to handle, not its
            )
        finally:
            if not isinstance(log, int):
                log.close()
        self._reader = threading.Thread(target=self._read, name="mlplat-warm-worker", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                self.replies.put(json.loads(raw))
            except ValueError:
                continue
        self.replies.put(None)  # the worker is gone

    def wait_ready(self, timeout_s: float, cancel: threading.Event | None = None) -> bool:
        deadline = time.monotonic() + timeout_s
        while not self.info:
            if cancel is not None and cancel.is_set():
                return False
            try:
                msg = self.replies.get(timeout=0.05)
            except queue.Empty:
                if time.monotonic() > deadline:
                    return False
                continue
            if msg is None:
                return False
            if msg.get("ready"):
                self.info = msg
        return True

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, msg: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(msg).encode("utf-8") + b"\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                self.send({"op": "quit"})
            with contextlib.suppress(OSError, ValueError):
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=2)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class WarmWorkerRunner:
    """A ``TrainingRunner`` that forks runs from a pre-imported worker; see the module docstring."""

    def __init__(
        self,
        project_root: Path,
        command: str,
        *,
        preload: Sequence[str] = (),
        guess: bool = True,
        log_path: Path | None = None,
        ready_timeout_s: float = 120.0,
        fallback: TrainingRunner | None = None,
    ) -> None:
        self.project_root = Path(project_root).resolve()
        self.command = command
        self.extra_preload = tuple(preload)
        self.guess = guess
        self.log_path = log_path
        self.ready_timeout_s = ready_timeout_s
        self.fallback = fallback or SubprocessRunner()
        self._worker: _Worker | None = None
        self._lock = threading.RLock()
        self._run_lock = threading.Lock()
        self.last_mode = ""  # "warm" or "subprocess": how the last run ran (for events, benches)

    @classmethod
    def for_project(cls, project: Any, *, warm: bool = True) -> TrainingRunner:
        """The runner the dev loop should use for this project."""
        train = project.config.train
        if not (warm and train.warm_worker) or parse_python_command(train.command) is None:
            return SubprocessRunner()
        return cls(
            project.root,
            train.command,
            preload=train.preload,
            log_path=project.paths.devloop_log,
        )

    # -- worker lifecycle ------------------------------------------------------------------

    def wanted_preload(self, command: str | None = None) -> tuple[str, ...]:
        parsed = parse_python_command(command or self.command)
        entries = list(self.extra_preload)
        if self.guess and parsed is not None and parsed.script is not None:
            script = (self.project_root / parsed.script).resolve()
            entries += [e for e in guess_preload(script, self.project_root) if e not in entries]
        return tuple(entries)

    def start(self) -> None:
        """Start the worker now (it imports in the background); idempotent."""
        with self._lock:
            if self._worker is None or not self._worker.alive:
                if self._worker is not None:
                    self._worker.close()
                self._worker = _Worker(self.wanted_preload(), self.project_root, self.log_path)

    def close(self) -> None:
        with self._lock:
            worker, self._worker = self._worker, None
        if worker is not None:
            worker.close()

    @property
    def worker_info(self) -> dict[str, Any]:
        """What the worker reported when ready (pid, loaded, failed, threads, import_s)."""
        worker = self._worker
        return dict(worker.info) if worker is not None else {}

    def wait_ready(self, timeout_s: float | None = None, cancel: threading.Event | None = None) -> bool:
        self.start()
        worker = self._worker
        assert worker is not None
        return worker.wait_ready(self.ready_timeout_s if timeout_s is None else timeout_s, cancel)

    def _refresh_after_run(self, command: str) -> None:
        """Start a new worker when the script now imports modules the current one lacks."""
        worker = self._worker
        if worker is None or not worker.alive:
            return
        if not _modules(self.wanted_preload(command)) <= _modules(worker.preload):
            self.close()
            self.start()

    # -- TrainingRunner ----------------------------------------------------------------------

    def run(
        self,
        command: str,
        *,
        cwd: Path,
        env: dict[str, str],
        on_output: OutputSink,
        cancel: threading.Event,
        timeout_s: float,
    ) -> float:
        parsed = parse_python_command(command)
        if parsed is None:
            self.last_mode = "subprocess"
            return self.fallback.run(
                command, cwd=cwd, env=env, on_output=on_output, cancel=cancel, timeout_s=timeout_s
            )
        with self._run_lock:
            self.start()
            worker = self._worker
            assert worker is not None
            if not worker.wait_ready(self.ready_timeout_s, cancel):
                if cancel.is_set():
                    raise TrainingCancelled()
                self.close()
                self.last_mode = "subprocess"
                return self.fallback.run(
                    command, cwd=cwd, env=env, on_output=on_output, cancel=cancel, timeout_s=timeout_s
                )
            self.last_mode = "warm"
            try:
                return self._run_in(worker, command, parsed, cwd, env, on_output, cancel, timeout_s)
            finally:
                self._refresh_after_run(command)

    def _run_in(
        self,
        worker: _Worker,
        command: str,
        parsed: PythonCommand,
        cwd: Path,
        env: dict[str, str],
        on_output: OutputSink,
        cancel: threading.Event,
        timeout_s: float,
    ) -> float:
        request: dict[str, Any] = {"op": "run", "cwd": str(cwd), "env": dict(env), "argv": list(parsed.args)}
        if parsed.module:
            request["module"] = parsed.module
        else:
            assert parsed.script is not None
            request["script"] = str((Path(cwd) / parsed.script).resolve())
        tail: deque[str] = deque(maxlen=40)
        stopping: str | None = None  # "cancel" | "timeout" once we killed the run

        def line_out(line: str) -> None:
            tail.append(line)
            if stopping is None:
                on_output(line)

        lines = LineSplitter(line_out)  # the same lines as a plain subprocess run gives
        start = time.monotonic()
        deadline = start + timeout_s
        try:
            worker.send(request)
        except (OSError, ValueError) as exc:
            self.close()
            raise TrainingError("the warm worker is gone", hint="retry; or run with --no-warm") from exc
        child: int | None = None
        killed_at = 0.0
        while True:
            try:
                msg = worker.replies.get(timeout=0.02)
            except queue.Empty:
                msg = {}
            if msg is None:
                lines.close()  # what the run wrote last is the likeliest reason
                self.close()
                if stopping == "cancel":
                    raise TrainingCancelled()
                raise TrainingError(
                    "the warm worker died during the run",
                    output_tail="\n".join(tail),
                    hint="see .mlplat/devloop/worker.log; or run with --no-warm",
                )
            if "started" in msg:
                child = int(msg["started"])
            elif "c" in msg:
                lines.feed(str(msg["c"]).encode("utf-8"))
            elif "exit" in msg:
                code = int(msg["exit"])
                lines.close()
                break
            if child is not None and stopping is None:
                if cancel.is_set():
                    stopping = "cancel"
                elif time.monotonic() > deadline:
                    stopping = "timeout"
                if stopping is not None:
                    _kill_group(child, signal.SIGTERM)
                    killed_at = time.monotonic()
            elif stopping is not None and child is not None and time.monotonic() - killed_at > 3:
                _kill_group(child, signal.SIGKILL)
                killed_at = time.monotonic()
        elapsed = time.monotonic() - start
        if child is not None:
            # stragglers a finished or killed run left behind in its group
            _kill_group(child, signal.SIGKILL)
        if stopping == "cancel":
            raise TrainingCancelled()
        if stopping == "timeout":
            raise TrainingError(f"training timed out after {timeout_s:.0f}s", output_tail="\n".join(tail))
        if code != 0:
            how = f"was killed by signal {-code}" if code < 0 else f"failed with exit code {code}"
            raise TrainingError(f"training command {how}: {command}", output_tail="\n".join(tail))
        return elapsed
