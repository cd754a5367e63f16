"""``mlplat runs`` says what serves now and ``mlplat rollback`` serves an earlier run, as a user
runs them: subprocesses against a real local stack."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.helpers.models import make_logreg_onnx
from tests.helpers.stack import free_port_base
from tests.mlplat_tui.cli.test_cli import mlplat

pytestmark = pytest.mark.integration

TRAIN = """
import json, os, shutil
from pathlib import Path

here = Path(__file__).parent
which = (here / "which.txt").read_text().strip()
out = Path(os.environ["MLPLAT_OUTPUT_DIR"])
shutil.copy(here / "assets" / f"model{which}.onnx", out / "model.onnx")
(out / "metrics.json").write_text(json.dumps({"score": 0.9}))
"""


def _project(tmp_path: Path) -> Path:
    root = tmp_path / "rb"
    (root / "assets").mkdir(parents=True)
    for seed in (1, 2):
        make_logreg_onnx(root / "assets" / f"model{seed}.onnx", seed=seed)
    (root / "train.py").write_text(TRAIN)
    (root / "mlplat.toml").write_text(
        '[project]\nname = "rb"\n[train]\ncommand = "python train.py"\n[model]\nname = "rb"\n'
        f'[gates]\n"metrics.score" = ">= 0.5"\n[stack]\nport_base = {free_port_base()}\n'
    )
    return root


def _runs(root: Path) -> dict[str, dict]:
    out = mlplat("runs", "--json", cwd=root)
    assert out.returncode == 0, out.stderr
    return {r["version"]: r for r in json.loads(out.stdout)}


def _serving_version(root: Path) -> str:
    text = (root / "mlplat.toml").read_text()
    base = int(text.split("port_base = ")[1].split()[0])
    return str(httpx.get(f"http://127.0.0.1:{base + 2}/v2/models/rb", timeout=5).json()["versions"][-1])


def test_runs_served_is_serving_now_and_rollback_serves_the_previous_run(tmp_path: Path) -> None:
    root = _project(tmp_path)
    up = mlplat("up", cwd=root)
    assert up.returncode == 0, up.stderr
    try:
        for which in ("1", "2"):
            (root / "which.txt").write_text(which)
            trained = mlplat("train", "--json", cwd=root)
            assert trained.returncode == 0, trained.stderr
            assert json.loads(trained.stdout)["outcome"] == "deployed"

        runs = _runs(root)
        # SERVED means serving now, per target; DEPLOYED means it ever was
        assert (runs["2"]["served_on"], runs["2"]["was_deployed"]) == (["local"], True)
        assert (runs["1"]["served_on"], runs["1"]["was_deployed"]) == ([], True)
        table = mlplat("runs", cwd=root)
        assert "SERVED" in table.stdout and "DEPLOYED" in table.stdout

        back = mlplat("rollback", "--json", cwd=root)
        assert back.returncode == 0, back.stderr
        answer = json.loads(back.stdout)
        assert (answer["outcome"], answer["action"], answer["version"]) == ("served", "rollback", "1")
        assert answer["recorded"] and _serving_version(root) == "1"
        runs = _runs(root)
        assert runs["1"]["served_on"] == ["local"] and runs["2"]["served_on"] == []

        forward = mlplat("rollback", "--to", "v2", cwd=root)
        assert forward.returncode == 0, forward.stderr
        assert "v2 serves on local" in forward.stdout and _serving_version(root) == "2"

        missing = mlplat("rollback", "--to", "7", cwd=root)
        assert missing.returncode == 1 and "no run with version 7" in missing.stderr
    finally:
        down = mlplat("down", cwd=root)
    assert down.returncode == 0, down.stderr
