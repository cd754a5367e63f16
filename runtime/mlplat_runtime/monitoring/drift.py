"""Bin counts and the drift scores computed from them: PSI, Jensen-Shannon distance, KS.

One binning rule for training (the reference's counts), calibration (random no-drift windows)
and the monitor (live windows), so a window that did not drift scores about 0. Every score is
computed from counts in the reference's fixed slots, never from raw values, which is what makes
per-minute profiles summable into any window.

Slot layout (the reference's ``counts`` follow it too):

- numeric, with ``k+1`` edges: ``[underflow, bin_0 .. bin_{k-1}, overflow, missing]``; bin ``i``
  holds ``edges[i] <= x < edges[i+1]`` and the last bin also holds ``x == edges[-1]``;
- categorical, with ``m`` categories: ``[cat_0 .. cat_{m-1}, other, missing]``.

The last slot is always "missing" (NaN / None). Scores take counts along the last axis, so a
``(windows, slots)`` array scores every window in one call. Vectorised numpy: binning one
million values is one ``searchsorted`` and one ``bincount``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from mlplat_runtime.monitoring.reference import FeatureRef

# Proportions are floored here before the logarithms of PSI: an empty slot on one side (the
# training underflow slot is empty by construction) must score high, not infinite.
PSI_EPSILON = 1e-4


def numeric_slots(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Slot index of each value (float array in, int64 array out), in the numeric layout."""
    x = np.asarray(values, dtype=np.float64).ravel()
    k = len(edges) - 1
    idx = np.searchsorted(edges, x, side="right")
    idx[x == edges[-1]] = k  # the last bin is closed on the right
    idx[np.isnan(x)] = k + 2
    return idx


def categorical_slots(values: np.ndarray, categories: list[Any]) -> np.ndarray:
    """Slot index of each value in the categorical layout (unknown -> other, NaN/None -> missing)."""
    arr = np.asarray(values).ravel()
    m = len(categories)
    if arr.dtype.kind in "fiub":
        x = arr.astype(np.float64)
        cats = np.asarray([float(c) for c in categories], dtype=np.float64) if m else np.zeros(0)
        order = np.argsort(cats, kind="stable")
        sorted_cats = cats[order]
        pos = np.searchsorted(sorted_cats, x).clip(0, max(m - 1, 0))
        hit = (sorted_cats[pos] == x) if m else np.zeros(len(x), dtype=bool)
        idx = np.where(hit, order[pos] if m else 0, m)
        idx[np.isnan(x)] = m + 1
        return idx.astype(np.int64)
    # Strings (object arrays): one dict lookup per distinct value, not per row.
    missing = np.array([v is None or (isinstance(v, float) and v != v) for v in arr], dtype=bool)
    keys = np.where(missing, "", arr).astype(str)
    uniq, inverse = np.unique(keys, return_inverse=True)
    lookup = {str(c): i for i, c in enumerate(categories)}
    slot_of = np.array([lookup.get(u, m) for u in uniq], dtype=np.int64)
    idx = slot_of[inverse]
    idx[missing] = m + 1
    return idx


def bin_counts(values: np.ndarray, feature: FeatureRef) -> np.ndarray:
    """Counts of ``values`` in the feature's fixed slots (int64, same length as its ``counts``)."""
    if feature.kind == "numeric":
        edges = np.asarray(feature.edges, dtype=np.float64)
        return np.bincount(numeric_slots(values, edges), minlength=len(edges) + 2)
    return np.bincount(
        categorical_slots(values, list(feature.categories)), minlength=len(feature.categories) + 2
    )


def _proportions(counts: np.ndarray) -> np.ndarray:
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum(axis=-1, keepdims=True)
    return np.divide(c, total, out=np.zeros_like(c), where=total > 0)


def _out(value: np.ndarray, ndim: int) -> float | np.ndarray:
    return float(value) if ndim <= 1 else value


def psi(ref_counts: Any, live_counts: Any, *, epsilon: float = PSI_EPSILON) -> Any:
    """Population stability index of ``live`` against ``ref`` (float, or one per row of a 2-D input)."""
    live = np.asarray(live_counts)
    p = np.maximum(_proportions(np.asarray(ref_counts)), epsilon)
    q = np.maximum(_proportions(live), epsilon)
    return _out(np.sum((q - p) * np.log(q / p), axis=-1), live.ndim)


def js(ref_counts: Any, live_counts: Any) -> Any:
    """Jensen-Shannon distance (base 2, so in [0, 1]) between the two count vectors."""
    live = np.asarray(live_counts)
    p = _proportions(np.asarray(ref_counts))
    q = _proportions(live)
    p, q = np.broadcast_arrays(p, q)
    m = (p + q) / 2

    def kl(a: np.ndarray) -> np.ndarray:
        ratio = np.divide(a, m, out=np.ones_like(a), where=a > 0)
        return np.sum(a * np.log2(ratio), axis=-1)

    divergence = np.clip(0.5 * kl(p) + 0.5 * kl(q), 0.0, 1.0)
    return _out(np.sqrt(divergence), live.ndim)


def ks_from_counts(ref_counts: Any, live_counts: Any) -> Any:
    """Kolmogorov-Smirnov distance of the binned CDFs (the missing slot left out).

    Meaningful for numeric features, whose slots are ordered; the largest gap between the two
    cumulative shares over the slot boundaries.
    """
    live = np.asarray(live_counts)
    p = _proportions(np.asarray(ref_counts)[..., :-1])
    q = _proportions(live[..., :-1])
    return _out(np.max(np.abs(np.cumsum(p, axis=-1) - np.cumsum(q, axis=-1)), axis=-1), live.ndim)
