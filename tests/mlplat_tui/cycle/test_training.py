"""``SubprocessRunner`` against training commands that misbehave: daemons left behind, a daemon
holding stdout, one huge output line, tqdm-style ``\\r`` progress."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import pytest

from mlplat_runtime.errors import TrainingError
from mlplat_tui.cycle.training import MAX_LINE, LineSplitter, SubprocessRunner, TrainingCancelled


def run(command: str, tmp_path: Path, timeout_s: float = 60) -> list[str]:
    lines: list[str] = []
    SubprocessRunner().run(
        command, cwd=tmp_path, env=dict(os.environ), on_output=lines.append,
        cancel=threading.Event(), timeout_s=timeout_s,
    )  # fmt: skip
    return lines


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by init) counts as gone
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_a_daemon_the_command_leaves_behind_is_ended_and_does_not_stall(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(
        "import subprocess, sys\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; print(\"daemon up\", flush=True); "
        "time.sleep(120)'])\n"  # inherits stdout: holds the pipe open
        "open('daemon.pid', 'w').write(str(p.pid))\n"
        "print('trained', flush=True)\n"
    )
    t0 = time.monotonic()
    lines = run(f"{sys.executable} train.py", tmp_path)
    took = time.monotonic() - t0
    pid = int((tmp_path / "daemon.pid").read_text())
    assert "trained" in lines
    assert took < 3.0, f"took {took:.1f} s"
    deadline = time.monotonic() + 5
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid)


def test_one_huge_line_costs_a_capped_amount_of_memory(tmp_path: Path) -> None:
    command = f"{sys.executable} -c \"import sys; sys.stdout.write('x' * 50_000_000 + '\\nafter\\n')\""
    tracemalloc.start()
    try:
        lines = run(command, tmp_path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, f"peak {peak >> 20} MiB"
    assert lines[0].startswith("x" * MAX_LINE) and f"line over {MAX_LINE} characters, cut" in lines[0]
    assert lines[1:] == ["after"]


def test_carriage_returns_split_progress_lines() -> None:
    out: list[str] = []
    split = LineSplitter(out.append, max_line=10)
    for chunk in (b"10%\r20", b"%\r30%\r\n", b"done\nlast", b" bit"):
        split.feed(chunk)
    split.close()
    assert out == ["10%", "20%", "30%", "done", "last bit"]
    out.clear()
    split.feed(b"a" * 25 + b"\nok\n")
    assert out == ["a" * 10 + " … [line over 10 characters, cut]", "ok"]


ESCAPED = (
    "import subprocess, sys, time\n"
    # start_new_session: the grandchild escapes the command's process group, and it inherits
    # stdout, so it holds the pipe open and keeps writing into it after the group is ended
    "p = subprocess.Popen([sys.executable, '-c', 'import sys, time\\nwhile True:\\n"
    '    sys.stdout.write("x\\\\n"); sys.stdout.flush(); time.sleep(0.005)\'], start_new_session=True)\n'
    "open('escaped.pid', 'w').write(str(p.pid))\n"
    "print('spawned', flush=True)\n"
    "time.sleep(120)\n"
)


def _pipe_fds() -> set[str]:
    fds = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:"):
                fds.add(fd)
        except OSError:
            pass
    return fds


@pytest.mark.parametrize("how", ["cancel", "timeout"])
def test_cancel_and_timeout_stop_the_reader_and_close_stdout(tmp_path: Path, how: str) -> None:
    """Bug: the cancel and time-out paths never stopped the output reader nor closed stdout: a
    grandchild that escaped the process group and held stdout kept the reader looping forever
    and leaked the pipe."""
    (tmp_path / "train.py").write_text(ESCAPED)
    cancel = threading.Event()

    def on_output(line: str) -> None:
        if line == "spawned" and how == "cancel":
            cancel.set()

    before, threads = _pipe_fds(), set(threading.enumerate())
    expected: type[BaseException] = TrainingCancelled if how == "cancel" else TrainingError
    try:
        with pytest.raises(expected):
            SubprocessRunner().run(
                f"{sys.executable} train.py", cwd=tmp_path, env=dict(os.environ), on_output=on_output,
                cancel=cancel, timeout_s=120 if how == "cancel" else 3,
            )  # fmt: skip
        assert (tmp_path / "escaped.pid").exists()  # the grandchild really was writing meanwhile
        readers = set(threading.enumerate()) - threads
        for t in readers:
            t.join(timeout=10)  # generous: a reader that was stopped ends at once
        assert not [t for t in readers if t.is_alive()], "the output reader still runs"
        assert _pipe_fds() <= before, "the pipe of the command's stdout was not closed"
    finally:
        if (tmp_path / "escaped.pid").exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int((tmp_path / "escaped.pid").read_text()), signal.SIGKILL)
