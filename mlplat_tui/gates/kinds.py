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
shadow         captured live traffic replayed through the bundle and the champion
               (``mlplat_tui/monitoring/replay.py``, handed in as ``GateContext.shadow``)
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

from mlplat_runtime.bundle.manifest import GateResult, Manifest, Signature
from mlplat_tui.gates.champion import ChampionUnknown
from mlplat_tui.project.gate_specs import (
    LATENCY_KEYS,
    SHADOW_KEYS,
    SHADOW_REQUIRE_TRAFFIC,
    SPEC_KINDS,
    Flag,
    GateSpec,
    LatencySpec,
    MetricSpec,
    NoRegression,
    NoRegressionSpec,
    ShadowSpec,
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
class ShadowFigures:
    """What a replay of captured traffic measured (``monitoring/replay.py`` makes these).

    ``rows`` 0 means there was no captured traffic to replay (``about`` says which); ``failed``
    says why the replay could not run at all (then the shadow gates are not evaluated). A
    figure the model cannot give (no probabilities output: no ``mean_abs_diff``) is None.
    """

    rows: int
    about: str  # "2,000 captured rows of champion v3 (last 24h)", or why there are none
    agreement: float | None = None
    mean_abs_diff: float | None = None
    p99_abs_diff: float | None = None
    new_errors: float | None = None
    p50_latency_ratio: float | None = None
    p99_latency_ratio: float | None = None
    failed: str | None = None

    def value(self, key: str) -> float | None:
        got = getattr(self, key.removeprefix("shadow."), None)
        return None if got is None else float(got)


# Asked only when a shadow key is configured (a replay costs a second or two); None: no replay
# source was handed in (e.g. `mlplat validate`), and the shadow gates are not evaluated.
ShadowSource = Callable[[], ShadowFigures]


@dataclass(frozen=True)
class GateContext:
    """Everything a kind may look at: the bundle, the champion, what serves, how long to time,
    and the replay of captured traffic (``shadow``)."""

    bundle: Bundle
    champion: Champion = None
    serving_signature: Signature | None = None
    latency_runs: int = 50
    shadow: ShadowSource | None = None


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


NO_TRAFFIC = "no captured traffic"


class ShadowKind(ThresholdKind, ShadowSpec):
    """Live behaviour: captured requests replayed through the candidate and the champion.

    No champion: passed ("no champion to compare with"). The champion unknown, no replay
    source, or a replay that failed: not evaluated, not passed. No captured traffic: passed
    with the detail "no captured traffic: ..." (a new model must be able to graduate before
    anyone called it), failed instead when ``shadow.require_traffic = true``.
    """

    def evaluate(self, ctx: GateContext, specs: Mapping[str, GateSpec]) -> list[GateResult]:
        flag = specs.get(SHADOW_REQUIRE_TRAFFIC)
        require = isinstance(flag, Flag) and flag.value
        keys = [k for k in SHADOW_KEYS if k in specs] or [SHADOW_REQUIRE_TRAFFIC]
        threshold = {k: str(specs[k]) for k in keys if k in specs}

        def plain(key: str, passed: bool, detail: str, evaluated: bool = True) -> GateResult:
            return GateResult(
                name=key,
                measured=None,
                threshold=threshold.get(key, "captured traffic replayed"),
                passed=passed and evaluated,
                evaluated=evaluated,
                detail=detail,
            )

        if isinstance(ctx.champion, ChampionUnknown):
            return [
                not_evaluated(k, threshold.get(k, "captured traffic replayed"), ctx.champion) for k in keys
            ]
        if ctx.champion is None:
            return [plain(k, True, "no champion to compare with") for k in keys]
        if ctx.shadow is None:
            why = (
                "no replay of captured traffic was run for this bundle (mlplat train, dev and replay run one)"
            )
            return [plain(k, False, f"{NOT_EVALUATED}: {why}", evaluated=False) for k in keys]
        figures = ctx.shadow()
        if figures.failed is not None:
            return [plain(k, False, f"{NOT_EVALUATED}: {figures.failed}", evaluated=False) for k in keys]
        if figures.rows == 0:
            about = figures.about
            none = about if about.startswith(NO_TRAFFIC) else f"{NO_TRAFFIC}: {about}"
            if require:
                return [plain(k, False, f"{none} (shadow.require_traffic)") for k in keys]
            return [plain(k, True, f"{none}; not compared (warning)") for k in keys]
        out = []
        for key in keys:
            spec = specs.get(key)
            if not isinstance(spec, Threshold):  # require_traffic alone: traffic was there
                out.append(plain(key, True, f"replayed {figures.about}"))
                continue
            measured = figures.value(key)
            if measured is None:
                out.append(
                    GateResult(
                        name=key,
                        measured=None,
                        threshold=str(spec),
                        op=spec.op,
                        bound=spec.value,
                        passed=False,
                        detail=f"not measured: the model has no output that gives {key} ({figures.about})",
                    )
                )
                continue
            r = self.compare(key, measured, spec)
            out.append(r.model_copy(update={"detail": f"{r.detail} ({figures.about})"}))
        return out

    def explain(self, result: GateResult) -> str:
        if result.measured is None:
            return f"{result.name}: {result.detail or 'failed'}"
        return super().explain(result)


KINDS: tuple[GateKind, ...] = (
    MetricKind(),
    LatencyKind(),
    SizeKind(),
    SignatureKind(),
    NoRegressionKind(),
    ShadowKind(),
)

_missing = {k.name for k in SPEC_KINDS} ^ {k.name for k in KINDS}
if _missing:  # a config kind nobody evaluates (or the reverse) would be silently skipped
    raise ImportError(f"gate kinds without both halves: {sorted(_missing)}")


def kind_for(key: str) -> GateKind | None:
    """The kind that owns a [gates] key or a result's name; None when no kind does."""
    return next((k for k in KINDS if k.claims(key)), None)
