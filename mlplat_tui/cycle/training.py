"""Run a project's training command with the platform's environment set.

A ``TrainingRunner`` decides *how* the command runs: ``SubprocessRunner`` (a fresh process
group, the default) or the dev loop's warm worker (``devloop/worker.py``). Either way the
command gets ``MLPLAT_OUTPUT_DIR``, ``MLFLOW_TRACKING_URI`` and ``MLFLOW_RUN_ID``, its output is
streamed line by line, and cancelling ends the whole process tree.

Output is read in chunks, not lines (``LineSplitter``): a line ends at ``\n`` or ``\r`` (tqdm-style
progress redraws a line with ``\r``), and one longer than ``MAX_LINE`` is cut with a note, so a
200 MB line costs ``MAX_LINE`` of memory, not gigabytes. When the command exits, whatever it left
running in its process group (a daemon, a data loader that was never joined) is ended too, and
the output of a process that escaped the group but still holds stdout is not waited for beyond
``DRAIN_S``.
"""

from __future__ import annotations

import os
import select
import shlex
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from mlplat_runtime.errors import TrainingError

OutputSink = Callable[[str], None]

MAX_LINE = 8192  # characters of one output line that are kept
DRAIN_S = 0.5  # after the command exits: how long to read what its leftovers still write
_CHUNK = 65536


class LineSplitter:
    """Bytes in, lines out: split on ``\n``, ``\r\n`` and ``\r``, each line cut at ``max_line``."""

    def __init__(self, emit: OutputSink, max_line: int = MAX_LINE) -> None:
        self.emit = emit
        self.max_line = max_line
        self._buf = bytearray()
        self._cut = False  # the current line was too long: drop the rest of it

    def feed(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        start = 0
        while True:
            nl, cr = buf.find(b"\n", start), buf.find(b"\r", start)
            ends = [i for i in (nl, cr) if i >= 0]
            if not ends:
                break
            end = min(ends)
            self._line(bytes(buf[start:end]))
            start = end + (2 if buf[end : end + 2] == b"\r\n" else 1)
        del buf[:start]
        if len(buf) > self.max_line:
            if not self._cut:
                self._line(bytes(buf[: self.max_line]), cut=True)
            self._cut = True
            del buf[:]

    def _line(self, raw: bytes, cut: bool = False) -> None:
        if self._cut and not cut:  # the end of a line already cut: nothing more to say
            self._cut = False
            return
        if len(raw) > self.max_line:
            raw, cut = raw[: self.max_line], True
        text = raw.decode("utf-8", "replace")
        if cut:
            text += f" … [line over {self.max_line} characters, cut]"
        self.emit(text)

    def close(self) -> None:
        if self._buf and not self._cut:
            self._line(bytes(self._buf))
        self._buf.clear()


class TrainingCancelled(Exception):
    """A newer change (or the user) cancelled this training run."""


class TrainingRunner(Protocol):
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
        """Run to completion; return the command's own run time in seconds.

        Raises ``TrainingError`` (with the output tail) on a non-zero exit or time-out and
        ``TrainingCancelled`` when ``cancel`` is set (after ending the process tree).
        """
        ...


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """End every process in the command's group (the command itself and what it started)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=3)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:  # leftovers that outlived the leader
            os.killpg(proc.pid, 0)
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class SubprocessRunner:
    """A fresh process (in its own process group) per run."""

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
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            raise TrainingError(
                f"cannot parse the training command {command!r}: {exc}",
                hint="check the quotes in [train] command in mlplat.toml",
            ) from None
        if not argv:
            raise TrainingError("the training command is empty", hint="set [train] command in mlplat.toml")
        if argv[0] in ("python", "python3"):
            import sys

            argv[0] = sys.executable  # the project's python is the one mlplat runs in
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except FileNotFoundError:
            raise TrainingError(
                f"training command not found: {argv[0]!r}",
                hint="check [train] command in mlplat.toml",
            ) from None
        except OSError as exc:  # e.g. ./train.sh without the executable bit
            raise TrainingError(
                f"cannot start the training command {argv[0]!r}: {exc.strerror}",
                hint="check [train] command in mlplat.toml (`python train.py`, or chmod +x the script)",
            ) from None
        tail: deque[str] = deque(maxlen=40)

        def emit(line: str) -> None:
            tail.append(line)
            on_output(line)

        stop_reading = threading.Event()

        def pump() -> None:
            assert proc.stdout is not None
            fd = proc.stdout.fileno()
            lines = LineSplitter(emit)
            drain_until: float | None = None
            try:
                while True:
                    if stop_reading.is_set():  # read what is there a little longer, then stop
                        drain_until = drain_until or time.monotonic() + DRAIN_S / 2
                        if time.monotonic() > drain_until:
                            break  # a process outside the group writes on: never wait for it
                    ready, _, _ = select.select([fd], [], [], 0.05)
                    if not ready:
                        if stop_reading.is_set():
                            break
                        continue
                    chunk = os.read(fd, _CHUNK)
                    if not chunk:
                        break
                    lines.feed(chunk)
            except (OSError, ValueError):  # stdout closed under a reader that outlived its join
                pass
            lines.close()

        reader = threading.Thread(target=pump, name="mlplat-training-output", daemon=True)
        reader.start()
        try:
            deadline = start + timeout_s
            while proc.poll() is None:
                if cancel.wait(0.02):
                    _kill_group(proc)
                    raise TrainingCancelled()
                if time.monotonic() > deadline:
                    _kill_group(proc)
                    raise TrainingError(
                        f"training timed out after {timeout_s:.0f}s", output_tail="\n".join(tail)
                    )
            elapsed = time.monotonic() - start
            reader.join(timeout=DRAIN_S)  # output still in the pipe
            _kill_group(proc)  # what the command left running in its group ends with it
        finally:
            # Every path (exit, cancel, time-out, an error here): a process outside the group
            # may hold stdout open, so the reader is stopped rather than waited for, and the
            # pipe is closed.
            if proc.poll() is None:
                _kill_group(proc)
            stop_reading.set()
            reader.join(timeout=2 * DRAIN_S)
            if proc.stdout is not None:
                proc.stdout.close()
        if proc.returncode != 0:
            raise TrainingError(
                f"training command failed with exit code {proc.returncode}: {command}",
                output_tail="\n".join(tail),
            )
        return elapsed
