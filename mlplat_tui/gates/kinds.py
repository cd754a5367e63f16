"""The gate kinds: one registry that evaluation and explanation consult, over the config half.

Each kind is a subclass of its config half (``project/gate_specs.py``: which keys it claims, how
a value parses, how a policy floor tightens it) that adds ``evaluate`` (its configured keys
against a bundle) and ``explain`` (one line for a failed result). ``KINDS`` is the registry in
evaluation order; at import it is checked against ``project.gate_specs.SPEC_KINDS``, so a config
kind without its evaluating half fails at once instead of being silently skipped.

=============  ===========================================================================
kind           measures
=============  ===========================================================================
metric         what ``train.py`` reported (a metric nobody reported fails)
latency        the bundle's samples replayed one row at a time (``gates/measure.py``)
size           every file of the bundle, in MiB
signature      the one compatibility rule of ``mlplat_runtime.bundle.signature`` (always)
no_regression  the metric against the champion's, within the tolerance
=============  ===========================================================================

Results carry the comparison as typed fields (``GateResult.op`` / ``bound``); nothing re-parses
the human ``threshold`` text. A gate that needs the champion (``signature``, ``no_regression``)
and is given ``ChampionUnknown`` is reported as not evaluated and not passed.

Imports the project's gate specs, the runtime's manifest and signature rule, ``gates.champion``;
numpy and onnxruntime only inside the latency measurement.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

from mlplat_runtime.bundle.manifest import GateResult, Manifest, Signature
from mlplat_tui.gates.champion import ChampionUnknown
from mlplat_tui.project.gate_specs import (
    LATENCY_KEYS,
    SPEC_KINDS,
    GateSpec,
    LatencySpec,
    MetricSpec,
    NoRegression,
    NoRegressionSpec,
    SignatureSpec,
    SizeSpec,
    SpecKind,
    Threshold,
    ThresholdSpec,
)

if TYPE_CHECKING:
    from mlplat_runtime.bundle import Bundle

MISSING_METRIC = "metric not reported by train.py"
NOT_EVALUATED = "could not be evaluated"
NEGATED = {">=": "<", "<=": ">", ">": "<=", "<": ">=", "==": "!="}


def fmt(value: float) -> str:
    return f"{value:.4g}"


def metric_of(manifest: Manifest, name: str) -> float | None:
    value = manifest.metrics.get(name.removeprefix("metrics."))
    return None if value is None else float(value)


Champion = Manifest | ChampionUnknown | None


@dataclass(frozen=True)
class GateContext:
    """Everything a kind may look at: the bundle, the champion, what serves, how long to time."""

    bundle: Bundle
    champion: Champion = None
    serving_signature: Signature | None = None
    latency_runs: int = 50


def not_evaluated(
    name: str, threshold: str, why: ChampionUnknown, measured: float | None = None
) -> GateResult:
    """The result of a gate that could not be evaluated: never passed."""
    return GateResult(
        name=name,
        measured=measured,
        threshold=threshold,
        passed=False,
        evaluated=False,
        detail=f"{NOT_EVALUATED}: {why.reason}",
    )


# --- the kinds ---------------------------------------------------------------------------------


class GateKind(SpecKind):
    """One family of gates: its config half (``SpecKind``) plus evaluation and explanation."""

    always: ClassVar[bool] = False  # evaluated even when no key of it is configured

    @abstractmethod
    def evaluate(self, ctx: GateContext, specs: Mapping[str, GateSpec]) -> list[GateResult]: ...

    def explain(self, result: GateResult) -> str:
        """One line for a failed result, e.g. ``"no_regression: roc_auc 0.91 < 0.92 (...)"``."""
        return f"{result.name}: {result.detail or 'failed'}"


class ThresholdKind(GateKind, ThresholdSpec):
    """A measured number against ``op value``; the shared half of metric, latency and size."""

    unit: ClassVar[str] = ""

    def compare(self, name: str, measured: float | None, t: Threshold) -> GateResult:
        def result(value: float | None, passed: bool, detail: str) -> GateResult:
            return GateResult(
                name=name,
                measured=value,
                threshold=str(t),
                op=t.op,
                bound=t.value,
                passed=passed,
                detail=detail,
            )

        if measured is None:
            return result(None, False, MISSING_METRIC)
        if math.isnan(measured):
            return result(None, False, "measured NaN")
        passed = t.holds(measured)
        shown = t.op if passed else NEGATED[t.op]
        return result(measured, passed, f"{fmt(measured)}{self.unit} {shown} {t.value:g}{self.unit}")

    def explain(self, result: GateResult) -> str:
        m, op, bound = result.measured, result.op, result.bound
        if not result.evaluated or op is None or bound is None or not isinstance(m, int | float):
            return super().explain(result)
        reason = f"{result.name} {fmt(m)} {NEGATED[op]} {bound:g}"
        return reason + " (policy floor)" if result.policy_floor else reason


class MetricKind(ThresholdKind, MetricSpec):
    def evaluate(self, ctx: GateContext, specs: Mapping[str, GateSpec]) -> list[GateResult]:
        out = []
        for key, spec in specs.items():
            assert isinstance(spec, Threshold)
            out.append(self.compare(key, metric_of(ctx.bundle.manifest, key), spec))
        return out


class LatencyKind(ThresholdKind, LatencySpec):
    unit = " ms"

    def evaluate(self, ctx: GateContext, specs: Mapping[str, GateSpec]) -> list[GateResult]:
        import numpy as np

        from mlplat_tui.gates.measure import measure_latency

        keys = [k for k in LATENCY_KEYS if k in specs]  # p50, p95, p99: one measurement for all
        times, provider = measure_latency(ctx.bundle, ctx.latency_runs)
        out = []
        for key in keys:
            spec = specs[key]
            assert isinstance(spec, Threshold)
            pct = float(key.removeprefix("latency.p").removesuffix("_ms"))
            r = self.compare(key, float(np.percentile(times, pct)), spec)
            detail = f"{r.detail} (p{pct:g} of {len(times)} single-row requests on {provider})"
            out.append(r.model_copy(update={"detail": detail}))
        return out


class SizeKind(ThresholdKind, SizeSpec):
    unit = " MiB"

    def evaluate(self, ctx: GateContext, specs: Mapping[str, GateSpec]) -> list[GateResult]:
        from mlplat_tui.gates.measure import bundle_size_mb

        spec = specs["size_mb"]
        assert isinstance(spec, Threshold)
        return [self.compare("size_mb", bundle_size_mb(ctx.bundle.root), spec)]


class SignatureKind(GateKind, SignatureSpec):
    always = True
    THRESHOLD: ClassVar[str] = "compatible with serving"

    def evaluate(self, ctx: GateContext, specs: Mapping[str, GateSpec]) -> list[GateResult]:
        from mlplat_runtime.bundle.signature import compatibility_problems

        if isinstance(ctx.champion, ChampionUnknown):
            return [not_evaluated("signature", self.THRESHOLD, ctx.champion)]
        if ctx.serving_signature is None:
            return [
                GateResult(
                    name="signature",
                    measured=None,
                    threshold=self.THRESHOLD,
                    passed=True,
                    detail="nothing serving",
                )
            ]
        problems = compatibility_problems(ctx.serving_signature, ctx.bundle.manifest.signature)
        return [
            GateResult(
                name="signature",
                measured="compatible" if not problems else f"{len(problems)} incompatible",
                threshold=self.THRESHOLD,
                passed=not problems,
                detail=", ".join(map(str, problems)) if problems else "same inputs and outputs as serving",
            )
        ]


class NoRegressionKind(GateKind, NoRegressionSpec):
    def evaluate(self, ctx: GateContext, specs: Mapping[str, GateSpec]) -> list[GateResult]:
        rule = specs["no_regression"]
        assert isinstance(rule, NoRegression)
        return [self._against(ctx.bundle.manifest, rule, ctx.champion)]

    @staticmethod
    def _against(manifest: Manifest, rule: NoRegression, champion: Champion) -> GateResult:
        metric = rule.metric.removeprefix("metrics.")
        op: Literal[">=", "<="] = ">=" if rule.higher_is_better else "<="
        sign = "-" if rule.higher_is_better else "+"
        new = metric_of(manifest, metric)
        loose = f"{op} champion {sign} {rule.tolerance:g}"
        if isinstance(champion, ChampionUnknown):
            return not_evaluated("no_regression", loose, champion, new)
        if champion is None:
            return GateResult(
                name="no_regression", measured=new, threshold=loose, passed=True, detail="no champion yet"
            )
        who = f"champion v{champion.version}"
        old = metric_of(champion, metric)
        if old is None:
            return GateResult(
                name="no_regression",
                measured=new,
                threshold=loose,
                passed=True,
                detail=f"{who} has no {metric} to regress against",
            )
        bound = old - rule.tolerance if rule.higher_is_better else old + rule.tolerance
        against = f"({who} {fmt(old)} {sign} {rule.tolerance:g})"

        def result(value: float | None, passed: bool, detail: str) -> GateResult:
            return GateResult(
                name="no_regression",
                measured=value,
                threshold=f"{op} {fmt(bound)} {against}",
                op=op,
                bound=bound,
                passed=passed,
                detail=detail,
            )

        if new is None or math.isnan(new):
            return result(
                None, False, f"{metric}: {MISSING_METRIC}" if new is None else f"{metric} measured NaN"
            )
        passed = new >= bound if rule.higher_is_better else new <= bound
        shown = op if passed else NEGATED[op]
        return result(new, passed, f"{metric} {fmt(new)} {shown} {fmt(bound)} {against}")


KINDS: tuple[GateKind, ...] = (MetricKind(), LatencyKind(), SizeKind(), SignatureKind(), NoRegressionKind())

_missing = {k.name for k in SPEC_KINDS} ^ {k.name for k in KINDS}
if _missing:  # a config kind nobody evaluates (or the reverse) would be silently skipped
    raise ImportError(f"gate kinds without both halves: {sorted(_missing)}")


def kind_for(key: str) -> GateKind | None:
    """The kind that owns a [gates] key or a result's name; None when no kind does."""
    return next((k for k in KINDS if k.claims(key)), None)
