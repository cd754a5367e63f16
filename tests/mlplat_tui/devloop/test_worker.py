"""The warm worker, for real: a pre-imported process that forks a clean child per run."""

from __future__ import annotations

import os
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from mlplat_runtime.errors import TrainingError
from mlplat_tui.cycle.training import TrainingCancelled
from mlplat_tui.devloop.worker import WarmWorkerRunner, guess_preload, parse_python_command


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("warm")


@pytest.fixture(scope="module")
def runner(project: Path) -> Iterator[WarmWorkerRunner]:
    r = WarmWorkerRunner(project, "python train.py", preload=("json", "csv"), guess=False)
    assert r.wait_ready(60)
    yield r
    r.close()


def _script(project: Path, name: str, body: str) -> str:
    (project / name).write_text(textwrap.dedent(body))
    return f"python {name}"


def _run(
    runner: WarmWorkerRunner,
    project: Path,
    command: str,
    *,
    cancel: threading.Event | None = None,
    on_output=None,
    env: dict[str, str] | None = None,
    timeout_s: float = 30,
) -> tuple[float, list[str]]:
    lines: list[str] = []

    def sink(line: str) -> None:
        lines.append(line)
        if on_output is not None:
            on_output(line)

    took = runner.run(
        command,
        cwd=project,
        env={**os.environ, **(env or {})},
        on_output=sink,
        cancel=cancel or threading.Event(),
        timeout_s=timeout_s,
    )
    return took, lines


def test_runs_a_script_with_cwd_argv_env_and_preloaded_modules(
    runner: WarmWorkerRunner, project: Path
) -> None:
    cmd = _script(
        project,
        "hello.py",
        """
        import os, sys
        print("argv", sys.argv[1:])
        print("cwd", os.getcwd())
        print("env", os.environ["MLPLAT_OUTPUT_DIR"])
        print("preloaded", "csv" in sys.modules)
        print("to stderr", file=sys.stderr)
    """,
    )
    took, lines = _run(runner, project, cmd + " --alpha 1", env={"MLPLAT_OUTPUT_DIR": "/x/out"})
    assert runner.last_mode == "warm"
    assert lines == ["argv ['--alpha', '1']", f"cwd {project}", "env /x/out", "preloaded True", "to stderr"]
    assert 0 < took < 10
    assert runner.worker_info["loaded"] == ["json", "csv"]


def test_output_is_streamed_while_the_run_is_going(runner: WarmWorkerRunner, project: Path) -> None:
    go = project / "go"
    cmd = _script(
        project,
        "stream.py",
        f"""
        import os, time
        print("waiting")
        deadline = time.time() + 10
        while not os.path.exists({str(go)!r}) and time.time() < deadline:
            time.sleep(0.01)
        print("released" if os.path.exists({str(go)!r}) else "not streamed")
    """,
    )
    # the run only finishes early if "waiting" reached us while it was still running
    took, lines = _run(runner, project, cmd, on_output=lambda line: go.touch() if line == "waiting" else None)
    assert lines == ["waiting", "released"]
    assert took < 5


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("import sys; sys.exit(3)", "exit code 3"),
        ("raise SystemExit('bad data')", "exit code 1"),
        ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", "killed by signal 9"),
    ],
)
def test_exit_codes(runner: WarmWorkerRunner, project: Path, body: str, message: str) -> None:
    cmd = _script(project, "exits.py", "print('before')\n" + body + "\n")
    with pytest.raises(TrainingError) as info:
        _run(runner, project, cmd)
    assert message in info.value.message
    assert "before" in info.value.output_tail


def test_syntax_error_raises_with_the_traceback(runner: WarmWorkerRunner, project: Path) -> None:
    cmd = _script(project, "broken.py", "def f(:\n    pass\n")
    with pytest.raises(TrainingError) as info:
        _run(runner, project, cmd)
    assert "exit code 1" in info.value.message
    assert "SyntaxError" in info.value.output_tail
    assert "broken.py" in info.value.output_tail


def test_exception_traceback_is_in_the_tail(runner: WarmWorkerRunner, project: Path) -> None:
    cmd = _script(project, "raises.py", "def train():\n    raise ValueError('no rows')\ntrain()\n")
    with pytest.raises(TrainingError) as info:
        _run(runner, project, cmd)
    assert "Traceback" in info.value.output_tail
    assert "ValueError: no rows" in info.value.output_tail


def test_each_run_starts_clean(runner: WarmWorkerRunner, project: Path) -> None:
    # a preloaded module mutated by one run, and a project module edited between runs
    (project / "helper.py").write_text("VALUE = 1\n")
    cmd = _script(
        project,
        "state.py",
        """
        import json
        import helper
        json.RUNS = getattr(json, "RUNS", 0) + 1
        print("runs", json.RUNS, "helper", helper.VALUE)
    """,
    )
    assert _run(runner, project, cmd)[1] == ["runs 1 helper 1"]
    (project / "helper.py").write_text("VALUE = 2\n")
    assert _run(runner, project, cmd)[1] == ["runs 1 helper 2"]


def test_cancel_kills_the_whole_tree(runner: WarmWorkerRunner, project: Path) -> None:
    cmd = _script(
        project,
        "tree.py",
        """
        import subprocess, time
        child = subprocess.Popen(["sleep", "60"])
        print("grandchild", child.pid, flush=True)
        time.sleep(60)
    """,
    )
    cancel = threading.Event()
    pids: list[int] = []

    def on_output(line: str) -> None:
        if line.startswith("grandchild"):
            pids.append(int(line.split()[1]))
            cancel.set()

    started = time.monotonic()
    with pytest.raises(TrainingCancelled):
        _run(runner, project, cmd, cancel=cancel, on_output=on_output)
    assert time.monotonic() - started < 10
    assert pids
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(pids[0]):
        time.sleep(0.05)
    assert not _alive(pids[0]), "the grandchild outlived the cancelled run"
    # the worker is still there for the next run
    assert _run(runner, project, _script(project, "ok.py", "print('ok')\n"))[1] == ["ok"]


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_timeout_raises_training_error(runner: WarmWorkerRunner, project: Path) -> None:
    cmd = _script(project, "slow.py", "import time\nprint('start', flush=True)\ntime.sleep(30)\n")
    started = time.monotonic()
    with pytest.raises(TrainingError) as info:
        _run(runner, project, cmd, timeout_s=0.5)
    assert "timed out" in info.value.message
    assert time.monotonic() - started < 5


def test_a_dead_worker_is_an_error_then_replaced(project: Path) -> None:
    r = WarmWorkerRunner(project, "python train.py", guess=False)
    try:
        cmd = _script(project, "killer.py", "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n")
        with pytest.raises(TrainingError) as info:
            _run(r, project, cmd)
        assert "worker died" in info.value.message
        assert _run(r, project, _script(project, "ok2.py", "print('again')\n"))[1] == ["again"]
    finally:
        r.close()


def test_non_python_commands_fall_back_to_a_subprocess(runner: WarmWorkerRunner, project: Path) -> None:
    _, lines = _run(runner, project, "sh -c 'echo from-shell'")
    assert lines == ["from-shell"]
    assert runner.last_mode == "subprocess"


def test_close_ends_the_worker(project: Path) -> None:
    r = WarmWorkerRunner(project, "python train.py", guess=False)
    assert r.wait_ready(30)
    pid = int(r.worker_info["pid"])
    r.close()
    assert not _alive(pid)


@pytest.mark.parametrize(
    ("command", "script", "module", "args"),
    [
        ("python train.py", "train.py", None, ()),
        ("python3 -u src/train.py --epochs 3", "src/train.py", None, ("--epochs", "3")),
        (f"{sys.executable} train.py", "train.py", None, ()),
        ("python -m pkg.train --fast", None, "pkg.train", ("--fast",)),
    ],
)
def test_parse_python_command(command: str, script: str | None, module: str | None, args: tuple) -> None:
    parsed = parse_python_command(command)
    assert parsed is not None
    assert (parsed.script, parsed.module, parsed.args) == (script, module, args)


@pytest.mark.parametrize(
    "command",
    ["bash train.sh", "python", "python -c 'print(1)'", "/opt/other/python x.py", "python 'unterminated"],
)
def test_commands_the_worker_does_not_run(command: str) -> None:
    assert parse_python_command(command) is None


def test_guess_preload_follows_project_modules_without_listing_them(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(
        textwrap.dedent("""
        from __future__ import annotations
        import numpy as np
        from sklearn.linear_model import LogisticRegression
        import features
        from .rel import x
        def main():
            import torch
            import tensorflow
    """)
    )
    (tmp_path / "features.py").write_text("import pandas\nimport features\n")
    (tmp_path / "pkg").mkdir()
    guess = guess_preload(tmp_path / "train.py", tmp_path)
    assert guess == ("numpy", "pandas", "sklearn.linear_model:LogisticRegression", "torch")


def test_a_line_redrawn_with_carriage_returns_shows_while_the_run_goes_on(
    runner: WarmWorkerRunner, project: Path
) -> None:
    """tqdm and Keras redraw one line with ``\\r``: each state must reach the dev loop as it is
    drawn (a state is complete when the next redraw starts), not when the run ends. The script
    waits until the test has seen its first state (a file the sink writes), so a runner that
    holds the line back until a newline makes the run fail."""
    seen = project / "seen-step-1"
    cmd = _script(
        project,
        "progress.py",
        f"""
        import sys, time
        from pathlib import Path
        for step in (1, 2):
            sys.stdout.write(f"\\rstep {{step}}/3 ■■")
            sys.stdout.flush()
        deadline = time.monotonic() + 30
        while not Path({str(seen)!r}).exists():
            if time.monotonic() > deadline:
                sys.exit("the redrawn line never reached the dev loop")
            time.sleep(0.02)
        sys.stdout.write("\\rstep 3/3 ■■■\\n")
        print("é done")
    """,
    )

    def sink(line: str) -> None:
        if line == "step 1/3 ■■":
            seen.write_text("yes")

    _, lines = _run(runner, project, cmd, on_output=sink)
    assert [ln for ln in lines if ln] == ["step 1/3 ■■", "step 2/3 ■■", "step 3/3 ■■■", "é done"], lines
