"""The Dev loop panel's state, folded from the events a real cycle emits."""

from __future__ import annotations

from mlplat_runtime.bundle.manifest import GateResult
from mlplat_tui.events import Event
from mlplat_tui.ui.devstate import DevLoopState, apply


def _fold(state: DevLoopState, *events: Event) -> DevLoopState:
    for e in events:
        state = apply(state, e)
    return state


def test_a_cycle_walks_through_the_phases() -> None:
    s = apply(DevLoopState(), Event("watching", "watching *.py", ts=1.0))
    assert (s.phase, s.watching) == ("watching", True)
    s = apply(s, Event("change", "train.py changed", ts=2.0, data={"files": ["train.py", "data/x.csv"]}))
    assert (s.phase, s.step, s.step_started) == ("training", "change detected", 2.0)
    assert s.last_change == ("train.py", "data/x.csv") and s.last_change_at == 2.0
    s = apply(s, Event("training", "training", ts=2.1))
    assert (s.phase, s.step_started) == ("training", 2.1)
    s = apply(s, Event("output", "epoch 1", ts=2.2))  # output lines leave the phase alone
    assert s.phase == "training"
    s = _fold(s, Event("trained", "done", ts=5.0), Event("bundled", "v2", ts=5.1))
    assert (s.phase, s.step) == ("gating", "checking gates")
    gate = GateResult(name="metrics.roc_auc", measured=0.9, threshold=">= 0.85", passed=True)
    s = apply(s, Event("gated", "passed", ts=5.2, gates=(gate,)))
    assert s.phase == "swapping"
    s = apply(s, Event("swapped", "serving v2 on CPUExecutionProvider", ts=5.5))
    assert (s.phase, s.step, s.last_result, s.last_result_ok, s.cycles) == (
        "watching",
        None,
        "serving v2 on CPUExecutionProvider",
        True,
        1,
    )


def test_failures_and_rejections_end_the_cycle_with_the_reason() -> None:
    base = DevLoopState(phase="training", watching=False, step="training", step_started=1.0)
    failed = apply(base, Event("failed", "training failed", error="exit code 1\ntraceback..."))
    assert (failed.phase, failed.last_result, failed.last_result_ok) == ("idle", "failed: exit code 1", False)
    bad = GateResult(name="size_mb", measured=80.0, threshold="<= 50", passed=False)
    gated = apply(base, Event("gated", "failed", gates=(bad,)))
    assert (gated.phase, gated.step) == ("gating", "gates failed")
    rejected = apply(gated, Event("rejected", "rejected: size_mb, still serving v1"))
    assert rejected.last_result == "rejected: size_mb, still serving v1" and rejected.last_result_ok is False
    cancelled = apply(base, Event("cancelled", "a newer change"))
    assert cancelled.cycles == 0 and cancelled.phase == "idle"


def test_a_loop_that_died_stops_watching_and_keeps_the_reason() -> None:
    watching = DevLoopState(phase="watching", watching=True)
    died = apply(watching, Event("stopped", "dev loop died", error="ImportError: partially initialized\n..."))
    assert (died.phase, died.watching, died.died) == ("died", False, "ImportError: partially initialized")
    # a late event of the ended loop does not bring "watching" back
    assert apply(died, Event("watching", "watching *.py")) == died
    stopped = apply(watching, Event("stopped", "dev loop stopped"))
    assert (stopped.phase, stopped.watching, stopped.died) == ("stopped", False, None)
