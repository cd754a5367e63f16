"""`mlplat dev` with shadow gates against the real local stack (tracker, metadata, serving):
a save that flips the labels of live traffic is rejected and v1 keeps serving; a save that
keeps them swaps, and the swap says the agreement with the previous version and the p99 ratio.
The captured traffic is written by a real serving process serving v1 with the prediction log on."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from mlplat_tui.cycle.outcome import CycleOutcome
from mlplat_tui.devloop.loop import DevLoop
from mlplat_tui.events import Event
from mlplat_tui.monitoring.replay import log_root
from mlplat_tui.project.config import load_project
from mlplat_tui.stack.base import Service
from tests.helpers.models import make_logreg_onnx
from tests.helpers.stack import free_port_base, set_port_base, started_stack
from tests.mlplat_tui.monitoring.replay_helpers import capture, flipped_onnx, traffic
from tests.mlplat_tui.monitoring.test_replay_cycle import TOML, TRAIN

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_dev_rejects_a_label_flipping_save_and_a_good_swap_reports_agreement(tmp_path: Path) -> None:
    root = tmp_path / "tiny"
    (root / "assets").mkdir(parents=True)
    make_logreg_onnx(root / "assets" / "good.onnx")
    shutil.copy(root / "assets" / "good.onnx", root / "assets" / "same.onnx")
    flipped_onnx(root / "assets" / "flipped.onnx")
    (root / "train.py").write_text(TRAIN)
    (root / "mlplat.toml").write_text(TOML)
    set_port_base(root, free_port_base())

    def once(which: str) -> tuple[CycleOutcome, str, list[Event]]:
        (root / "which.txt").write_text(which)
        events: list[Event] = []
        loop = DevLoop(load_project(root), backend=stack, emit=events.append, start_stack=False, warm=False)
        result = loop.run_once()
        assert result is not None
        return result.outcome, result.reason, events

    with started_stack(root) as stack:
        outcome, reason, _ = once("good")
        assert outcome is CycleOutcome.DEPLOYED, reason
        v1 = next(load_project(root).paths.bundles.glob("tiny-v1*"))
        capture(tmp_path / "serving", v1, log_root(load_project(root)), traffic(500), model="tiny")

        outcome, reason, events = once("flipped")
        assert outcome is CycleOutcome.REJECTED and "shadow.agreement 0" in reason, reason
        assert any(e.kind == "rejected" and "still serving v1" in e.message for e in events)
        meta = httpx.get(f"{stack.ports.url(Service.SERVING)}/v2/models/tiny", timeout=5).json()
        assert str(meta["versions"][-1]) == "1"

        outcome, reason, events = once("same")
        assert outcome is CycleOutcome.DEPLOYED, reason
        swapped = next(e for e in events if e.kind == "swapped")
        assert "agreement with the previous version 1.00, p99 ×" in swapped.message, swapped.message
