"""The prediction log: serving's capture of requests into a bounded queue, and its writer thread.

Hot path (the event loop thread): ``capture`` / ``capture_failure`` decide sampling, append one
tuple that holds the request's own arrays (no copy, no formatting) to a ``deque`` and return
the request id. The queue is bounded in requests and in bytes: when it is full the request is
dropped and counted, never waited for. Sampling, per model: every row up to ``budget`` rows in
each second; above it, a request is kept when the CRC-32 of its request id falls under the
rate ``budget / max(rows seen in the previous second, rows seen in this one so far)``, so the
same ids are kept whatever order they come in (and on every replica under the same load), and
a feedback label finds its prediction. Each row records the probability it was kept, so
``sum(1 / sample_rate)`` estimates the requests served. Failures are never sampled out.

The writer thread drains the queue every ``flush_ms``, groups requests by model version and
closes a segment every ``segment_seconds`` or ``segment_rows`` (``segments.write_segment``:
zstd Parquet through a temp file and a rename). At start it removes stale temp files; after
each close it applies retention (age, then total size, oldest first). A write that fails
(disk full) is logged and counted; serving goes on. ``close`` flushes what is queued.

``POST /v2/feedback`` lands here too (``feedback``): parsed and checked on the loop (bodies are
capped by the HTTP layer), queued, written as feedback segments with the same discipline.

Data plane: numpy, duckdb (imported on the writer thread), orjson, pydantic.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import secrets
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mlplat_runtime.errors import RequestError, ServiceError
from mlplat_runtime.monitoring import logschema
from mlplat_runtime.monitoring.segments import Layout, layout_of, prediction_columns, write_segment

STALE_TEMP_S = 60.0  # a temp file older than this at start was left by a dead writer
log = logging.getLogger("mlplat.serving.predlog")

MAX_FEEDBACK_ITEMS = 10_000  # per request
_HASH_SPACE = 1 << 32
_perf_counter = time.perf_counter


@dataclass(frozen=True)
class LogConfig:
    """How serving logs predictions (``[monitor]`` in mlplat.toml, passed as ``--log-*`` flags)."""

    root: Path
    budget: int = 1000  # rows per second per model kept in full
    queue_requests: int = 10_000
    queue_mb: int = 64
    flush_ms: int = 200
    segment_seconds: float = 10.0
    segment_rows: int = 100_000
    retention_hours: float = 168.0
    retention_mb: int = 1024
    exclude: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if self.budget < 0 or self.queue_requests < 1 or self.queue_mb < 1 or self.segment_rows < 1:
            raise ServiceError(
                "the prediction log needs budget >= 0 and positive queue, queue-mb and segment rows",
                hint="check the --log-* flags (or [monitor] in mlplat.toml)",
            )


class FeedbackItem(BaseModel):
    """One ground-truth label (classifiers) or value (regression) for a logged prediction."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=128)
    request_id: str = Field(min_length=1, max_length=256)
    row: int = Field(default=0, ge=0)
    label: str | int | float | bool | None = None
    value: float | None = None

    @model_validator(mode="after")
    def _one_of(self) -> FeedbackItem:
        if (self.label is None) == (self.value is None):
            raise ValueError("give exactly one of 'label' and 'value'")
        return self


class _Segment:
    """Requests of one model version (or feedback rows) waiting for their segment to close."""

    def __init__(self, opened: float) -> None:
        self.opened = opened
        self.items: list[Any] = []
        self.rows = 0


class PredictionLog:
    def __init__(self, config: LogConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.boot = secrets.token_hex(4)
        self.captured = 0  # rows queued (event loop thread only)
        self.dropped = 0  # rows dropped because the queue was full
        self.sampled_out = 0  # rows left out by sampling
        self.feedback_rows = 0
        self.written = 0  # rows in closed segments (writer thread only)
        self.segments = 0
        self.write_errors = 0
        self._ids = itertools.count(1)
        self._queue: deque[tuple[Any, ...]] = deque()  # Captured's fields, as plain tuples
        self._feedback: deque[tuple[float, FeedbackItem]] = deque()
        self._queued_bytes = 0  # added by the loop thread ...
        self._done_bytes = 0  # ... and by the writer thread: each counter has one writer
        self._max_bytes = config.queue_mb * 1024 * 1024
        self._max_items = config.queue_requests
        self._budget = config.budget
        self._append = self._queue.append
        self._windows: dict[str, list[float]] = {}  # model -> [second, rows seen, rate]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._segment_seq = 0

    # -- hot path (event loop thread) ------------------------------------------------------
    def next_id(self) -> str:
        return f"{self.boot}-{next(self._ids)}"

    def capture(
        self,
        model: Any,
        request_id: str | None,
        inputs: dict[str, np.ndarray],
        names: Sequence[str],
        arrays: Sequence[np.ndarray],
        t0: float,
    ) -> str:
        """Queue a served request (or count it dropped); returns its request id.

        Every attribute read here is paid on each request: the body stays short and flat, and
        the queued item is a plain tuple in ``segments.Captured``'s field order.
        """
        latency = _perf_counter() - t0
        rid = request_id if request_id is not None else f"{self.boot}-{next(self._ids)}"
        wall = self.clock()
        rows = 1
        nbytes = 0
        for arr in inputs.values():
            rows = arr.shape[0] if arr.ndim else 1
            nbytes += arr.nbytes
        window = self._windows.get(model.name)
        if window is None or window[0] != int(wall):
            window = self._roll(model.name, int(wall), window)
        window[1] += rows
        rate = 1.0
        if window[1] > self._budget:
            # the lower of what the last second saw and what this one has seen so far
            rate = min(window[2], self._budget / window[1])
            if zlib.crc32(rid.encode()) >= rate * _HASH_SPACE:
                self.sampled_out += rows
                return rid
        if len(self._queue) >= self._max_items or self._queued_bytes - self._done_bytes > self._max_bytes:
            self.dropped += rows
            return rid
        self._queued_bytes += nbytes
        self._append((wall, model, rid, inputs, names, arrays, 200, None, latency, rate, rows, nbytes))
        self.captured += rows
        return rid

    def capture_failure(
        self,
        model: Any,
        request_id: str | None,
        inputs: dict[str, np.ndarray] | None,
        status: int,
        error: str,
        t0: float,
    ) -> str:
        """Queue a failed request (status and error, no outputs); failures are not sampled."""
        rid = request_id if request_id is not None else self.next_id()
        rows = 1
        nbytes = 0
        for arr in (inputs or {}).values():
            rows = arr.shape[0] if arr.ndim else 1
            nbytes += arr.nbytes
        if len(self._queue) >= self._max_items or self._queued_bytes - self._done_bytes > self._max_bytes:
            self.dropped += rows
            return rid
        self._queued_bytes += nbytes
        latency = _perf_counter() - t0
        self._append(
            (self.clock(), model, rid, inputs, (), (), status, error[:1000], latency, 1.0, rows, nbytes)
        )
        self.captured += rows
        return rid

    def _roll(self, model: str, second: int, old: list[float] | None) -> list[float]:
        """A new one-second window; its rate from what the previous second saw."""
        seen = old[1] if old is not None and old[0] == second - 1 else 0.0
        budget = self.config.budget
        rate = 1.0 if seen <= budget else max(budget / seen, 1.0 / _HASH_SPACE)
        window = self._windows[model] = [second, 0, rate]
        return window

    def feedback(self, body: bytes) -> bytes:
        """``POST /v2/feedback``: one item, a JSON list of them, or ``{"feedback": [...]}``."""
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise RequestError(f"feedback body is not JSON: {exc}") from None
        if isinstance(doc, dict) and "feedback" in doc:
            doc = doc["feedback"]
        raw = doc if isinstance(doc, list) else [doc]
        if not raw or len(raw) > MAX_FEEDBACK_ITEMS:
            raise RequestError(f"send 1 to {MAX_FEEDBACK_ITEMS} feedback items, got {len(raw)}")
        try:
            items = [FeedbackItem.model_validate(r) for r in raw]
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise RequestError(
                f"feedback item is wrong at '{where}': {first['msg']}; each item is "
                '{"model": ..., "request_id": ..., "row": 0, "label": ... | "value": ...}'
            ) from None
        if len(self._feedback) + len(items) > self.config.queue_requests * 10:
            raise ServiceError("the feedback queue is full; retry in a moment")
        now = self.clock()
        self._feedback.extend((now, item) for item in items)
        self.feedback_rows += len(items)
        return orjson.dumps({"accepted": len(items)})

    # -- /metrics ----------------------------------------------------------------------------
    def metric_lines(self) -> list[str]:
        series = (
            ("mlplat_predlog_captured_rows_total", "counter", "Rows queued for the log", self.captured),
            ("mlplat_predlog_dropped_rows_total", "counter", "Rows dropped because the log queue was full",
             self.dropped),
            ("mlplat_predlog_sampled_out_rows_total", "counter", "Rows left out by sampling above the budget",
             self.sampled_out),
            ("mlplat_predlog_queue_depth", "gauge", "Requests waiting for the log writer", len(self._queue)),
            ("mlplat_predlog_written_rows_total", "counter", "Rows in closed segments", self.written),
            ("mlplat_predlog_segments_total", "counter", "Segments closed", self.segments),
            ("mlplat_predlog_write_errors_total", "counter", "Segments that could not be written",
             self.write_errors),
            ("mlplat_feedback_rows_total", "counter", "Feedback rows accepted", self.feedback_rows),
        )  # fmt: skip
        out: list[str] = []
        for name, kind, doc, value in series:
            out += [f"# HELP {name} {doc}", f"# TYPE {name} {kind}", f"{name} {value}"]
        return out

    # -- writer thread -------------------------------------------------------------------------
    def start(self) -> None:
        """Create the folder, remove stale temp files, start the writer thread."""
        root = self.config.root
        try:
            root.mkdir(parents=True, exist_ok=True)
            # A temp file lives only while one segment is written: one older than a minute was
            # left by a process that died mid-write. Younger ones may be another worker's.
            cutoff = time.time() - STALE_TEMP_S
            for stale in root.glob(f"*/*{logschema.TEMP_SUFFIX}"):
                with contextlib.suppress(FileNotFoundError):
                    if stale.stat().st_mtime < cutoff:
                        stale.unlink(missing_ok=True)
        except OSError as exc:
            raise ServiceError(
                f"cannot use {root} for the prediction log: {exc.strerror}",
                hint="pick a writable --log-dir, or turn the log off ([monitor] log = false)",
            ) from None
        self._thread = threading.Thread(target=self._run, name="mlplat-predlog", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued and open as closed segments, then stop the writer."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        import duckdb

        # Not niced: this thread holds the GIL while it builds columns, and a low-priority
        # holder that the kernel does not schedule would stall the event loop (p99 spikes).
        con = duckdb.connect(":memory:", config={"threads": 1, "memory_limit": "512MB"})
        open_segments: dict[tuple[str, str], _Segment] = {}
        layouts: dict[tuple[str, str], Layout] = {}
        feedback = _Segment(self.clock())
        last_retention = 0.0
        try:
            while True:
                stopping = self._stop.wait(self.config.flush_ms / 1000.0)
                now = self.clock()
                self._drain(open_segments, now)
                while self._feedback:
                    feedback.items.append(self._feedback.popleft())
                    feedback.rows += 1
                for key, seg in list(open_segments.items()):
                    if (
                        stopping
                        or seg.rows >= self.config.segment_rows
                        or now - seg.opened >= self.config.segment_seconds
                    ):
                        del open_segments[key]
                        self._close_predictions(con, key, seg, layouts)
                if feedback.items and (
                    stopping
                    or feedback.rows >= self.config.segment_rows
                    or now - feedback.opened >= self.config.segment_seconds
                ):
                    self._close_feedback(con, feedback)
                    feedback = _Segment(now)
                elif not feedback.items:
                    feedback.opened = now
                if stopping or now - last_retention >= 30.0:
                    self._retention(now)
                    last_retention = now
                if stopping and not self._queue and not self._feedback:
                    return
        finally:
            con.close()

    def _drain(self, open_segments: dict[tuple[str, str], _Segment], now: float) -> None:
        queue = self._queue
        done = 0
        while queue:
            item = queue.popleft()
            done += item[11]
            model = item[1]
            key = (model.name, model.bundle_id)
            seg = open_segments.get(key)
            if seg is None:
                seg = open_segments[key] = _Segment(now)
            seg.items.append(item)
            seg.rows += item[10]
        self._done_bytes += done

    def _final_path(self, folder: str, opened: float) -> Path:
        self._segment_seq += 1
        name = logschema.segment_name(datetime.fromtimestamp(opened, UTC), self.boot, self._segment_seq)
        return self.config.root / folder / name

    def _close_predictions(
        self, con: Any, key: tuple[str, str], seg: _Segment, layouts: dict[tuple[str, str], Layout]
    ) -> None:
        model = seg.items[0][1]
        try:
            layout = layouts.get(key)
            if layout is None:
                layout = layouts[key] = layout_of(model, self.config.exclude)
            data, select = prediction_columns(seg.items, layout)
            write_segment(con, data, select, self._final_path(model.name, seg.opened))
        except Exception:
            self.write_errors += 1
            log.exception(
                "could not write a prediction log segment of %s (%d requests lost)", key[0], len(seg.items)
            )
            return
        self.written += len(data["row"])
        self.segments += 1

    def _close_feedback(self, con: Any, seg: _Segment) -> None:
        items: list[tuple[float, FeedbackItem]] = seg.items
        data = {
            "time": (np.array([t for t, _ in items]) * 1e6).astype("datetime64[us]"),
            "model": np.array([i.model for _, i in items], dtype=object),
            "request_id": np.array([i.request_id for _, i in items], dtype=object),
            "row": np.array([i.row for _, i in items], dtype=np.int32),
            "label": np.array(
                [None if i.label is None else _label_text(i.label) for _, i in items], dtype=object
            ),
            "value": np.array([np.nan if i.value is None else i.value for _, i in items], dtype=np.float64),
        }
        select = ", ".join(logschema.quote(c) for c, _ in logschema.FEEDBACK_COLUMNS)
        try:
            write_segment(con, data, select, self._final_path(logschema.FEEDBACK_DIR, seg.opened))
        except Exception:
            self.write_errors += 1
            log.exception("could not write a feedback segment (%d rows lost)", len(items))
            return
        self.segments += 1

    def _retention(self, now: float) -> None:
        """Delete closed segments older than the retention age, then the oldest over the size cap."""
        try:
            segments = logschema.closed_segments(self.config.root)
            keep: list[tuple[Path, int]] = []
            cutoff = now - self.config.retention_hours * 3600.0
            for path in segments:
                opened = logschema.segment_opened(path)
                if opened is not None and opened.timestamp() < cutoff:
                    path.unlink(missing_ok=True)
                else:
                    keep.append((path, path.stat().st_size))
            total = sum(size for _, size in keep)
            cap = self.config.retention_mb * 1024 * 1024
            for path, size in sorted(keep, key=lambda ps: ps[0].name):
                if total <= cap:
                    break
                path.unlink(missing_ok=True)
                total -= size
        except OSError:
            log.exception("prediction log retention failed; it is tried again in 30 s")


def _label_text(label: str | int | float | bool) -> str:
    return label if isinstance(label, str) else orjson.dumps(label).decode()
