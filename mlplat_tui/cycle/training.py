"""Run a project's training command with the platform's environment set.

A ``TrainingRunner`` decides *how* the command runs: ``SubprocessRunner`` (a fresh process
group, the default) or the dev loop's warm worker (``devloop/worker.py``). Either way the
command gets ``MLPLAT_OUTPUT_DIR``, ``MLFLOW_TRACKING_URI`` and ``MLFLOW_RUN_ID``, its output is
streamed line by line, and cancelling ends the whole process tree.
"""

from __future__ import annotations

import os
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
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=3)
    except ProcessLookupError:
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

        def pump() -> None:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                tail.append(line)
                on_output(line)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        deadline = start + timeout_s
        while proc.poll() is None:
            if cancel.wait(0.02):
                _kill_group(proc)
                reader.join(timeout=2)
                raise TrainingCancelled()
            if time.monotonic() > deadline:
                _kill_group(proc)
                reader.join(timeout=2)
                raise TrainingError(f"training timed out after {timeout_s:.0f}s", output_tail="\n".join(tail))
        reader.join(timeout=5)
        elapsed = time.monotonic() - start
        if proc.returncode != 0:
            raise TrainingError(
                f"training command failed with exit code {proc.returncode}: {command}",
                output_tail="\n".join(tail),
            )
        return elapsed
