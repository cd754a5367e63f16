"""The prediction log: serving's capture of requests into a bounded queue, and its writer thread.

Hot path (the event loop thread): ``capture`` / ``capture_failure`` read the clock, name the
request, append one tuple that holds the request's own arrays (no copy, no formatting) to a
``deque`` and return the request id; a request that finds the queue full is dropped and
counted, never waited for. Nothing else happens per request: in a serving process every
line on the hot path runs with cold caches, so sampling and sizing are the writer's, done
with numpy on each batch it takes. The queue's bound is in requests (``queue_requests``),
lowered by the writer when the requests it sees are so large that the queue would pass
``queue_mb``; the writer also closes its open segments early when they hold more than that.

Sampling, per model: every row up to ``budget`` rows in each second of wall time; above it,
a request is kept when the CRC-32 of its request id falls under the rate ``budget / max(rows
seen in the previous second, rows seen in this one so far)``, so the same ids are kept
whatever order they come in (and on every replica under the same load), and a feedback label
finds its prediction. Each row records the probability it was kept, so ``sum(1 /
sample_rate)`` estimates the requests served. Failures are never sampled out. The captured
and sampled-out counters move when the writer takes the queue (every ``flush_ms``); the
dropped counter at once.

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
from mlplat_runtime.monitoring.segments import (
    Chunk,
    Layout,
    layout_of,
    merge_chunks,
    prediction_columns,
    write_segment,
)

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
    """Rows of one model version (or feedback rows) waiting for their segment to close.

    Predictions are held as columns, one ``Chunk`` per batch the writer took: the requests'
    own objects are let go a flush after they were served, not a segment later.
    """

    def __init__(self, opened: float) -> None:
        self.opened = opened
        self.items: list[Any] = []  # feedback
        self.chunks: list[Chunk] = []  # predictions
        self.rows = 0
        self.nbytes = 0  # bytes held in the chunks' numeric columns


class PredictionLog:
    def __init__(self, config: LogConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.boot = secrets.token_hex(4)
        self.captured = 0  # rows the writer took into a segment, after sampling (writer thread)
        self.dropped = 0  # rows dropped because the queue was full
        self.sampled_out = 0  # rows left out by sampling
        self.feedback_rows = 0
        self.written = 0  # rows in closed segments (writer thread only)
        self.segments = 0
        self.write_errors = 0
        # Request ids "<boot>-<seq>": the writer makes them ahead into a pool, so the hot path
        # takes one from a deque instead of formatting it (a fresh string there costs a
        # microsecond on a cold cache); an empty pool falls back to formatting one.
        self._ids = itertools.count(1)
        self._id_pool: deque[str] = deque()
        self._pooled_id = self._id_pool.popleft
        self._refill_ids(1024)
        self._queue: deque[tuple[Any, ...]] = deque()  # Captured's fields, as plain tuples
        self._feedback: deque[tuple[float, FeedbackItem]] = deque()
        self._max_bytes = config.queue_mb * 1024 * 1024
        # The queue's bound in requests, read by the hot path: ``queue_requests``, lowered by
        # the writer when the requests it takes are so large that that many would pass
        # ``queue_mb`` (the hot path never sizes a request).
        self._limit = config.queue_requests
        self._append = self._queue.append
        self._windows: dict[str, list[float]] = {}  # writer: model -> [second, rows seen, rate]
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

        Every line here is paid on each request, with cold caches (about 0.3 µs a line on a
        slow core): the body reads the clock, names the request, checks the queue's bound and
        appends a ``segments.Captured`` tuple. Sampling, the wall time, rows and bytes are the
        writer's work (``_take``), on whole batches with numpy.
        """
        t1 = _perf_counter()
        if request_id is None:
            try:
                request_id = self._pooled_id()
            except IndexError:
                request_id = self.next_id()
        if len(self._queue) < self._limit:
            self._append((t0, t1, model, request_id, inputs, names, arrays, 200, None))
        else:
            self.dropped += _rows(inputs)
        return request_id

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
        if len(self._queue) < self._limit:
            self._append((t0, _perf_counter(), model, rid, inputs, (), (), status, error[:1000]))
        else:
            self.dropped += _rows(inputs)
        return rid

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
            ("mlplat_predlog_captured_rows_total", "counter", "Rows taken into the log, after sampling",
             self.captured),
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
                try:
                    self._drain(open_segments, layouts, now)
                    while self._feedback:
                        feedback.items.append(self._feedback.popleft())
                        feedback.rows += 1
                    full = sum(seg.nbytes for seg in open_segments.values()) > self._max_bytes
                    for key, seg in list(open_segments.items()):
                        if (
                            stopping
                            or full
                            or seg.rows >= self.config.segment_rows
                            or now - seg.opened >= self.config.segment_seconds
                        ):
                            del open_segments[key]
                            self._close_predictions(con, key, seg)
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
                except Exception:  # a bug here must not end the writer: the queue would only fill
                    self.write_errors += 1
                    log.exception("the prediction log's writer failed a pass; it goes on")
                if stopping and not self._queue and not self._feedback:
                    return
        finally:
            con.close()

    def _drain(
        self,
        open_segments: dict[tuple[str, str], _Segment],
        layouts: dict[tuple[str, str], Layout],
        now: float,
    ) -> None:
        """Take what the hot path queued: sample it, time it, and add it to its open segment."""
        queue = self._queue
        n = len(queue)
        self._refill_ids(max(1024, 2 * n))
        if not n:
            return
        batch = [queue.popleft() for _ in range(n)]
        offset = self.clock() - _perf_counter()  # a wall time is a t1 reading plus this
        first = batch[0][2]
        if all(item[2] is first for item in batch):
            groups = [batch]
        else:
            by_model: dict[int, list[tuple[Any, ...]]] = {}
            for item in batch:
                by_model.setdefault(id(item[2]), []).append(item)
            groups = list(by_model.values())
        # the hot path's bound: as many requests as fit in queue_mb, sized by the largest
        # model's requests of this batch (the first of each: "requests like these")
        largest = max(_request_bytes(items[0]) for items in groups)
        self._limit = max(1, min(self.config.queue_requests, int(self._max_bytes / max(largest, 1))))
        for items in groups:
            self._take(open_segments, layouts, items[0][2], items, offset, now)

    def _refill_ids(self, want: int) -> None:
        """Top the hot path's pool of request ids up to ``want`` (ids from the one counter)."""
        pool = self._id_pool
        if len(pool) < want:
            prefix, ids = f"{self.boot}-", self._ids
            pool.extend([f"{prefix}{next(ids)}" for _ in range(want - len(pool))])

    def _take(
        self,
        open_segments: dict[tuple[str, str], _Segment],
        layouts: dict[tuple[str, str], Layout],
        model: Any,
        items: list[tuple[Any, ...]],
        offset: float,
        now: float,
    ) -> None:
        """One model's requests of a batch: rows, wall times and sampling, with numpy."""
        _, t1s, _, rids, inputs, _, _, statuses, _ = zip(*items, strict=True)
        walls = np.asarray(t1s, dtype=np.float64) + offset
        try:  # the common case: every request decoded; the rows of the model's first input
            first = next(iter(model.inputs))
            counts = np.array([d[first].shape[0] for d in inputs], dtype=np.int64)
        except (TypeError, KeyError, IndexError, StopIteration):  # a failure, a 0-d input
            counts = np.fromiter((_rows(d) for d in inputs), dtype=np.int64, count=len(items))
        ok = np.asarray(statuses) == 200
        rates, keep = self._sample(model.name, walls, counts, ok, rids)
        if not keep.all():
            self.sampled_out += int(counts[~keep].sum())
            items = list(itertools.compress(items, keep))
            walls, rates, counts = walls[keep], rates[keep], counts[keep]
            if not items:
                return
        rows = int(counts.sum())
        key = (model.name, model.bundle_id)
        try:
            layout = layouts.get(key)
            if layout is None:
                layout = layouts[key] = layout_of(model, self.config.exclude)
            chunk = prediction_columns(items, layout, walls=walls, rates=rates, counts=counts)
        except Exception:
            self.write_errors += 1
            log.exception("could not log %d requests of %s; they are lost", len(items), key[0])
            return
        self.captured += rows
        seg = open_segments.get(key)
        if seg is None:
            seg = open_segments[key] = _Segment(now)
        seg.chunks.append(chunk)
        seg.rows += rows
        seg.nbytes += chunk.nbytes

    def _sample(
        self, name: str, walls: np.ndarray, counts: np.ndarray, ok: np.ndarray, rids: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(sample rate, kept) per request: every row up to the budget in each second of wall
        time, then the requests whose request id hashes under the rate (failures always)."""
        n = len(walls)
        budget = self.config.budget
        seconds = np.floor(walls).astype(np.int64)
        order = np.argsort(seconds, kind="stable")
        in_order = seconds[order]
        counted = np.where(ok, counts, 0)[order]
        cum = np.empty(n, dtype=np.int64)
        window_rate = np.empty(n, dtype=np.float64)
        cuts = np.flatnonzero(np.diff(in_order)) + 1
        for a, b in zip(np.r_[0, cuts], np.r_[cuts, n], strict=True):
            second = int(in_order[a])
            window = self._windows.get(name)
            if window is None or window[0] < second:  # a late request counts in the newer second
                window = self._roll(name, second, window)
            seen = window[1] + np.cumsum(counted[a:b])
            window[1] = float(seen[-1])
            cum[a:b] = seen
            window_rate[a:b] = window[2]
        rates = np.ones(n, dtype=np.float64)
        keep = np.ones(n, dtype=bool)
        over = cum > budget
        if not over.any():
            return rates, keep
        # the lower of what the last second saw and what this one has seen so far
        rates[order] = np.where(over, np.minimum(window_rate, budget / np.maximum(cum, 1)), 1.0)
        rates[~ok] = 1.0
        sampled = np.flatnonzero(rates < 1.0)
        hashes = np.fromiter(
            (zlib.crc32(rids[i].encode()) for i in sampled.tolist()), dtype=np.int64, count=len(sampled)
        )
        keep[sampled] = hashes < rates[sampled] * _HASH_SPACE
        return rates, keep

    def _roll(self, model: str, second: int, old: list[float] | None) -> list[float]:
        """A new one-second window; its rate from what the previous second saw."""
        seen = old[1] if old is not None and old[0] == second - 1 else 0.0
        budget = self.config.budget
        rate = 1.0 if seen <= budget else max(budget / seen, 1.0 / _HASH_SPACE)
        window = self._windows[model] = [second, 0, rate]
        return window

    def _final_path(self, folder: str, opened: float) -> Path:
        self._segment_seq += 1
        name = logschema.segment_name(datetime.fromtimestamp(opened, UTC), self.boot, self._segment_seq)
        return self.config.root / folder / name

    def _close_predictions(self, con: Any, key: tuple[str, str], seg: _Segment) -> None:
        try:
            parts = merge_chunks(seg.chunks)
            write_segment(con, parts, self._final_path(key[0], seg.opened))
        except Exception:
            self.write_errors += 1
            log.exception("could not write a prediction log segment of %s (%d rows lost)", key[0], seg.rows)
            return
        self.written += seg.rows
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
            write_segment(con, [(data, select)], self._final_path(logschema.FEEDBACK_DIR, seg.opened))
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


def _rows(inputs: dict[str, np.ndarray] | None) -> int:
    """A request's rows: the first dimension of its first input (1 without decoded inputs),
    as ``PredictionLog._take`` counts them."""
    for arr in (inputs or {}).values():
        return int(arr.shape[0]) if arr.ndim else 1
    return 1


def _request_bytes(item: tuple[Any, ...]) -> int:
    """What one queued request holds: its input and output arrays (``Captured`` fields)."""
    inputs, arrays = item[4], item[6]
    return sum(a.nbytes for a in (inputs or {}).values()) + sum(a.nbytes for a in arrays)


def _label_text(label: str | int | float | bool) -> str:
    return label if isinstance(label, str) else orjson.dumps(label).decode()
