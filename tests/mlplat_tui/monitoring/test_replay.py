"""Replay against traffic a real serving process captured: agreement, differences, errors,
latency ratios, segments, the window, and the shadow gate that refuses a label-flipping model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mlplat_runtime.bundle import open_bundle
from mlplat_runtime.errors import UsageError
from mlplat_tui.gates.evaluate import evaluate_gates, failure_reasons
from mlplat_tui.monitoring.replay import Window, parse_since, replay
from mlplat_tui.project.gate_specs import parse_gates
from tests.helpers.models import make_bundle, make_logreg_onnx
from tests.mlplat_tui.monitoring.replay_helpers import capture, flipped_onnx, reference, traffic

pytestmark = pytest.mark.integration

ROWS = 1000


@pytest.fixture(scope="module")
def captured(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, Path]:
    """(log root, champion, same-model candidate, flipped candidate); the log also holds a few
    rows the flipped bundle answered, which a replay of the champion's traffic must leave out."""
    tmp = tmp_path_factory.mktemp("replay")
    ref = reference()
    champion = make_bundle(tmp, version="1", reference=ref)
    same = make_bundle(tmp, name="m", version="2", out=tmp / "same", reference=ref,
                       model=make_logreg_onnx(tmp / "same-src" / "model.onnx"))  # fmt: skip
    flipped = make_bundle(tmp, version="3", out=tmp / "flipped", reference=ref,
                          model=flipped_onnx(tmp / "flipped-src" / "model.onnx"))  # fmt: skip
    log = tmp / "log"
    capture(tmp / "s1", champion, log, traffic(ROWS))
    capture(tmp / "s2", flipped, log, traffic(60, seed=5))
    return log, champion, same, flipped


def test_the_same_model_agrees_on_every_captured_row(captured: tuple[Path, Path, Path, Path]) -> None:
    log, champion, same, _ = captured
    report = replay(same, champion, log)
    assert report.rows == ROWS  # the champion's 200s only: not the flipped bundle's, not the 400
    assert report.compared == "label" and report.agreement == 1.0
    assert report.mean_abs_diff == 0.0 and report.p99_abs_diff == 0.0 and report.new_errors == 0
    assert report.champion_version == "1" and report.candidate_version == "2"
    assert report.p50_latency_ratio is not None and report.p50_latency_ratio > 0
    assert report.p99_latency_ratio is not None and report.p99_latency_ratio > 0
    assert set(report.latency_ms) == {"champion", "candidate"}
    by = {(s.feature, s.value): s for s in report.segments}
    assert {("flag", "0"), ("flag", "1"), ("flag", "2"), ("label", "0"), ("label", "1")} <= set(by)
    assert sum(s.rows for s in report.segments if s.feature == "flag") == ROWS
    summary = report.summary()
    assert summary is not None and summary.startswith("agreement with the previous version 1.00, p99 ×")


def test_a_flipped_model_disagrees_and_the_shadow_gate_rejects_it(
    captured: tuple[Path, Path, Path, Path],
) -> None:
    log, champion, _, flipped = captured
    report = replay(flipped, champion, log)
    assert report.rows == ROWS
    assert report.agreement is not None and report.agreement < 0.2
    assert report.mean_abs_diff is not None and report.mean_abs_diff > 0.2
    assert report.p99_abs_diff is not None and report.p99_abs_diff >= report.mean_abs_diff
    assert all(s.agreement < 0.5 for s in report.segments if s.feature == "flag")

    gates = parse_gates("mlplat.toml", {"shadow": {"agreement": ">= 0.95", "p99_latency_ratio": "<= 50"}})
    results = evaluate_gates(
        open_bundle(flipped), gates, champion=open_bundle(champion).manifest, shadow=report.figures
    )
    by = {r.name: r for r in results}
    assert not by["shadow.agreement"].passed and by["shadow.agreement"].measured == report.agreement
    assert by["shadow.p99_latency_ratio"].passed
    reasons = failure_reasons(results)
    assert any(r.startswith("shadow.agreement 0") and r.endswith("< 0.95") for r in reasons), reasons


def test_the_window_picks_the_newest_rows_or_a_time_span(captured: tuple[Path, Path, Path, Path]) -> None:
    log, champion, same, _ = captured
    assert replay(same, champion, log, Window(since=None, rows=100)).rows == 100
    later = datetime.now(UTC) + timedelta(days=2)
    none = replay(same, champion, log, Window(since=timedelta(hours=1)), now=later)
    assert none.rows == 0 and none.agreement is None and none.summary() is None
    assert none.about == "no captured traffic of champion v1 (last 1h)"
    figures = none.figures()
    assert figures.rows == 0 and figures.failed is None


def test_no_log_at_all_is_no_traffic(tmp_path: Path, captured: tuple[Path, Path, Path, Path]) -> None:
    _, champion, same, _ = captured
    report = replay(same, champion, tmp_path / "nothing-here")
    assert report.rows == 0 and "no captured traffic" in report.about


def test_since_parses_spans_and_refuses_the_rest() -> None:
    assert parse_since("24h") == timedelta(hours=24) and parse_since("90m") == timedelta(minutes=90)
    assert parse_since("7d") == timedelta(days=7)
    with pytest.raises(UsageError, match="not a time span"):
        parse_since("yesterday")
