"""Prometheus metrics of the serving runtime, exposed as text on ``GET /metrics``.

Each server owns its own ``CollectorRegistry`` (no process-global state, so tests can run
several servers in one process). Labelled children are cached per label tuple: looking them
up through ``.labels()`` on every request costs more than the observation itself.

Label values are bounded: requests for models that are not loaded are counted under
``model=""`` so a client cannot grow the series without limit by inventing model names.

Must not import textual, mlflow, docker or mlplat_tui.
"""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Sub-millisecond resolution: the point of this server is that a tabular model answers in
# well under a millisecond; default Prometheus buckets start at 5 ms.
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.00075,
    0.001,
    0.002,
    0.003,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


class ServingMetrics:
    """Counters, histograms and gauges for one serving process."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "mlplat_requests",
            "HTTP requests by model, version, endpoint and status code",
            ["model", "version", "endpoint", "code"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "mlplat_request_duration_seconds",
            "Time from request received to response sent",
            ["model", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_seconds = Histogram(
            "mlplat_inference_duration_seconds",
            "Time inside ONNX Runtime per request",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.active = Gauge(
            "mlplat_model_active_info",
            "1 for the version each model serves now",
            ["model", "version", "bundle_id", "provider"],
            registry=r,
        )
        self.loads = Counter(
            "mlplat_model_loads",
            "Admin load attempts by result (ok, rejected)",
            ["model", "result"],
            registry=r,
        )
        self.swaps = Counter(
            "mlplat_model_swaps", "Versions switched in while serving", ["model"], registry=r
        )
        self.swap_seconds = Gauge(
            "mlplat_model_last_swap_seconds", "Duration of the last load", ["model"], registry=r
        )
        self._children: dict[tuple[str, ...], Any] = {}
        self._active_labels: dict[str, tuple[str, str, str, str]] = {}
        self._lock = threading.Lock()

    def observe_request(self, model: str, version: str, endpoint: str, code: int, seconds: float) -> None:
        key = (model, version, endpoint, str(code))
        pair = self._children.get(key)
        if pair is None:
            pair = (self.requests.labels(*key), self.request_seconds.labels(model, endpoint))
            self._children[key] = pair
        pair[0].inc()
        pair[1].observe(seconds)

    def observe_inference(self, model: str, version: str, seconds: float) -> None:
        key = ("inference", model, version)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.inference_seconds.labels(model, version)
        child.observe(seconds)

    def set_active(self, model: str, version: str, bundle_id: str, provider: str) -> None:
        with self._lock:
            self._clear_active(model)
            labels = (model, version, bundle_id, provider)
            self.active.labels(*labels).set(1)
            self._active_labels[model] = labels

    def clear_active(self, model: str) -> None:
        with self._lock:
            self._clear_active(model)

    def _clear_active(self, model: str) -> None:
        old = self._active_labels.pop(model, None)
        if old is not None:
            self.active.remove(*old)

    def load_result(self, model: str, ok: bool, seconds: float | None = None, swapped: bool = False) -> None:
        self.loads.labels(model, "ok" if ok else "rejected").inc()
        if seconds is not None:
            self.swap_seconds.labels(model).set(seconds)
        if swapped:
            self.swaps.labels(model).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
