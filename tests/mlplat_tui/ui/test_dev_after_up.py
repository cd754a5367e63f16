"""The README's sequence: ``mlplat up``, ``mlplat train``, then ``mlplat dev`` on a terminal.

The dev loop hosted by the dashboard died at once in that sequence (mlflow imported by two
threads at once: ``cannot import name '_get_store' from partially initialized module
'mlflow.tracking'``) while the panel kept saying "watching". Here the real CLI brings the
stack up and trains, then a fresh interpreter pilots the dev dashboard (``dev_pilot.py``):
it must train, serve, and serve again after a save.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.stack import REPO, copy_sample, relax_latency_gate

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def _mlplat(root: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlplat_tui", "--project", str(root), *args],
        cwd=root,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_dev_dashboard_after_up_and_train_trains_and_serves_on_a_save(tmp_path: Path) -> None:
    root = copy_sample("churn", tmp_path)
    relax_latency_gate(root)  # this is about the dev loop, not that guardrail
    up = _mlplat(root, "up")
    try:
        assert up.returncode == 0, up.stderr
        train = _mlplat(root, "train")
        assert train.returncode == 0, train.stderr
        piloted = subprocess.run(
            [sys.executable, "-m", "tests.mlplat_tui.ui.dev_pilot", str(root)],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=900,
        )
        lines = piloted.stdout.strip().splitlines()
        assert lines, piloted.stderr[-3000:]
        seen = json.loads(lines[-1])
        assert piloted.returncode == 0, (seen, piloted.stderr[-3000:])
        assert seen["mlflow_imported_before"] is False  # else the test shows nothing
        assert int(seen["second_version"]) > int(seen["first_version"]) >= 2, seen
        assert seen["last_result_ok"] is True and "watching" in seen["panel"]
        assert seen["return_code"] == 0
    finally:
        _mlplat(root, "down", timeout=120)
