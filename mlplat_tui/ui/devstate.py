"""What the Dev loop panel shows, folded from the platform's events.

The dev loop (and "train now") report every step as an ``Event``; the panel needs only the
current phase, when it began, the last change and the last outcome. ``apply`` is a pure reducer
so the mapping from event kinds to phases is tested without a screen.

No textual and no I/O in this module.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlplat_tui.events import Event

# phase shown on the panel -> style class in devloop_panel.tcss; "stopped" and "died" are the
# ends of a hosted dev loop: after them nothing watches the files any more
PHASES = ("off", "idle", "watching", "training", "bundling", "gating", "swapping", "stopped", "died")

# event kind -> (phase entered, step label)
_ENTERS: dict[str, tuple[str, str]] = {
    "change": ("training", "change detected"),
    "training": ("training", "training"),
    "trained": ("bundling", "bundling"),
    "bundled": ("gating", "checking gates"),
    "gated": ("swapping", "loading into serving"),
}
_ENDS = ("swapped", "rejected", "cancelled", "failed", "cycle")


@dataclass(frozen=True)
class DevLoopState:
    phase: str = "off"  # "off" when no dev loop runs in this dashboard
    step: str | None = None
    step_started: float | None = None
    last_change: tuple[str, ...] = ()
    last_change_at: float | None = None
    last_result: str | None = None
    last_result_ok: bool | None = None
    cycles: int = 0
    watching: bool = False  # a dev loop is running (as opposed to a one-off "train now")
    died: str | None = None  # why the dev loop died (the panel must not go on saying "watching")


def apply(state: DevLoopState, event: Event) -> DevLoopState:
    """The state after ``event``. Unknown kinds and ``output`` lines leave it unchanged."""
    kind = event.kind
    if state.phase in ("stopped", "died"):
        return state  # a late event of the ended loop (or of a "train now") must not revive it
    rest = "watching" if state.watching else "idle"
    if kind == "stopped":
        reason = (event.error or event.message).splitlines()[0] if event.error else None
        return replace(
            state,
            phase="died" if reason else "stopped",
            watching=False,
            step=None,
            step_started=None,
            died=reason,
        )
    if kind == "watching":
        return replace(state, phase="watching", watching=True, step=None, step_started=None)
    if kind == "change":
        files = tuple(str(f) for f in event.data.get("files", ()))
        state = replace(state, last_change=files, last_change_at=event.ts)
    if kind in _ENTERS:
        phase, step = _ENTERS[kind]
        if kind == "gated" and event.gates and not all(g.passed for g in event.gates):
            phase, step = "gating", "gates failed"
        return replace(state, phase=phase, step=step, step_started=event.ts)
    if kind in _ENDS:
        if kind == "cycle":
            return replace(state, phase=rest, step=None, step_started=None)
        ok = kind == "swapped"
        result = event.message or kind
        if kind == "failed" and event.error:
            result = f"failed: {event.error.splitlines()[0]}"
        return replace(
            state,
            phase=rest,
            step=None,
            step_started=None,
            last_result=result,
            last_result_ok=ok,
            cycles=state.cycles + (kind != "cancelled"),
        )
    return state
