"""The alert state machine and the per-feature triggers (``metadata/alerts.py``)."""

from __future__ import annotations

import pytest

from mlplat_runtime.metadata.alerts import AlertState, Thresholds, state_of, step


def _feed(verdicts: list[bool | None], rule: Thresholds | None = None) -> list[str | None]:
    state = AlertState("drift:m:1:f")
    out: list[str | None] = []
    for v in verdicts:
        state, transition = step(state, v, rule=rule)
        out.append(transition)
    return out


def test_opens_after_three_windows_in_a_row_over() -> None:
    assert _feed([True, True, True]) == [None, None, "opened"]


def test_a_window_under_breaks_the_streak() -> None:
    assert _feed([True, True, False, True, True]) == [None] * 5


def test_not_enough_data_neither_counts_nor_breaks() -> None:
    assert _feed([True, None, True, None, True]) == [None, None, None, None, "opened"]


def test_resolves_after_three_under_and_can_open_again() -> None:
    got = _feed([True] * 3 + [False, False, True, False, False, False] + [True] * 3)
    assert got.count("opened") == 2 and got.count("resolved") == 1
    assert got.index("resolved") == 8


def test_open_after_is_configurable() -> None:
    assert _feed([True], Thresholds(open_after=1)) == ["opened"]


def test_severity_follows_psi() -> None:
    state, transition = step(AlertState("k", over=2), True, severe=True)
    assert transition == "opened" and state.severity == "severe"
    state, _ = step(AlertState("k", over=2), True, severe=False)
    assert state.severity == "warn"


def test_triggers_per_kind_and_calibrated_floor() -> None:
    rule = Thresholds()
    numeric = rule.for_feature("numeric")
    assert set(numeric.metrics) == {"psi", "ks"}
    assert numeric.score({"psi": 0.05, "ks": 0.12, "js": 0.9}) == pytest.approx(
        1.2
    )  # js is not a numeric trigger
    categorical = rule.for_feature("categorical")
    assert set(categorical.metrics) == {"js", "psi"}
    # a floor above the default raises it; one below does not lower it
    raised = rule.for_feature("numeric", {"psi": 0.2, "ks": 0.01})
    assert raised.metrics == {"psi": 0.2, "ks": 0.1}
    assert raised.score({"psi": 0.15, "ks": 0.0}) == pytest.approx(0.75)
    assert raised.severe({"psi": 0.3}) and not raised.severe({"psi": 0.2})


def test_states() -> None:
    assert [state_of(s) for s in (None, 0.1, 0.5, 0.99, 1.0, 7.0)] == [
        "unknown",
        "ok",
        "warn",
        "warn",
        "drift",
        "drift",
    ]
