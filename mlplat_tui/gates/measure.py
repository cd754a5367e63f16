"""What the gates measure on a bundle itself: single-row latency and size on disk.

``measure_latency`` replays the bundle's samples one request row at a time (a batch of 1 row,
as serving sees a single OIP request), through a session made by ``mlplat_runtime.providers``
(the serving runtime's own providers and session settings), after a warm-up; milliseconds of
``session.run`` wall time. ``bundle_size_mb`` counts every regular file, in MiB.

Imports numpy at import time and onnxruntime (via ``mlplat_runtime.providers``) only inside
``measure_latency``; nothing from ``mlplat_tui``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from mlplat_runtime.bundle.manifest import Signature
from mlplat_runtime.errors import GateError

if TYPE_CHECKING:
    import numpy as np

    from mlplat_runtime.bundle import Bundle

WARMUP_RUNS = 5


def request_rows(
    inputs: Mapping[str, np.ndarray], signature: Signature | None = None
) -> list[dict[str, np.ndarray]]:
    """Split the samples into single-row requests.

    The feed stays whole when the inputs share no batch axis, or when the graph fixes the
    first dimension of an input (then a "row" is not what the model takes).
    """
    if not inputs:
        return []
    arrays = list(inputs.values())
    n = arrays[0].shape[0] if arrays[0].ndim else 0
    if n == 0 or any(a.ndim == 0 or a.shape[0] != n for a in arrays):
        return [dict(inputs)]
    if signature is not None and any(not s.shape or s.shape[0] != -1 for s in signature.inputs):
        return [dict(inputs)]
    return [{k: v[i : i + 1] for k, v in inputs.items()} for i in range(n)]


def measure_latency(bundle: Bundle, runs: int = 50, warmup: int = WARMUP_RUNS) -> tuple[list[float], str]:
    """Run ``runs`` single-row requests (after ``warmup``); return per-request ms and the provider."""
    from mlplat_runtime.providers import active_provider, make_session

    inputs, _expected = bundle.samples()
    requests = request_rows(inputs, bundle.manifest.signature)
    if not requests:
        raise GateError(
            f"bundle {bundle.root} has no sample inputs to time",
            hint="write samples.npz from train.py or rebuild the bundle (build_bundle makes samples)",
        )
    session = make_session(bundle.model_path)  # ModelLoadError / UsageError carry their own hints
    times: list[float] = []
    try:
        for i in range(warmup):
            session.run(None, requests[i % len(requests)])
        for i in range(max(1, runs)):
            feed = requests[i % len(requests)]
            start = time.perf_counter_ns()
            session.run(None, feed)
            times.append((time.perf_counter_ns() - start) / 1e6)
    except Exception as exc:  # onnxruntime raises its own (non-mlplat) errors
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise GateError(
            f"could not time {bundle.model_path}: the model failed on a sample row: {first}",
            hint="check that the bundle verifies (`mlplat bundle verify`) and its samples match the model",
        ) from exc
    return times, active_provider(session)


def bundle_size_mb(root: Path) -> float:
    """Total size of every regular file under ``root``, in MiB."""
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())
    return total / (1024 * 1024)
