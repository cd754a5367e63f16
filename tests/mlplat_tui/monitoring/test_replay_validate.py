"""`mlplat validate` evaluates shadow gates on captured traffic, and the dev loop's swap message
alone reads a bounded number of rows: the real pipeline, training command, bundles, gates and
replay; the stack's clients replaced by the fakes (``tests/fakes``: the metadata fake is the
real store in process); the traffic written by a real serving process with the log on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import mlplat_tui.cycle.pipeline as pipeline
from mlplat_tui.cli import cli
from mlplat_tui.cycle.pipeline import CycleOutcome, Pipeline
from mlplat_tui.events import Event
from mlplat_tui.monitoring.replay import log_root
from mlplat_tui.project.config import load_project
from tests.fakes import FakeConnector, FakeMetadata, FakeServingAdmin, FakeTracker
from tests.helpers.models import make_logreg_onnx
from tests.mlplat_tui.monitoring.replay_helpers import capture, flipped_onnx, traffic

pytestmark = pytest.mark.integration

TRAIN = """
import os, shutil
from pathlib import Path

here = Path(__file__).parent
which = (here / "which.txt").read_text().strip()
shutil.copy(here / "assets" / f"{which}.onnx", Path(os.environ["MLPLAT_OUTPUT_DIR"]) / "model.onnx")
"""

BASE = '[project]\nname = "tiny"\n[train]\ncommand = "python train.py"\n[model]\nname = "tiny"\n'
SHADOW = '[gates]\n"shadow.agreement" = ">= 0.95"\n'


def _project(root: Path, toml: str) -> Path:
    (root / "assets").mkdir(parents=True)
    make_logreg_onnx(root / "assets" / "good.onnx")
    shutil.copy(root / "assets" / "good.onnx", root / "assets" / "same.onnx")
    flipped_onnx(root / "assets" / "flipped.onnx")
    (root / "train.py").write_text(TRAIN)
    (root / "mlplat.toml").write_text(toml)
    (root / ".mlplat" / "stack").mkdir(parents=True)
    return root


def test_validate_evaluates_a_shadow_gate_on_captured_traffic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _project(tmp_path / "tiny", BASE + SHADOW)
    connector = FakeConnector(FakeTracker(), FakeMetadata(tmp_path / "meta.duckdb"), FakeServingAdmin())
    pipe = Pipeline(load_project(root), None, clients=connector)
    try:
        (root / "which.txt").write_text("good")
        first = pipe.run_cycle()
        assert first.outcome is CycleOutcome.DEPLOYED and first.bundle_path, first.reason
        capture(tmp_path / "serving", first.bundle_path, log_root(pipe.project), traffic(300), model="tiny")
        (root / "which.txt").write_text("flipped")
        flipped = pipe.run_cycle(deploy=False)  # a bundle to validate; the champion still serves
        assert flipped.bundle_path is not None
    finally:
        pipe.close()

    class Connected(Pipeline):  # what `mlplat validate` builds, over the same fakes
        def __init__(self, project: Any, backend: Any = None, **kw: Any) -> None:
            super().__init__(project, backend, clients=connector)

    monkeypatch.setattr(pipeline, "Pipeline", Connected)
    runner = CliRunner()
    out = runner.invoke(cli, ["--project", str(root), "validate", str(flipped.bundle_path), "--json"])
    assert out.exit_code == 1, out.output
    gates = {g["name"]: g for g in json.loads(out.output)["gates"]}
    shadow = gates["shadow.agreement"]
    assert shadow["evaluated"] and not shadow["passed"], shadow
    assert shadow["measured"] < 0.5 and "300 captured rows of champion v1" in shadow["detail"], shadow

    champion = runner.invoke(cli, ["--project", str(root), "validate", str(first.bundle_path), "--json"])
    assert champion.exit_code == 0, champion.output  # the champion against itself: agreement 1
    again = {g["name"]: g for g in json.loads(champion.output)["gates"]}["shadow.agreement"]
    assert again["evaluated"] and again["measured"] == 1.0


def test_the_swap_message_alone_replays_a_bounded_number_of_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "SWAP_ROWS", 120)  # instead of 5,000: 300 captured rows exceed it
    root = _project(tmp_path / "tiny", BASE)  # no shadow gate
    connector = FakeConnector(FakeTracker(), FakeMetadata(tmp_path / "meta.duckdb"), FakeServingAdmin())
    pipe = Pipeline(load_project(root), None, clients=connector)
    events: list[Event] = []
    try:
        (root / "which.txt").write_text("good")
        first = pipe.run_cycle()
        assert first.outcome is CycleOutcome.DEPLOYED and first.bundle_path, first.reason
        capture(tmp_path / "serving", first.bundle_path, log_root(pipe.project), traffic(300), model="tiny")
        (root / "which.txt").write_text("same")
        same = pipe.run_cycle(emit=events.append)
        assert same.outcome is CycleOutcome.DEPLOYED, same.reason
    finally:
        pipe.close()
    swapped = next(e for e in events if e.kind == "swapped")
    assert "; agreement with the previous version 1.00" in swapped.message, swapped.message
    assert swapped.data["replay"]["rows"] == 120, swapped.data["replay"]
