"""The ``mlplat`` command as a user runs it: a subprocess, real stack, real exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.helpers.stack import free_port_base

REPO = Path(__file__).resolve().parents[3]


def mlplat(*args: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlplat_tui", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def _project(tmp_path: Path, train: str = "") -> Path:
    (tmp_path / "mlplat.toml").write_text(
        f'[project]\nname = "clitest"\n[model]\nname = "m"\n[stack]\nport_base = {free_port_base()}\n'
    )
    if train:
        (tmp_path / "train.py").write_text(train)
    return tmp_path


def _ours(cwd: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["pid", "cwd"]):
        try:
            if proc.info["cwd"] and Path(proc.info["cwd"]) == cwd and proc.pid != os.getpid():
                found.append(proc)
        except psutil.Error:
            pass
    return found


def test_help_is_fast_because_it_imports_nothing_heavy(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "mlplat_tui", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and "mlplat up" in out.stdout
    imported = {line.split("|")[-1].strip().split(".")[0] for line in out.stderr.splitlines() if "|" in line}
    heavy = {"mlflow", "textual", "onnxruntime", "docker", "torch", "sklearn", "numpy", "duckdb", "onnx"}
    assert not imported & heavy, f"--help imported {sorted(imported & heavy)}"


def test_core_modules_do_not_import_textual() -> None:
    code = (
        "import pkgutil, importlib, sys, mlplat_tui\n"
        "for m in pkgutil.walk_packages(mlplat_tui.__path__, 'mlplat_tui.'):\n"
        "    if m.name.startswith('mlplat_tui.ui') or m.name == 'mlplat_tui.__main__': continue\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted(k for k in sys.modules if k.split('.')[0] == 'textual')\n"
        "print('LEAK', bad) if bad else print('CLEAN')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "CLEAN", out.stdout


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[project\nname="x"', "(syntax)"),
        ('[model]\nname = "m"\n', "project"),
        (
            '[project]\nname = "x"\n[model]\nname = "m"\n[gates]\n"metrics.auc" = "about 0.9"\n',
            "gates.metrics.auc",
        ),
        ('[project]\nname = "x"\n[model]\nname = "m"\n[train]\ncomand = "python t.py"\n', "train.comand"),
        ('[project]\nname = "x"\n[model]\nname = "m"\n[stack]\nport_base = "high"\n', "stack.port_base"),
        (
            '[project]\nname = "x"\n[model]\nname = "m"\n[train]\ncommand = "python \'train.py"\n',
            "train.command",
        ),
        ('[project]\nname = "x"\n[model]\nname = "m"\n[train]\ncommand = ""\n', "train.command"),
    ],
)
def test_malformed_config_is_a_usage_error_naming_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    (tmp_path / "mlplat.toml").write_text(text)
    out = mlplat("up", cwd=tmp_path)
    assert out.returncode == 2, out
    assert "mlplat.toml" in out.stderr and f"'{key}'" in out.stderr and "expected" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / ".mlplat" / "stack" / "tracker.pid").exists()


def test_crashing_training_command_shows_its_error_and_leaves_no_process(tmp_path: Path) -> None:
    root = _project(
        tmp_path, train="import sys\nprint('loading data')\nraise ValueError('bad column: tenure')\n"
    )
    out = mlplat("train", cwd=root)
    assert out.returncode == 1
    assert "ValueError: bad column: tenure" in out.stdout + out.stderr
    assert "Traceback" in out.stdout + out.stderr  # the command's own traceback, not ours
    assert not _ours(root)


@pytest.mark.integration
def test_second_up_while_one_runs_then_sql_is_read_only(tmp_path: Path) -> None:
    root = _project(tmp_path)
    first = subprocess.Popen(
        [sys.executable, "-m", "mlplat_tui", "up"],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    try:
        lock = root / ".mlplat" / "project.lock"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (lock.exists() and lock.read_text().strip()):
            time.sleep(0.05)
        second = mlplat("up", cwd=root)
        assert second.returncode == 1
        assert "already running" in second.stderr and "Traceback" not in second.stderr
        assert first.wait(timeout=150) == 0, first.stderr.read() if first.stderr else ""

        status = mlplat("status", "--json", cwd=root)
        assert status.returncode == 0, status.stderr
        data = json.loads(status.stdout)
        assert data["up"] and {s["name"] for s in data["services"]} == {"tracker", "metadata", "serving"}

        refused = mlplat("sql", "DELETE FROM runs", cwd=root)
        assert refused.returncode != 0 and "read-only" in refused.stderr
        allowed = mlplat("sql", "SELECT count(*) AS n FROM runs", "--json", cwd=root)
        assert allowed.returncode == 0, allowed.stderr
        assert json.loads(allowed.stdout) == [{"n": 0}]
        cut = mlplat("sql", "SELECT range AS i FROM range(1000000)", "--json", cwd=root)
        assert cut.returncode == 0, cut.stderr
        assert "note:" in cut.stderr and len(json.loads(cut.stdout)) < 1_000_000  # cut, and says so
    finally:
        if first.poll() is None:
            first.wait(timeout=150)
        down = mlplat("down", cwd=root)
    assert down.returncode == 0, down.stderr
    time.sleep(0.5)
    assert not _ours(root), [p.cmdline() for p in _ours(root)]
