"""What ``[gates]`` may say: the config half of each gate kind.

A gate kind (``gates/kinds.py``) is one class per family of gates. Its config half lives here,
in the project layer, because parsing ``mlplat.toml`` must know it and the project layer may
not import ``gates``: which keys the kind ``claims``, how a value is ``parse``\\ d (a
``ConfigError`` naming the file and the key), and how a platform policy floor ``tighten``\\ s
the project's value. ``gates/kinds.py`` subclasses each of these with its evaluation and its
explanation; it checks at import that every kind here has its evaluating half, so a new kind
(push's target gates, monitoring's drift and shadow gates) is one class here and its subclass
there, and ``mlplat.toml``, the policy file, ``validate_bundle`` and the "rejected: ..." reasons
know it at once.

=============  =============================================
kind           keys
=============  =============================================
metric         ``"metrics.<name>" = ">= 0.85"``
latency        ``"latency.p50_ms"`` / ``p95_ms`` / ``p99_ms``
size           ``"size_mb" = "<= 50"``
signature      (always runs; not a key)
no_regression  ``no_regression = { metric, tolerance, higher_is_better }``
shadow         ``"shadow.agreement" = ">= 0.95"``, ``shadow.mean_abs_diff``, ``shadow.p99_abs_diff``,
               ``shadow.new_errors``, ``shadow.p50_latency_ratio``, ``shadow.p99_latency_ratio``;
               ``"shadow.require_traffic" = true`` (no captured traffic fails instead of passing)
=============  =============================================

Imports pydantic and the runtime's errors only.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError

from mlplat_runtime.errors import ConfigError

LATENCY_KEYS = ("latency.p50_ms", "latency.p95_ms", "latency.p99_ms")
SHADOW_KEYS = (
    "shadow.agreement",
    "shadow.mean_abs_diff",
    "shadow.p99_abs_diff",
    "shadow.new_errors",
    "shadow.p50_latency_ratio",
    "shadow.p99_latency_ratio",
)
SHADOW_REQUIRE_TRAFFIC = "shadow.require_traffic"
FLOOR_NOTE = "policy floor"
_THRESHOLD_TEXT = re.compile(r"^\s*(>=|<=|>|<|==)\s*([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


# --- specs: what a [gates] value parses into -------------------------------------------------


class GateSpec(BaseModel):
    """The parsed value of one ``[gates]`` key; each kind has its own subclass."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Threshold(GateSpec):
    """A parsed gate threshold such as ``>= 0.85``."""

    op: Literal[">=", "<=", ">", "<", "=="]
    value: float

    def holds(self, measured: float) -> bool:
        return {
            ">=": measured >= self.value,
            "<=": measured <= self.value,
            ">": measured > self.value,
            "<": measured < self.value,
            "==": measured == self.value,
        }[self.op]

    def __str__(self) -> str:
        return f"{self.op} {self.value:g}"


class Flag(GateSpec):
    """A parsed on/off gate option such as ``"shadow.require_traffic" = true``."""

    value: bool

    def __str__(self) -> str:
        return "true" if self.value else "false"


class NoRegression(GateSpec):
    metric: str
    tolerance: float = 0.0
    higher_is_better: bool = True


class GatesSection(BaseModel):
    """``[gates]``: gate key -> its parsed spec (the kinds below say which keys exist).

    ``thresholds`` and ``no_regression`` are views for readers that know those kinds.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    specs: dict[str, SerializeAsAny[GateSpec]] = Field(default_factory=dict)

    @property
    def thresholds(self) -> dict[str, Threshold]:
        return {k: s for k, s in self.specs.items() if isinstance(s, Threshold)}

    @property
    def no_regression(self) -> NoRegression | None:
        spec = self.specs.get("no_regression")
        return spec if isinstance(spec, NoRegression) else None


# --- the config half of each kind --------------------------------------------------------------


class SpecKind(ABC):
    """The config half of a gate kind. Subclasses set ``name`` and ``spelled``."""

    name: ClassVar[str]
    spelled: ClassVar[str]  # how its keys are written, for error messages
    configurable: ClassVar[bool] = True  # False: not a [gates] key (it always runs)
    takes_table: ClassVar[bool] = False  # its value is a TOML table, not a threshold string

    @abstractmethod
    def claims(self, key: str) -> bool:
        """Is ``key`` (a [gates] key, or a result's name) one of this kind's?"""

    @abstractmethod
    def parse(self, file: str, key: str, raw: object) -> GateSpec: ...

    @abstractmethod
    def tighten(self, key: str, own: GateSpec, floor: GateSpec) -> tuple[GateSpec, str | None]:
        """The spec applied when a policy ``floor`` meets the project's ``own``, and a note
        starting with ``FLOOR_NOTE`` when the floor replaced it (None when ``own`` stands)."""


class ThresholdSpec(SpecKind):
    """``op value``: the shared config half of metric, latency and size."""

    def parse(self, file: str, key: str, raw: object) -> Threshold:
        return parse_threshold(file, key, raw)

    def tighten(self, key: str, own: GateSpec, floor: GateSpec) -> tuple[GateSpec, str | None]:
        assert isinstance(own, Threshold) and isinstance(floor, Threshold)
        if at_least_as_strict(own, floor):
            return own, None
        return floor, f"{FLOOR_NOTE} {floor} (mlplat.toml asked {own})"


class MetricSpec(ThresholdSpec):
    name = "metric"
    spelled = "metrics.<name>"

    def claims(self, key: str) -> bool:
        return key.startswith("metrics.") and len(key) > len("metrics.")


class LatencySpec(ThresholdSpec):
    name = "latency"
    spelled = ", ".join(LATENCY_KEYS)

    def claims(self, key: str) -> bool:
        return key in LATENCY_KEYS


class SizeSpec(ThresholdSpec):
    name = "size"
    spelled = "size_mb"

    def claims(self, key: str) -> bool:
        return key == "size_mb"


class SignatureSpec(SpecKind):
    name = "signature"
    spelled = "signature"
    configurable = False

    def claims(self, key: str) -> bool:
        return key == "signature"

    def parse(self, file: str, key: str, raw: object) -> GateSpec:
        raise ConfigError(file, f"gates.{key}", "no value: the signature gate always runs", got=raw)

    def tighten(self, key: str, own: GateSpec, floor: GateSpec) -> tuple[GateSpec, str | None]:
        return own, None


class NoRegressionSpec(SpecKind):
    name = "no_regression"
    spelled = "no_regression"
    takes_table = True
    EXPECTED: ClassVar[str] = '{ metric = "<name>", tolerance = <number>, higher_is_better = <bool> }'

    def claims(self, key: str) -> bool:
        return key == "no_regression"

    def parse(self, file: str, key: str, raw: object) -> NoRegression:
        if not isinstance(raw, dict):
            raise ConfigError(file, f"gates.{key}", self.EXPECTED, got=raw)
        try:
            return NoRegression.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            sub = ".".join(str(p) for p in err["loc"])
            where = f"gates.{key}.{sub}" if sub else f"gates.{key}"
            what = "this key to be present" if err["type"] == "missing" else err["msg"]
            if err["type"] == "extra_forbidden":
                what = "no such key (metric, tolerance, higher_is_better)"
            raise ConfigError(file, where, what) from None

    def tighten(self, key: str, own: GateSpec, floor: GateSpec) -> tuple[GateSpec, str | None]:
        assert isinstance(own, NoRegression) and isinstance(floor, NoRegression)
        same = own.metric.removeprefix("metrics.") == floor.metric.removeprefix("metrics.")
        if same and own.higher_is_better == floor.higher_is_better:
            if own.tolerance <= floor.tolerance:
                return own, None
            return floor, f"{FLOOR_NOTE} tolerance {floor.tolerance:g} (mlplat.toml asked {own.tolerance:g})"
        return floor, f"{FLOOR_NOTE} on {floor.metric} replaces mlplat.toml's no_regression on {own.metric}"


class ShadowSpec(ThresholdSpec):
    """Replay of captured traffic against the champion: thresholds on what it measured, and
    ``shadow.require_traffic`` (a bool) to fail instead of pass when there is no traffic."""

    name = "shadow"
    spelled = ", ".join((*SHADOW_KEYS, SHADOW_REQUIRE_TRAFFIC))

    def claims(self, key: str) -> bool:
        return key in SHADOW_KEYS or key == SHADOW_REQUIRE_TRAFFIC

    def parse(self, file: str, key: str, raw: object) -> GateSpec:  # type: ignore[override]
        if key == SHADOW_REQUIRE_TRAFFIC:
            if not isinstance(raw, bool):
                raise ConfigError(file, f"gates.{key}", "true or false", got=raw)
            return Flag(value=raw)
        return parse_threshold(file, key, raw)

    def tighten(self, key: str, own: GateSpec, floor: GateSpec) -> tuple[GateSpec, str | None]:
        if isinstance(own, Flag) and isinstance(floor, Flag):
            if own.value or not floor.value:
                return own, None
            return floor, f"{FLOOR_NOTE} {floor} (mlplat.toml asked {own})"
        return super().tighten(key, own, floor)


SPEC_KINDS: tuple[SpecKind, ...] = (
    MetricSpec(),
    LatencySpec(),
    SizeSpec(),
    SignatureSpec(),
    NoRegressionSpec(),
    ShadowSpec(),
)


def spec_kind_for(key: str) -> SpecKind | None:
    """The kind that owns a [gates] key or a result's name; None when no kind does."""
    return next((k for k in SPEC_KINDS if k.claims(key)), None)


def expected_keys() -> str:
    """The configurable keys, for error messages: ``"metrics.<name>, latency.p50_ms, ..."``."""
    return ", ".join(k.spelled for k in SPEC_KINDS if k.configurable)


def parse_threshold(file: str, key: str, raw: object) -> Threshold:
    if isinstance(raw, str):
        m = _THRESHOLD_TEXT.match(raw)
        if m:
            return Threshold(op=m.group(1), value=float(m.group(2)))  # type: ignore[arg-type]
    raise ConfigError(file, f"gates.{key}", 'a threshold like ">= 0.85" or "<= 5"', got=raw)


def _side(t: Threshold) -> str:
    return "lower" if t.op in (">=", ">") else "upper" if t.op in ("<=", "<") else "exact"


def at_least_as_strict(project: Threshold, floor: Threshold) -> bool:
    """True when every value passing ``project`` also passes ``floor``."""
    if project.op == "==":
        return floor.holds(project.value)
    side = _side(floor)
    if side == "exact" or _side(project) != side:
        return False
    if project.value != floor.value:
        return project.value > floor.value if side == "lower" else project.value < floor.value
    # Same bound: a strict project bound is tighter; a closed one is as strict only as a closed floor.
    return project.op in (">", "<") or floor.op in (">=", "<=")


def parse_gates(file: str, raw: object) -> GatesSection:
    """Parse a ``[gates]`` table (of ``mlplat.toml`` or a policy file) through the kinds."""
    if raw is None:
        return GatesSection()
    if not isinstance(raw, dict):
        raise ConfigError(file, "gates", "a table of gate = threshold", got=raw)
    items: list[tuple[str, object]] = []
    for key, value in raw.items():
        kind = spec_kind_for(key)
        # Unquoted `metrics.roc_auc = ">= 0.85"` is a nested table in TOML: read it as the dotted key.
        if isinstance(value, dict) and not (kind is not None and kind.takes_table):
            items.extend((f"{key}.{sub}", v) for sub, v in value.items())
        else:
            items.append((key, value))
    specs: dict[str, GateSpec] = {}
    for key, value in items:
        kind = spec_kind_for(key)
        if kind is None:
            raise ConfigError(file, f"gates.{key}", f"one of {expected_keys()}")
        specs[key] = kind.parse(file, key, value)
    return GatesSection(specs=specs)
