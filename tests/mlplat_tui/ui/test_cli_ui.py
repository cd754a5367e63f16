"""``mlplat ui`` through the real CLI: it refuses to draw without a terminal (no hang in CI),
names a missing project, and importing the command pulls in no textual."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers.stack import copy_sample


def _mlplat(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlplat_tui", *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_ui_without_a_terminal_says_so_and_exits(tmp_path: Path) -> None:
    root = copy_sample("churn", tmp_path)
    for args in (("ui",), ("ui", "--project", str(root)), ("--project", str(root))):
        done = _mlplat(*args, cwd=root if args == ("ui",) else tmp_path)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert "the dashboard needs an interactive terminal" in done.stderr
        assert "Traceback" not in done.stderr


def test_ui_names_a_missing_project(tmp_path: Path) -> None:
    done = _mlplat("ui", "--project", str(tmp_path / "nope"), cwd=tmp_path)
    assert done.returncode == 2
    assert "mlplat.toml" in done.stderr and "Traceback" not in done.stderr


def test_importing_the_command_loads_no_textual() -> None:
    code = "import sys, mlplat_tui.cli.ui; print('textual' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr
