"""Traffic figures from the serving runtime's Prometheus ``/metrics``: req/s, error rate, p50/p99.

Prometheus exposes cumulative counters and cumulative histogram buckets, so a rate is the
difference of two scrapes over the time between them, and a latency quantile over a window is
read from the *difference* of the bucket counts (as PromQL's ``histogram_quantile(rate(...))``
does) — the all-time histogram would hide what happened in the last minute.

Pure functions over text; no textual, no I/O.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

# The serving runtime's metric names (runtime/mlplat_runtime/serving/metrics.py). Candidates are
# tried in order so a renamed metric degrades to "no data" instead of a crash.
REQUEST_COUNTERS = ("mlplat_requests",)
LATENCY_HISTOGRAMS = ("mlplat_request_duration_seconds",)
ACTIVE_INFO = "mlplat_model_active_info"  # labels model, version, bundle_id, provider; value 1
MODEL_LABELS = ("model",)
STATUS_LABELS = ("code",)  # errors are the requests answered with a 4xx/5xx code
# Only inference counts as traffic: the dashboard's own polls of /metrics and health would
# otherwise show up as requests.
ENDPOINT_LABEL = "endpoint"
TRAFFIC_ENDPOINT = "infer"


@dataclass(frozen=True)
class Scrape:
    at: float  # seconds on a monotonic clock
    requests: float
    errors: float
    buckets: tuple[tuple[float, float], ...]  # (upper bound in seconds, cumulative count), sorted
    version: str | None = None  # what the server says it serves for the model, when it does
    bundle_id: str | None = None
    provider: str | None = None


@dataclass(frozen=True)
class WindowStats:
    seconds: float
    req_per_s: float
    error_rate: float  # 0..1 of the requests in the window
    p50_ms: float | None  # None when no request finished in the window
    p99_ms: float | None


def _is_error_status(value: str) -> bool:
    v = value.lower()
    return v in ("error", "failure", "failed", "fail") or (v.isdigit() and int(v) >= 400)


def parse_scrape(text: str, at: float, model: str | None = None) -> Scrape:
    """Sum the inference request/error counters and latency buckets (of ``model`` when labelled
    so), and read which version of ``model`` is active."""
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(text)}

    def wanted(labels: dict[str, str]) -> bool:
        if labels.get(ENDPOINT_LABEL, TRAFFIC_ENDPOINT) != TRAFFIC_ENDPOINT:
            return False
        if model is None:
            return True
        named = [labels[k] for k in MODEL_LABELS if k in labels]
        return not named or named[0] == model

    requests = errors = 0.0
    req_family = next((families[n] for n in REQUEST_COUNTERS if n in families), None)
    if req_family is not None:
        for s in req_family.samples:
            if s.name.endswith("_created") or not wanted(s.labels):
                continue
            requests += s.value
            if any(k in s.labels and _is_error_status(s.labels[k]) for k in STATUS_LABELS):
                errors += s.value
    buckets: dict[float, float] = {}
    hist = next((families[n] for n in LATENCY_HISTOGRAMS if n in families), None)
    if hist is not None:
        for s in hist.samples:
            if s.name.endswith("_bucket") and wanted(s.labels):
                le = float(s.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + s.value
    version = bundle_id = provider = None
    if ACTIVE_INFO in families:
        for s in families[ACTIVE_INFO].samples:
            if s.value and (model is None or s.labels.get("model") == model):
                version, bundle_id = s.labels.get("version"), s.labels.get("bundle_id")
                provider = s.labels.get("provider")
                break
    return Scrape(
        at=at,
        requests=requests,
        errors=errors,
        buckets=tuple(sorted(buckets.items())),
        version=version,
        bundle_id=bundle_id,
        provider=provider,
    )


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """The q-quantile (seconds) of cumulative ``(le, count)`` buckets, interpolating linearly
    inside the bucket like Prometheus; None when the buckets are empty."""
    items = sorted(buckets)
    if not items or items[-1][1] <= 0:
        return None
    total = items[-1][1]
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in items:
        if count >= rank:
            if math.isinf(le):
                return prev_le  # the open-ended bucket: the best bound known
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return prev_le


def window(prev: Scrape, cur: Scrape) -> WindowStats | None:
    """What happened between two scrapes; None when they cannot be compared (restart, no time)."""
    seconds = cur.at - prev.at
    dreq = cur.requests - prev.requests
    if seconds <= 0 or dreq < 0:
        return None  # a counter went down: the server restarted, start over
    derr = max(0.0, cur.errors - prev.errors)
    before = dict(prev.buckets)
    deltas = [(le, max(0.0, count - before.get(le, 0.0))) for le, count in cur.buckets]
    p50 = histogram_quantile(0.5, deltas)
    p99 = histogram_quantile(0.99, deltas)
    return WindowStats(
        seconds=seconds,
        req_per_s=dreq / seconds,
        error_rate=(derr / dreq) if dreq > 0 else 0.0,
        p50_ms=None if p50 is None else p50 * 1000.0,
        p99_ms=None if p99 is None else p99 * 1000.0,
    )


class TrafficHistory:
    """Keeps recent scrapes and the per-poll series the sparklines draw.

    Not thread-safe on purpose: one polling worker at a time owns it.
    """

    def __init__(self, points: int = 90, window_s: float = 60.0) -> None:
        self.window_s = window_s
        self._scrapes: deque[Scrape] = deque()
        self.req_per_s: deque[float] = deque(maxlen=points)
        self.error_rate: deque[float] = deque(maxlen=points)
        self.p50_ms: deque[float] = deque(maxlen=points)
        self.p99_ms: deque[float] = deque(maxlen=points)

    def reset(self) -> None:
        self._scrapes.clear()
        for series in (self.req_per_s, self.error_rate, self.p50_ms, self.p99_ms):
            series.clear()

    def add(self, scrape: Scrape) -> None:
        if self._scrapes:
            step = window(self._scrapes[-1], scrape)
            if step is None:
                self._scrapes.clear()  # restarted: earlier scrapes no longer compare
            else:
                self.req_per_s.append(step.req_per_s)
                self.error_rate.append(step.error_rate)
                # An idle interval has no latency; draw it as 0 so the line keeps time.
                self.p50_ms.append(step.p50_ms or 0.0)
                self.p99_ms.append(step.p99_ms or 0.0)
        self._scrapes.append(scrape)
        while len(self._scrapes) > 2 and scrape.at - self._scrapes[1].at >= self.window_s:
            self._scrapes.popleft()

    def over_window(self) -> WindowStats | None:
        """Figures over (about) the last ``window_s`` seconds."""
        if len(self._scrapes) < 2:
            return None
        return window(self._scrapes[0], self._scrapes[-1])
