"""Prometheus metrics of the serving runtime, rendered as text on ``GET /metrics``.

Plain ints and floats in dicts, written out in the Prometheus text format (0.0.4) only when
scraped. Why not prometheus_client's Counter/Histogram: they take a lock per increment, and
three of them per request cost as much as the inference of a tabular model; the library's
import also adds to the 0.5 s start-up budget. The format is small and the tests parse our
output with prometheus_client's own parser.

Request series are written on the event loop thread only (no lock needed); load/swap series
come from the admin's worker thread and are guarded by a lock. Each server owns its own
``ServingMetrics`` (no process-global state).

With ``--workers N`` every worker keeps its own dicts (the hot path is unchanged) and the
aggregation happens off it: the supervisor collects each worker's ``snapshot()`` a few times a
second over its control channel and hands every worker the sum of the others (``peers``); a
scrape on any worker renders its own live series plus that sum. The others' part is at most
one collection period old (``workers.METRICS_PERIOD_S``); a dead worker's last snapshot is kept
in the sum, so counters never go backwards when it is restarted. The model series (active
version, loads, swaps) come from the supervisor, which runs the swaps.

Label values are bounded: requests for models that are not loaded are counted under
``model=""`` so a client cannot grow the series without limit by inventing model names.

Series:
    mlplat_requests_total{model,version,endpoint,code}            counter
    mlplat_request_duration_seconds{model,endpoint}               histogram
    mlplat_inference_duration_seconds{model,version}              histogram (per ONNX Runtime call)
    mlplat_batch_size{model,version}                              histogram, rows per call (batching)
    mlplat_queue_duration_seconds{model,version}                  histogram, time queued (batching)
    mlplat_model_active_info{model,version,bundle_id,provider}    gauge, 1 for what serves now
    mlplat_model_loads_total{model,result}                        counter (result: ok, rejected)
    mlplat_model_swaps_total{model}                               counter
    mlplat_model_last_swap_seconds{model}                         gauge
    mlplat_serving_workers                                        gauge, workers serving (--workers)
    mlplat_serving_worker_restarts_total                          counter, dead workers restarted
    mlplat_serving_worker_requests_total{worker}                  counter, requests per worker

Must not import textual, mlflow, docker or mlplat_tui.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Sub-millisecond resolution: the point of this server is that a tabular model answers in
# well under a millisecond; default Prometheus buckets start at 5 ms.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.002, 0.003, 0.005,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
# rows per ONNX Runtime call of a model that batches
BATCH_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


def _le(buckets: tuple[float, ...]) -> list[str]:
    return [f'le="{float(b)!r}"' for b in buckets] + ['le="+Inf"']


_LE = _le(LATENCY_BUCKETS)
_BATCH_LE = _le(BATCH_BUCKETS)


class _Hist:
    """Non-cumulative bucket counts (the last one is +Inf) and the sum."""

    __slots__ = ("buckets", "counts", "total")

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1  # first bucket with le >= value
        self.total += value


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(names: Sequence[str], values: Iterable[object], extra: str = "") -> str:
    parts = [f'{n}="{_escape(str(v))}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _num(value: float) -> str:
    return str(value) if isinstance(value, int) else repr(float(value))


class ServingMetrics:
    """Counters, histograms and gauges for one serving process."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str, int], int] = {}
        self.request_seconds: dict[tuple[str, str], _Hist] = {}
        self.inference_seconds: dict[tuple[str, str], _Hist] = {}
        self.batch_rows: dict[tuple[str, str], _Hist] = {}  # (model, version): rows per call
        self.queue_seconds: dict[tuple[str, str], _Hist] = {}  # (model, version): time queued
        self.active: dict[str, tuple[str, str, str]] = {}  # model -> (version, bundle_id, provider)
        self.loads: dict[tuple[str, str], int] = {}
        self.swaps: dict[str, int] = {}
        self.last_swap_seconds: dict[str, float] = {}
        self._lock = threading.Lock()
        # --workers: the others' sum (a snapshot), rendered with our own series; None: alone
        self.peers: Snapshot | None = None
        self.own_models = True  # False in a worker: the supervisor's snapshot has the model series
        # the supervisor's: {"serving": n, "restarts": n, "requests": {worker: n}}
        self.workers: dict[str, Any] | None = None
        # more series rendered at the end (e.g. the prediction log's counters), each a list of lines
        self.collectors: list[Callable[[], list[str]]] = []

    # -- hot path (event loop thread) ------------------------------------------------------
    def observe_request(self, model: str, version: str, endpoint: str, code: int, seconds: float) -> None:
        key = (model, version, endpoint, code)
        self.requests[key] = self.requests.get(key, 0) + 1
        hist = self.request_seconds.get((model, endpoint))
        if hist is None:
            hist = self.request_seconds[(model, endpoint)] = _Hist()
        hist.observe(seconds)

    def observe_infer(self, model: str, version: str, code: int, seconds: float, ran: float | None) -> None:
        """An inference request answered inline: ``observe_request`` and (when the model ran,
        ``ran`` seconds) ``observe_inference`` in one call."""
        self.observe_request(model, version, "infer", code, seconds)
        if ran is not None:
            self.observe_inference(model, version, ran)

    def observe_inference(self, model: str, version: str, seconds: float) -> None:
        hist = self.inference_seconds.get((model, version))
        if hist is None:
            hist = self.inference_seconds[(model, version)] = _Hist()
        hist.observe(seconds)

    def observe_batch(self, model: str, version: str, rows: int, queued_s: Sequence[float]) -> None:
        """One ONNX Runtime call of a batching model: its rows and each request's time queued."""
        key = (model, version)
        hist = self.batch_rows.get(key)
        if hist is None:
            hist = self.batch_rows[key] = _Hist(BATCH_BUCKETS)
            self.queue_seconds[key] = _Hist()
        hist.observe(rows)
        queue = self.queue_seconds[key]
        for seconds in queued_s:
            queue.observe(seconds)

    # -- loads (admin worker thread) -------------------------------------------------------
    def set_active(self, model: str, version: str, bundle_id: str, provider: str) -> None:
        with self._lock:
            self.active[model] = (version, bundle_id, provider)

    def clear_active(self, model: str) -> None:
        with self._lock:
            self.active.pop(model, None)

    def load_result(self, model: str, ok: bool, seconds: float | None = None, swapped: bool = False) -> None:
        with self._lock:
            key = (model, "ok" if ok else "rejected")
            self.loads[key] = self.loads.get(key, 0) + 1
            if seconds is not None:
                self.last_swap_seconds[model] = seconds
            if swapped:
                self.swaps[model] = self.swaps.get(model, 0) + 1

    # -- aggregation across workers (never on the hot path) ---------------------------------
    def snapshot(self) -> Snapshot:
        """Every series as plain JSON-able lists. Safe from another thread: each copy is one C
        call under the GIL (the event loop cannot change a dict halfway through it)."""

        def hists(series: dict[tuple[str, str], _Hist]) -> list[list[Any]]:
            return [[*key, list(h.counts), h.total] for key, h in list(series.items())]

        snap: Snapshot = {
            "requests": [[*key, n] for key, n in list(self.requests.items())],
            "request_seconds": hists(self.request_seconds),
            "inference_seconds": hists(self.inference_seconds),
            "batch_rows": hists(self.batch_rows),
            "queue_seconds": hists(self.queue_seconds),
        }
        if self.own_models:
            with self._lock:
                snap["active"] = [[m, *v] for m, v in self.active.items()]
                snap["loads"] = [[*key, n] for key, n in self.loads.items()]
                snap["swaps"] = [[m, n] for m, n in self.swaps.items()]
                snap["last_swap"] = [[m, s] for m, s in self.last_swap_seconds.items()]
        if self.workers is not None:
            snap["workers"] = self.workers
        return snap

    @classmethod
    def from_snapshot(cls, snap: Snapshot) -> ServingMetrics:
        m = cls()
        for *key, n in snap.get("requests", ()):
            m.requests[(key[0], key[1], key[2], int(key[3]))] = n
        for name, buckets in (
            ("request_seconds", LATENCY_BUCKETS),
            ("inference_seconds", LATENCY_BUCKETS),
            ("batch_rows", BATCH_BUCKETS),
            ("queue_seconds", LATENCY_BUCKETS),
        ):
            series = getattr(m, name)
            for a, b, counts, total in snap.get(name, ()):
                h = series[(a, b)] = _Hist(buckets)
                h.counts = list(counts)
                h.total = total
        m.active = {a[0]: (a[1], a[2], a[3]) for a in snap.get("active", ())}
        m.loads = {(a, b): n for a, b, n in snap.get("loads", ())}
        m.swaps = {a: n for a, n in snap.get("swaps", ())}
        m.last_swap_seconds = {a: s for a, s in snap.get("last_swap", ())}
        m.workers = snap.get("workers")
        return m

    # -- exposition ------------------------------------------------------------------------
    def render(self) -> bytes:
        if self.peers is None:
            return self._render()
        return ServingMetrics.from_snapshot(merge_snapshots(self.snapshot(), self.peers))._render()

    def _render(self) -> bytes:
        out: list[str] = []

        def family(name: str, kind: str, doc: str) -> None:
            out.append(f"# HELP {name} {doc}")
            out.append(f"# TYPE {name} {kind}")

        family(
            "mlplat_requests_total", "counter", "HTTP requests by model, version, endpoint and status code"
        )
        for req_key, n in list(self.requests.items()):
            out.append(
                f"mlplat_requests_total{_labels(('model', 'version', 'endpoint', 'code'), req_key)} {n}"
            )
        for name, doc, names, series, les in (
            ("mlplat_request_duration_seconds", "Time from request received to response sent",
             ("model", "endpoint"), self.request_seconds, _LE),
            ("mlplat_inference_duration_seconds", "Time inside ONNX Runtime per call",
             ("model", "version"), self.inference_seconds, _LE),
            ("mlplat_batch_size", "Rows per ONNX Runtime call of a model with dynamic batching",
             ("model", "version"), self.batch_rows, _BATCH_LE),
            ("mlplat_queue_duration_seconds", "Time a request waited in the dynamic batcher's queue",
             ("model", "version"), self.queue_seconds, _LE),
        ):  # fmt: skip
            family(name, "histogram", doc)
            for key, hist in list(series.items()):
                running = 0
                for le, n in zip(les, list(hist.counts), strict=True):
                    running += n
                    out.append(f"{name}_bucket{_labels(names, key, le)} {running}")
                out.append(f"{name}_sum{_labels(names, key)} {_num(hist.total)}")
                out.append(f"{name}_count{_labels(names, key)} {running}")
        with self._lock:
            active = dict(self.active)
            loads = dict(self.loads)
            swaps = dict(self.swaps)
            last = dict(self.last_swap_seconds)
        family("mlplat_model_active_info", "gauge", "1 for the version each model serves now")
        for model, (version, bundle_id, provider) in active.items():
            labels = _labels(
                ("model", "version", "bundle_id", "provider"), (model, version, bundle_id, provider)
            )
            out.append(f"mlplat_model_active_info{labels} 1")
        family("mlplat_model_loads_total", "counter", "Admin load attempts by result (ok, rejected)")
        for load_key, n in loads.items():
            out.append(f"mlplat_model_loads_total{_labels(('model', 'result'), load_key)} {n}")
        family("mlplat_model_swaps_total", "counter", "Versions switched in while serving")
        for model, n in swaps.items():
            out.append(f"mlplat_model_swaps_total{_labels(('model',), (model,))} {n}")
        family("mlplat_model_last_swap_seconds", "gauge", "Duration of the last successful load")
        for model, seconds in last.items():
            out.append(f"mlplat_model_last_swap_seconds{_labels(('model',), (model,))} {_num(seconds)}")
        if self.workers is not None:
            family("mlplat_serving_workers", "gauge", "Worker processes serving now (--workers)")
            out.append(f"mlplat_serving_workers {self.workers.get('serving', 0)}")
            family("mlplat_serving_worker_restarts_total", "counter", "Dead workers restarted")
            out.append(f"mlplat_serving_worker_restarts_total {self.workers.get('restarts', 0)}")
            family("mlplat_serving_worker_requests_total", "counter", "Requests answered per worker")
            for worker, n in sorted(self.workers.get("requests", {}).items()):
                out.append(f"mlplat_serving_worker_requests_total{_labels(('worker',), (worker,))} {n}")
        for collect in self.collectors:
            out.extend(collect())
        return ("\n".join(out) + "\n").encode()


Snapshot = dict[str, Any]


def merge_snapshots(*snaps: Snapshot) -> Snapshot:
    """The sum of snapshots: counters and histogram buckets add up; the model series and the
    worker gauges are taken from whichever snapshot has them (only the supervisor's does)."""
    counters: dict[str, dict[tuple[Any, ...], Any]] = {}
    out: Snapshot = {}
    for snap in snaps:
        for name, rows in snap.items():
            if name in ("requests", "loads", "swaps"):
                acc = counters.setdefault(name, {})
                for *key, n in rows:
                    acc[tuple(key)] = acc.get(tuple(key), 0) + n
            elif name in _HIST_NAMES:
                acc = counters.setdefault(name, {})
                for a, b, counts, total in rows:
                    got = acc.get((a, b))
                    if got is None:
                        acc[(a, b)] = [list(counts), total]
                    else:
                        got[0] = [x + y for x, y in zip(got[0], counts, strict=True)]
                        got[1] += total
            else:  # active, last_swap, workers: one owner
                out[name] = rows
    for name, acc in counters.items():
        if name in _HIST_NAMES:
            out[name] = [[*key, v[0], v[1]] for key, v in acc.items()]
        else:
            out[name] = [[*key, n] for key, n in acc.items()]
    return out


_HIST_NAMES = ("request_seconds", "inference_seconds", "batch_rows", "queue_seconds")
