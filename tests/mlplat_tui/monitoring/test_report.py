"""``mlplat monitor``'s wording (``monitoring/report.py``) and the feedback CSV reader."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlplat_runtime.errors import UsageError
from mlplat_runtime.metadata.monitor_records import MonitorReport
from mlplat_tui.cli.feedback import read_feedback
from mlplat_tui.monitoring.report import ranked, sections


def _report() -> MonitorReport:
    feature = {
        "kind": "numeric",
        "rows": 2000,
        "missing_share": 0.0,
        "out_of_range_share": 0.1,
        "unseen_share": 0.0,
    }
    return MonitorReport.model_validate(
        {
            "window_s": 900,
            "versions": [
                {
                    "model": "churn",
                    "version": "3",
                    "first": "2026-01-01T10:00:00Z",
                    "last": "2026-01-01T10:05:00Z",
                    "requests": 2000,
                    "request_rate": 6.7,
                    "error_rate": 0.01,
                    "latency_p50_ms": 1.0,
                    "latency_p99_ms": 5.0,
                    "features": [],
                },
                {
                    "model": "churn",
                    "version": "4",
                    "first": "2026-01-01T10:05:00Z",
                    "last": "2026-01-01T10:10:00Z",
                    "requests": 3000,
                    "request_rate": 10.0,
                    "error_rate": 0.0,
                    "uncertain_share": 0.2,
                    "estimated_accuracy": 0.81,
                    "features": [
                        {
                            **feature,
                            "feature": "age",
                            "score": 0.2,
                            "psi": 0.02,
                            "ks": 0.01,
                            "js": 0.05,
                            "state": "ok",
                        },
                        {
                            **feature,
                            "feature": "spend",
                            "score": 4.0,
                            "psi": 0.4,
                            "ks": 0.3,
                            "js": 0.2,
                            "state": "drift",
                        },
                        {**feature, "feature": "tiny", "score": None, "state": "unknown", "rows": 10},
                        {
                            "feature": "__output__",
                            "kind": "categorical",
                            "rows": 3000,
                            "score": 0.6,
                            "psi": 0.06,
                            "js": 0.06,
                            "state": "warn",
                        },
                    ],
                },
            ],
            "alerts": [
                {
                    "dedupe_key": "drift:churn:4:spend",
                    "model": "churn",
                    "version": "4",
                    "feature": "spend",
                    "open": True,
                    "severity": "severe",
                    "score": 4.0,
                    "opened_at": "2026-01-01T10:09:00Z",
                }
            ],
            "swaps": [{"model": "churn", "version": "4", "at": "2026-01-01T10:05:00Z"}],
        }
    )


def test_features_rank_worst_first_and_unknown_last() -> None:
    v4 = _report().versions[1]
    assert [f.feature for f in ranked(v4.features)] == ["spend", "__output__", "age", "tiny"]


def test_sections_mark_the_swap_states_and_alerts() -> None:
    out = sections(_report())
    assert [s.heading for s in out] == ["churn v3", "churn v4", "open alerts"]
    v3, v4, alerts = out
    assert not any("swap" in line for line in v3.lines)
    assert v4.lines[0].startswith("▲ swap: v4 started serving at 2026-01-01 10:05:00")
    assert "accuracy 0.810 (estimated, no labels)" in v4.lines[1]
    assert "output drift: ! warn" in v4.lines[2]
    assert v4.rows[0][:3] == ("spend", "numeric", "✗ drift")
    assert v4.rows[-1][2] == "not enough data"
    assert "drift: no window evaluated yet" in " ".join(v3.lines)
    assert alerts.rows == (("severe", "churn", "v4", "spend", "4.00", "2026-01-01 10:09:00"),)


def test_no_traffic_says_what_to_do() -> None:
    (first, alerts) = sections(MonitorReport(window_s=3600))
    assert first.heading == "no traffic" and "last 1h" in first.lines[0]
    assert alerts.lines == ("none",)


def test_feedback_csv(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("request_id,row,label\nr1,,1\nr2,3,0\n")
    assert list(read_feedback(path, "churn")) == [
        {"model": "churn", "request_id": "r1", "label": "1"},
        {"model": "churn", "request_id": "r2", "row": 3, "label": "0"},
    ]
    bad = tmp_path / "bad.csv"
    bad.write_text("request_id,value\nr1,abc\n")
    with pytest.raises(UsageError, match=r"bad.csv:2: value must be a number"):
        list(read_feedback(bad, "churn"))
    with pytest.raises(UsageError, match="needs a request_id column"):
        (tmp_path / "x.csv").write_text("id,label\n")
        list(read_feedback(tmp_path / "x.csv", "m"))


def test_the_monitor_keys_of_mlplat_toml_are_parsed(tmp_path: Path) -> None:
    from mlplat_runtime.errors import ConfigError
    from mlplat_tui.project.config import load_project

    base = '[project]\nname = "p"\n[model]\nname = "m"\n[monitor]\n'
    (tmp_path / "mlplat.toml").write_text(base + 'psi = 0.2\nresolve_after = 5\nwindow = "1h"\n')
    monitor = load_project(tmp_path).config.monitor
    assert (monitor.psi, monitor.ks, monitor.resolve_after, monitor.window) == (0.2, 0.1, 5, "1h")
    (tmp_path / "mlplat.toml").write_text(base + "psi_treshold = 0.2\n")
    with pytest.raises(ConfigError, match="psi_treshold"):
        load_project(tmp_path)
