"""The monitor: closed prediction-log segments -> profiles -> windows -> drift -> alerts.

How it reads the segments. The store's DuckDB database is opened with external access off, and
stays so: ``mlplat sql`` runs on it. The monitor opens a **second, in-memory DuckDB database**
(``SegmentReader``) whose only file access is the prediction-log folder: ``allowed_directories``
is that folder, ``enable_external_access`` is off (so nothing else — no other file, no
extension, no URL — is reachable), and the configuration is locked. It lists *closed* segments
(serving renames a segment into place when it is complete: a half-written file never matches),
reads each once, and hands the counts (``profiles.profile_rows``) to the store; which segments
were read is recorded (``monitor_segments``), so a restart reads each segment once. The same
reader answers ``mlplat sql`` queries that name ``predictions`` (a view over the closed
segments) or ``feedback``, within the same read-only guard and caps; those queries cannot join
the store's tables (they are in another database).

Windows. Profiles are per bucket (``bucket_s``, 60 s: "per minute"). A window is the pending
(not yet evaluated) profiles of one model version up to a boundary: in the loop, each aligned
``window_s`` boundary once the clock is past it; on ``process(cut=True)`` (``POST
/monitor/process``), everything pending, now — which is how tests (and ``make demo``) drive it
deterministically instead of sleeping. Rows of a segment that closed late join the next window.
A window of fewer than ``min_rows`` rows is "not enough data". Each evaluated window writes a
``drift`` row per feature (and ``__output__`` for the class mix), and feeds every feature's
alert state machine (``alerts.py``); openings and resolutions are events (``alert_opened`` /
``alert_resolved``, payload ``dedupe_key``) in the events table.

Imports duckdb, numpy and the runtime only; never mlplat_tui.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import orjson

from mlplat_runtime.errors import MetadataError, RequestError
from mlplat_runtime.metadata.alerts import AlertState, Thresholds, step
from mlplat_runtime.metadata.profiles import (
    LATENCY,
    OUTPUT,
    FeatureDrift,
    Profile,
    Rows,
    feature_drift,
    latency_quantile,
    output_drift,
    output_slots,
    profile_rows,
)
from mlplat_runtime.metadata.records import EventRecord, SqlResult
from mlplat_runtime.metadata.sqlcaps import QueryControl, SqlCaps, run_capped
from mlplat_runtime.monitoring.reference import Reference, parse_reference

if TYPE_CHECKING:
    from mlplat_runtime.metadata.store import MetadataStore

log = logging.getLogger("mlplat.metadata.monitor")

READER_MEMORY = "256MB"
READER_TABLES = frozenset({"predictions", "feedback"})
# Columns the profiles never use: not decoded (a million request ids are most of a read).
SKIPPED_COLUMNS = frozenset({"request_id", "error", "row"})


@dataclass(frozen=True)
class SegmentData:
    """A segment's columns; a text column holds codes (-1: null) into ``strings[name]``."""

    columns: dict[str, np.ndarray]
    strings: dict[str, list[Any]]
    rows: int

    def text(self, name: str) -> np.ndarray:
        """A text column's values (object array, None for nulls)."""
        values = np.asarray([*self.strings[name], None], dtype=object)
        return values[self.columns[name]]  # code -1 picks the trailing None


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None)


def _epoch(value: datetime) -> float:
    return value.replace(tzinfo=UTC).timestamp() if value.tzinfo is None else value.timestamp()


# -- the segment layout (the data-plane half's ``monitoring/logschema.py``) ----------------


@dataclass(frozen=True)
class LogLayout:
    """Where closed segments lie under the log root and how their columns are named.

    Serving's writer (``mlplat_runtime.monitoring`` log schema): ``<root>/<model>/<start>-<boot>-
    <seq>.parquet`` for predictions (one row per input row), ``<root>/_feedback/*.parquet`` for
    feedback; ``*.parquet.tmp`` is being written and never matches. Inputs are ``in_<feature>``,
    outputs ``out_<output>`` (probabilities as a list per row).
    """

    predictions_glob: str = "[!_]*/*.parquet"
    feedback_glob: str = "_feedback/*.parquet"
    time: str = "time"
    model: str = "model"
    version: str = "version"
    bundle: str = "bundle_id"
    status: str = "status"  # HTTP status (200 = ok)
    latency_ms: str = "latency_ms"
    sample_rate: str = "sample_rate"
    input_prefix: str = "in_"  # a feature's column: prefix + feature name
    output_prefix: str = "out_"  # an output's column: prefix + output name


class SegmentReader:
    """A second, in-memory DuckDB database that may read the log folder and nothing else."""

    def __init__(self, root: Path, layout: LogLayout | None = None, *, memory_limit: str = READER_MEMORY):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.layout = layout or LogLayout()
        self._lock = threading.Lock()
        self._con = duckdb.connect(":memory:", config={"threads": 1, "memory_limit": memory_limit})
        # Order matters: allowed_directories can only be set while external access is still on,
        # then access is turned off (the allow-list stays) and the configuration locked.
        self._con.execute(f"SET allowed_directories = ['{self._quoted(str(self.root) + '/')}']")
        self._con.execute("SET enable_external_access = false")
        self._con.execute("SET lock_configuration = true")

    @staticmethod
    def _quoted(text: str) -> str:
        return text.replace("'", "''")

    def close(self) -> None:
        with self._lock:
            self._con.close()

    def closed(self, kind: str = "predictions") -> list[Path]:
        pattern = self.layout.predictions_glob if kind == "predictions" else self.layout.feedback_glob
        return sorted(p for p in self.root.glob(pattern) if p.is_file() and not p.is_symlink())

    def read(self, path: Path, skip: frozenset[str] = SKIPPED_COLUMNS) -> SegmentData | None:
        """One closed segment's columns as numpy arrays (nulls -> NaN; a list column of
        equal-length rows -> a 2-D array; text -> integer codes into ``SegmentData.strings``),
        without the columns in ``skip``; None when retention removed it since it was listed."""
        resolved = path.resolve()
        if not resolved.is_relative_to(self.root):
            raise MetadataError(f"segment {path} is outside the prediction log {self.root}")
        if not resolved.is_file():
            return None
        source = f"read_parquet('{self._quoted(str(resolved))}')"
        with self._lock:
            cur = self._con.cursor()
            try:
                names = [str(r[0]) for r in cur.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()]
                wanted = ", ".join('"' + n.replace('"', '""') + '"' for n in names if n not in skip)
                table = cur.sql(f"SELECT {wanted} FROM {source}").to_arrow_table()
            except duckdb.IOException:
                if not resolved.exists():
                    return None
                raise
            finally:
                cur.close()
        columns: dict[str, np.ndarray] = {}
        strings: dict[str, list[Any]] = {}
        for name in table.column_names:
            columns[name], dictionary = _column(table.column(name))
            if dictionary is not None:
                strings[name] = dictionary
        return SegmentData(columns, strings, table.num_rows)

    def rows(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The monitor's own query over the views (not user SQL)."""
        with self._lock:
            cur = self._con.cursor()
        try:
            self._views(cur)
            return cur.execute(statement, list(params)).fetchall()
        finally:
            cur.close()

    def _views(self, cur: duckdb.DuckDBPyConnection) -> None:
        # A glob, not a list of names (a week of 10 s segments is tens of thousands of files);
        # it never matches a ``.parquet.tmp`` being written.
        for table in READER_TABLES:
            pattern = self.layout.predictions_glob if table == "predictions" else self.layout.feedback_glob
            if any(True for _ in self.root.glob(pattern)):
                glob = self._quoted(f"{self.root}/{pattern}")
                cur.execute(
                    f"CREATE OR REPLACE TEMP VIEW {table} AS"
                    f" SELECT * FROM read_parquet('{glob}', union_by_name = true)"
                )
            else:
                cur.execute(
                    f"CREATE OR REPLACE TEMP VIEW {table} AS SELECT NULL AS no_segments_yet WHERE false"
                )

    def sql(self, statement: str, control: QueryControl, caps: SqlCaps) -> SqlResult:
        """A read-only query over ``predictions`` / ``feedback`` (views over the closed segments)."""
        with self._lock:
            cur = self._con.cursor()
        try:
            self._views(cur)
            control.attach(cur)
            try:
                return run_capped(cur, statement, caps)
            finally:
                control.detach()
        finally:
            cur.close()


# -- configuration ------------------------------------------------------------------------


@dataclass(frozen=True)
class MonitorConfig:
    bucket_s: int = 60
    window_s: int = 900
    interval_s: float = 10.0  # how often the loop looks for closed segments
    # A window is evaluated this long after it ends: serving closes a segment every 10 s, so
    # the window's last rows are in closed segments by then.
    grace_s: float = 15.0
    thresholds: Thresholds = field(default_factory=Thresholds)


def parse_duration(text: str) -> int:
    """``15m`` / ``90s`` / ``1h`` / ``2d`` / ``600`` -> seconds (RequestError if not)."""
    raw = text.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        value = float(raw[:-1]) * units[raw[-1]] if raw and raw[-1] in units else float(raw)
    except ValueError:
        raise RequestError(f"a duration like 15m, 90s or 1h, got {text!r}") from None
    if not math.isfinite(value) or value < 1:
        raise RequestError(f"a duration of at least 1 second, got {text!r}")
    return int(value)


_CONFIG_KEYS = {
    "psi": float, "ks": float, "js": float, "psi_severe": float,
    "min_rows": int, "open_after": int, "resolve_after": int,
}  # fmt: skip


def config_from_toml(project_root: Path | None, **overrides: Any) -> MonitorConfig:
    """``[monitor]`` of ``project_root/mlplat.toml`` (thresholds, ``window``, ``bucket``), then
    ``overrides`` (the service's command-line flags; None values ignored)."""
    import tomllib
    from dataclasses import replace

    table: dict[str, Any] = {}
    if project_root is not None and (Path(project_root) / "mlplat.toml").is_file():
        with (Path(project_root) / "mlplat.toml").open("rb") as f:
            table = dict(tomllib.load(f).get("monitor", {}))
    thresholds = Thresholds(**{k: cast(table[k]) for k, cast in _CONFIG_KEYS.items() if k in table})
    config = MonitorConfig(thresholds=thresholds)
    if "window" in table:
        config = replace(config, window_s=parse_duration(str(table["window"])))
    if "bucket" in table:
        config = replace(config, bucket_s=parse_duration(str(table["bucket"])))
    given = {k: v for k, v in overrides.items() if v is not None}
    rule = {k: given.pop(k) for k in list(given) if k in _CONFIG_KEYS}
    if rule:
        config = replace(config, thresholds=replace(config.thresholds, **rule))
    return replace(config, **given)


# -- results ------------------------------------------------------------------------------


@dataclass(frozen=True)
class WindowResult:
    window_id: int
    model: str
    version: str
    start_s: float
    end_s: float
    rows: int
    features: tuple[FeatureDrift, ...]
    opened: tuple[str, ...]
    resolved: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "window_id": self.window_id,
            "model": self.model,
            "version": self.version,
            "start": _utc(self.start_s).isoformat() + "Z",
            "end": _utc(self.end_s).isoformat() + "Z",
            "rows": self.rows,
            "enough_data": any(f.score is not None for f in self.features),
            "features": [f.__dict__ for f in self.features],
            "opened": list(self.opened),
            "resolved": list(self.resolved),
        }


def alert_key(model: str, version: str, feature: str) -> str:
    return f"drift:{model}:{version}:{feature}"


class Monitor:
    """Owns the reader and the loop; writes profiles, drift, alerts and events through the store."""

    def __init__(
        self,
        store: MetadataStore,
        reader: SegmentReader,
        config: MonitorConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.reader = reader
        self.config = config or MonitorConfig()
        self.clock = clock
        self._refs: dict[str, Reference | None] = {}
        self._gauges: dict[tuple[str, str, str], float] = {}
        self._run_lock = threading.Lock()  # one process() at a time (loop vs POST)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.segments_read = 0
        self.segment_errors = 0
        store.attach_reader(reader.sql, READER_TABLES)

    # -- the loop ---------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="mlplat-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.reader.close()

    def _loop(self) -> None:
        while not self._stop.wait(self.config.interval_s):
            try:
                self.process()
            except Exception:  # the loop must survive a bad segment or a busy store
                log.exception("monitor pass failed")

    def process(self, *, cut: bool = False) -> dict[str, Any]:
        """Read new closed segments, then evaluate the windows that are due (all pending on ``cut``)."""
        with self._run_lock:
            read = self.ingest()
            windows = self.evaluate(cutoff_s=math.inf) if cut else self.evaluate_due()
        return {"segments": read, "windows": [w.to_json() for w in windows]}

    # -- references -------------------------------------------------------------------

    def register_reference(
        self, bundle_id: str, model: str, version: str, data: Mapping[str, Any]
    ) -> Reference:
        try:
            ref = parse_reference(data)
        except ValueError as exc:
            raise RequestError(f"not a valid reference v2 for {bundle_id}: {exc}") from None
        if ref is None:
            raise RequestError(f"the reference of {bundle_id} is v1: drift needs reference v2")
        with self.store.write() as con:
            con.execute(
                "INSERT OR REPLACE INTO monitor_references VALUES (?, ?, ?, ?)",
                [bundle_id, model, version, ref.model_dump_json()],
            )
        self._refs[bundle_id] = ref
        return ref

    def reference(self, bundle_id: str) -> Reference | None:
        if bundle_id in self._refs and self._refs[bundle_id] is not None:
            return self._refs[bundle_id]
        ref: Reference | None = None
        rows = self.store.read("SELECT reference FROM monitor_references WHERE bundle_id = ?", [bundle_id])
        if rows:
            ref = parse_reference(orjson.loads(rows[0][0]))
        else:
            found = self.store.read("SELECT path FROM bundles WHERE bundle_id = ?", [bundle_id])
            if found:
                path = Path(found[0][0]) / "reference.json"
                try:
                    ref = parse_reference(orjson.loads(path.read_bytes()))
                except (OSError, ValueError) as exc:
                    log.warning("no usable reference for %s at %s: %s", bundle_id, path, exc)
        self._refs[bundle_id] = ref
        return ref

    # -- ingest -----------------------------------------------------------------------

    def ingest(self) -> int:
        done = {r[0] for r in self.store.read("SELECT path FROM monitor_segments WHERE kind = 'predictions'")}
        read = 0
        oldest: dict[str, str] = {}  # model folder -> its oldest segment on disk now
        for path in self.reader.closed("predictions"):
            name = str(path.relative_to(self.reader.root))
            folder, _, file = name.partition("/")
            if folder not in oldest or file < oldest[folder]:
                oldest[folder] = file
            if name in done:
                continue
            rows = 0
            try:
                data = self.reader.read(path)
                if data is None:  # removed by retention before we got to it
                    continue
                rows = data.rows
                profiles = self._profiles(data)
            except Exception as exc:  # one bad segment must not stop the others
                self.segment_errors += 1
                log.warning("cannot read segment %s: %s", path, exc)
                profiles = []
            with self.store.write() as con:
                self._write_profiles(con, profiles)
                con.execute(
                    "INSERT OR REPLACE INTO monitor_segments VALUES (?, 'predictions', ?, ?)",
                    [name, rows, _utc(self.clock())],
                )
            read += 1
            self.segments_read += 1
        self._forget_removed(done, oldest)
        return read

    def _forget_removed(self, done: set[str], oldest: Mapping[str, str]) -> None:
        """Drop the records of segments that retention removed, so ``monitor_segments`` (read
        whole on every pass) stays as long as the log. Serving removes the oldest first and a
        segment's name starts with the time it opened: a record is forgotten only when its
        model's folder still lists segments and all of them are newer than it (a listing that
        came back empty, say an unmounted volume, forgets nothing)."""
        gone = []
        for name in done:
            folder, _, file = name.partition("/")
            first = oldest.get(folder)
            if first is not None and file < first:
                gone.append(name)
        if gone:
            with self.store.write() as con:
                con.execute(
                    "DELETE FROM monitor_segments WHERE kind = 'predictions' AND list_contains(?, path)",
                    [gone],
                )

    def _profiles(self, data: SegmentData) -> list[Profile]:
        lay = self.reader.layout
        columns = data.columns
        if data.rows == 0:
            return []
        ts = columns[lay.time]
        epoch = (
            ts.astype("datetime64[us]").astype(np.int64) / 1e6 if ts.dtype.kind == "M" else ts.astype(float)
        )
        # One group per (bundle, model, version), from the columns' codes: no per-row strings.
        keys = [lay.bundle, lay.model, lay.version]
        codes = [columns[k].astype(np.int64) for k in keys]
        sizes = [len(data.strings[k]) + 1 for k in keys]
        combined = (codes[0] + 1) * sizes[1] * sizes[2] + (codes[1] + 1) * sizes[2] + (codes[2] + 1)
        single = bool(np.all(combined == combined[0]))
        groups = [combined[0]] if single else np.unique(combined)
        out: list[Profile] = []
        for group in groups:
            sel = np.ones(data.rows, dtype=bool) if single else combined == group
            first = int(np.argmax(sel))
            bundle_id, model, version = (
                str(data.strings[k][c[first]]) if c[first] >= 0 else ""
                for k, c in zip(keys, codes, strict=True)
            )
            ref = self.reference(bundle_id)
            if ref is None:
                continue
            rows = self._rows(data, sel, epoch, ref, model, version, bundle_id)
            out.extend(profile_rows(rows, ref, bucket_s=self.config.bucket_s))
        return out

    def _rows(
        self,
        data: SegmentData,
        sel: np.ndarray,
        epoch: np.ndarray,
        ref: Reference,
        model: str,
        version: str,
        bundle_id: str,
    ) -> Rows:
        lay = self.reader.layout
        columns = data.columns
        everything = bool(sel.all())

        def pick(name: str) -> np.ndarray:
            col = data.text(name) if name in data.strings else columns[name]
            return col if everything else col[sel]

        n = data.rows if everything else int(sel.sum())
        ok = np.ones(n, dtype=bool) if lay.status not in columns else pick(lay.status).astype(float) < 400
        rate = pick(lay.sample_rate) if lay.sample_rate in columns else None
        weight = np.ones(n) if rate is None else 1.0 / np.clip(rate.astype(float), 1e-9, 1.0)
        latency = pick(lay.latency_ms) if lay.latency_ms in columns else None
        features = {
            name: pick(lay.input_prefix + name) for name in ref.features if lay.input_prefix + name in columns
        }
        probabilities = labels = None
        out = output_slots(ref)
        if out is not None and lay.output_prefix + out[0] in columns:
            col = pick(lay.output_prefix + out[0])
            if out[1].kind == "probabilities":
                probabilities = _matrix(col, len(out[1].classes))
            else:
                labels = col
        return Rows(
            model=model,
            version=version,
            bundle_id=bundle_id,
            epoch_s=epoch if everything else epoch[sel],
            ok=ok,
            latency_ms=np.zeros(n) if latency is None else latency.astype(float),
            weight=weight,
            features=features,
            probabilities=probabilities,
            labels=labels,
        )

    def _write_profiles(self, con: duckdb.DuckDBPyConnection, profiles: Sequence[Profile]) -> None:
        feature_rows: list[Any] = []
        traffic_rows: list[Any] = []
        for p in profiles:
            minute = _utc(p.minute_s)
            for f in p.features.values():
                feature_rows.append(
                    [p.model, p.version, p.bundle_id, minute, f.feature, f.kind, f.rows, f.missing,
                     f.out_of_range, f.unseen, [int(c) for c in f.counts]]
                )  # fmt: skip
            traffic_rows.append(
                [p.model, p.version, p.bundle_id, minute, p.requests, p.errors, p.uncertain,
                 p.sampled_weight, p.scored, p.confidence_sum]
            )  # fmt: skip
        # One multi-row INSERT per table: DuckDB pays about a millisecond per statement.
        for table, columns, rows in (
            ("profiles", "model_name, version, bundle_id, minute, feature, kind, rows, missing,"
             " out_of_range, unseen, counts", feature_rows),
            ("traffic", "model_name, version, bundle_id, minute, requests, errors, uncertain,"
             " sampled_weight, scored, confidence_sum", traffic_rows),
        ):  # fmt: skip
            for start in range(0, len(rows), 500):
                batch = rows[start : start + 500]
                marks = "(" + ", ".join("?" for _ in batch[0]) + ")"
                con.execute(
                    f"INSERT INTO {table} ({columns}) VALUES {', '.join(marks for _ in batch)}",
                    [v for row in batch for v in row],
                )

    # -- windows ----------------------------------------------------------------------

    def evaluate_due(self) -> list[WindowResult]:
        """Each aligned window boundary the clock has passed (one window per boundary)."""
        rows = self.store.read("SELECT min(minute) FROM traffic WHERE window_id IS NULL")
        if not rows or rows[0][0] is None:
            return []
        w = self.config.window_s
        first = math.floor(_epoch(rows[0][0]) / w) * w + w
        now = self.clock()
        results: list[WindowResult] = []
        boundary = first
        while boundary + self.config.grace_s <= now:
            results.extend(self.evaluate(cutoff_s=boundary))
            boundary += w
        return results

    def evaluate(self, *, cutoff_s: float) -> list[WindowResult]:
        """One window per model version from the pending profiles before ``cutoff_s``."""
        cutoff = _utc(min(cutoff_s, 32503680000.0))
        groups = self.store.read(
            "SELECT model_name, version, min(minute), max(minute) FROM traffic"
            " WHERE window_id IS NULL AND minute < ? GROUP BY 1, 2 ORDER BY 1, 2",
            [cutoff],
        )
        results = []
        for model, version, first, last in groups:
            end_s = cutoff_s if math.isfinite(cutoff_s) else _epoch(last) + self.config.bucket_s
            results.append(self._window(model, version, _epoch(first), end_s, cutoff))
        return results

    def _window(
        self, model: str, version: str, start_s: float, end_s: float, cutoff: datetime
    ) -> WindowResult:
        rule = self.config.thresholds
        with self.store.write() as con:
            row = con.execute("SELECT nextval('drift_window_seq')").fetchone()
            assert row is not None
            window_id = int(row[0])
            where = "model_name = ? AND version = ? AND window_id IS NULL AND minute < ?"
            params = [model, version, cutoff]
            con.execute(f"UPDATE traffic SET window_id = ? WHERE {where}", [window_id, *params])
            con.execute(f"UPDATE profiles SET window_id = ? WHERE {where}", [window_id, *params])
            traffic = con.execute(
                "SELECT sum(requests), any_value(bundle_id) FROM traffic WHERE window_id = ?", [window_id]
            ).fetchone()
            parts = con.execute(
                "SELECT feature, counts, missing, out_of_range, unseen FROM profiles WHERE window_id = ?",
                [window_id],
            ).fetchall()
        requests = int(traffic[0] or 0) if traffic else 0
        bundle_id = str(traffic[1]) if traffic and traffic[1] else ""
        summed: dict[str, np.ndarray] = {}
        quality: dict[str, np.ndarray] = {}
        for feature, counts, missing, out_of_range, unseen in parts:
            arr = np.asarray(counts, dtype=np.int64)
            summed[feature] = summed[feature] + arr if feature in summed else arr
            q = np.asarray([missing, out_of_range, unseen], dtype=np.int64)
            quality[feature] = quality[feature] + q if feature in quality else q
        ref = self.reference(bundle_id) if bundle_id else None
        drifts: list[FeatureDrift] = []
        if ref is not None:
            for name, fref in ref.features.items():
                if name in summed:
                    m, o, u = (int(v) for v in quality[name])
                    drifts.append(feature_drift(fref, summed[name], rule=rule, quality=(m, o, u)))
            out = output_slots(ref)
            if out is not None and OUTPUT in summed:
                drifts.append(output_drift(out[1], summed[OUTPUT], rule=rule))
        opened, resolved = self._alerts(model, version, drifts, end_s)
        with self.store.write() as con:
            if drifts:
                con.executemany(
                    "INSERT INTO drift VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        [window_id, model, version, _utc(start_s), _utc(end_s), d.feature, d.kind, d.rows,
                         d.psi, d.js, d.ks, d.score, d.state, d.missing_share, d.out_of_range_share,
                         d.unseen_share]
                        for d in drifts
                    ],
                )  # fmt: skip
        for d in drifts:
            self._gauges[(model, version, d.feature)] = d.score if d.score is not None else math.nan
        return WindowResult(
            window_id, model, version, start_s, end_s, requests, tuple(drifts), opened, resolved
        )

    def _alerts(
        self, model: str, version: str, drifts: Sequence[FeatureDrift], end_s: float
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        rule = self.config.thresholds
        opened: list[str] = []
        resolved: list[str] = []
        now = _utc(end_s if math.isfinite(end_s) else self.clock())
        for d in drifts:
            key = alert_key(model, version, d.feature)
            found = self.store.read(
                "SELECT open, over_streak, under_streak, severity FROM alerts WHERE dedupe_key = ?", [key]
            )
            state = (
                AlertState(key, bool(found[0][0]), int(found[0][1]), int(found[0][2]), str(found[0][3]))
                if found
                else AlertState(key)
            )
            over = None if d.score is None else d.score >= 1.0
            new, transition = step(state, over, severe=d.severe, rule=rule)
            with self.store.write() as con:
                con.execute(
                    "INSERT INTO alerts (dedupe_key, model_name, version, feature, open, severity,"
                    " over_streak, under_streak, score, opened_at, resolved_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?) ON CONFLICT (dedupe_key) DO UPDATE SET"
                    " open = excluded.open, severity = excluded.severity, over_streak = excluded.over_streak,"
                    " under_streak = excluded.under_streak, score = coalesce(excluded.score, alerts.score),"
                    " opened_at = CASE WHEN excluded.open AND NOT alerts.open THEN excluded.opened_at"
                    " ELSE alerts.opened_at END,"
                    " resolved_at = CASE WHEN alerts.open AND NOT excluded.open THEN excluded.updated_at"
                    " ELSE alerts.resolved_at END, updated_at = excluded.updated_at",
                    [key, model, version, d.feature, new.open, new.severity, new.over, new.under, d.score,
                     now if new.open else None, now],
                )  # fmt: skip
            if transition is None:
                continue
            what = "output class mix" if d.feature == OUTPUT else f"feature {d.feature}"
            if transition == "opened":
                opened.append(key)
                message = (
                    f"drift alert: {what} of {model} v{version} drifted for {rule.open_after} windows"
                    f" (score {d.score:.2f}, PSI {d.psi:.3f})"
                )
            else:
                resolved.append(key)
                message = f"drift resolved: {what} of {model} v{version} back under the trigger"
            self.store.record_event(
                EventRecord(
                    kind=f"alert_{transition}",
                    message=message,
                    version=version,
                    payload={
                        "dedupe_key": key,
                        "model": model,
                        "feature": d.feature,
                        "severity": new.severity,
                        "score": d.score,
                        "psi": d.psi,
                        "js": d.js,
                        "ks": d.ks,
                    },
                )
            )
        return tuple(opened), tuple(resolved)

    # -- what the service answers -------------------------------------------------------

    def metrics_text(self) -> str:
        """Prometheus text: drift score per feature (last window), open alerts, segments read."""
        lines = [
            "# HELP mlplat_monitor_enabled 1 when the service monitors a prediction log (--monitor-dir).",
            "# TYPE mlplat_monitor_enabled gauge",
            "mlplat_monitor_enabled 1",
            "# HELP mlplat_drift_score Drift score of the last evaluated window (>= 1: over the trigger).",
            "# TYPE mlplat_drift_score gauge",
        ]
        for (model, version, feature), score in sorted(self._gauges.items()):
            value = "NaN" if math.isnan(score) else repr(float(score))
            lines.append(
                f'mlplat_drift_score{{model="{_label(model)}",version="{_label(version)}",'
                f'feature="{_label(feature)}"}} {value}'
            )
        open_rows = self.store.read(
            "SELECT model_name, count(*) FROM alerts WHERE open GROUP BY 1 ORDER BY 1"
        )
        lines += ["# HELP mlplat_alerts_open Drift alerts open now.", "# TYPE mlplat_alerts_open gauge"]
        for model, count in open_rows:
            lines.append(f'mlplat_alerts_open{{model="{_label(model)}"}} {int(count)}')
        lines += [
            "# HELP mlplat_monitor_segments_read_total Closed log segments turned into profiles.",
            "# TYPE mlplat_monitor_segments_read_total counter",
            f"mlplat_monitor_segments_read_total {self.segments_read}",
            "# HELP mlplat_monitor_segment_errors_total Segments that could not be read.",
            "# TYPE mlplat_monitor_segment_errors_total counter",
            f"mlplat_monitor_segment_errors_total {self.segment_errors}",
        ]
        return "\n".join(lines) + "\n"

    def report(self, window_s: int, model: str | None = None) -> dict[str, Any]:
        """What ``mlplat monitor`` shows: the last ``window_s`` of traffic, per model version."""
        since = _utc(self.clock() - window_s)
        where = "minute >= ?"
        params: list[Any] = [since]
        if model:
            where += " AND model_name = ?"
            params.append(model)
        traffic = self.store.read(
            "SELECT model_name, version, sum(requests), sum(errors), sum(uncertain), sum(scored),"
            f" sum(confidence_sum), min(minute), max(minute), any_value(bundle_id), sum(sampled_weight)"
            f" FROM traffic WHERE {where}"
            " GROUP BY 1, 2 ORDER BY min(minute)",
            params,
        )
        latency = self.store.read(
            f"SELECT model_name, version, counts FROM profiles WHERE feature = '{LATENCY}' AND {where}",
            params,
        )
        lat: dict[tuple[str, str], np.ndarray] = {}
        for m, v, counts in latency:
            arr = np.asarray(counts, dtype=np.int64)
            lat[(m, v)] = lat[(m, v)] + arr if (m, v) in lat else arr
        versions = []
        for m, v, requests, errors, uncertain, scored, conf, first, last, bundle_id, weight in traffic:
            counts = lat.get((m, v))
            span = max(_epoch(last) + self.config.bucket_s - _epoch(first), 1.0)
            latest = self._latest_drift(m, v)
            ref = self.reference(str(bundle_id)) if bundle_id else None
            estimated = None
            out = output_slots(ref) if ref is not None else None
            if out is not None and scored:
                from mlplat_runtime.metadata.profiles import estimated_accuracy

                metrics = self._test_accuracy(str(bundle_id))
                estimated = estimated_accuracy(out[1], float(conf) / float(scored), metrics)
            versions.append(
                {
                    "model": m,
                    "version": v,
                    "bundle_id": bundle_id,
                    "first": first.isoformat() + "Z",
                    "last": last.isoformat() + "Z",
                    "requests": int(requests),
                    # rows per second served: a row kept at sample rate r stands for 1/r rows
                    "request_rate": float(weight or requests) / span,
                    "error_rate": float(errors) / float(requests) if requests else 0.0,
                    "uncertain_share": float(uncertain) / float(scored) if scored else None,
                    "latency_p50_ms": None if counts is None else latency_quantile(counts, 0.5),
                    "latency_p99_ms": None if counts is None else latency_quantile(counts, 0.99),
                    "estimated_accuracy": estimated,
                    "features": latest,
                }
            )
        alerts = self.alerts(open_only=True, model=model)
        feedback = self.feedback_windows(window_s, {(v["model"], v["bundle_id"]) for v in versions})
        swaps = [
            {"model": v["model"], "version": v["version"], "at": v["first"]} for v in versions[1:]
        ]  # a new version in the window: its first row marks the swap
        return {
            "window_s": window_s,
            "versions": versions,
            "alerts": alerts,
            "swaps": swaps,
            "feedback": feedback,
        }

    def feedback_windows(self, window_s: int, bundles: set[tuple[str, str]]) -> list[dict[str, Any]]:
        """Realised accuracy (labels) or MAE (values) per prediction-time window (``window_s``
        of the config), with label coverage: feedback joined on (model, request id, row)."""
        if not self.reader.closed("feedback"):
            return []
        since = _utc(self.clock() - window_s)
        bucket = max(int(self.config.window_s), 1)
        out: list[dict[str, Any]] = []
        for model, bundle_id in sorted(bundles):
            ref = self.reference(bundle_id) if bundle_id else None
            if ref is None or not ref.outputs:
                continue
            name, oref = next(iter(ref.outputs.items()))
            column = '"' + (self.reader.layout.output_prefix + name).replace('"', '""') + '"'
            if oref.kind == "probabilities":
                predicted, numeric = (
                    f"CAST(list_position({column}, list_max({column})) - 1 AS VARCHAR)",
                    False,
                )
            elif oref.kind == "label":
                predicted, numeric = f"CAST({column} AS VARCHAR)", False
            else:
                predicted, numeric = f"CAST({column} AS DOUBLE)", True
            quality = (
                "avg(abs(f.value - p.predicted))"
                if numeric
                else "avg(CAST(f.label = p.predicted AS INTEGER))"
            )
            try:
                rows = self.reader.rows(
                    f"WITH p AS (SELECT model, version, request_id, row, time, {predicted} AS predicted"
                    " FROM predictions WHERE model = ? AND bundle_id = ? AND time >= ? AND status < 400),"
                    " f AS (SELECT model, request_id, row, any_value(label) AS label,"
                    " any_value(value) AS value FROM feedback WHERE model = ? GROUP BY ALL)"
                    f" SELECT p.version, time_bucket(INTERVAL '{bucket} seconds', p.time) AS ws, count(*),"
                    f" count(f.request_id), {quality} FROM p LEFT JOIN f USING (model, request_id, row)"
                    " GROUP BY ALL ORDER BY ws",
                    [model, bundle_id, since, model],
                )
            except duckdb.Error as exc:  # a log without the output column, an old segment
                log.warning("feedback metrics of %s: %s", model, exc)
                continue
            for version, ws, predictions, labelled, quality_value in rows:
                out.append(
                    {
                        "model": model,
                        "version": version,
                        "window_start": ws.isoformat() + "Z",
                        "predictions": int(predictions),
                        "labelled": int(labelled),
                        "coverage": int(labelled) / int(predictions) if predictions else 0.0,
                        "accuracy": None if numeric or not labelled else float(quality_value),
                        "mae": float(quality_value) if numeric and labelled else None,
                    }
                )
        return out

    def _test_accuracy(self, bundle_id: str) -> float | None:
        rows = self.store.read(
            "SELECT manifest->'metrics'->>'accuracy' FROM bundles WHERE bundle_id = ?", [bundle_id]
        )
        try:
            return float(rows[0][0]) if rows and rows[0][0] is not None else None
        except ValueError:
            return None

    def _latest_drift(self, model: str, version: str) -> list[dict[str, Any]]:
        rows = self.store.read(
            "SELECT feature, kind, rows, psi, js, ks, score, state, missing_share, out_of_range_share,"
            " unseen_share, window_end FROM drift WHERE window_id = (SELECT max(window_id) FROM drift"
            " WHERE model_name = ? AND version = ?) ORDER BY score DESC NULLS LAST, feature",
            [model, version],
        )
        names = ("feature", "kind", "rows", "psi", "js", "ks", "score", "state", "missing_share",
                 "out_of_range_share", "unseen_share", "window_end")  # fmt: skip
        return [
            {
                k: (v.isoformat() + "Z" if isinstance(v, datetime) else v)
                for k, v in zip(names, r, strict=True)
            }
            for r in rows
        ]

    def alerts(self, *, open_only: bool = False, model: str | None = None) -> list[dict[str, Any]]:
        clauses, params = [], []
        if open_only:
            clauses.append("open")
        if model:
            clauses.append("model_name = ?")
            params.append(model)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        rows = self.store.read(
            "SELECT dedupe_key, model_name, version, feature, open, severity, score, opened_at, resolved_at"
            f" FROM alerts {where} ORDER BY open DESC, opened_at DESC NULLS LAST, dedupe_key",
            params,
        )
        names = (
            "dedupe_key",
            "model",
            "version",
            "feature",
            "open",
            "severity",
            "score",
            "opened_at",
            "resolved_at",
        )
        out = []
        for r in rows:
            item = dict(zip(names, r, strict=True))
            if not item["open"] and item["opened_at"] is None and item["resolved_at"] is None:
                continue  # a streak that never opened is not an alert
            for k in ("opened_at", "resolved_at"):
                if isinstance(item[k], datetime):
                    item[k] = item[k].isoformat() + "Z"
            out.append(item)
        return out

    def history(self, model: str, feature: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """Drift per window over time (the Monitoring screen's chart), oldest first."""
        params: list[Any] = [model]
        clause = ""
        if feature:
            clause = " AND d.feature = ?"
            params.append(feature)
        rows = self.store.read(
            "SELECT * FROM (SELECT d.window_id, d.version, d.window_end, d.feature, d.score, d.psi, d.state,"
            " t.requests, t.errors, d.rows FROM drift d LEFT JOIN"
            " (SELECT window_id, sum(requests) AS requests, sum(errors) AS errors FROM traffic GROUP BY 1) t"
            " USING (window_id)"
            f" WHERE d.model_name = ?{clause} ORDER BY d.window_id DESC LIMIT ?) ORDER BY window_id",
            [*params, limit],
        )
        names = (
            "window_id",
            "version",
            "window_end",
            "feature",
            "score",
            "psi",
            "state",
            "requests",
            "errors",
            "rows",
        )
        points = [
            {
                k: (v.isoformat() + "Z" if isinstance(v, datetime) else v)
                for k, v in zip(names, r, strict=True)
            }
            for r in rows
        ]
        ids = sorted({int(p["window_id"]) for p in points})
        p99: dict[int, float | None] = {}
        if ids:
            marks = ", ".join("?" for _ in ids)
            latency: dict[int, np.ndarray] = {}
            for window_id, counts in self.store.read(
                f"SELECT window_id, counts FROM profiles WHERE feature = '{LATENCY}'"
                f" AND window_id IN ({marks})",
                ids,
            ):
                arr = np.asarray(counts, dtype=np.int64)
                latency[window_id] = latency[window_id] + arr if window_id in latency else arr
            p99 = {w: latency_quantile(c, 0.99) for w, c in latency.items()}
        for point in points:
            point["latency_p99_ms"] = p99.get(int(point["window_id"]))
        return points

    def histogram(self, model: str, version: str, feature: str, window_s: int) -> dict[str, Any]:
        """Training vs live shares in the feature's slots over the last ``window_s`` (the screen)."""
        rows = self.store.read(
            "SELECT counts, bundle_id FROM profiles WHERE model_name = ? AND version = ? AND feature = ?"
            " AND minute >= ?",
            [model, version, feature, _utc(self.clock() - window_s)],
        )
        live: np.ndarray | None = None
        bundle_id = ""
        for counts, b in rows:
            arr = np.asarray(counts, dtype=np.int64)
            live = live + arr if live is not None else arr
            bundle_id = b
        ref = self.reference(bundle_id) if bundle_id else None
        fref = ref.features.get(feature) if ref is not None else None
        return {
            "feature": feature,
            "kind": fref.kind if fref else None,
            "edges": list(fref.edges) if fref else [],
            "categories": [str(c) for c in fref.categories] if fref else [],
            "training": list(fref.counts) if fref else [],
            "live": [] if live is None else [int(c) for c in live],
        }


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _matrix(col: np.ndarray, width: int) -> np.ndarray:
    """Per-row probabilities -> a 2-D float array (NaN rows for nulls or other widths)."""
    if col.ndim == 2:
        if col.shape[1] == width:
            return col.astype(np.float64)
        return np.full((len(col), width), np.nan)
    out = np.full((len(col), width), np.nan)
    for i, v in enumerate(col):
        if v is not None and len(v) == width:
            out[i] = np.asarray(v, dtype=np.float64)
    return out


def _column(chunked: Any) -> tuple[np.ndarray, list[Any] | None]:
    """An Arrow column -> numpy: numbers as float64 with NaN for nulls (ints without nulls stay
    ints), timestamps as datetime64, regular lists as one 2-D array, text as int codes (-1 for
    null) with its dictionary (one Python string per distinct value, not per row)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    col = chunked.combine_chunks() if hasattr(chunked, "combine_chunks") else chunked
    kind = col.type
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        n = len(col)
        if n and col.null_count == 0:
            lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
            if len(lengths) and (lengths == lengths[0]).all():
                flat = pc.list_flatten(col).to_numpy(zero_copy_only=False).astype(np.float64)
                return flat.reshape(n, int(lengths[0])), None
        return np.asarray(col.to_pylist(), dtype=object), None
    if pa.types.is_timestamp(kind):
        return np.asarray(col.cast(pa.timestamp("us")).to_numpy(zero_copy_only=False)), None
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        if col.null_count == 0:
            return np.asarray(col.to_numpy(zero_copy_only=False)), None
        return np.asarray(col.cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False)), None
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_dictionary(kind):
        encoded = col if pa.types.is_dictionary(kind) else pc.dictionary_encode(col)
        codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        return codes, encoded.dictionary.to_pylist()
    return np.asarray(col.to_pylist(), dtype=object), None
