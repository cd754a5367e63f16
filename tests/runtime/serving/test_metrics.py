"""The Prometheus text we render, read back by prometheus_client's own parser."""

from __future__ import annotations

from mlplat_runtime.serving.metrics import LATENCY_BUCKETS, ServingMetrics
from tests.runtime.serving.conftest import sample, scrape


def test_requests_and_latency_histograms() -> None:
    m = ServingMetrics()
    m.observe_request("m", "1", "infer", 200, 0.0003)
    m.observe_request("m", "1", "infer", 200, 0.0001)  # on a bucket edge: le is inclusive
    m.observe_request("m", "1", "infer", 400, 7.0)  # beyond the last bucket: +Inf only
    m.observe_inference("m", "1", 0.00002)
    text = m.render().decode()
    assert sample(text, "mlplat_requests_total", model="m", version="1", endpoint="infer", code="200") == 2
    assert sample(text, "mlplat_requests_total", model="m", version="1", endpoint="infer", code="400") == 1
    hist = {"model": "m", "endpoint": "infer"}
    assert sample(text, "mlplat_request_duration_seconds_bucket", **hist, le="0.0001") == 1
    assert sample(text, "mlplat_request_duration_seconds_bucket", **hist, le="0.0005") == 2
    assert sample(text, "mlplat_request_duration_seconds_bucket", **hist, le="2.5") == 2
    assert sample(text, "mlplat_request_duration_seconds_bucket", **hist, le="+Inf") == 3
    assert sample(text, "mlplat_request_duration_seconds_count", **hist) == 3
    assert abs((sample(text, "mlplat_request_duration_seconds_sum", **hist) or 0) - 7.0004) < 1e-9
    assert sample(text, "mlplat_inference_duration_seconds_count", model="m", version="1") == 1
    buckets = [k for k in scrape(text) if k[0] == "mlplat_inference_duration_seconds_bucket"]
    assert len(buckets) == len(LATENCY_BUCKETS) + 1


def test_active_version_loads_and_swaps() -> None:
    m = ServingMetrics()
    m.set_active("m", "1", "sha256:aa", "CPUExecutionProvider")
    m.load_result("m", True, 0.02)
    m.set_active("m", "2", "sha256:bb", "CPUExecutionProvider")
    m.load_result("m", True, 0.015, swapped=True)
    m.load_result("m", False)
    text = m.render().decode()
    active = {k: v for k, v in scrape(text).items() if k[0] == "mlplat_model_active_info"}
    assert list(active.values()) == [1]
    (labels,) = [dict(k[1]) for k in active]
    assert labels == {
        "model": "m",
        "version": "2",
        "bundle_id": "sha256:bb",
        "provider": "CPUExecutionProvider",
    }
    assert sample(text, "mlplat_model_loads_total", model="m", result="ok") == 2
    assert sample(text, "mlplat_model_loads_total", model="m", result="rejected") == 1
    assert sample(text, "mlplat_model_swaps_total", model="m") == 1
    assert sample(text, "mlplat_model_last_swap_seconds", model="m") == 0.015
    m.clear_active("m")
    assert not [k for k in scrape(m.render().decode()) if k[0] == "mlplat_model_active_info"]


def test_label_values_are_escaped() -> None:
    m = ServingMetrics()
    weird = 'a"b\\c\nd'
    m.set_active(weird, "1", "x", "CPU")
    assert sample(m.render().decode(), "mlplat_model_active_info", model=weird, version="1", bundle_id="x",
                  provider="CPU") == 1  # fmt: skip


def test_empty_registry_renders_valid_text() -> None:
    families = {k[0] for k in scrape(ServingMetrics().render().decode())}
    assert families == set()
    assert b"# TYPE mlplat_requests_total counter" in ServingMetrics().render()
