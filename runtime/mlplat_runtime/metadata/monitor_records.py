"""Typed answers of the monitor's routes (``/monitor/*``), shared with the control-plane client.

They cross a process boundary, so they are pydantic models (frozen; extra fields ignored so a
newer service still answers an older client). pydantic only: no duckdb, no numpy.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Answer(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", ser_json_inf_nan="constants")


class FeatureState(_Answer):
    """One feature (or ``__output__``, the class mix) in the last evaluated window."""

    feature: str
    kind: str
    rows: int
    psi: float | None = None
    js: float | None = None
    ks: float | None = None
    score: float | None = None  # largest metric/trigger ratio; None: not enough data
    state: str  # ok | warn | drift | unknown
    missing_share: float | None = None
    out_of_range_share: float | None = None
    unseen_share: float | None = None
    window_end: str | None = None


class VersionReport(_Answer):
    model: str
    version: str
    bundle_id: str | None = None
    first: str
    last: str
    requests: int
    request_rate: float
    error_rate: float
    uncertain_share: float | None = None
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    estimated_accuracy: float | None = None  # confidence-based, no labels: "estimated"
    features: list[FeatureState] = Field(default_factory=list)


class AlertInfo(_Answer):
    dedupe_key: str
    model: str
    version: str
    feature: str
    open: bool
    severity: str
    score: float | None = None
    opened_at: str | None = None
    resolved_at: str | None = None


class Swap(_Answer):
    model: str
    version: str
    at: str


class FeedbackWindow(_Answer):
    """Realised quality of one prediction-time window, from labels sent back (``mlplat feedback``)."""

    model: str
    version: str
    window_start: str
    predictions: int
    labelled: int
    coverage: float  # labelled / predictions
    accuracy: float | None = None  # classifiers
    mae: float | None = None  # regression


class MonitorReport(_Answer):
    window_s: int
    versions: list[VersionReport] = Field(default_factory=list)
    alerts: list[AlertInfo] = Field(default_factory=list)
    swaps: list[Swap] = Field(default_factory=list)
    feedback: list[FeedbackWindow] = Field(default_factory=list)


class WindowPoint(_Answer):
    window_id: int
    version: str
    window_end: str
    feature: str
    score: float | None = None
    psi: float | None = None
    state: str
    requests: int | None = None
    errors: int | None = None
    rows: int
    latency_p99_ms: float | None = None


class Histogram(_Answer):
    feature: str
    kind: str | None = None
    edges: list[float] = Field(default_factory=list)
    categories: list[str] = Field(default_factory=list)
    training: list[int] = Field(default_factory=list)
    live: list[int] = Field(default_factory=list)


def as_dict(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")
