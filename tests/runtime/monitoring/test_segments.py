"""Captured requests to columns and segments, without a server: a real loaded model (ONNX
Runtime), its outputs, and the Parquet file DuckDB writes, read back."""

from __future__ import annotations

import time
from pathlib import Path

import duckdb
import numpy as np

from mlplat_runtime.bundle import open_bundle
from mlplat_runtime.monitoring.segments import (
    Chunk,
    layout_of,
    merge_chunks,
    prediction_columns,
    write_segment,
)
from mlplat_runtime.serving.model import LoadedModel, load_bundle
from tests.helpers.models import make_bundle


def _model(tmp_path: Path) -> LoadedModel:
    return load_bundle(open_bundle(make_bundle(tmp_path)), providers=["CPUExecutionProvider"])


def _served(model: LoadedModel, rid: str, x: np.ndarray) -> tuple[object, ...]:
    arrays = model.predict({"input": x}, model.output_names)
    return (0.0, 0.002, model, rid, {"input": x}, model.output_names, arrays, 200, None)


def _chunk(model: LoadedModel, items: list[tuple[object, ...]], counts: list[int]) -> Chunk:
    n = len(items)
    return prediction_columns(
        items,
        layout_of(model),
        walls=np.full(n, time.time()),
        rates=np.ones(n),
        counts=np.asarray(counts, dtype=np.int64),
    )


def _label_only(model: LoadedModel, rid: str, x: np.ndarray) -> tuple[object, ...]:
    (label,) = model.predict({"input": x}, ["label"])
    return (0.0, 0.002, model, rid, {"input": x}, ("label",), [label], 200, None)


def test_chunks_of_failures_only_or_of_some_outputs_only_keep_their_rows(tmp_path: Path) -> None:
    model = _model(tmp_path)
    x = np.ones((1, 4), dtype=np.float32)
    failed = (0.0, 0.001, model, "bad", None, (), (), 400, "input 'input' is missing")
    chunks = [
        _chunk(model, [_served(model, "ok", x)], [1]),
        _chunk(model, [failed], [1]),  # no request of this batch has the input or any output
        _chunk(model, [_label_only(model, "lab", x)], [1]),  # no probabilities in this batch
    ]
    path = tmp_path / "seg" / "y.parquet"
    write_segment(duckdb.connect(), merge_chunks(chunks), path)
    got = duckdb.sql(
        f"SELECT request_id, status, in_x0, out_label, out_probabilities FROM read_parquet('{path}')"
    ).fetchall()
    by_id = {r[0]: r[1:] for r in got}
    assert set(by_id) == {"ok", "bad", "lab"}
    assert by_id["bad"] == (400, None, None, None)
    assert by_id["lab"][:2] == (200, 1.0) and by_id["lab"][2] is not None and by_id["lab"][3] is None
    assert by_id["ok"][3] is not None and len(by_id["ok"][3]) == 2


def test_chunks_that_differ_are_written_as_one_segment_with_every_row(tmp_path: Path) -> None:
    model = _model(tmp_path)
    rows = np.arange(12, dtype=np.float32).reshape(3, 4)
    # chunk 1: one-row requests, all served (buffers joined as bytes)
    first = _chunk(model, [_served(model, f"a{i}", rows[i : i + 1].copy()) for i in range(3)], [1, 1, 1])
    # chunk 2: a failure without inputs, and a 3-row request whose input is not C-contiguous
    # (numpy concatenates that one)
    strided = np.asfortranarray(rows)
    assert not strided.flags.c_contiguous
    failed = (0.0, 0.001, model, "bad", None, (), (), 400, "input 'input' is missing")
    second = _chunk(model, [failed, _served(model, "b", strided)], [1, 3])
    # chunk 3: like chunk 1 again
    third = _chunk(model, [_served(model, "c", rows[:1].copy())], [1])
    parts = merge_chunks([first, second, third])
    assert len(parts) == 3  # runs of equal columns only: chunk 2 has a validity column
    assert len(merge_chunks([first, third])) == 1

    path = tmp_path / "seg" / "x.parquet"
    write_segment(duckdb.connect(), parts, path)
    got = duckdb.sql(
        f'SELECT request_id, "row", status, "error", in_x0, in_x3, out_label FROM read_parquet(\'{path}\')'
    ).fetchall()
    assert len(got) == 8
    by_id: dict[str, list[tuple[object, ...]]] = {}
    for rid, row, status, error, f0, f3, label in got:
        by_id.setdefault(rid, []).append((row, status, error, f0, f3, label))
    assert [r[3:5] for r in by_id["a1"]] == [(4.0, 7.0)]
    assert [(r[0], r[3], r[4]) for r in by_id["b"]] == [(0, 0.0, 3.0), (1, 4.0, 7.0), (2, 8.0, 11.0)]
    assert by_id["bad"] == [(0, 400, "input 'input' is missing", None, None, None)]
    expected = model.predict({"input": rows}, model.output_names)[0]
    assert [r[5] for r in by_id["b"]] == [int(v) for v in expected]
