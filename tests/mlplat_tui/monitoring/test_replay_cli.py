"""`mlplat replay` as a user runs it (a subprocess): the table, --json, the exit code of the
shadow gates, and the results stored on the candidate's manifest; traffic captured by a real
serving process. No stack runs, so the champion is named with --champion."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mlplat_runtime.bundle import open_bundle
from tests.helpers.models import make_bundle
from tests.helpers.stack import free_port_base, set_port_base
from tests.mlplat_tui.monitoring.replay_helpers import capture, flipped_onnx, reference, traffic

pytestmark = pytest.mark.integration

TOML = """
[project]
name = "m"

[train]
command = "python train.py"

[model]
name = "m"

[gates]
"shadow.agreement" = ">= 0.95"
"""


def mlplat(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlplat_tui", *args],
        cwd=cwd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_replay_prints_the_comparison_stores_the_gates_and_fails_a_flipping_candidate(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "mlplat.toml").write_text(TOML)
    set_port_base(root, free_port_base())
    ref = reference()
    champion = make_bundle(tmp_path, version="1", reference=ref)
    flipped = make_bundle(tmp_path, version="2", out=tmp_path / "flipped", reference=ref,
                          model=flipped_onnx(tmp_path / "flipped-src" / "model.onnx"))  # fmt: skip
    capture(tmp_path / "serving", champion, root / ".mlplat" / "monitoring" / "predictions", traffic(300))

    out = mlplat("replay", str(flipped), "--champion", str(champion), cwd=root)
    assert out.returncode == 1, out.stderr
    assert "300 captured rows of champion v1 (last 24h)" in out.stdout
    assert "agreement" in out.stdout and "FAIL" in out.stdout and "agreement by segment" in out.stdout
    assert "stored on the candidate: manifest" in out.stdout
    stamped = {g.name: g for g in open_bundle(flipped).manifest.gates}
    assert stamped["shadow.agreement"].passed is False
    assert stamped["shadow.p99_latency_ratio"].threshold == "(not required by [gates])"

    same = mlplat("replay", str(champion), "--champion", str(champion), "--rows", "50", "--json", cwd=root)
    assert same.returncode == 0, same.stderr
    report = json.loads(same.stdout)
    assert report["rows"] == 50 and report["agreement"] == 1.0 and report["passed"] is True
    assert report["window"] == "newest 50 rows"

    both = mlplat("replay", str(champion), "--since", "1h", "--rows", "5", cwd=root)
    assert both.returncode == 2 and "--since or --rows" in both.stderr
    assert "Replay captured live traffic" in mlplat("replay", "--help", cwd=root).stdout
