"""The prediction log against a real serving process: segments, ids, failures, drops, SIGKILL,
sampling, exclusion and feedback; retention against real files. Segments are read with DuckDB,
as the monitor reads them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import httpx
import numpy as np
import pytest

from mlplat_runtime.monitoring import logschema
from mlplat_runtime.monitoring.predlog import LogConfig, PredictionLog
from mlplat_runtime.monitoring.reference import compute_reference
from tests.helpers.models import make_bundle
from tests.runtime.serving.conftest import Serving, sample, scrape, start_serving

pytestmark = pytest.mark.integration

FEATURES = ["age", "income", "flag", "score"]


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    x = np.random.default_rng(0).normal(size=(500, 4)).astype(np.float32)
    ref = compute_reference({"input": x}, feature_names=FEATURES)
    return make_bundle(tmp_path, reference=json.loads(ref.model_dump_json()))


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[Serving]]:
    started: list[Serving] = []
    yield started
    for s in started:
        s.stop()


def serve(tmp_path: Path, servers: list[Serving], bundle: Path, log_dir: Path, *flags: str) -> Serving:
    s = start_serving(tmp_path, bundle, "--log-dir", str(log_dir), *flags)
    servers.append(s)
    return s


def infer(s: Serving, rows: list[list[float]], request_id: str | None = None) -> httpx.Response:
    body: dict[str, object] = {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [len(rows), 4], "data": rows}]
    }
    if request_id is not None:
        body["id"] = request_id
    return httpx.post(f"{s.url}/v2/models/m/infer", json=body, timeout=10)


def infer_binary(s: Serving, x: np.ndarray, request_id: str) -> httpx.Response:
    """Binary tensor data: the one way a NaN reaches serving (JSON has no NaN)."""
    blob = x.tobytes()
    spec = {
        "name": "input",
        "datatype": "FP32",
        "shape": list(x.shape),
        "parameters": {"binary_data_size": len(blob)},
    }
    header = json.dumps({"id": request_id, "inputs": [spec]}).encode()
    return httpx.post(
        f"{s.url}/v2/models/m/infer",
        content=header + blob,
        headers={"Inference-Header-Content-Length": str(len(header))},
        timeout=10,
    )


def read(glob: Path) -> list[dict[str, object]]:
    con = duckdb.connect()
    rel = con.sql(
        f"SELECT * FROM read_parquet('{glob}', union_by_name=true) ORDER BY time, request_id, \"row\""
    )
    names = rel.columns
    return [dict(zip(names, row, strict=True)) for row in rel.fetchall()]


def test_rows_ids_failures_and_typed_columns(tmp_path: Path, servers: list[Serving], bundle: Path) -> None:
    log_dir = tmp_path / "log"
    s = serve(tmp_path, servers, bundle, log_dir)
    r1 = infer_binary(
        s, np.array([[1.0, 2.0, 0.0, 3.5], [0.5, np.nan, 1.0, -1.0]], dtype=np.float32), "client-7"
    )
    assert r1.status_code == 200 and r1.json()["id"] == "client-7"
    r2 = infer(s, [[0.0, 0.0, 0.0, 0.0]])
    generated = r2.json()["id"]
    assert generated.count("-") == 1 and generated.endswith("-1")  # <boot>-<seq>
    bad = httpx.post(
        f"{s.url}/v2/models/m/infer",
        json={"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]},
        timeout=10,
    )
    assert bad.status_code == 400
    only_label = httpx.post(
        f"{s.url}/v2/models/m/infer",
        json={
            "id": "label-only",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [1, 1, 1, 1]}],
            "outputs": [{"name": "label"}],
        },
        timeout=10,
    )
    assert only_label.status_code == 200
    assert s.stop() == 0  # SIGTERM: what is queued is written

    assert not list(log_dir.rglob("*.tmp"))
    rows = read(log_dir / logschema.PREDICTIONS_GLOB)
    assert [(r["request_id"], r["row"], r["status"]) for r in rows[:3]] == [
        ("client-7", 0, 200),
        ("client-7", 1, 200),
        (generated, 0, 200),
    ]
    first, nan_row, failed = rows[0], rows[1], rows[3]
    assert [first[f"in_{f}"] for f in FEATURES] == [1.0, 2.0, 0.0, 3.5]  # named from the reference
    assert nan_row["in_income"] is None  # NaN is NULL
    assert first["model"] == "m" and first["version"] and str(first["bundle_id"]).startswith("sha256:")
    assert first["sample_rate"] == 1.0 and first["error"] is None and float(str(first["latency_ms"])) > 0
    proba = first["out_probabilities"]
    assert isinstance(proba, list) and len(proba) == 2 and abs(sum(proba) - 1) < 1e-5
    assert first["out_label"] == int(np.argmax(proba))
    assert failed["status"] == 400 and "shape" in str(failed["error"])
    assert failed["out_label"] is None and failed["in_age"] is None
    partial = rows[4]  # asked for the label only: no probabilities recorded
    assert partial["request_id"] == "label-only" and partial["out_probabilities"] is None
    assert partial["out_label"] is not None and partial["in_score"] == 1.0
    con = duckdb.connect()
    types = dict(
        con.sql(f"DESCRIBE SELECT * FROM read_parquet('{log_dir / logschema.PREDICTIONS_GLOB}')").fetchall()[
            i
        ][:2]
        for i in range(len(rows[0]))
    )
    assert types["time"] == "TIMESTAMP" and types["in_age"] == "FLOAT" and types["out_label"] == "BIGINT"
    assert types["out_probabilities"] == "FLOAT[]"


def test_a_full_queue_drops_and_counts_without_failing_requests(
    tmp_path: Path, servers: list[Serving], bundle: Path
) -> None:
    # a tiny queue and a writer that takes it every 3 s: most requests find it full
    s = serve(tmp_path, servers, bundle, tmp_path / "log", "--log-queue", "2", "--log-flush-ms", "3000")
    codes = [infer(s, [[1.0, 2.0, 3.0, 4.0]]).status_code for _ in range(40)]
    assert codes == [200] * 40
    text = httpx.get(f"{s.url}/metrics", timeout=10).text
    scrape(text)  # parses as Prometheus text
    depth = sample(text, "mlplat_predlog_queue_depth")
    assert depth is not None and depth <= 2
    dropped = sample(text, "mlplat_predlog_dropped_rows_total")
    assert dropped is not None and dropped >= 30  # counted by the hot path, at once
    # what was queued is counted captured when the writer takes the queue
    deadline = time.monotonic() + 15
    captured = None
    while time.monotonic() < deadline:
        text = httpx.get(f"{s.url}/metrics", timeout=10).text
        captured = sample(text, "mlplat_predlog_captured_rows_total")
        if captured is not None and captured + dropped == 40:
            break
        time.sleep(0.2)
    assert captured is not None and dropped + captured == 40
    assert sample(text, "mlplat_predlog_dropped_rows_total") == dropped


def test_sigkill_leaves_no_half_segment_visible_and_closed_ones_intact(
    tmp_path: Path, servers: list[Serving], bundle: Path
) -> None:
    log_dir = tmp_path / "log"
    s = serve(tmp_path, servers, bundle, log_dir, "--log-segment-seconds", "0.2", "--log-flush-ms", "20")
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                with contextlib.suppress(httpx.HTTPError):  # the server is killed under us
                    client.post(
                        f"{s.url}/v2/models/m/infer",
                        json={
                            "inputs": [
                                {"name": "input", "datatype": "FP32", "shape": [64, 4], "data": [0.5] * 256}
                            ]
                        },
                    )

    threads = [threading.Thread(target=traffic) for _ in range(2)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(list(log_dir.glob(logschema.PREDICTIONS_GLOB))) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(s.pid, signal.SIGKILL)
    s.proc.wait(timeout=10)
    stop.set()
    for t in threads:
        t.join(timeout=15)
    closed = sorted(log_dir.glob(logschema.PREDICTIONS_GLOB))
    assert len(closed) >= 3
    con = duckdb.connect()
    for path in closed:  # every visible segment is whole: it opens and its rows are complete
        n, bad = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE in_age IS DISTINCT FROM 0.5) FROM read_parquet(?)",
            [str(path)],
        ).fetchone()  # type: ignore[misc]
        assert n > 0 and n % 64 == 0 and bad == 0
    # a restart removes what the killed process left half-written, and keeps the closed ones
    half = log_dir / "m" / "20260101T000000000000Z-dead-00000001.parquet.tmp"
    half.write_bytes(b"PAR1 half")
    then = time.time() - 120  # as the killed writer left it, over a minute ago
    os.utime(half, (then, then))
    s2 = serve(tmp_path, servers, bundle, log_dir)
    assert not list(log_dir.rglob("*.tmp"))
    assert all(p.exists() for p in closed)
    s2.stop()


def test_sampling_above_the_budget_is_deterministic_on_the_request_id(
    tmp_path: Path, servers: list[Serving], bundle: Path
) -> None:
    log_dir = tmp_path / "log"
    s = serve(tmp_path, servers, bundle, log_dir, "--log-budget", "20")
    with httpx.Client(timeout=10) as client:
        for i in range(300):
            body = {
                "id": f"req-{i}",
                "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [i, 0, 0, 0]}],
            }
            assert client.post(f"{s.url}/v2/models/m/infer", json=body).status_code == 200
    deadline = time.monotonic() + 15  # the writer samples what it takes, every flush
    while True:
        text = httpx.get(f"{s.url}/metrics", timeout=10).text
        taken = (sample(text, "mlplat_predlog_captured_rows_total") or 0) + (
            sample(text, "mlplat_predlog_sampled_out_rows_total") or 0
        )
        if taken >= 300 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    s.stop()
    rows = read(log_dir / logschema.PREDICTIONS_GLOB)
    sampled_out = sample(text, "mlplat_predlog_sampled_out_rows_total")
    assert sampled_out and sampled_out > 0
    assert len(rows) + sampled_out == 300 and sample(text, "mlplat_predlog_dropped_rows_total") == 0
    per_second: dict[int, int] = {}
    for r in rows:
        rate = float(str(r["sample_rate"]))
        if rate == 1.0:
            second = int(r["time"].replace(tzinfo=UTC).timestamp())  # type: ignore[attr-defined]
            per_second[second] = per_second.get(second, 0) + 1
        else:  # kept above the budget: exactly the ids whose hash falls under the rate
            assert zlib.crc32(str(r["request_id"]).encode()) < rate * 2**32
    assert per_second and max(per_second.values()) <= 20


def test_excluded_columns_are_never_written_and_feedback_lands_in_its_segments(
    tmp_path: Path, servers: list[Serving], bundle: Path
) -> None:
    log_dir = tmp_path / "log"
    s = serve(tmp_path, servers, bundle, log_dir, "--log-exclude", "income,probabilities")
    rid = infer(s, [[1.0, 2.0, 3.0, 4.0]]).json()["id"]
    one = httpx.post(f"{s.url}/v2/feedback", json={"model": "m", "request_id": rid, "label": 1}, timeout=10)
    assert one.status_code == 200 and one.json() == {"accepted": 1}
    batch = [{"model": "m", "request_id": f"r{i}", "row": i, "value": i / 2} for i in range(3)]
    assert httpx.post(f"{s.url}/v2/feedback", json={"feedback": batch}, timeout=10).json() == {"accepted": 3}
    wrong = httpx.post(f"{s.url}/v2/feedback", json={"model": "m", "request_id": "x"}, timeout=10)
    assert wrong.status_code == 400 and "label" in wrong.json()["error"]
    assert httpx.get(f"{s.url}/v2/feedback", timeout=10).status_code == 405
    s.stop()
    rows = read(log_dir / logschema.PREDICTIONS_GLOB)
    assert "in_income" not in rows[0] and "out_probabilities" not in rows[0]
    assert rows[0]["in_age"] == 1.0 and rows[0]["out_label"] is not None
    feedback = read(log_dir / logschema.FEEDBACK_GLOB)
    assert [(f["request_id"], f["row"], f["label"], f["value"]) for f in feedback] == [
        (rid, 0, "1", None),
        ("r0", 0, None, 0.0),
        ("r1", 1, None, 0.5),
        ("r2", 2, None, 1.0),
    ]


def test_without_log_dir_there_is_no_log_and_no_feedback_route(
    tmp_path: Path, servers: list[Serving], bundle: Path
) -> None:
    s = start_serving(tmp_path, bundle)
    servers.append(s)
    assert "id" not in infer(s, [[1.0, 2.0, 3.0, 4.0]]).json()
    assert httpx.post(f"{s.url}/v2/feedback", json={}, timeout=10).status_code == 404
    assert "mlplat_predlog" not in httpx.get(f"{s.url}/metrics", timeout=10).text


def test_retention_deletes_by_age_then_oldest_over_the_size_cap(tmp_path: Path) -> None:
    root = tmp_path / "log"
    now = datetime.now(UTC)

    def segment(folder: str, age: timedelta, seq: int, size: int) -> Path:
        path = root / folder / logschema.segment_name(now - age, "abcd", seq)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * size)
        return path

    mb = 1024 * 1024
    too_old = segment("m", timedelta(hours=5), 1, 10)
    oldest_kept_by_age = segment("m", timedelta(hours=3), 2, mb)
    middle = segment(logschema.FEEDBACK_DIR, timedelta(hours=2), 3, mb)
    newest = segment("m", timedelta(hours=1), 4, mb)
    stale = root / "m" / "whatever.parquet.tmp"
    stale.write_bytes(b"half")
    old = time.time() - 120  # left by a writer that died two minutes ago
    os.utime(stale, (old, old))
    writing = root / "m" / "another-worker.parquet.tmp"  # another worker's, being written now
    writing.write_bytes(b"half")
    plog = PredictionLog(LogConfig(root=root, retention_hours=4, retention_mb=2, flush_ms=10))
    plog.start()
    plog.close()
    assert not too_old.exists() and not stale.exists()
    assert writing.exists()
    assert not oldest_kept_by_age.exists()  # 3 MB over a 2 MB cap: the oldest goes
    assert middle.exists() and newest.exists()


def test_requests_that_leave_the_loop_are_logged_too(
    tmp_path: Path, servers: list[Serving], bundle: Path
) -> None:
    """Dynamic batching runs requests off the event loop (``_infer_via``): same rows, same ids."""
    log_dir = tmp_path / "log"
    s = serve(tmp_path, servers, bundle, log_dir, "--max-batch-size", "8")
    ids = [infer(s, [[float(i), 0.0, 0.0, 0.0]]).json()["id"] for i in range(5)]
    bad = httpx.post(
        f"{s.url}/v2/models/m/infer",
        json={"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]},
        timeout=10,
    )
    assert bad.status_code == 400
    s.stop()
    rows = read(log_dir / logschema.PREDICTIONS_GLOB)
    assert [r["request_id"] for r in rows if r["status"] == 200] == ids
    assert [r["in_age"] for r in rows if r["status"] == 200] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert [r["status"] for r in rows].count(400) == 1


def test_a_log_folder_that_cannot_be_used_does_not_stop_serving(
    tmp_path: Path, servers: list[Serving], bundle: Path
) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    s = serve(tmp_path, servers, bundle, not_a_dir / "log")
    assert infer(s, [[1.0, 2.0, 3.0, 4.0]]).status_code == 200
    assert "mlplat_predlog" not in httpx.get(f"{s.url}/metrics", timeout=10).text
    s.stop()
    assert "serving without the prediction log" in (tmp_path / "serving.log").read_text()


def _wait(cond: object, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def _loaded(tmp_path: Path) -> Any:
    from mlplat_runtime.bundle import open_bundle
    from mlplat_runtime.serving.model import load_bundle

    return load_bundle(open_bundle(make_bundle(tmp_path / "b")), providers=["CPUExecutionProvider"])


def test_the_queue_bound_counts_what_requests_hold_even_in_excluded_columns(tmp_path: Path) -> None:
    model = _loaded(tmp_path)
    plog = PredictionLog(
        LogConfig(
            root=tmp_path / "log",
            budget=1_000_000,
            queue_mb=1,
            flush_ms=50,
            exclude=frozenset({"x0", "x1", "x2", "x3"}),
        )
    )
    plog.start()
    try:
        big = np.zeros((40_000, 4), dtype=np.float32)  # 640 KB, in columns the log never writes
        arrays = model.predict({"input": big}, model.output_names)
        plog.capture(model, None, {"input": big}, model.output_names, arrays, time.perf_counter())
        _wait(lambda: plog.captured == 40_000, "the writer to take the first request")
        for _ in range(10):  # a burst within one flush: one such request fits in 1 MB
            plog.capture(model, None, {"input": big}, model.output_names, arrays, time.perf_counter())
        assert plog.dropped >= 5 * 40_000, plog.dropped
    finally:
        plog.close()


def test_a_pass_that_fails_does_not_end_the_writer(tmp_path: Path) -> None:
    model = _loaded(tmp_path)
    plog = PredictionLog(LogConfig(root=tmp_path / "log", flush_ms=20, segment_seconds=0.1))
    plog.start()
    try:
        plog._queue.append(("not", "a", "request"))  # what a bug in the writer's input would look like
        _wait(lambda: plog.write_errors >= 1, "the failed pass to be counted")
        x = np.ones((1, 4), dtype=np.float32)
        rid = plog.capture(model, None, {"input": x}, model.output_names, model.predict({"input": x},
                           model.output_names), time.perf_counter())  # fmt: skip
        _wait(lambda: plog.written >= 1, "the next request to be written")
    finally:
        plog.close()
    rows = read(tmp_path / "log" / "*" / "*.parquet")
    assert [r["request_id"] for r in rows] == [rid]
