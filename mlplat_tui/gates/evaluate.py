"""Guardrail gates: does this bundle graduate?

``evaluate_gates`` turns a bundle and a ``GatesSection`` into one ``GateResult`` per gate:

- ``metrics.<name>``: the metric ``train.py`` reported, against its threshold (a metric that
  was not reported fails: a guardrail nobody measured is not a guardrail that held).
- ``latency.p50_ms`` / ``p95_ms`` / ``p99_ms``: the bundle's samples replayed one request row
  at a time (a batch of 1 row, as serving sees a single OIP request), through a session made
  by ``mlplat_runtime.providers`` (the serving runtime's own providers and session settings),
  after a warm-up; milliseconds of ``session.run`` wall time.
- ``size_mb``: every file of the bundle, in MiB (1024 * 1024 bytes).
- ``signature``: always present. With a ``serving_signature`` the bundle must accept the same
  inputs and give the same outputs (names and datatypes equal, same rank, a -1 on either side
  matches any size); with nothing serving it passes.
- ``no_regression``: the metric against the champion's, within the tolerance; passes when there
  is no champion yet.

A gate that fails is a result (``passed=False``), never an exception; ``GateError`` is raised
only when gates cannot be evaluated at all (the model does not load). ``validate_bundle`` is the
convenience the CLI and the pipeline call: it applies the platform policy (``policy.py``).

Imports onnxruntime (via ``mlplat_runtime.providers``) only inside the latency measurement.
"""

from __future__ import annotations

import math
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mlplat_runtime.bundle.manifest import GateResult, Manifest, Signature, TensorSpec
from mlplat_runtime.errors import GateError
from mlplat_tui.project.config import GatesSection, NoRegression, Project, Threshold

if TYPE_CHECKING:
    from mlplat_runtime.bundle import Bundle

LATENCY_KEYS = ("latency.p50_ms", "latency.p95_ms", "latency.p99_ms")
WARMUP_RUNS = 5
MISSING_METRIC = "metric not reported by train.py"
_NEGATED = {">=": "<", "<=": ">", ">": "<=", "<": ">=", "==": "!="}
_THRESHOLD_RE = re.compile(r"^\s*(>=|<=|>|<|==)\s*(\S+)")


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _compare(name: str, measured: float | None, threshold: Threshold, unit: str = "") -> GateResult:
    if measured is None:
        return GateResult(
            name=name, measured=None, threshold=str(threshold), passed=False, detail=MISSING_METRIC
        )
    if math.isnan(measured):
        return GateResult(
            name=name, measured=None, threshold=str(threshold), passed=False, detail="measured NaN"
        )
    passed = threshold.holds(measured)
    op = threshold.op if passed else _NEGATED[threshold.op]
    detail = f"{_fmt(measured)}{unit} {op} {threshold.value:g}{unit}"
    return GateResult(name=name, measured=measured, threshold=str(threshold), passed=passed, detail=detail)


# --- metrics -----------------------------------------------------------------------------------


def _metric(manifest: Manifest, name: str) -> float | None:
    value = manifest.metrics.get(name.removeprefix("metrics."))
    return None if value is None else float(value)


def _no_regression(manifest: Manifest, rule: NoRegression, champion: Manifest | None) -> GateResult:
    metric = rule.metric.removeprefix("metrics.")
    op = ">=" if rule.higher_is_better else "<="
    sign = "-" if rule.higher_is_better else "+"
    new = _metric(manifest, metric)
    if champion is None:
        return GateResult(
            name="no_regression",
            measured=new,
            threshold=f"{op} champion {sign} {rule.tolerance:g}",
            passed=True,
            detail="no champion yet",
        )
    who = f"champion v{champion.version}"
    old = _metric(champion, metric)
    if old is None:
        return GateResult(
            name="no_regression",
            measured=new,
            threshold=f"{op} champion {sign} {rule.tolerance:g}",
            passed=True,
            detail=f"{who} has no {metric} to regress against",
        )
    bound = old - rule.tolerance if rule.higher_is_better else old + rule.tolerance
    threshold = f"{op} {_fmt(bound)} ({who} {_fmt(old)} {sign} {rule.tolerance:g})"
    if new is None or math.isnan(new):
        detail = f"{metric}: {MISSING_METRIC}" if new is None else f"{metric} measured NaN"
        return GateResult(
            name="no_regression", measured=None, threshold=threshold, passed=False, detail=detail
        )
    passed = new >= bound if rule.higher_is_better else new <= bound
    shown = op if passed else _NEGATED[op]
    detail = f"{metric} {_fmt(new)} {shown} {_fmt(bound)} ({who} {_fmt(old)} {sign} {rule.tolerance:g})"
    return GateResult(name="no_regression", measured=new, threshold=threshold, passed=passed, detail=detail)


# --- latency -----------------------------------------------------------------------------------


def _request_rows(
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
    requests = _request_rows(inputs, bundle.manifest.signature)
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


def _latency_results(bundle: Bundle, thresholds: Mapping[str, Threshold], runs: int) -> list[GateResult]:
    keys = [k for k in LATENCY_KEYS if k in thresholds]
    if not keys:
        return []
    times, provider = measure_latency(bundle, runs)
    results = []
    for key in keys:
        pct = float(key.removeprefix("latency.p").removesuffix("_ms"))
        value = float(np.percentile(times, pct))
        r = _compare(key, value, thresholds[key], " ms")
        detail = f"{r.detail} (p{pct:g} of {len(times)} single-row requests on {provider})"
        results.append(r.model_copy(update={"detail": detail}))
    return results


# --- size and signature ------------------------------------------------------------------------


def bundle_size_mb(root: Path) -> float:
    """Total size of every regular file under ``root``, in MiB."""
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())
    return total / (1024 * 1024)


def _shapes_compatible(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return len(a) == len(b) and all(x == y or x == -1 or y == -1 for x, y in zip(a, b, strict=True))


def _spec_problems(kind: str, new: Sequence[TensorSpec], serving: Sequence[TensorSpec]) -> list[str]:
    ours = {s.name: s for s in new}
    theirs = {s.name: s for s in serving}
    problems = [f"{kind} '{n}' missing (serving has it)" for n in theirs if n not in ours]
    problems += [f"{kind} '{n}' is new (serving lacks it)" for n in ours if n not in theirs]
    for name in ours.keys() & theirs.keys():
        a, b = ours[name], theirs[name]
        if a.datatype != b.datatype:
            problems.append(f"{kind} '{name}' datatype {a.datatype}, serving {b.datatype}")
        if not _shapes_compatible(a.shape, b.shape):
            problems.append(f"{kind} '{name}' shape {list(a.shape)}, serving {list(b.shape)}")
    return sorted(problems)


def signature_problems(new: Signature, serving: Signature) -> list[str]:
    """Every way ``new`` differs from ``serving`` that would break a client (empty = compatible)."""
    return _spec_problems("input", new.inputs, serving.inputs) + _spec_problems(
        "output", new.outputs, serving.outputs
    )


def _signature_result(new: Signature, serving: Signature | None) -> GateResult:
    if serving is None:
        return GateResult(
            name="signature",
            measured=None,
            threshold="compatible with serving",
            passed=True,
            detail="nothing serving",
        )
    problems = signature_problems(new, serving)
    return GateResult(
        name="signature",
        measured="compatible" if not problems else f"{len(problems)} incompatible",
        threshold="compatible with serving",
        passed=not problems,
        detail="same inputs and outputs as serving" if not problems else ", ".join(problems),
    )


# --- public API --------------------------------------------------------------------------------


def evaluate_gates(
    bundle: Bundle,
    gates: GatesSection,
    *,
    champion: Manifest | None = None,
    serving_signature: Signature | None = None,
    latency_runs: int = 50,
    notes: Mapping[str, str] | None = None,
) -> list[GateResult]:
    """Evaluate every gate in ``gates`` (plus ``signature``) against ``bundle``.

    ``notes`` (gate name -> text, from ``policy.effective_policy``) is appended to the detail of
    that gate, so a result says when a policy floor replaced the project's threshold.
    """
    manifest = bundle.manifest
    thresholds = gates.thresholds
    results = [
        _compare(key, _metric(manifest, key), t)
        for key, t in thresholds.items()
        if key.startswith("metrics.")
    ]
    results += _latency_results(bundle, thresholds, latency_runs)
    if "size_mb" in thresholds:
        results.append(_compare("size_mb", bundle_size_mb(bundle.root), thresholds["size_mb"], " MiB"))
    results.append(_signature_result(manifest.signature, serving_signature))
    if gates.no_regression is not None:
        results.append(_no_regression(manifest, gates.no_regression, champion))
    if notes:
        results = [
            r.model_copy(update={"detail": f"{r.detail}; {notes[r.name]}" if r.detail else notes[r.name]})
            if r.name in notes
            else r
            for r in results
        ]
    return results


def validate_bundle(
    project: Project,
    bundle_path: Path | str,
    *,
    champion: Manifest | None = None,
    serving_signature: Signature | None = None,
    latency_runs: int = 50,
) -> list[GateResult]:
    """Open ``bundle_path`` and evaluate the project's gates with the platform policy applied."""
    from mlplat_runtime.bundle import open_bundle
    from mlplat_tui.gates.policy import effective_policy

    effective = effective_policy(project)
    bundle = open_bundle(Path(bundle_path))
    try:
        return evaluate_gates(
            bundle,
            effective.gates,
            champion=champion,
            serving_signature=serving_signature,
            latency_runs=latency_runs,
            notes=effective.notes,
        )
    finally:
        if bundle.extracted:  # an archive was unpacked for us: the folder is ours to remove
            shutil.rmtree(bundle.root, ignore_errors=True)


def all_passed(results: Sequence[GateResult]) -> bool:
    return all(r.passed for r in results)


def failure_reasons(results: Sequence[GateResult]) -> list[str]:
    """One line per failed gate, e.g. ``"metrics.roc_auc 0.71 < 0.85"``."""
    reasons = []
    for r in results:
        if r.passed:
            continue
        m = _THRESHOLD_RE.match(r.threshold)
        numeric = isinstance(r.measured, int | float) and not isinstance(r.measured, bool)
        if r.name != "no_regression" and numeric and m is not None:
            assert isinstance(r.measured, int | float)
            reason = f"{r.name} {_fmt(r.measured)} {_NEGATED[m.group(1)]} {m.group(2)}"
            if "policy floor" in r.detail:
                reason += " (policy floor)"
        else:
            reason = f"{r.name}: {r.detail or 'failed'}"
        reasons.append(reason)
    return reasons
