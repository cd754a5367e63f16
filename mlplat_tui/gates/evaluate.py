"""Guardrail gates: does this bundle graduate?

``evaluate_gates`` asks every gate kind (``gates/kinds.py``) for the results of its configured
keys, in the registry's order, so one ``GateResult`` comes back per gate plus ``signature``,
which always runs. ``validate_bundle`` is what the CLI and the cycle call: it opens the bundle,
applies the platform policy (``gates/policy.py``) and marks the results whose bound is the
policy's floor. ``failure_reasons`` explains failed results through their kind, from the typed
``op`` / ``bound`` fields, never by re-reading the human threshold text.

``champion`` is a ``Manifest``, ``None`` (nothing was ever deployed: ``no_regression`` passes
with "no champion yet") or ``ChampionUnknown(reason)`` (the store could not be asked): then
``no_regression`` and ``signature`` are "could not be evaluated: <reason>" and not passed.

A gate that fails is a result (``passed=False``), never an exception; ``GateError`` is raised
only when gates cannot be evaluated at all (the model does not load).

Imports onnxruntime (through ``gates.measure``) only inside the latency measurement.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mlplat_runtime.bundle.manifest import GateResult, Signature
from mlplat_tui.gates import kinds
from mlplat_tui.gates.kinds import (
    LATENCY_KEYS,
    MISSING_METRIC,
    NOT_EVALUATED,
    Champion,
    GateContext,
    ShadowSource,
    kind_for,
)
from mlplat_tui.gates.measure import WARMUP_RUNS, bundle_size_mb, measure_latency, request_rows
from mlplat_tui.project.config import Project
from mlplat_tui.project.gate_specs import GatesSection

if TYPE_CHECKING:
    from mlplat_runtime.bundle import Bundle

__all__ = [
    "LATENCY_KEYS",
    "MISSING_METRIC",
    "NOT_EVALUATED",
    "WARMUP_RUNS",
    "all_passed",
    "bundle_size_mb",
    "evaluate_gates",
    "explain",
    "failure_reasons",
    "measure_latency",
    "request_rows",
    "validate_bundle",
]


def evaluate_gates(
    bundle: Bundle,
    gates: GatesSection,
    *,
    champion: Champion = None,
    serving_signature: Signature | None = None,
    latency_runs: int = 50,
    notes: Mapping[str, str] | None = None,
    shadow: ShadowSource | None = None,
) -> list[GateResult]:
    """Evaluate every gate in ``gates`` (plus ``signature``) against ``bundle``.

    ``notes`` (gate name -> text, from ``policy.effective_policy``) says which gates the policy's
    floor set: the text is appended to that gate's detail and its ``policy_floor`` is set.
    ``shadow`` replays captured traffic (``monitoring.replay``), asked only by shadow gates.
    """
    ctx = GateContext(bundle, champion, serving_signature, latency_runs, shadow)
    results: list[GateResult] = []
    for kind in kinds.KINDS:  # read at call time: the registry is the one list of kinds
        specs = {key: spec for key, spec in gates.specs.items() if kind.claims(key)}
        if specs or kind.always:
            results += kind.evaluate(ctx, specs)
    if notes:
        results = [_with_note(r, notes[r.name]) if r.name in notes else r for r in results]
    return results


def _with_note(result: GateResult, note: str) -> GateResult:
    detail = f"{result.detail}; {note}" if result.detail else note
    return result.model_copy(update={"detail": detail, "policy_floor": True})


def validate_bundle(
    project: Project,
    bundle_path: Path | str,
    *,
    champion: Champion = None,
    serving_signature: Signature | None = None,
    latency_runs: int = 50,
    shadow: ShadowSource | None = None,
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
            shadow=shadow,
        )
    finally:
        if bundle.extracted:  # an archive was unpacked for us: the folder is ours to remove
            shutil.rmtree(bundle.root, ignore_errors=True)


def all_passed(results: Sequence[GateResult]) -> bool:
    """Every gate held; a gate that could not be evaluated did not."""
    return all(r.passed and r.evaluated for r in results)


def explain(result: GateResult) -> str:
    """One line for a failed gate, said by its kind (``"metrics.roc_auc 0.71 < 0.85"``)."""
    kind = kind_for(result.name)
    return kind.explain(result) if kind is not None else f"{result.name}: {result.detail or 'failed'}"


def failure_reasons(results: Sequence[GateResult]) -> list[str]:
    """One line per gate that did not pass, e.g. ``"metrics.roc_auc 0.71 < 0.85"``."""
    return [explain(r) for r in results if not (r.passed and r.evaluated)]
