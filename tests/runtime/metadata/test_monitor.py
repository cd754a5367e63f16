"""The monitor over real DuckDB and real Parquet segments: profiles, windows, alerts, the reader.

Segments are written here the way serving's log writer closes them (a temp name, then a
rename into place), in the log layout the monitor reads (``monitor.LogLayout``).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlplat_runtime.errors import MetadataError
from mlplat_runtime.metadata.alerts import Thresholds
from mlplat_runtime.metadata.monitor import LogLayout, Monitor, MonitorConfig, SegmentReader, parse_duration
from mlplat_runtime.metadata.store import MetadataStore
from mlplat_runtime.monitoring.reference import Reference, compute_reference

BUNDLE = "sha256:" + "ab" * 32
_SEQ = itertools.count()


def training(n: int = 20_000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack(
        [rng.normal(0, 1, n), rng.exponential(2.0, n), rng.uniform(-1, 1, n), rng.integers(0, 4, n)]
    ).astype(np.float64)


NAMES = ["age", "spend", "score", "plan"]


@pytest.fixture(scope="module")
def reference() -> Reference:
    rng = np.random.default_rng(1)
    p = rng.dirichlet([2, 2], 5000)
    return compute_reference(training(), feature_names=NAMES, outputs={"probabilities": p})


def write_segment(
    root: Path, x: np.ndarray, *, start: float = 1_700_000_000.0, step: float = 0.01, version: str = "1",
    status: np.ndarray | None = None, probs: np.ndarray | None = None, plan: list[object] | None = None,
) -> Path:  # fmt: skip
    lay = LogLayout()
    n = len(x)
    rng = np.random.default_rng(next(_SEQ))
    probs = rng.dirichlet([2, 2], n) if probs is None else probs
    columns = {
        lay.time: pa.array((np.asarray(start + np.arange(n) * step) * 1e6).astype("datetime64[us]")),
        lay.model: pa.array(["m"] * n),
        lay.version: pa.array([version] * n),
        lay.bundle: pa.array([BUNDLE] * n),
        lay.status: pa.array(np.full(n, 200) if status is None else status),
        lay.latency_ms: pa.array(rng.uniform(0.5, 3.0, n)),
        lay.sample_rate: pa.array(np.ones(n)),
        "request_id": pa.array([f"r{i}" for i in range(n)]),
        "row": pa.array(np.zeros(n, dtype=np.int32)),
        lay.output_prefix + "probabilities": pa.array([list(r) for r in probs], type=pa.list_(pa.float32())),
    }
    for i, name in enumerate(NAMES):
        values = x[:, i]
        columns[lay.input_prefix + name] = pa.array(values, type=pa.float32(), from_pandas=True)
    if plan is not None:
        columns[lay.input_prefix + "plan"] = pa.array(plan, type=pa.float32())
    folder = root / "m"
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"seg-{next(_SEQ):06d}.parquet"
    tmp = final.with_name(final.name + ".tmp")
    pq.write_table(pa.table(columns), tmp, compression="zstd")
    tmp.rename(final)
    return final


@pytest.fixture
def monitor(store: MetadataStore, tmp_path: Path, reference: Reference) -> Monitor:
    reader = SegmentReader(tmp_path / "log")
    mon = Monitor(store, reader, MonitorConfig(bucket_s=1, window_s=10), clock=lambda: 1_700_000_000.0)
    mon.register_reference(BUNDLE, "m", "1", reference.model_dump(mode="json"))
    return mon


def _shifted(n: int, seed: int) -> np.ndarray:
    x = training(n, seed)
    x[:, 1] = x[:, 1] + 3.0  # spend moves up by 3
    return x


def test_a_drifted_feature_opens_one_alert_within_three_windows(
    monitor: Monitor, store: MetadataStore
) -> None:
    root = monitor.reader.root
    windows = []
    for i in range(3):
        write_segment(root, _shifted(2000, 100 + i))
        windows.append(monitor.process(cut=True)["windows"][0])
    assert [w["opened"] for w in windows[:2]] == [[], []]
    assert windows[2]["opened"] == ["drift:m:1:spend"]
    states = {f["feature"]: f["state"] for f in windows[2]["features"]}
    assert states["spend"] == "drift"
    assert states["age"] == states["score"] == states["plan"] == "ok"
    events = [e for e in store.events() if e.kind == "alert_opened"]
    assert len(events) == 1 and events[0].payload["dedupe_key"] == "drift:m:1:spend"
    # a fourth drifted window does not open it again (dedupe: one open alert per key)
    write_segment(root, _shifted(2000, 200))
    assert monitor.process(cut=True)["windows"][0]["opened"] == []
    assert [a["dedupe_key"] for a in monitor.alerts(open_only=True)] == ["drift:m:1:spend"]
    # back to normal: resolves after three windows under
    for i in range(3):
        write_segment(root, training(2000, 300 + i))
        last = monitor.process(cut=True)["windows"][0]
    assert last["resolved"] == ["drift:m:1:spend"]
    assert monitor.alerts(open_only=True) == []
    assert [e.kind for e in store.events() if e.kind.startswith("alert_")] == [
        "alert_opened",
        "alert_resolved",
    ]


def test_an_undrifted_stream_opens_nothing_over_twenty_windows(
    monitor: Monitor, store: MetadataStore
) -> None:
    for i in range(20):
        write_segment(monitor.reader.root, training(1500, 1000 + i))
        window = monitor.process(cut=True)["windows"][0]
        assert window["opened"] == [], window
    assert monitor.alerts() == []
    assert store.sql("SELECT count(DISTINCT window_id) FROM drift").rows == [[20]]


def test_not_enough_data_is_said_and_opens_nothing(monitor: Monitor) -> None:
    for i in range(4):
        write_segment(monitor.reader.root, _shifted(500, 50 + i))
        window = monitor.process(cut=True)["windows"][0]
        assert not window["enough_data"]
        assert {f["state"] for f in window["features"]} == {"unknown"}
    assert monitor.alerts() == []


def test_a_new_category_raises_the_unseen_share(monitor: Monitor) -> None:
    x = training(2000, 7)
    plan = [9.0 if i % 4 == 0 else float(v) for i, v in enumerate(x[:, 3])]  # 9 was never seen
    write_segment(monitor.reader.root, x, plan=plan)
    window = monitor.process(cut=True)["windows"][0]
    by = {f["feature"]: f for f in window["features"]}
    assert by["plan"]["unseen_share"] == pytest.approx(0.25, abs=0.01)
    assert by["age"]["unseen_share"] == 0.0


def test_missing_errors_and_uncertain_are_counted(monitor: Monitor, store: MetadataStore) -> None:
    x = training(1200, 8)
    x[:120, 0] = np.nan
    status = np.full(1200, 200)
    status[:60] = 500
    probs = np.tile([0.52, 0.48], (1200, 1))  # every prediction is uncertain (margin 0.04)
    write_segment(monitor.reader.root, x, status=status, probs=probs)
    window = monitor.process(cut=True)["windows"][0]
    by = {f["feature"]: f for f in window["features"]}
    assert by["age"]["missing_share"] == pytest.approx(0.1)
    report = monitor.report(window_s=10**9)
    version = report["versions"][0]
    assert version["requests"] == 1200
    assert version["error_rate"] == pytest.approx(0.05)
    assert version["uncertain_share"] == pytest.approx(1.0)
    assert version["estimated_accuracy"] is not None and 0 < version["estimated_accuracy"] <= 1
    assert version["latency_p50_ms"] is not None and version["latency_p99_ms"] >= version["latency_p50_ms"]


def test_each_segment_is_read_once_also_after_a_restart(
    store: MetadataStore, tmp_path: Path, reference: Reference
) -> None:
    reader = SegmentReader(tmp_path / "log")
    first = Monitor(store, reader, MonitorConfig(bucket_s=1))
    first.register_reference(BUNDLE, "m", "1", reference.model_dump(mode="json"))
    write_segment(reader.root, training(1000, 9))
    (reader.root / "m" / "half.parquet.tmp").write_bytes(b"PAR1 half written")
    assert first.ingest() == 1
    again = Monitor(store, SegmentReader(tmp_path / "log"), MonitorConfig(bucket_s=1))
    assert again.ingest() == 0
    assert store.sql("SELECT sum(requests) FROM traffic").rows == [[1000]]


def test_time_windows_are_evaluated_once_the_clock_passes_them(
    store: MetadataStore, tmp_path: Path, reference: Reference
) -> None:
    now = [1_700_000_000.0]
    reader = SegmentReader(tmp_path / "log")
    mon = Monitor(store, reader, MonitorConfig(bucket_s=1, window_s=60), clock=lambda: now[0])
    mon.register_reference(BUNDLE, "m", "1", reference.model_dump(mode="json"))
    # 60 s of rows across the aligned boundary at ...980: 20 s before it, 40 s after
    write_segment(reader.root, training(3000, 10), start=1_699_999_960.0, step=0.02)
    assert [w["rows"] for w in mon.process()["windows"]] == [1000]  # the window before ...980 is over
    assert mon.process()["windows"] == []  # the next one (until ...040) is not
    now[0] = 1_700_000_100.0
    assert [w["rows"] for w in mon.process()["windows"]] == [2000]


def test_the_reader_sees_the_log_folder_and_nothing_else(
    monitor: Monitor, store: MetadataStore, tmp_path: Path
) -> None:
    write_segment(monitor.reader.root, training(1000, 11))
    assert store.sql("SELECT count(*) FROM predictions").rows == [[1000]]
    outside = tmp_path / "outside.parquet"
    pq.write_table(pa.table({"a": [1]}), outside)
    for query in (
        f"SELECT * FROM read_parquet('{outside}')",
        "SELECT * FROM read_csv('/etc/passwd')",
        f"SELECT * FROM predictions, read_parquet('{monitor.reader.root}/../outside.parquet')",
    ):
        with pytest.raises(MetadataError, match=r"cannot reach files|query failed"):
            store.sql(query)
    with pytest.raises(MetadataError, match="read-only"):
        store.sql(f"COPY (SELECT 1) TO '{monitor.reader.root}/x.parquet'")


def test_metrics_have_drift_gauges(monitor: Monitor) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    write_segment(monitor.reader.root, _shifted(1500, 12))
    monitor.process(cut=True)
    families = {f.name: f for f in text_string_to_metric_families(monitor.metrics_text())}
    scores = {s.labels["feature"]: s.value for s in families["mlplat_drift_score"].samples}
    assert scores["spend"] >= 1.0 > scores["age"]


def test_thresholds_from_config_raise_the_trigger(
    store: MetadataStore, tmp_path: Path, reference: Reference
) -> None:
    reader = SegmentReader(tmp_path / "log")
    lax = Monitor(store, reader, MonitorConfig(bucket_s=1, thresholds=Thresholds(psi=50.0, ks=0.99)))
    lax.register_reference(BUNDLE, "m", "1", reference.model_dump(mode="json"))
    write_segment(reader.root, _shifted(1500, 13))
    window = lax.process(cut=True)["windows"][0]
    assert {f["feature"]: f["state"] for f in window["features"]}["spend"] != "drift"


def test_durations() -> None:
    assert [parse_duration(t) for t in ("15m", "90s", "1h", "600")] == [900, 90, 3600, 600]
    with pytest.raises(Exception, match="duration"):
        parse_duration("soon")


def test_feedback_gives_realised_accuracy_and_label_coverage(monitor: Monitor) -> None:
    probs = np.tile([0.9, 0.1], (1000, 1))  # every prediction is class 0
    write_segment(monitor.reader.root, training(1000, 14), probs=probs)
    folder = monitor.reader.root / "_feedback"
    folder.mkdir()
    # 400 of the 1000 predictions get a label: 300 right ("0"), 100 wrong ("1")
    labels = ["0"] * 300 + ["1"] * 100
    table = pa.table(
        {
            "time": pa.array(np.full(400, 1_700_000_100_000_000).astype("datetime64[us]")),
            "model": pa.array(["m"] * 400),
            "request_id": pa.array([f"r{i}" for i in range(400)]),
            "row": pa.array(np.zeros(400, dtype=np.int32)),
            "label": pa.array(labels),
            "value": pa.array([None] * 400, type=pa.float64()),
        }
    )
    pq.write_table(table, folder / "f-1.parquet")
    monitor.process(cut=True)
    report = monitor.report(window_s=10**9)
    (window,) = report["feedback"]
    assert window["predictions"] == 1000 and window["labelled"] == 400
    assert window["coverage"] == pytest.approx(0.4)
    assert window["accuracy"] == pytest.approx(0.75)
    assert monitor.store.sql("SELECT count(*) FROM feedback").rows == [[400]]


def test_config_from_the_projects_mlplat_toml(tmp_path: Path) -> None:
    from mlplat_runtime.metadata.monitor import config_from_toml

    (tmp_path / "mlplat.toml").write_text(
        '[project]\nname = "p"\n[model]\nname = "m"\n'
        '[monitor]\nbudget = 50\npsi = 0.2\nopen_after = 2\nwindow = "5m"\nbucket = "10s"\n'
    )
    config = config_from_toml(tmp_path, min_rows=10, window_s=None)
    assert (config.window_s, config.bucket_s) == (300, 10)
    assert (config.thresholds.psi, config.thresholds.open_after, config.thresholds.min_rows) == (0.2, 2, 10)
    assert config.thresholds.ks == 0.1


def test_segments_retention_removed_are_forgotten_and_none_is_read_twice(
    monitor: Monitor, store: MetadataStore
) -> None:
    root = monitor.reader.root
    paths = [write_segment(root, training(500, 400 + i)) for i in range(3)]
    assert monitor.process()["segments"] == 3

    def recorded() -> list[str]:
        return [r[0] for r in store.read("SELECT path FROM monitor_segments ORDER BY path")]

    assert recorded() == [f"m/{p.name}" for p in paths]
    paths[0].unlink()  # what serving's retention does: the oldest first
    assert monitor.process()["segments"] == 0
    assert recorded() == [f"m/{p.name}" for p in paths[1:]]
    # a listing that comes back empty (an unmounted volume, say) forgets nothing
    for p in paths[1:]:
        p.rename(p.with_suffix(".hidden"))
    assert monitor.process()["segments"] == 0
    assert len(recorded()) == 2
    for p in paths[1:]:
        p.with_suffix(".hidden").rename(p)
    assert monitor.process()["segments"] == 0  # back: still counted once
