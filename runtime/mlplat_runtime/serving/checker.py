"""Pre-load check in a child process: a model that crashes ONNX Runtime (a segfault in a
kernel, an abort in a custom op) kills the child, not the server that is serving the old one.

The child is started ahead of time with onnxruntime already imported and waits on its stdin,
so a check costs a session load and one run (milliseconds), not a Python start-up (half a
second): that keeps a hot swap within its 50 ms budget. When the child dies, the next check
(or the crash report itself) starts a fresh one.

Wire format on the child's stdin/stdout: frames of a 4-byte big-endian length and a payload.
The parent sends a JSON header (model path, providers) and an ``.npz`` of the sample inputs
(loaded with ``allow_pickle=False``); the child answers one JSON frame. The child's stderr goes
to a temp file whose tail is quoted when the child dies.

Memory: with ``max_bytes`` set, the check is also the warm-up's memory test. The child resets
its peak-RSS mark (``/proc/self/clear_refs``), loads and runs the model, and reports the peak
above its baseline; a watcher thread in the child ends the check the moment the resident size
passes the budget, so a model that would take the server to gigabytes takes only the child
there, briefly, and is refused.

Run as ``python -m mlplat_runtime.serving.checker`` (the parent does that). Must not import
textual, mlflow, docker or mlplat_tui.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import select
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

from mlplat_runtime.errors import ModelLoadError

_LEN = struct.Struct(">I")
MAX_FRAME = 1 << 30
_WATCH_S = 0.005


class CheckerDied(ModelLoadError):
    """The check process died while checking a model: the model crashed ONNX Runtime."""


def _write_frame(out: IO[bytes], payload: bytes) -> None:
    out.write(_LEN.pack(len(payload)))
    out.write(payload)


def _encode_arrays(arrays: Mapping[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})  # type: ignore[arg-type]
    return buf.getvalue()


class Checker:
    """The parent's handle on the warm check process. Not thread-safe: callers serialize."""

    def __init__(
        self,
        *,
        providers: list[str] | None = None,
        timeout_s: float = 60.0,
        python: str = sys.executable,
        max_bytes: int | None = None,
    ) -> None:
        self.providers = providers
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes  # warm-up memory budget: peak RSS above the child's baseline
        self.python = python
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._ready = False
        self._lock = threading.Lock()
        self.restarts = 0
        self.last_peak_bytes = 0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def started(self) -> bool:
        """Whether ``start`` was ever called (and ``close`` not since)."""
        return self._proc is not None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the child if it is not running (returns at once; it imports in the background)."""
        with self._lock:
            if self.alive:
                return
            self._cleanup()
            self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the child)
            env = dict(os.environ)
            env["PYTHONUNBUFFERED"] = "1"
            self._proc = subprocess.Popen(
                [self.python, "-m", "mlplat_runtime.serving.checker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                env=env,
                close_fds=True,
                start_new_session=True,  # Ctrl-C in a terminal reaches the server, which stops us
            )
            self._ready = False

    def check(self, model_path: Path, inputs: Mapping[str, np.ndarray]) -> float:
        """Load ``model_path`` and run ``inputs`` in the child; the child's run time in ms.

        Raises ModelLoadError when ORT refuses the model, CheckerDied when it crashed the child.
        """
        budget = self.max_bytes
        if budget is not None:
            size = sum(np.asarray(v).nbytes for v in inputs.values())
            if size > budget:
                raise ModelLoadError(
                    f"the bundle's sample inputs take {_mib(size)},"
                    f" over the warm-up budget of {_mib(budget)}",
                    hint="keep samples to a few rows; they are examples, not a data set",
                )
        self.start()
        proc = self._proc
        assert proc is not None and proc.stdin is not None
        deadline = time.monotonic() + self.timeout_s
        try:
            if not self._ready:
                self._read_frame(deadline)  # {"ready": true} once onnxruntime is imported
                self._ready = True
            header = json.dumps(
                {"model": str(model_path), "providers": self.providers, "max_bytes": budget}
            ).encode()
            _write_frame(proc.stdin, header)
            _write_frame(proc.stdin, _encode_arrays(inputs))
            proc.stdin.flush()
            reply = json.loads(self._read_frame(deadline))
        except (BrokenPipeError, EOFError, ConnectionError):
            raise self._died() from None
        except TimeoutError:
            self._kill()
            self.start()
            raise ModelLoadError(
                f"the model check did not finish within {self.timeout_s:g} s",
                hint="a model that takes this long to load and run its samples is too slow to serve",
            ) from None
        if reply.get("over_budget"):
            self._kill()  # it stopped mid-run; a fresh child is started for the next check
            raise ModelLoadError(
                f"the model's warm-up took over {_mib(int(reply['peak']))}, past the warm-up memory budget"
                f" of {_mib(budget or 0)}",
                hint="serve it with a larger --memory-budget-mb, or make the model or its samples smaller",
            )
        if not reply.get("ok"):
            raise ModelLoadError(f"ONNX Runtime refused the model in the check process: {reply.get('error')}")
        peak = int(reply.get("peak", 0))
        self.last_peak_bytes = peak
        if budget is not None and peak > budget:
            raise ModelLoadError(
                f"the model's warm-up took {_mib(peak)}, over the warm-up memory budget of {_mib(budget)}",
                hint="serve it with a larger --memory-budget-mb, or make the model or its samples smaller",
            )
        return float(reply.get("ms", 0.0))

    def _read_exact(self, n: int, deadline: float) -> bytes:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        fd = proc.stdout.fileno()
        chunks: list[bytes] = []
        while n > 0:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                raise TimeoutError
            chunk = os.read(fd, min(n, 1 << 20))
            if not chunk:
                raise EOFError
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def _read_frame(self, deadline: float) -> bytes:
        (size,) = _LEN.unpack(self._read_exact(_LEN.size, deadline))
        if size > MAX_FRAME:
            raise EOFError
        return self._read_exact(size, deadline)

    def _died(self) -> CheckerDied:
        proc = self._proc
        code = proc.wait(timeout=5) if proc is not None else None
        tail = self._stderr_tail()
        if code is not None and code < 0:
            try:
                how = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"killed by signal {-code}"
        else:
            how = f"exit code {code}"
        self.restarts += 1
        self.start()  # warm again for the next load
        detail = f"; its last output: {tail}" if tail else ""
        return CheckerDied(
            f"the model crashed ONNX Runtime in the check process ({how}){detail}",
            hint="the serving version is unchanged; try the model with onnxruntime directly to see the crash",
        )

    def _stderr_tail(self, limit: int = 400) -> str:
        if self._stderr is None:
            return ""
        try:
            self._stderr.seek(0, os.SEEK_END)
            size = self._stderr.tell()
            self._stderr.seek(max(0, size - limit))
            return self._stderr.read().decode(errors="replace").strip().replace("\n", " | ")
        except (OSError, ValueError):
            return ""

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=5)

    def _cleanup(self) -> None:
        if self._proc is not None:
            for stream in (self._proc.stdin, self._proc.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
            self._proc = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def close(self) -> None:
        """Stop the child: closing its stdin ends its loop; kill it if it lingers."""
        with self._lock:
            proc = self._proc
            if proc is not None and proc.poll() is None:
                try:
                    if proc.stdin is not None:
                        proc.stdin.close()
                    proc.wait(timeout=2)
                except (OSError, subprocess.TimeoutExpired):
                    self._kill()
            self._cleanup()


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.0f} MiB"


def status_bytes(field: str) -> int:
    """A ``VmRSS``/``VmHWM`` line of /proc/self/status, in bytes (0 where there is none)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def reset_peak_rss() -> int:
    """Reset the peak-RSS mark (VmHWM) to the current RSS; returns the RSS now."""
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
        fh.write("5")
    return status_bytes("VmRSS")


class _Watch:
    """Ends the check when the resident size passes ``base + budget`` (checked every 5 ms)."""

    def __init__(self, base: int, budget: int, answer: Any) -> None:
        self.base, self.budget, self.answer = base, budget, answer
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.wait(_WATCH_S):
            rss = status_bytes("VmRSS")
            if rss - self.base > self.budget:
                self.answer({"ok": False, "over_budget": True, "peak": rss - self.base})
                os._exit(3)  # mid-run in ONNX Runtime: nothing to unwind, the parent restarts us

    def stop(self) -> None:
        self.done.set()
        self.thread.join()


def _read_child_frame(inp: IO[bytes]) -> bytes | None:
    head = inp.read(_LEN.size)
    if len(head) < _LEN.size:
        return None
    (size,) = _LEN.unpack(head)
    data = inp.read(size)
    return data if len(data) == size else None


def child_main() -> int:
    """The check loop: read a request, load and run the model, answer; exit on EOF."""
    import onnxruntime  # noqa: F401  (imported up front: this is what "warm" means)

    from mlplat_runtime.providers import make_session

    inp, out = sys.stdin.buffer, sys.stdout.buffer
    lock = threading.Lock()

    def answer(reply: dict[str, Any]) -> None:
        with lock:
            _write_frame(out, json.dumps(reply).encode())
            out.flush()

    answer({"ready": True, "pid": os.getpid()})
    while True:
        header = _read_child_frame(inp)
        blob = _read_child_frame(inp) if header is not None else None
        if header is None or blob is None:
            return 0
        reply: dict[str, Any]
        watch: _Watch | None = None
        try:
            req = json.loads(header)
            with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
                feeds = {k: npz[k] for k in npz.files}
            del blob
            base = reset_peak_rss()
            if req.get("max_bytes"):
                watch = _Watch(base, int(req["max_bytes"]), answer)
            session = make_session(req["model"], req.get("providers"))
            t = time.perf_counter()
            session.run(None, feeds)
            ms = (time.perf_counter() - t) * 1000.0
            peak = max(0, status_bytes("VmHWM") - base)
            reply = {"ok": True, "ms": ms, "peak": peak}
            del session
        except Exception as exc:  # every failure is an answer, never a crash of the loop
            text = str(exc).strip()
            reply = {"ok": False, "error": text.splitlines()[0] if text else type(exc).__name__}
        finally:
            if watch is not None:
                watch.stop()
        answer(reply)


if __name__ == "__main__":
    sys.exit(child_main())
