"""`mlplat train`'s cycle with shadow gates: the real pipeline, training command, bundle, gates
and replay, the stack's clients replaced by the fakes (``tests/fakes``), and the captured
traffic written by a real serving process serving the champion with the prediction log on."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlplat_tui.cycle.pipeline import CycleOutcome, CycleResult, Pipeline
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

TOML = """
[project]
name = "tiny"

[train]
command = "python train.py"

[model]
name = "tiny"

[gates]
"shadow.agreement" = ">= 0.95"
"shadow.p99_latency_ratio" = "<= 1000"
"""


class Tiny:
    def __init__(self, root: Path, db: Path) -> None:
        self.root = root
        self.metadata = FakeMetadata(db)
        self.admin = FakeServingAdmin()
        self.pipe = Pipeline(
            load_project(root), None, clients=FakeConnector(FakeTracker(), self.metadata, self.admin)
        )
        self.events: list[Event] = []

    def cycle(self, which: str) -> CycleResult:
        (self.root / "which.txt").write_text(which)
        self.events.clear()
        return self.pipe.run_cycle(emit=self.events.append)


@pytest.fixture
def tiny(tmp_path: Path) -> Iterator[Tiny]:
    root = tmp_path / "tiny"
    (root / "assets").mkdir(parents=True)
    make_logreg_onnx(root / "assets" / "good.onnx")
    shutil.copy(root / "assets" / "good.onnx", root / "assets" / "same.onnx")
    flipped_onnx(root / "assets" / "flipped.onnx")
    (root / "train.py").write_text(TRAIN)
    (root / "mlplat.toml").write_text(TOML)
    (root / ".mlplat" / "stack").mkdir(parents=True)
    project = Tiny(root, tmp_path / "metadata.duckdb")
    yield project
    project.pipe.close()


def test_train_refuses_a_candidate_that_flips_the_labels_of_live_traffic(tmp_path: Path, tiny: Tiny) -> None:
    first = tiny.cycle("good")
    assert first.outcome is CycleOutcome.DEPLOYED, first.reason
    gate = next(g for g in first.gates if g.name == "shadow.agreement")
    assert gate.passed and gate.detail == "no champion to compare with"
    assert first.bundle_path is not None

    # live traffic, answered by the champion, captured by serving's prediction log
    capture(tmp_path / "serving", first.bundle_path, log_root(tiny.pipe.project), traffic(400), model="tiny")

    flipped = tiny.cycle("flipped")
    assert flipped.outcome is CycleOutcome.REJECTED
    assert "shadow.agreement 0" in flipped.reason and "still serving v1" in flipped.reason
    by = {g.name: g for g in flipped.gates}
    assert (
        not by["shadow.agreement"].passed
        and "400 captured rows of champion v1" in by["shadow.agreement"].detail
    )
    assert tiny.admin.served_version("tiny") == "1"
    recorded = {g.name: g for g in tiny.metadata.store.gates(flipped.bundle_id or "")}
    assert recorded["shadow.agreement"].passed is False  # recorded as the candidate's gate result

    same = tiny.cycle("same")
    assert same.outcome is CycleOutcome.DEPLOYED, same.reason
    swapped = next(e for e in tiny.events if e.kind == "swapped")
    assert "; agreement with the previous version 1.00, p99 ×" in swapped.message, swapped.message
    assert swapped.data["replay"]["rows"] == 400 and swapped.data["replay"]["champion_version"] == "1"
