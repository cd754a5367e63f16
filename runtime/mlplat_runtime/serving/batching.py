"""Dynamic batching, per model and opt-in: concurrent requests queued, combined into one ONNX
Runtime call, split back.

Only for models whose first dimension is a batch dimension (-1 on every input and output):
the rows of the queued requests are concatenated along it, and each output is sliced back
at the same offsets. Requests whose other dimensions differ (a dynamic width) cannot share
a call; each batch takes the oldest request and the queued ones that match it.

When a batch fires (``Batcher``): never on a timer a lone client waits for. Requests are
queued on the event loop; a batch is formed as soon as the loop has taken in what arrived
in its turn (``call_soon``), so one client's request runs alone and at once, while 32
connections whose requests arrive together share a call. While every runner is busy (one
ONNX Runtime call per runner in flight, ``instances`` runners), requests queue; a runner
that comes free takes what is queued, up to ``max_batch_size`` rows. Only when another call
is still in flight (so more requests are on their way) and the queue holds fewer rows than
the smallest preferred size does a free runner wait, at most ``max_queue_delay_us`` from the
oldest queued request's arrival. Without ``max_queue_delay_us``, a runner that comes free
with fewer rows queued than clients in circulation (the batch it just answered and those
queued behind it) waits for them at most as long as that batch's call took, counted from its
end (``Batcher._delay_s``). MLServer's fixed window cut a single client from 793 to 282 req/s;
these rules cannot: a lone client's last batch was its own row, so it never waits.

A batch that fails (one bad request among many) is run again one request at a time, so a
request fails only for its own reason. Metrics: rows per call and time in the queue.

Off the default path: a model without a ``BatchingConfig`` never reaches this module.
Must not import onnxruntime, textual, mlflow, docker or mlplat_tui.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mlplat_runtime.bundle.manifest import (
    MAX_BATCH_INSTANCES,
    MAX_BATCH_SIZE_LIMIT,
    MAX_QUEUE_DELAY_US_LIMIT,
    BatchingSpec,
    batch_dimension_problems,
)
from mlplat_runtime.errors import RequestError

__all__ = ["Batcher", "BatchingConfig", "batch_dimension_problems"]

if TYPE_CHECKING:
    from mlplat_runtime.serving.metrics import ServingMetrics
    from mlplat_runtime.serving.model import LoadedModel


@dataclass(frozen=True)
class BatchingConfig:
    """How one model batches (Triton's ``dynamic_batching`` plus ``max_batch_size``)."""

    max_batch_size: int = 32  # rows in one ONNX Runtime call
    max_queue_delay_us: int = 0  # the longest a request waits for company while a call is in flight
    preferred_batch_sizes: tuple[int, ...] = ()  # a free runner fires at once at one of these
    instances: int = 1  # ONNX Runtime calls of this model in flight at once

    def __post_init__(self) -> None:
        if not 1 <= self.max_batch_size <= MAX_BATCH_SIZE_LIMIT:
            raise RequestError(f"max_batch_size must be 1..{MAX_BATCH_SIZE_LIMIT}, got {self.max_batch_size}")
        if not 0 <= self.max_queue_delay_us <= MAX_QUEUE_DELAY_US_LIMIT:
            raise RequestError(
                f"max_queue_delay_us must be 0..{MAX_QUEUE_DELAY_US_LIMIT}, got {self.max_queue_delay_us}"
            )
        bad = [s for s in self.preferred_batch_sizes if not 1 <= s <= self.max_batch_size]
        if bad:
            raise RequestError(
                f"preferred_batch_sizes {bad} are not within 1..max_batch_size ({self.max_batch_size})"
            )
        if not 1 <= self.instances <= MAX_BATCH_INSTANCES:
            raise RequestError(f"instances must be 1..{MAX_BATCH_INSTANCES}, got {self.instances}")

    @classmethod
    def from_spec(cls, spec: BatchingSpec) -> BatchingConfig:
        """From a bundle manifest's ``serving.batching`` (already validated by its schema)."""
        return cls(
            max_batch_size=spec.max_batch_size,
            max_queue_delay_us=spec.max_queue_delay_us,
            preferred_batch_sizes=spec.preferred_batch_sizes,
            instances=spec.instances,
        )

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> BatchingConfig:
        """From a JSON object (an admin load's ``dynamic_batching`` parameter)."""
        known = {"max_batch_size", "max_queue_delay_us", "preferred_batch_sizes", "instances"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise RequestError(f"dynamic_batching: unknown key(s) {unknown}; known: {sorted(known)}")
        ints = {k: raw[k] for k in ("max_batch_size", "max_queue_delay_us", "instances") if k in raw}
        for key, value in ints.items():
            if type(value) is not int:
                raise RequestError(f"dynamic_batching.{key} must be an integer, got {value!r}")
        sizes = raw.get("preferred_batch_sizes", [])
        if not isinstance(sizes, list) or not all(type(s) is int for s in sizes):
            raise RequestError("dynamic_batching.preferred_batch_sizes must be a list of integers")
        return cls(**ints, preferred_batch_sizes=tuple(sorted(set(sizes))))

    def to_json(self) -> dict[str, Any]:
        return {
            "max_batch_size": self.max_batch_size,
            "max_queue_delay_us": self.max_queue_delay_us,
            "preferred_batch_sizes": list(self.preferred_batch_sizes),
            "instances": self.instances,
        }


_Outcome = list[np.ndarray] | BaseException
log = logging.getLogger("mlplat.serving")


class _Pending:
    """One queued request: its inputs, the outputs it wants, and where its answer goes (a
    future, or a callback called on the loop thread as soon as the batch is split)."""

    __slots__ = ("callback", "future", "inputs", "key", "names", "queued_at", "rows")

    def __init__(
        self,
        inputs: Mapping[str, np.ndarray],
        names: tuple[str, ...],
        future: asyncio.Future[list[np.ndarray]] | None,
        callback: Callable[[_Outcome], None] | None = None,
    ) -> None:
        self.inputs = inputs
        self.names = names
        self.future = future
        self.callback = callback
        first = next(iter(inputs.values()))
        self.rows = int(first.shape[0])
        # requests share a call only when every other dimension agrees
        self.key = tuple(a.shape[1:] for a in inputs.values())
        self.queued_at = time.perf_counter()


# An inline batch call that takes more CPU time than this moves the model's later batches to worker threads:
# the event loop (health checks, other models) must not stall behind a big batch.
INLINE_BATCH_S = 0.002
# With no max_queue_delay_us, a free runner waits for the last batch's clients at most this
# share of that batch's call from the moment it ended, capped; below the floor it does not wait
# (see Batcher._delay_s). One whole call: the MLP of bench/serving.py at 32 connections ran
# batches of 16 with a quarter (5.9k req/s) and of 32 with a whole call (6.7k req/s, p99 lower).
AUTO_DELAY_SHARE = 1.0
AUTO_DELAY_MAX_S = 0.002
AUTO_DELAY_MIN_S = 0.0002


class Batcher:
    """The queue and the runners of one loaded model version (event loop thread only).

    Where a batch runs: on the event loop thread itself while the model is fast (``inline``:
    its call on the bundle's samples took at most ``INLINE_BATCH_S``, one instance, and no
    batch call so far took more CPU time than that), else in a worker thread. Inline is what makes batching
    cheap on a loaded machine: the requests that arrive while a batch runs wait in their
    sockets and form the next batch, with no thread hand-off and no wait for the GIL (a
    worker thread that finishes its call while the loop parses requests waits up to the
    interpreter's switch interval, 5 ms, to get the GIL back: measured, that made batching
    slower than no batching at 32 connections). In both places the batch is assembled and
    split on the loop thread, so a worker thread only makes the ONNX Runtime call.
    """

    def __init__(
        self, model: LoadedModel, config: BatchingConfig, executor: Executor | None, metrics: ServingMetrics
    ) -> None:
        self.model = model
        self.config = config
        self.executor = executor
        self.metrics = metrics
        self.calls = 0  # batches dispatched (tests read it: requests really shared calls)
        # start inline when a sample call fit the inline budget; measured batches decide after
        self.inline = (model.call_ms <= INLINE_BATCH_S * 1000 and config.instances == 1) or executor is None
        self._queue: deque[_Pending] = deque()
        self._rows = 0
        self._busy = 0
        self._expected = 0  # clients of the last batch and those queued behind it: as many come back soon
        self._last_s = 0.0  # how long the last batch's call took
        self._freed_at = 0.0  # when the last batch ended (its clients can only come back after)
        self._scheduled = False
        self._solo_turn = False  # a lone request ran at once in this turn of the loop
        self._timer: asyncio.TimerHandle | None = None  # a free runner waiting for company
        self._min_preferred = min(config.preferred_batch_sizes, default=config.max_batch_size)
        from mlplat_runtime.serving.model import computes_in_caller  # model imports this module

        self._names = model.output_names
        in_caller = computes_in_caller(model.provider, model.threads)
        self._clock = time.thread_time if in_caller else time.perf_counter
        self._index = {n: i for i, n in enumerate(self._names)}

    @property
    def idle(self) -> bool:
        return not self._queue and not self._busy

    def run_now(self, inputs: Mapping[str, np.ndarray], names: tuple[str, ...]) -> list[np.ndarray] | None:
        """A lone request answered at once, in the caller's turn of the loop (None: queue it).

        Only when the batcher runs inline, nothing is queued or running, the last batch held
        one request (so no company is on its way) and no other request ran this way in this
        turn of the loop (the second one of a turn queues, and the rest of the turn joins it):
        one client is then exactly as fast as without batching, while concurrent clients
        still share calls. The model's exceptions propagate, as an unbatched call's do.
        """
        if not self.inline or self._queue or self._busy or self._expected > 1 or self._solo_turn:
            return None
        self._solo_turn = True
        asyncio.get_running_loop().call_soon(self._end_turn)
        model = self.model
        self.calls += 1
        self._expected = 1
        t = time.perf_counter()
        try:
            return model.predict(inputs, names)
        finally:
            seconds = time.perf_counter() - t
            self.metrics.observe_inference(model.name, model.version, seconds)
            self.metrics.observe_batch(
                model.name, model.version, int(next(iter(inputs.values())).shape[0]), (0.0,)
            )

    def _end_turn(self) -> None:
        self._solo_turn = False

    def claim_solo(self) -> bool:
        """Whether a lone request may take the unbatched path (a worker thread of its own) now.

        For a batcher whose batches run in worker threads (a slow model): with nothing queued
        or running, no company expected (the last batch held one request) and no other lone
        request in this turn of the loop, the caller runs the request exactly as it would be
        run without batching, with no extra turn of the loop for the queue. The batcher counts
        it as a running call, so requests that arrive meanwhile queue and run as one batch when
        it ends; the caller must call ``release_solo`` once, whatever happens."""
        if self.inline or self._queue or self._busy or self._expected > 1 or self._solo_turn:
            return False
        self._busy += 1
        self._solo_turn = True
        asyncio.get_running_loop().call_soon(self._end_turn)
        self.calls += 1
        self._expected = 1
        return True

    def release_solo(self, rows: int | None) -> None:
        """The lone request of ``claim_solo`` is done (``rows``: its batch size; None if it
        never ran); the queue that formed meanwhile is dispatched."""
        self._busy -= 1
        if rows is not None:
            self.metrics.observe_batch(self.model.name, self.model.version, rows, (0.0,))
        if self._queue and not self._scheduled:
            self._dispatch()

    def submit(
        self, inputs: Mapping[str, np.ndarray], names: tuple[str, ...]
    ) -> asyncio.Future[list[np.ndarray]]:
        """Queue one request; the future resolves to its outputs (in ``names`` order)."""
        future: asyncio.Future[list[np.ndarray]] = asyncio.get_running_loop().create_future()
        self._enqueue(_Pending(inputs, names, future))
        return future

    def submit_then(
        self, inputs: Mapping[str, np.ndarray], names: tuple[str, ...], callback: Callable[[_Outcome], None]
    ) -> None:
        """Queue one request; ``callback`` gets its outputs (or the exception) on the loop
        thread, in the turn its batch finishes: no future, no extra turn of the loop."""
        self._enqueue(_Pending(inputs, names, None, callback))

    def _enqueue(self, pending: _Pending) -> None:
        self._queue.append(pending)
        self._rows += pending.rows
        if not self._scheduled and self._busy < self.config.instances:
            # after this turn of the loop: the requests that arrived with this one join it
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._dispatch)
        elif self._timer is not None and self._rows >= self._wanted():
            self._timer.cancel()  # enough company arrived: fire now, not at the deadline
            self._timer = None
            asyncio.get_running_loop().call_soon(self._dispatch)

    def _wanted(self) -> int:
        """Rows worth waiting for: the smallest preferred size, or the clients in circulation
        (what the last batch answered, whose clients are sending their next requests, and what
        was queued behind it), whichever is less."""
        return min(self._min_preferred, self._expected) if not self._busy else self._min_preferred

    def _delay_s(self) -> float:
        """How long a free runner may hold the queue for company: ``max_queue_delay_us`` when
        set (from the oldest queued request's arrival); else, with no call in flight, up to
        the last batch's call (``AUTO_DELAY_SHARE``, at most ``AUTO_DELAY_MAX_S``, nothing
        under ``AUTO_DELAY_MIN_S``) from the moment that batch ended. Its clients are sending
        their next requests; a model whose call costs much less per row for 32 rows than for
        16 (memory-bound: an MLP's weights read once per call) would otherwise settle into
        two half batches, each run while the other's clients come back. A lone client (the
        last batch its own row, nothing queued) and a model that runs in microseconds never wait."""
        if self.config.max_queue_delay_us:
            return self.config.max_queue_delay_us / 1e6
        if self._busy:
            return 0.0
        auto = min(self._last_s * AUTO_DELAY_SHARE, AUTO_DELAY_MAX_S)
        return auto if auto >= AUTO_DELAY_MIN_S else 0.0

    def _dispatch(self) -> None:
        self._scheduled = False
        self._timer = None
        loop = asyncio.get_running_loop()
        while self._queue and self._busy < self.config.instances:
            delay = self._delay_s()
            if delay and self._rows < self._wanted():
                # a call is in flight, or the last batch's clients are on their way back: wait
                # for company, but never past the delay: from the oldest request's arrival
                # (max_queue_delay_us) or from the last batch's end (the auto delay). A lone
                # client (last batch: its own row, nothing queued) never waits.
                since = self._queue[0].queued_at
                if not self.config.max_queue_delay_us:
                    since = max(since, self._freed_at)  # the auto delay waits for the last batch's clients
                wait = since + delay - time.perf_counter()
                if wait > 0:
                    self._scheduled = True
                    self._timer = loop.call_later(wait, self._dispatch)
                    return
            batch = self._take()
            now = time.perf_counter()
            queued = [now - p.queued_at for p in batch]
            self.calls += 1
            feeds = self._assemble(batch)
            if self.inline:
                t, cpu = time.perf_counter(), self._clock()
                outcomes = self._run(batch, feeds)
                seconds, cpu = time.perf_counter() - t, self._clock() - cpu
                self._finish(batch, queued, outcomes, seconds)
                # CPU time where it is the call's cost, not wall time: on a busy machine a fast
                # call can be descheduled for milliseconds; that must not move it off the loop
                if cpu > INLINE_BATCH_S:
                    self.inline = False  # too slow to hold the loop: worker threads from now on
                if self._queue and not self._scheduled:
                    # let the loop take in what arrived meanwhile before the next batch
                    self._scheduled = True
                    loop.call_soon(self._dispatch)
                return
            self._busy += 1
            running = loop.run_in_executor(self.executor, self._timed_run, batch, feeds)
            running.add_done_callback(functools.partial(self._done, batch, queued))

    def _take(self) -> list[_Pending]:
        """The oldest request and the queued ones that fit its shape, up to the batch size."""
        first = self._queue.popleft()
        batch, rows = [first], first.rows
        limit = self.config.max_batch_size
        if self.config.preferred_batch_sizes and self._rows < limit:
            fits = [s for s in self.config.preferred_batch_sizes if s <= self._rows]
            limit = fits[-1] if fits else limit
        if not self._queue or rows >= limit:
            self._rows -= rows
            return batch
        kept: deque[_Pending] = deque()
        while self._queue and rows < limit:
            p = self._queue.popleft()
            if p.key == first.key and rows + p.rows <= limit:
                batch.append(p)
                rows += p.rows
            else:
                kept.append(p)
        kept.extend(self._queue)
        self._queue = kept
        self._rows -= rows
        return batch

    def _assemble(self, batch: list[_Pending]) -> dict[str, np.ndarray] | None:
        """One feed of the batch's rows (None for a lone request: its own inputs are the feed)."""
        if len(batch) == 1:
            return None
        try:
            return {n: np.concatenate([p.inputs[n] for p in batch]) for n in self.model.inputs}
        except Exception:  # e.g. a dtype no concatenation can mix: each request on its own
            return None

    def _run(self, batch: list[_Pending], feeds: dict[str, np.ndarray] | None) -> list[_Outcome]:
        """One call for the batch, split back (views, no copies); per request on any failure."""
        model = self.model
        if feeds is not None:
            try:
                arrays = model.predict(feeds, self._names)
                total = sum(p.rows for p in batch)
                if all(a.ndim and a.shape[0] == total for a in arrays):
                    index = self._index
                    out: list[_Outcome] = []
                    start = 0
                    for p in batch:
                        end = start + p.rows
                        out.append([arrays[index[n]][start:end] for n in p.names])
                        start = end
                    return out
            except Exception:
                pass
        results: list[_Outcome] = []
        for p in batch:
            try:
                results.append(model.predict(p.inputs, p.names))
            except Exception as exc:
                results.append(exc)
        return results

    def _timed_run(
        self, batch: list[_Pending], feeds: dict[str, np.ndarray] | None
    ) -> tuple[list[_Outcome], float]:
        t = time.perf_counter()
        outcomes = self._run(batch, feeds)
        return outcomes, time.perf_counter() - t

    def _done(self, batch: list[_Pending], queued: list[float], running: asyncio.Future[Any]) -> None:
        self._busy -= 1
        exc = running.exception() if not running.cancelled() else asyncio.CancelledError()
        if exc is not None:
            self._finish(batch, queued, [exc] * len(batch), None)
        else:
            outcomes, seconds = running.result()
            self._finish(batch, queued, outcomes, seconds)
        if self._queue and not self._scheduled:
            self._dispatch()

    def _finish(
        self, batch: list[_Pending], queued: list[float], outcomes: list[_Outcome], seconds: float | None
    ) -> None:
        rows = sum(p.rows for p in batch)
        self._expected = rows + self._rows
        self._freed_at = time.perf_counter()
        if seconds is not None:
            self._last_s = seconds
            model = self.model
            self.metrics.observe_inference(model.name, model.version, seconds)
            self.metrics.observe_batch(model.name, model.version, rows, queued)
        for p, outcome in zip(batch, outcomes, strict=True):
            if p.callback is not None:
                try:
                    p.callback(outcome)
                except Exception:  # one answer that fails to encode must not lose the others
                    log.exception("answering a batched request failed")
                continue
            future = p.future
            if future is None or future.done():  # the client went away
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
