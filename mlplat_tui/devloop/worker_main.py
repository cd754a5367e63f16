"""The warm worker process: import the heavy libraries once, then fork a clean child per run.

Started by ``worker.WarmWorkerRunner`` as ``python worker_main.py '<preload json>'`` (by file
path, so that no mlplat package is imported here and the process stays a pristine copy of
"python with numpy/sklearn/... already imported"). It never runs the training script itself:
every run is a ``fork()`` of the pre-imported state, so a run cannot leak globals, patched
modules or open files into the next one, and edits to the project's own modules are always seen
(those are never preloaded).

Protocol: JSON lines. Requests on stdin: ``{"op": "run", "cwd", "env", "argv", "script"|"module"}``
or ``{"op": "quit"}``. Replies on the original stdout (fd 1 is pointed at stderr once started,
so a chatty import cannot corrupt the protocol): ``{"ready": true, "pid", "loaded", "failed",
"threads"}`` once, then per run ``{"started": child_pid}``, ``{"c": text}`` per chunk of output
as it was read (decoded incrementally, not split: the parent splits lines with the platform's
one ``LineSplitter``, so a tqdm bar redrawn with ``\r`` shows as it moves, as with a plain
subprocess), and ``{"exit": code}`` (negative: killed by that signal).

This process is single-threaded on purpose: forking after threads were started is unsafe. The
child is made the leader of its own process group (set on both sides of the fork, so there is no
window where the parent could miss it), so cancelling kills the run's whole tree.

Must not import anything from mlplat.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import importlib
import io
import json
import os
import select
import signal
import sys
import time
from typing import Any, BinaryIO, NoReturn

_proto: BinaryIO | None = None
_stdin_fd = 0
_stdin_buf = b""  # request bytes read but not handled yet


def _send(msg: dict[str, Any]) -> None:
    assert _proto is not None
    _proto.write(json.dumps(msg).encode("utf-8") + b"\n")
    _proto.flush()


def _preload(entries: list[str]) -> tuple[list[str], dict[str, str]]:
    """Import each ``module`` or ``module:name1,name2`` (names that may be submodules)."""
    loaded: list[str] = []
    failed: dict[str, str] = {}
    for entry in entries:
        name, _, subs = entry.partition(":")
        try:
            mod = importlib.import_module(name)
            loaded.append(name)
        except BaseException as exc:  # a broken optional import must not kill the worker
            failed[name] = f"{type(exc).__name__}: {exc}"[:300]
            continue
        for sub in filter(None, subs.split(",")):
            if hasattr(mod, sub) and not isinstance(getattr(mod, sub), type(sys)):
                continue  # a class or function, not a submodule
            with contextlib.suppress(BaseException):
                importlib.import_module(f"{name}.{sub}")
    return loaded, failed


def _thread_count() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return -1


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _child(req: dict[str, Any], out_w: int) -> NoReturn:
    """Runs in the forked child: become a fresh ``python script.py args`` and exit."""
    code = 70
    try:
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a fresh interpreter
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        os.dup2(out_w, 1)
        os.dup2(out_w, 2)
        os.close(out_w)
        if _proto is not None:
            with contextlib.suppress(OSError):
                os.close(_proto.fileno())
        if _stdin_fd != 0:
            with contextlib.suppress(OSError):
                os.close(_stdin_fd)
        # line-buffered so the dev loop streams output as it is printed
        sys.stdout = io.TextIOWrapper(
            io.FileIO(1, "w", closefd=False),
            encoding="utf-8",
            errors="backslashreplace",
            line_buffering=True,
        )
        sys.stderr = io.TextIOWrapper(
            io.FileIO(2, "w", closefd=False),
            encoding="utf-8",
            errors="backslashreplace",
            line_buffering=True,
        )
        sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        argv: list[str] = list(req["argv"])
        importlib.invalidate_caches()
        import runpy
        import traceback

        code = 0
        try:
            if req.get("module"):
                sys.argv = ["-m", *argv]
                sys.path[0] = os.getcwd()
                runpy.run_module(req["module"], run_name="__main__", alter_sys=True)
            else:
                script = os.path.abspath(req["script"])
                sys.argv = [script, *argv]
                sys.path[0] = os.path.dirname(script)
                runpy.run_path(script, run_name="__main__")
        except SystemExit as exc:
            code = _exit_code(exc.code)
        except BaseException:
            traceback.print_exc()
            code = 1
        # what a normal interpreter exit does: wait for non-daemon threads, run atexit handlers
        try:
            import threading

            threading._shutdown()  # type: ignore[attr-defined]
        except BaseException:
            pass
        try:
            import atexit

            atexit._run_exitfuncs()
        except BaseException:
            pass
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):
                stream.flush()
    finally:
        os._exit(code)


def _status_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _run(req: dict[str, Any]) -> bool:
    """One run. Returns False when the parent went away (stdin closed) and we should exit."""
    global _stdin_buf
    stdin_fd = _stdin_fd
    out_r, out_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.setpgid(0, 0)
            os.close(out_r)
        finally:
            _child(req, out_w)
    os.close(out_w)
    with contextlib.suppress(OSError):  # the child may have done it already
        os.setpgid(pid, pid)
    _send({"started": pid})

    decoder = codecs.getincrementaldecoder("utf-8")("replace")  # a character may span two reads
    exit_code: int | None = None
    out_open = True
    parent_alive = True
    drain_until = 0.0

    def emit(chunk: bytes, final: bool = False) -> None:
        text = decoder.decode(chunk, final)
        if text:
            _send({"c": text})

    while True:
        if exit_code is None:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                exit_code = _status_code(status)
                # what the child wrote is already in the pipe; a straggler holding the pipe
                # open must not hold up the result for long
                drain_until = time.monotonic() + 0.3
        if exit_code is not None and (not out_open or time.monotonic() > drain_until):
            break
        fds = [stdin_fd] + ([out_r] if out_open else [])
        try:
            ready, _, _ = select.select(fds, [], [], 0.02)
        except InterruptedError:
            continue
        if out_r in ready:
            try:
                chunk = os.read(out_r, 65536)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EINTR):
                    continue
                chunk = b""
            if chunk:
                emit(chunk)
            else:
                out_open = False
        if stdin_fd in ready and parent_alive:
            # the parent does not write during a run; readable almost always means it went away
            data = os.read(stdin_fd, 65536)
            if data:
                _stdin_buf += data
            else:
                parent_alive = False
                _kill_group(pid)
    emit(b"", final=True)
    os.close(out_r)
    if exit_code is None:  # pragma: no cover - loop only ends with a code
        exit_code = -1
    if not parent_alive:
        return False
    _send({"exit": exit_code})
    return True


def main() -> None:
    global _proto, _stdin_fd, _stdin_buf
    _proto = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # stray prints from imported modules go to the worker log, not the protocol
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the dev loop stops us, not the terminal
    if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
        sys.path.pop(0)  # our own folder must not shadow a preloaded module (loop, worker, ...)
    preload: list[str] = json.loads(sys.argv[1]) if len(sys.argv) > 1 else []
    started = time.monotonic()
    loaded, failed = _preload(preload)
    _send(
        {
            "ready": True,
            "pid": os.getpid(),
            "loaded": loaded,
            "failed": failed,
            "threads": _thread_count(),
            "import_s": round(time.monotonic() - started, 3),
        }
    )
    _stdin_fd = os.dup(0)  # fd 0 itself becomes /dev/null in each child
    while True:
        while b"\n" in _stdin_buf:
            line, _stdin_buf = _stdin_buf.split(b"\n", 1)
            if not line.strip():
                continue
            req = json.loads(line)
            if req.get("op") == "quit":
                return
            if req.get("op") == "run" and not _run(req):
                return
        chunk = os.read(_stdin_fd, 65536)
        if not chunk:
            return
        _stdin_buf += chunk


if __name__ == "__main__":
    main()
    # nothing to flush: skip the interpreter's slow shutdown of every preloaded library
    os._exit(0)
