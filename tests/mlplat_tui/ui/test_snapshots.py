"""Formatting used by every panel: durations, sizes, times, metrics, ids."""

from __future__ import annotations

from datetime import datetime

from mlplat_tui.ui.snapshots import (
    RunsPage,
    RunsQuery,
    fmt_bytes,
    fmt_duration,
    fmt_metric,
    fmt_time,
    short_id,
)


def test_formats() -> None:
    assert [fmt_duration(s) for s in (None, -1, 5, 65, 3725, 90061)] == [
        "-",
        "-",
        "5s",
        "1m05s",
        "1h02m",
        "1d01h",
    ]
    assert [fmt_bytes(n) for n in (None, 512, 2048, 5 << 20, 3 << 30)] == [
        "-",
        "512B",
        "2.0K",
        "5.0M",
        "3.0G",
    ]
    assert [fmt_metric(v) for v in (None, "n/a", 0, 0.88836, 123456.0, 1e-5)] == [
        "-",
        "n/a",
        "0",
        "0.8884",
        "1.235e+05",
        "1.000e-05",
    ]
    assert short_id("sha256:0123456789abcdef") == "0123456789ab" and short_id(None) == "-"
    noon = datetime(2026, 3, 14, 12, 0, 0).timestamp()
    assert fmt_time(noon + 65, now=noon) == "12:01:05"
    assert fmt_time(noon - 86400, now=noon) == "2026-03-13 12:00"


def test_pages() -> None:
    q = RunsQuery(offset=200, limit=100)
    assert q.page == 2
    assert RunsPage(q, (), total=10_000).pages == 100
    assert RunsPage(q, (), total=0).pages == 1
    assert RunsPage(q, (), total=101).pages == 2
