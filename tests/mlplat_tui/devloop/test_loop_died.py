"""A dev loop that dies says so and ends non-zero: ``mlplat dev --headless`` when the stack
cannot start (another program holds the metadata port, a real clash)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from mlplat_tui.project.config import load_project
from mlplat_tui.stack.base import Ports
from tests.helpers.stack import REPO


def test_headless_dev_whose_stack_cannot_start_ends_with_the_reason_and_exit_1(churn: Path) -> None:
    port = Ports.from_project(load_project(churn)).metadata
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()
        done = subprocess.run(
            [sys.executable, "-m", "mlplat_tui", "--project", str(churn), "dev", "--headless"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'runtime'}"},
        )
    assert done.returncode == 1, (done.stdout, done.stderr)
    last = json.loads(done.stdout.splitlines()[-1])
    assert last["kind"] == "stopped" and "dev loop died" in last["message"], last
    assert f"127.0.0.1:{port}" in last["error"] and "already in use" in last["error"], last
    assert "already in use" in done.stderr and "Traceback" not in done.stderr
