"""``mlplat monitor``'s report: the monitor's answer turned into tables and lines a person reads.

No I/O here: ``cli/monitor.py`` fetches the ``MonitorReport`` through the metadata client and
prints what these functions return, so the wording is tested without a service.

States: ``drift`` (score >= 1: over the trigger), ``warn`` (score >= 0.5), ``ok``, ``unknown``
(fewer rows in the window than the monitor needs: "not enough data"). The score is the largest
metric/trigger ratio (PSI, KS or JS against the triggers raised to the calibrated floor).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mlplat_runtime.metadata.monitor_records import FeatureState, MonitorReport, VersionReport

OUTPUT = "__output__"
_MARK = {"drift": "✗ drift", "warn": "! warn", "ok": "ok", "unknown": "not enough data"}


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:g} ms"


def feature_name(feature: str) -> str:
    return "(output class mix)" if feature == OUTPUT else feature


def ranked(features: Sequence[FeatureState]) -> list[FeatureState]:
    """Worst first: by score (unknown last), then name."""
    return sorted(features, key=lambda f: (f.score is None, -(f.score or 0.0), f.feature))


FEATURE_HEADERS = (
    "FEATURE",
    "KIND",
    "STATE",
    "SCORE",
    "PSI",
    "KS",
    "JS",
    "MISSING",
    "OUT OF RANGE",
    "UNSEEN",
)


def feature_rows(version: VersionReport) -> list[tuple[str, ...]]:
    return [
        (
            feature_name(f.feature),
            f.kind,
            _MARK.get(f.state, f.state),
            _num(f.score, 2),
            _num(f.psi),
            _num(f.ks),
            _num(f.js),
            _pct(f.missing_share),
            _pct(f.out_of_range_share) if f.kind == "numeric" else "-",
            _pct(f.unseen_share) if f.kind == "categorical" else "-",
        )
        for f in ranked(version.features)
    ]


def version_summary(version: VersionReport) -> str:
    """One line of traffic for a version: rate, latency, errors, uncertainty, estimated accuracy."""
    parts = [
        f"{version.requests} rows",
        f"{version.request_rate:.1f}/s",
        f"p50 {_ms(version.latency_p50_ms)}",
        f"p99 {_ms(version.latency_p99_ms)}",
        f"errors {_pct(version.error_rate)}",
    ]
    if version.uncertain_share is not None:
        parts.append(f"uncertain {_pct(version.uncertain_share)}")
    if version.estimated_accuracy is not None:
        parts.append(f"accuracy {version.estimated_accuracy:.3f} (estimated, no labels)")
    return " · ".join(parts)


def output_state(version: VersionReport) -> str:
    found = next((f for f in version.features if f.feature == OUTPUT), None)
    if found is None:
        return "output drift: -"
    return f"output drift: {_MARK.get(found.state, found.state)} (PSI {_num(found.psi)}, JS {_num(found.js)})"


@dataclass(frozen=True)
class Section:
    """One block of the report: a heading, lines, and an optional table."""

    heading: str
    lines: tuple[str, ...] = ()
    headers: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()


def sections(report: MonitorReport) -> list[Section]:
    """The report, top to bottom: one section per version (swap markers between them), alerts,
    realised quality from feedback."""
    out: list[Section] = []
    if not report.versions:
        out.append(
            Section(
                "no traffic",
                (
                    f"nothing was logged in the last {_duration(report.window_s)}:"
                    " send requests to the serving port (or `make demo`), then run again",
                ),
            )
        )
    swaps = {(s.model, s.version): s.at for s in report.swaps}
    for v in report.versions:
        lines = []
        at = swaps.get((v.model, v.version))
        if at:
            lines.append(f"▲ swap: v{v.version} started serving at {at[:19].replace('T', ' ')}")
        lines.append(version_summary(v))
        lines.append(output_state(v))
        if not v.features:
            lines.append("drift: no window evaluated yet (the monitor evaluates each window when it ends)")
        out.append(
            Section(
                f"{v.model} v{v.version}",
                tuple(lines),
                FEATURE_HEADERS if v.features else (),
                tuple(feature_rows(v)),
            )
        )
    if report.alerts:
        rows = tuple(
            (
                a.severity,
                a.model,
                f"v{a.version}",
                feature_name(a.feature),
                _num(a.score, 2),
                (a.opened_at or "")[:19].replace("T", " "),
            )
            for a in report.alerts
        )
        out.append(
            Section("open alerts", (), ("SEVERITY", "MODEL", "VERSION", "FEATURE", "SCORE", "SINCE"), rows)
        )
    else:
        out.append(Section("open alerts", ("none",)))
    if report.feedback:
        rows = tuple(
            (
                f"v{w.version}",
                w.window_start[:19].replace("T", " "),
                str(w.predictions),
                f"{w.labelled} ({_pct(w.coverage)})",
                _num(w.accuracy) if w.accuracy is not None else "-",
                _num(w.mae) if w.mae is not None else "-",
            )
            for w in report.feedback
        )
        out.append(
            Section(
                "realised quality (from feedback)",
                (),
                ("VERSION", "WINDOW", "PREDICTIONS", "LABELLED", "ACCURACY", "MAE"),
                rows,
            )
        )
    return out


def _duration(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
