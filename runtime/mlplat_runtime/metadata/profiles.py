"""Per-minute profiles of logged predictions, and the drift of a window of them.

A *profile* is what one minute (``bucket_s`` seconds; tests use shorter) of one model version's
traffic looks like, in the reference's fixed slots: counts per slot for every feature (so any
run of minutes sums into a window), missing / out-of-range / unseen counts, the output mix, a
latency histogram, requests, errors and uncertain predictions. Profiles are computed from the
rows of a closed log segment (``profile_rows``, vectorised: one slot computation per feature
for the whole batch, then one ``bincount`` over (minute, slot)), and a window's drift from
summed profiles (``window_drift``), with the scores of ``mlplat_runtime.monitoring.drift``.

Unseen categories: values outside the reference's top categories (its "other" slot). When the
training column had at most ``TOP_CATEGORIES`` distinct values — most categorical features —
that is exactly "a category training never saw"; otherwise rare training categories count too.
Out of range: numeric values below the training minimum or above its maximum (the underflow
and overflow slots).

numpy and the monitoring package only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from mlplat_runtime.metadata.alerts import State, Thresholds, state_of
from mlplat_runtime.monitoring import drift
from mlplat_runtime.monitoring.reference import (
    PROBABILITY_EDGES,
    UNCERTAIN_MARGIN,
    FeatureRef,
    OutputRef,
    Reference,
)

# Latency histogram edges in milliseconds (log-spaced): p50/p99 are read from it.
LATENCY_EDGES_MS: tuple[float, ...] = (
    0.0, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 50.0, 75.0, 100.0,
    150.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, math.inf,
)  # fmt: skip
OUTPUT = "__output__"
LATENCY = "__latency__"


@dataclass(frozen=True)
class Rows:
    """The rows of one model version in a closed segment, decoded (what ``profile_rows`` eats).

    ``epoch_s``: request time as unix seconds; ``ok``: the request succeeded (failed requests
    count as errors, their inputs are still profiled when present); ``features``: one 1-D array
    per reference feature (missing ones are absent); ``probabilities``: the top-2 margin and the
    class mix come from it (2-D, or None); ``labels``: a label output (1-D ints, or None).
    """

    model: str
    version: str
    bundle_id: str
    epoch_s: np.ndarray
    ok: np.ndarray
    latency_ms: np.ndarray
    weight: np.ndarray  # 1 / sample rate of each row
    features: Mapping[str, np.ndarray]
    probabilities: np.ndarray | None = None
    labels: np.ndarray | None = None


@dataclass(frozen=True)
class FeatureCounts:
    feature: str
    kind: str
    counts: np.ndarray  # int64, the reference's slots
    missing: int
    out_of_range: int
    unseen: int

    @property
    def rows(self) -> int:
        return int(self.counts.sum())


@dataclass(frozen=True)
class Profile:
    """One bucket (minute) of one model version."""

    model: str
    version: str
    bundle_id: str
    minute_s: int  # bucket start, unix seconds
    requests: int
    errors: int
    uncertain: int
    sampled_weight: float
    features: dict[str, FeatureCounts] = field(default_factory=dict)
    scored: int = 0  # rows with probabilities (what confidence_sum is over)
    confidence_sum: float = 0.0  # sum of the top-class probability


def _slots(feature: FeatureRef, values: np.ndarray) -> np.ndarray:
    if feature.kind == "numeric":
        return drift.numeric_slots(values, np.asarray(feature.edges, dtype=np.float64))
    return drift.categorical_slots(values, list(feature.categories))


def _per_bucket(bucket: np.ndarray, n_buckets: int, slots: np.ndarray, width: int) -> np.ndarray:
    flat = np.bincount(bucket * width + slots, minlength=n_buckets * width)
    return flat.reshape(n_buckets, width)


def _quality(kind: str, counts: np.ndarray) -> tuple[int, int, int]:
    missing = int(counts[-1])
    if kind == "numeric":
        return missing, int(counts[0] + counts[-2]), 0
    return missing, 0, int(counts[-2])


def output_slots(reference: Reference) -> tuple[str, OutputRef] | None:
    """The output the monitor profiles (the first with a class mix), or None."""
    for name, out in reference.outputs.items():
        if out.kind in ("probabilities", "label") and out.classes:
            return name, out
    return None


def profile_rows(rows: Rows, reference: Reference, *, bucket_s: int = 60) -> list[Profile]:
    """The profiles of ``rows`` (one per bucket that has rows), against ``reference``'s slots."""
    n = len(rows.epoch_s)
    if n == 0:
        return []
    start = (np.asarray(rows.epoch_s, dtype=np.float64) // bucket_s).astype(np.int64)
    buckets, bucket = np.unique(start, return_inverse=True)
    nb = len(buckets)
    ok = np.asarray(rows.ok, dtype=bool)
    requests = np.bincount(bucket, minlength=nb)
    errors = np.bincount(bucket, weights=~ok, minlength=nb).astype(np.int64)
    weight = np.bincount(bucket, weights=np.asarray(rows.weight, dtype=np.float64), minlength=nb)
    per_feature: dict[str, np.ndarray] = {}
    for name, ref in reference.features.items():
        values = rows.features.get(name)
        if values is None:
            continue
        per_feature[name] = _per_bucket(bucket, nb, _slots(ref, values), len(ref.counts))
    latency = np.asarray(rows.latency_ms, dtype=np.float64)
    lat_slots = np.searchsorted(np.asarray(LATENCY_EDGES_MS[1:-1]), latency, side="right")
    latency_counts = _per_bucket(bucket, nb, lat_slots, len(LATENCY_EDGES_MS) - 1)
    uncertain: np.ndarray = np.zeros(nb, dtype=np.int64)
    scored: np.ndarray = np.zeros(nb, dtype=np.int64)
    confidence: np.ndarray = np.zeros(nb, dtype=np.float64)
    out_counts: np.ndarray | None = None
    out = output_slots(reference)
    classes = len(out[1].classes) if out else 0
    if rows.probabilities is not None and rows.probabilities.ndim == 2 and len(rows.probabilities) == n:
        probs = np.asarray(rows.probabilities, dtype=np.float64)
        k = probs.shape[1]
        if k == 2:  # most classifiers: no sort, no partition
            first, second = np.maximum(probs[:, 0], probs[:, 1]), np.minimum(probs[:, 0], probs[:, 1])
            argmax = (probs[:, 1] > probs[:, 0]).astype(np.int64)
        elif k > 2:
            part = np.partition(probs, k - 2, axis=1)[:, -2:]
            first, second = part.max(axis=1), part.min(axis=1)
            argmax = probs.argmax(axis=1)
        valid = ok & np.isfinite(probs).all(axis=1)
        if k >= 2:
            margin_low = valid & (first - second < UNCERTAIN_MARGIN)
            uncertain = np.bincount(bucket, weights=margin_low, minlength=nb).astype(np.int64)
            scored = np.bincount(bucket, weights=valid, minlength=nb).astype(np.int64)
            confidence = np.bincount(bucket, weights=np.where(valid, first, 0.0), minlength=nb)
            if classes:
                # class mix slots: the classes, then "other" (a class the reference lacks), then missing
                arg = np.where(valid, argmax, classes + 1)
                arg = np.where(arg > classes + 1, classes, arg)
                out_counts = _per_bucket(bucket, nb, arg, classes + 2)
    elif rows.labels is not None and out is not None and len(rows.labels) == n:
        index = {c: i for i, c in enumerate(out[1].classes)}
        labels = np.asarray(rows.labels)
        slots = np.array([index.get(str(v), classes) for v in labels.tolist()], dtype=np.int64)
        slots[~ok] = classes + 1
        out_counts = _per_bucket(bucket, nb, slots, classes + 2)
    profiles = []
    for b in range(nb):
        feats: dict[str, FeatureCounts] = {}
        for name, counts in per_feature.items():
            kind = reference.features[name].kind
            missing, out_of_range, unseen = _quality(kind, counts[b])
            feats[name] = FeatureCounts(name, kind, counts[b], missing, out_of_range, unseen)
        if out_counts is not None:
            feats[OUTPUT] = FeatureCounts(OUTPUT, "categorical", out_counts[b], int(out_counts[b][-1]), 0, 0)
        feats[LATENCY] = FeatureCounts(LATENCY, "latency", latency_counts[b], 0, 0, 0)
        profiles.append(
            Profile(
                model=rows.model,
                version=rows.version,
                bundle_id=rows.bundle_id,
                minute_s=int(buckets[b]) * bucket_s,
                requests=int(requests[b]),
                errors=int(errors[b]),
                uncertain=int(uncertain[b]),
                sampled_weight=float(weight[b]),
                features=feats,
                scored=int(scored[b]),
                confidence_sum=float(confidence[b]),
            )
        )
    return profiles


# -- a window ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    kind: str
    rows: int
    psi: float | None
    js: float | None
    ks: float | None
    score: float | None  # largest metric/trigger ratio; None: not enough data
    state: State
    severe: bool
    missing_share: float
    out_of_range_share: float
    unseen_share: float


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def feature_drift(
    ref: FeatureRef, live: np.ndarray, *, rule: Thresholds, quality: tuple[int, int, int] | None = None
) -> FeatureDrift:
    """Scores of one feature's window counts against its reference (``None`` below min_rows)."""
    live = np.asarray(live, dtype=np.int64)
    rows = int(live.sum())
    missing, out_of_range, unseen = quality or _quality(ref.kind, live)
    shares = (_share(missing, rows), _share(out_of_range, rows), _share(unseen, rows))
    if rows < rule.min_rows:
        return FeatureDrift(ref.name, ref.kind, rows, None, None, None, None, "unknown", False, *shares)
    expected = np.asarray(ref.counts, dtype=np.int64)
    values = {"psi": float(drift.psi(expected, live)), "js": float(drift.js(expected, live))}
    if ref.kind == "numeric":
        values["ks"] = float(drift.ks_from_counts(expected, live))
    floor = ref.floor(rows)
    trigger = rule.for_feature(ref.kind, floor.model_dump() if floor else None)
    score = trigger.score(values)
    return FeatureDrift(
        ref.name,
        ref.kind,
        rows,
        values["psi"],
        values["js"],
        values.get("ks"),
        score,
        state_of(score),
        trigger.severe(values),
        *shares,
    )


def output_drift(out: OutputRef, live: np.ndarray, *, rule: Thresholds) -> FeatureDrift:
    """The class mix of a window against the test split's (categorical triggers)."""
    live = np.asarray(live, dtype=np.int64)
    classes = len(out.classes)
    expected = np.asarray([*out.class_counts, 0, 0], dtype=np.int64)
    ref = FeatureRef(
        name=OUTPUT,
        input=out.name,
        kind="categorical",
        categories=list(out.classes),
        counts=[int(c) for c in expected],
        count=int(expected.sum()),
        missing_rate=0.0,
    )
    return feature_drift(ref, live[: classes + 2], rule=rule, quality=(int(live[-1]), 0, int(live[-2])))


def latency_quantile(counts: Sequence[int] | np.ndarray, q: float) -> float | None:
    """The ``q`` quantile (0..1) of a latency histogram in ms: the upper edge of the bin it falls in."""
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum()
    if total <= 0:
        return None
    i = int(np.searchsorted(np.cumsum(c), q * total, side="left"))
    edges = LATENCY_EDGES_MS
    upper = edges[min(i + 1, len(edges) - 1)]
    return float(upper if math.isfinite(upper) else edges[-2])


def estimated_accuracy(
    out: OutputRef, live_top_probability_mean: float, test_accuracy: float | None
) -> float | None:
    """Accuracy without labels: the live mean top-class probability, scaled by how the model's
    confidence matched its accuracy on the test split (``test_accuracy / test mean confidence``).

    Without a test accuracy in the bundle's metrics, the confidence itself (the model taken as
    calibrated). Labelled "estimated" wherever it is shown.
    """
    if not out.probability_counts or not math.isfinite(live_top_probability_mean):
        return None
    edges = np.asarray(out.probability_edges or PROBABILITY_EDGES, dtype=np.float64)
    mids = (edges[:-1] + edges[1:]) / 2
    counts = np.asarray(out.probability_counts, dtype=np.float64)
    if counts.sum() <= 0:
        return None
    test_confidence = float((mids * counts).sum() / counts.sum())
    scale = test_accuracy / test_confidence if test_accuracy is not None and test_confidence > 0 else 1.0
    return float(min(1.0, max(0.0, live_top_probability_mean * scale)))
