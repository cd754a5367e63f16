"""When a drift score becomes an alert: thresholds per feature and the open/resolve state machine.

A window's result per feature is *over* the trigger, *under* it, or unknown ("not enough data":
fewer rows than ``min_rows``). An alert opens after ``open_after`` windows in a row over the
trigger and resolves after ``resolve_after`` windows in a row under it; unknown windows leave
the streaks as they are, so a quiet night neither opens nor resolves anything. One window over
is noise (PSI of a 1,000-row window of an undrifted feature is itself a random variable), three
in a row is a shift.

Triggers (``Thresholds``): numeric features drift at PSI >= 0.1 or KS >= 0.1, categorical at
JS >= 0.1 or PSI >= 0.1, severe at PSI >= 0.25; each is raised to the feature's calibrated floor
from the reference (the score an undrifted window of that size reaches anyway), never lowered.
The drift *score* is the largest metric/trigger ratio: >= 1 is over, which ranks features of
different kinds on one scale. The state a report shows: ``drift`` (score >= 1), ``warn``
(score >= 0.5), ``ok``, or ``unknown``.

Pure logic: the standard library only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal

Kind = Literal["numeric", "categorical"]
State = Literal["ok", "warn", "drift", "unknown"]
Transition = Literal["opened", "resolved"]

WARN_RATIO = 0.5


@dataclass(frozen=True)
class Thresholds:
    """The triggers before calibration (``[monitor]`` in mlplat.toml overrides them)."""

    psi: float = 0.1
    ks: float = 0.1
    js: float = 0.1
    psi_severe: float = 0.25
    min_rows: int = 1000
    open_after: int = 3
    resolve_after: int = 3

    def for_feature(self, kind: Kind, floor: Mapping[str, float] | None = None) -> FeatureTrigger:
        """This feature's triggers: each default raised to its calibrated floor, if higher."""
        floor = floor or {}

        def raised(name: str, value: float) -> float:
            f = floor.get(name)
            return max(value, float(f)) if f is not None and math.isfinite(float(f)) else value

        if kind == "categorical":
            metrics = {"js": raised("js", self.js), "psi": raised("psi", self.psi)}
        else:
            metrics = {"psi": raised("psi", self.psi), "ks": raised("ks", self.ks)}
        return FeatureTrigger(metrics=metrics, psi_severe=raised("psi_severe", self.psi_severe))


@dataclass(frozen=True)
class FeatureTrigger:
    metrics: Mapping[str, float]  # metric name -> the value at which the feature drifts
    psi_severe: float

    def score(self, values: Mapping[str, float]) -> float:
        """The largest value/trigger ratio over the metrics this trigger uses (NaN ignored)."""
        ratios = [
            float(values[name]) / bound
            for name, bound in self.metrics.items()
            if name in values and bound > 0 and math.isfinite(float(values[name]))
        ]
        return max(ratios, default=0.0)

    def severe(self, values: Mapping[str, float]) -> bool:
        psi = values.get("psi")
        return psi is not None and math.isfinite(psi) and psi >= self.psi_severe


def state_of(score: float | None) -> State:
    if score is None:
        return "unknown"
    if score >= 1.0:
        return "drift"
    if score >= WARN_RATIO:
        return "warn"
    return "ok"


@dataclass(frozen=True)
class AlertState:
    """The streaks of one alert key (e.g. ``drift:churn:3:tenure``) and whether it is open."""

    key: str
    open: bool = False
    over: int = 0  # windows in a row over the trigger
    under: int = 0  # windows in a row under it
    severity: str = "warn"  # "warn" or "severe" (PSI over the severe trigger while open)


def step(
    state: AlertState, over: bool | None, *, severe: bool = False, rule: Thresholds | None = None
) -> tuple[AlertState, Transition | None]:
    """Feed one window's verdict (``None``: not enough data); the new state and what happened."""
    rule = rule or Thresholds()
    if over is None:
        return state, None
    if over:
        new = replace(state, over=state.over + 1, under=0)
        if new.open:
            return replace(new, severity="severe" if severe or state.severity == "severe" else "warn"), None
        if new.over >= rule.open_after:
            return replace(new, open=True, severity="severe" if severe else "warn"), "opened"
        return new, None
    new = replace(state, under=state.under + 1, over=0)
    if new.open and new.under >= rule.resolve_after:
        return replace(new, open=False, severity="warn"), "resolved"
    return new, None
