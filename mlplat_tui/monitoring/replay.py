"""Replay: captured live traffic run through a candidate bundle and the champion, row by row.

What ``mlplat replay``, the shadow gates of ``mlplat train`` / ``dev`` and the dev loop's swap
message all use. The inputs come from the prediction log's closed segments
(``mlplat_runtime.monitoring.logschema``: ``<log root>/<model>/*.parquet``), only the rows the
champion answered (its bundle id, status 200), newest first within ``--since`` and ``--rows``.
They are put back into the champion's input tensors by the log's own naming rule (a 2-D
input's column ``i`` is the reference feature with that column, else ``x<i>`` /
``<input>_x<i>``), run batched through two real ONNX Runtime sessions made as serving makes
them (``mlplat_runtime.providers.make_session``), and compared:

- ``agreement``: the share of rows with the same label (the label output; else the argmax of
  the probabilities; else a value output equal within 1e-3 relative);
- ``mean_abs_diff`` / ``p99_abs_diff``: per row, the largest absolute difference of the
  probabilities (of a value output for regressors), its mean and 99th percentile;
- ``new_errors``: rows the candidate fails on (its batch raised and the row alone raises, or
  a non-finite output) that the champion answered;
- ``p50_latency_ratio`` / ``p99_latency_ratio``: one-row latency of candidate over champion,
  from a sample of single-row calls interleaved on both sessions (order alternating);
- agreement by segment: per champion label and per top category of each categorical feature
  of the champion's reference.

Reads the segments with an in-process DuckDB connection (the control plane's, not the
metadata store's). Imports the gates' value types, the project layout and the runtime's
bundle, log schema and providers; numpy, duckdb and onnxruntime inside the functions. Never
the cycle or a UI.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mlplat_runtime.errors import MlplatError, UsageError
from mlplat_tui.gates.champion import ChampionUnknown
from mlplat_tui.gates.kinds import ShadowFigures

if TYPE_CHECKING:
    import numpy as np

    from mlplat_runtime.bundle import Bundle
    from mlplat_runtime.bundle.manifest import Manifest
    from mlplat_tui.project.config import Project

DEFAULT_SINCE = timedelta(hours=24)
MAX_ROWS = 200_000  # what `mlplat replay` reads at most (the newest rows)
GATE_ROWS = 50_000  # what the cycle's shadow gates and swap message read (the newest rows)
LATENCY_SAMPLES = 1000  # single-row calls per session (p99 of fewer is one outlier)
BATCH_ROWS = 16_384
SEGMENT_MIN_ROWS = 20  # segments with fewer rows are not shown
_DTYPES = {
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "BOOL": "bool",
}
_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")


def parse_since(text: str) -> timedelta:
    """``"24h"``, ``"90m"``, ``"7d"``, ``"30s"`` as a timedelta; ``UsageError`` otherwise."""
    m = _SPAN.match(text)
    if m is None or float(m.group(1)) <= 0:
        raise UsageError(f"--since {text!r} is not a time span", hint='write e.g. "24h", "90m", "7d"')
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[m.group(2)]
    return timedelta(**{unit: float(m.group(1))})


def _span_text(span: timedelta) -> str:
    s = span.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size * (2 if unit == "d" else 1) and s % size == 0:  # 24h, not 1d
            return f"{int(s // size)}{unit}"
    return f"{s:g}s"


@dataclass(frozen=True)
class Window:
    """Which captured rows to replay: those newer than ``since``, at most ``rows`` (newest)."""

    since: timedelta | None = DEFAULT_SINCE
    rows: int = MAX_ROWS

    def describe(self) -> str:
        return f"last {_span_text(self.since)}" if self.since is not None else f"newest {self.rows:,} rows"


@dataclass(frozen=True)
class Segment:
    """Agreement among the rows of one segment (``feature`` = ``value``)."""

    feature: str  # "label" (the champion's label) or a categorical feature's name
    value: str
    rows: int
    agreement: float


@dataclass(frozen=True)
class ReplayReport:
    """The row-by-row comparison of a candidate with the champion on captured traffic."""

    model: str
    candidate_version: str
    candidate_bundle_id: str
    champion_version: str
    champion_bundle_id: str
    window: str
    rows: int  # rows both answered (compared)
    compared: str = ""  # the output compared: "label", "probabilities" or "value"
    agreement: float | None = None
    mean_abs_diff: float | None = None
    p99_abs_diff: float | None = None
    new_errors: int = 0
    champion_errors: int = 0
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)  # session -> p50/p99
    p50_latency_ratio: float | None = None
    p99_latency_ratio: float | None = None
    segments: tuple[Segment, ...] = ()
    seconds: float = 0.0

    @property
    def about(self) -> str:
        if self.rows == 0 and self.champion_errors == 0:
            return f"no captured traffic of champion v{self.champion_version} ({self.window})"
        return f"{self.rows:,} captured rows of champion v{self.champion_version} ({self.window})"

    def figures(self) -> ShadowFigures:
        return ShadowFigures(
            rows=self.rows + self.champion_errors,
            about=self.about,
            agreement=self.agreement,
            mean_abs_diff=self.mean_abs_diff,
            p99_abs_diff=self.p99_abs_diff,
            new_errors=float(self.new_errors),
            p50_latency_ratio=self.p50_latency_ratio,
            p99_latency_ratio=self.p99_latency_ratio,
        )

    def summary(self) -> str | None:
        """``"agreement with the previous version 0.97, p99 ×1.1"``; None without traffic."""
        if self.rows == 0 or self.agreement is None:
            return None
        text = f"agreement with the previous version {self.agreement:.2f}"
        if self.p99_latency_ratio is not None:
            text += f", p99 ×{self.p99_latency_ratio:.1f}"
        if self.new_errors:
            text += f", {self.new_errors} new errors"
        return text

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["about"] = self.about
        return out


# --- reading the captured traffic ------------------------------------------------------------


@dataclass(frozen=True)
class _Column:
    tensor: str
    index: int | None  # None: a 1-D tensor
    sql: str  # in_<feature>
    feature: str


def _input_columns(bundle: Bundle, present: set[str]) -> list[_Column]:
    """The logged columns of ``bundle``'s inputs, by the prediction log's naming rule."""
    from mlplat_runtime.monitoring.logschema import INPUT_PREFIX
    from mlplat_runtime.monitoring.reference import default_feature_name, parse_reference

    named: dict[tuple[str, int], str] = {}
    with contextlib.suppress(Exception):  # a bad reference: the log used default names too
        ref = parse_reference(bundle.reference() or {})
        if ref is not None:
            named = {(f.input, f.column): f.name for f in ref.features.values() if f.column is not None}
    specs = [s for s in bundle.manifest.signature.inputs if len(s.shape) in (1, 2)]
    if len(specs) != len(bundle.manifest.signature.inputs):
        raise UsageError(
            "inputs of more than 2 dimensions are not in the prediction log: this model cannot be replayed"
        )
    single = len(specs) == 1
    out: list[_Column] = []
    for spec in specs:
        if len(spec.shape) == 1:
            out.append(_Column(spec.name, None, INPUT_PREFIX + spec.name, spec.name))
            continue
        width = spec.shape[1]
        i = 0
        while (width >= 0 and i < width) or width < 0:
            name = named.get((spec.name, i)) or default_feature_name(spec.name, i, single_input=single)
            if width < 0 and INPUT_PREFIX + name not in present:
                break  # a dynamic width: as many columns as the log has
            out.append(_Column(spec.name, i, INPUT_PREFIX + name, name))
            i += 1
    return out


def _segments(root: Path, model: str) -> list[Path]:
    from mlplat_runtime.monitoring.logschema import segment_opened

    folder = root / model
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.parquet") if segment_opened(p) is not None)


def read_traffic(
    root: Path, champion: Bundle, window: Window, *, now: datetime | None = None
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(input tensors of the champion's captured rows, their feature columns by name).

    Rows are the newest first; only rows the champion's bundle answered with status 200.
    A segment deleted by retention between the listing and the read is tolerated (one retry).
    """
    import duckdb
    import numpy as np

    from mlplat_runtime.monitoring.logschema import quote

    model = champion.manifest.model_name
    empty: tuple[dict[str, np.ndarray], dict[str, np.ndarray]] = ({}, {})
    for attempt in range(3):
        files = _segments(root, model)
        if not files:
            return empty
        con = duckdb.connect(config={"threads": 1})
        try:
            scan = f"read_parquet({[str(f) for f in files]!r}, union_by_name=true)"
            present = {row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {scan}").fetchall()}
            columns = _input_columns(champion, present)
            missing = [c.sql for c in columns if c.sql not in present]
            if missing:
                raise UsageError(
                    f"the prediction log of {model} has no column {missing[0]}: it was not logged "
                    "([monitor] exclude) or the model has other inputs than the log",
                    hint="replay needs every input column; remove it from [monitor] exclude",
                )
            dtypes = {
                s.name: np.dtype(_DTYPES.get(s.datatype, "float32"))
                for s in champion.manifest.signature.inputs
            }
            select = []
            for c in columns:
                kind = dtypes[c.tensor].kind
                fill = "'NaN'::DOUBLE" if kind == "f" else ("false" if kind == "b" else "0")
                select.append(f"coalesce({quote(c.sql)}, {fill}) AS {quote(c.sql)}")
            where = ["bundle_id = ?", "status = 200"]
            params: list[Any] = [champion.manifest.bundle_id]
            if window.since is not None:
                start = (now or datetime.now(UTC)) - window.since
                where.append("time >= ?")
                params.append(start.astimezone(UTC).replace(tzinfo=None))
            sql = (
                f"SELECT {', '.join(select)} FROM {scan} WHERE {' AND '.join(where)} "
                f'ORDER BY time DESC, request_id, "row" LIMIT {int(window.rows)}'
            )
            got = con.execute(sql, params).fetchnumpy()
        except duckdb.IOException:
            if attempt == 2:
                raise
            continue  # a segment vanished (retention): list again
        finally:
            con.close()
        break
    n = len(next(iter(got.values()))) if got else 0
    if n == 0:
        return empty
    by_feature = {c.feature: np.asarray(got[c.sql]) for c in columns}
    tensors: dict[str, np.ndarray] = {}
    for spec in champion.manifest.signature.inputs:
        cols = [c for c in columns if c.tensor == spec.name]
        dtype = dtypes[spec.name]
        if cols and cols[0].index is None:
            tensors[spec.name] = np.asarray(got[cols[0].sql]).astype(dtype, copy=False)
        else:
            tensors[spec.name] = np.column_stack([np.asarray(got[c.sql]) for c in cols]).astype(dtype)
    return tensors, by_feature


# --- running and comparing ---------------------------------------------------------------------


def _run(session: Any, feed: Mapping[str, np.ndarray]) -> list[Any]:
    return list(session.run(None, dict(feed)))


def _outputs(session: Any, feed: dict[str, np.ndarray], n: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every array output over all rows (batched) and a per-row error mask.

    A batch that raises is run again row by row, so one bad row fails only itself.
    """
    import numpy as np

    names = [o.name for o in session.get_outputs()]
    parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
    errors = np.zeros(n, dtype=bool)
    keep: set[str] = set(names)

    def add(values: list[Any], rows: int) -> None:
        for name, v in zip(names, values, strict=True):
            if isinstance(v, np.ndarray) and v.ndim >= 1 and v.shape[0] == rows:
                parts[name].append(v)
            else:
                keep.discard(name)  # sequences of maps and the like are not compared

    def filler(rows: int) -> list[Any]:
        return [
            np.full((rows, *parts[name][0].shape[1:]), np.nan) if parts[name] else np.full(rows, np.nan)
            for name in names
        ]

    for start in range(0, n, BATCH_ROWS):
        stop = min(n, start + BATCH_ROWS)
        batch = {k: v[start:stop] for k, v in feed.items()}
        try:
            add(_run(session, batch), stop - start)
        except Exception:
            for i in range(start, stop):
                try:
                    add(_run(session, {k: v[i : i + 1] for k, v in feed.items()}), 1)
                except Exception:
                    errors[i] = True
                    add(filler(1), 1)
    arrays = {}
    for name in names:
        if name in keep and parts[name]:
            try:
                arrays[name] = np.concatenate(parts[name])
            except ValueError:
                continue
    return arrays, errors


def _roles(arrays: Mapping[str, np.ndarray]) -> tuple[str | None, str | None, str | None]:
    """(label output, probabilities output, value output) by dtype and shape."""
    label = probs = value = None
    for name, a in arrays.items():
        per_row = a.ndim == 1 or (a.ndim == 2 and a.shape[1] == 1)
        if label is None and per_row and a.dtype.kind in "iub":
            label = name
        elif probs is None and a.ndim == 2 and a.shape[1] > 1 and a.dtype.kind == "f":
            probs = name
        elif value is None and per_row and a.dtype.kind == "f":
            value = name
    return label, probs, value


def _latency(
    runs: Sequence[tuple[Any, dict[str, np.ndarray]]], rows_ok: np.ndarray, samples: int
) -> list[list[float]] | None:
    """Single-row ms per (session, feed), calls interleaved (alternating which runs first)."""
    import numpy as np

    ok = np.flatnonzero(rows_ok)
    if len(ok) == 0 or samples <= 0:
        return None
    idx = ok[np.linspace(0, len(ok) - 1, num=min(len(ok), samples)).astype(int)]
    times: list[list[float]] = [[] for _ in runs]
    rows = [[{k: v[i : i + 1] for k, v in feed.items()} for _, feed in runs] for i in idx]
    try:
        for row in rows[:5]:  # warm-up
            for (session, _), feed in zip(runs, row, strict=True):
                session.run(None, feed)
        for j, row in enumerate(rows):
            order = list(range(len(runs))) if j % 2 == 0 else list(reversed(range(len(runs))))
            for k in order:
                t0 = time.perf_counter_ns()
                runs[k][0].run(None, row[k])
                times[k].append((time.perf_counter_ns() - t0) / 1e6)
    except Exception:
        return None  # a row that fails alone is counted as an error already
    return times


def compare(
    candidate: Bundle,
    champion: Bundle,
    feed: dict[str, np.ndarray],
    features: Mapping[str, np.ndarray],
    *,
    window: str,
    latency_samples: int = LATENCY_SAMPLES,
) -> ReplayReport:
    """Run ``feed`` through both bundles and compare them row by row."""
    import numpy as np

    from mlplat_runtime.providers import make_session

    started = time.perf_counter()
    n = len(next(iter(feed.values()))) if feed else 0
    base = ReplayReport(
        model=candidate.manifest.model_name,
        candidate_version=candidate.manifest.version,
        candidate_bundle_id=candidate.manifest.bundle_id,
        champion_version=champion.manifest.version,
        champion_bundle_id=champion.manifest.bundle_id,
        window=window,
        rows=0,
    )
    if n == 0:
        return base
    new_session, old_session = make_session(candidate.model_path), make_session(champion.model_path)
    cand_feed = {s.name: feed[s.name] for s in candidate.manifest.signature.inputs if s.name in feed}
    if len(cand_feed) != len(candidate.manifest.signature.inputs):
        raise UsageError(
            f"v{candidate.manifest.version} has inputs the captured traffic of "
            f"v{champion.manifest.version} does not have",
            hint="replay compares bundles with the same inputs (the signature gate says what differs)",
        )
    old, old_err = _outputs(old_session, feed, n)
    new, new_err = _outputs(new_session, cand_feed, n)
    label, probs, value = _roles(old)
    compared = next((r for r in (label, probs, value) if r is not None and r in new), None)

    def finite(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        ok = np.ones(n, dtype=bool)
        for name in (probs, value):
            if name is not None and name in arrays:
                a = arrays[name].reshape(n, -1).astype(np.float64)
                ok &= np.isfinite(a).all(axis=1)
        return ok

    old_err |= ~finite(old)
    new_err |= ~finite(new)
    both = ~old_err & ~new_err
    m = int(both.sum())
    same: np.ndarray | None = None
    diff: np.ndarray | None = None
    if compared is not None and m:
        if compared == label:
            same = old[label].reshape(n) == new[label].reshape(n)
        elif compared == probs:
            same = old[probs].argmax(axis=1) == new[probs].argmax(axis=1)
        else:
            a, b = old[compared].reshape(n), new[compared].reshape(n)
            same = np.isclose(b, a, rtol=1e-3, atol=1e-6)
        diff_name = probs if probs is not None and probs in new else value if value in new else None
        if diff_name is not None and old[diff_name].shape == new[diff_name].shape:
            d = np.abs(old[diff_name].astype(np.float64) - new[diff_name].astype(np.float64))
            diff = d.reshape(n, -1).max(axis=1)
    agreement = float(same[both].mean()) if same is not None and m else None
    segments: list[Segment] = []
    if same is not None and m:
        groups: list[tuple[str, np.ndarray]] = []
        if label is not None:
            groups.append(("label", old[label].reshape(n)))
        elif probs is not None:
            groups.append(("label", old[probs].argmax(axis=1)))
        for name, col in _categorical(champion, features).items():
            groups.append((name, col))
        for feature, col in groups:
            values, inverse = np.unique(col[both], return_inverse=True)
            counts = np.bincount(inverse, minlength=len(values))
            agree = np.bincount(inverse, weights=same[both].astype(np.float64), minlength=len(values))
            for v, c, a in zip(values, counts, agree, strict=True):
                if c >= SEGMENT_MIN_ROWS:
                    segments.append(Segment(feature, _show(v), int(c), float(a / c)))
        segments.sort(key=lambda s: (s.agreement, -s.rows))
    timed = _latency([(old_session, feed), (new_session, cand_feed)], both, latency_samples)
    latency: dict[str, dict[str, float]] = {}
    p50 = p99 = None
    if timed is not None:
        for who, t in zip(("champion", "candidate"), timed, strict=True):
            latency[who] = {"p50": float(np.percentile(t, 50)), "p99": float(np.percentile(t, 99))}
        if latency["champion"]["p50"] > 0:
            p50 = latency["candidate"]["p50"] / latency["champion"]["p50"]
        if latency["champion"]["p99"] > 0:
            p99 = latency["candidate"]["p99"] / latency["champion"]["p99"]
    return ReplayReport(
        **{
            **asdict(base),
            "rows": m,
            "compared": compared or "",
            "agreement": agreement,
            "mean_abs_diff": float(diff[both].mean()) if diff is not None and m else None,
            "p99_abs_diff": float(np.percentile(diff[both], 99)) if diff is not None and m else None,
            "new_errors": int((new_err & ~old_err).sum()),
            "champion_errors": int(old_err.sum()),
            "latency_ms": latency,
            "p50_latency_ratio": p50,
            "p99_latency_ratio": p99,
            "segments": tuple(segments[:20]),
            "seconds": time.perf_counter() - started,
        }
    )


def _categorical(champion: Bundle, features: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    from mlplat_runtime.monitoring.reference import parse_reference

    try:
        ref = parse_reference(champion.reference() or {})
    except Exception:
        return {}
    if ref is None:
        return {}
    return {
        f.name: features[f.name]
        for f in ref.features.values()
        if f.kind == "categorical" and f.name in features
    }


def _show(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value.item() if hasattr(value, "item") else value)


def replay(
    candidate: Path, champion: Path, log_root: Path, window: Window = Window(), *, now: datetime | None = None
) -> ReplayReport:
    """Replay ``champion``'s captured traffic under ``log_root`` through ``candidate``."""
    from mlplat_runtime.bundle import open_bundle

    new, old = open_bundle(candidate), open_bundle(champion)
    try:
        if new.manifest.model_name != old.manifest.model_name:
            raise UsageError(
                f"the candidate is {new.manifest.model_name}, the champion {old.manifest.model_name}",
                hint="replay compares two versions of one model",
            )
        feed, features = read_traffic(log_root, old, window, now=now)
        return compare(new, old, feed, features, window=window.describe())
    finally:
        import shutil

        for b in (new, old):
            if b.extracted:
                shutil.rmtree(b.root, ignore_errors=True)


# --- the champion's bundle and the cycle's replay source --------------------------------------


class _BundleSource(Protocol):
    def bundle(self, bundle_id: str) -> Any: ...


def log_root(project: Project) -> Path:
    """Where the local stack's serving writes the prediction log."""
    return project.paths.monitoring / "predictions"


def champion_path(project: Project, bundle_id: str, metadata: _BundleSource | None) -> Path | None:
    """The folder of the bundle ``bundle_id``: as the store recorded it, else found among the
    project's bundles; None when it is nowhere on disk."""
    import json

    if metadata is not None:
        with contextlib.suppress(MlplatError):
            path = Path(metadata.bundle(bundle_id).path)
            if path.exists():
                return path
    bundles = project.paths.bundles
    for manifest in sorted(bundles.glob("*/manifest.json")) if bundles.exists() else []:
        with contextlib.suppress(OSError, ValueError):
            if json.loads(manifest.read_text()).get("bundle_id") == bundle_id:
                return manifest.parent
    return None


class ShadowReplay:
    """The cycle's replay of a candidate against its champion, run at most once and only when
    asked: by a shadow gate (``gates.kinds.ShadowSource``) or the swap message."""

    def __init__(
        self,
        project: Project,
        candidate: Path,
        champion: Manifest | ChampionUnknown | None,
        metadata: _BundleSource | None,
        window: Window = Window(DEFAULT_SINCE, GATE_ROWS),
    ) -> None:
        self.project, self.candidate, self.champion = project, candidate, champion
        self.metadata, self.window = metadata, window
        self._figures: ShadowFigures | None = None
        self.report: ReplayReport | None = None

    def __call__(self) -> ShadowFigures:
        if self._figures is None:
            self._figures = self._replay()
        return self._figures

    def _replay(self) -> ShadowFigures:
        from mlplat_runtime.bundle.manifest import Manifest

        champion = self.champion
        if not isinstance(champion, Manifest):
            why = champion.reason if isinstance(champion, ChampionUnknown) else "no champion"
            return ShadowFigures(rows=0, about=why, failed=why)
        path = champion_path(self.project, champion.bundle_id, self.metadata)
        if path is None:
            return ShadowFigures(
                rows=0, about="", failed=f"the bundle of champion v{champion.version} is not on disk"
            )
        try:
            self.report = replay(self.candidate, path, log_root(self.project), self.window)
        except MlplatError as exc:
            return ShadowFigures(rows=0, about="", failed=f"replay failed: {exc.message}")
        except Exception as exc:  # DuckDB / ONNX Runtime errors are many types; the gate says so
            return ShadowFigures(rows=0, about="", failed=f"replay failed: {type(exc).__name__}: {exc}")
        return self.report.figures()

    def summary(self) -> str | None:
        """The swap message's addition; None without traffic or when the replay failed."""
        self()
        return self.report.summary() if self.report is not None else None
