"""Traffic figures from real ``/metrics`` text, produced by the serving runtime's own
``ServingMetrics`` (the exact exposition the dashboard scrapes)."""

from __future__ import annotations

import pytest

from mlplat_runtime.serving.metrics import ServingMetrics
from mlplat_tui.ui.promstats import Scrape, TrafficHistory, histogram_quantile, parse_scrape, window

MODEL = "churn-classifier"


def _text(m: ServingMetrics) -> str:
    return m.render().decode()


def test_parse_counts_only_inference_of_the_model_and_reads_the_active_version() -> None:
    m = ServingMetrics()
    m.set_active(MODEL, "3", "sha256:abc", "CPUExecutionProvider")
    for _ in range(10):
        m.observe_request(MODEL, "3", "infer", 200, 0.0004)
    m.observe_request(MODEL, "3", "infer", 400, 0.0002)
    m.observe_request(MODEL, "3", "metadata", 200, 0.0001)  # the dashboard's own reads
    m.observe_request("", "", "metrics", 200, 0.0001)
    m.observe_request("other-model", "1", "infer", 200, 0.5)
    s = parse_scrape(_text(m), at=10.0, model=MODEL)
    assert s.requests == 11
    assert s.errors == 1
    assert s.buckets[-1] == (float("inf"), 11)
    assert (s.version, s.bundle_id, s.provider) == ("3", "sha256:abc", "CPUExecutionProvider")


def test_no_active_model_and_empty_text() -> None:
    s = parse_scrape(_text(ServingMetrics()), at=0.0, model=MODEL)
    assert (s.requests, s.errors, s.buckets, s.version) == (0, 0, (), None)
    assert parse_scrape("", at=0.0).requests == 0


def test_quantiles_interpolate_inside_buckets_like_prometheus() -> None:
    buckets = [(0.001, 50.0), (0.002, 100.0), (float("inf"), 100.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.001)
    assert histogram_quantile(0.75, buckets) == pytest.approx(0.0015)
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.0005)
    assert (
        histogram_quantile(0.99, [(0.001, 0.0), (float("inf"), 4.0)]) == 0.001
    )  # open bucket: its lower bound
    assert histogram_quantile(0.5, []) is None
    assert histogram_quantile(0.5, [(0.001, 0.0), (float("inf"), 0.0)]) is None


def test_window_uses_deltas_so_old_slow_requests_do_not_count() -> None:
    m = ServingMetrics()
    for _ in range(100):
        m.observe_request(MODEL, "1", "infer", 200, 0.4)  # long ago: slow
    before = parse_scrape(_text(m), at=100.0, model=MODEL)
    for _ in range(40):
        m.observe_request(MODEL, "1", "infer", 200, 0.0004)  # the last 2 s: fast
    for _ in range(10):
        m.observe_request(MODEL, "1", "infer", 503, 0.0004)
    after = parse_scrape(_text(m), at=102.0, model=MODEL)
    w = window(before, after)
    assert w is not None
    assert w.req_per_s == pytest.approx(25.0)
    assert w.error_rate == pytest.approx(0.2)
    assert w.p50_ms is not None and w.p50_ms < 1.0  # the all-time median would be ~400 ms
    assert w.p99_ms is not None and w.p99_ms < 1.0


def test_restart_and_idle_windows() -> None:
    a = Scrape(at=1.0, requests=50, errors=0, buckets=((0.001, 50.0), (float("inf"), 50.0)))
    restarted = Scrape(at=2.0, requests=3, errors=0, buckets=((0.001, 3.0), (float("inf"), 3.0)))
    assert window(a, restarted) is None
    assert window(a, a) is None  # no time passed
    idle = window(a, Scrape(at=3.0, requests=50, errors=0, buckets=a.buckets))
    assert idle is not None and idle.req_per_s == 0 and idle.p50_ms is None and idle.error_rate == 0


def test_history_series_and_window() -> None:
    h = TrafficHistory(points=3, window_s=10.0)
    for i in range(6):
        n = float(i * 10)
        h.add(Scrape(at=float(i), requests=n, errors=0, buckets=((0.001, n), (float("inf"), n))))
    assert list(h.req_per_s) == [10.0, 10.0, 10.0]  # capped at 3 points
    over = h.over_window()
    assert over is not None and over.req_per_s == pytest.approx(10.0) and over.seconds == 5.0
    h.add(Scrape(at=7.0, requests=1, errors=0, buckets=()))  # the server restarted
    assert h.over_window() is None
    h.reset()
    assert not h.req_per_s and h.over_window() is None
