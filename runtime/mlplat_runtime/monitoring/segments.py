"""Captured requests to columns, and columns to a closed Parquet segment (see ``logschema``).

Runs on the prediction log's writer thread only, never on the event loop. Columns are built
with numpy over all the requests of a segment at once (one ``concatenate`` per input tensor),
handed to DuckDB as a dict of arrays (DuckDB scans numpy arrays directly: neither pandas nor
pyarrow is needed, and the runtime image has neither), and written with ``COPY ... (FORMAT
parquet, COMPRESSION zstd)`` to ``<name>.parquet.tmp``, fsynced and renamed to ``<name>.parquet``.
Values that are missing for a whole request (a failure without decoded inputs, an output it
did not ask for) travel as a validity column and become NULL in the ``SELECT`` of the copy.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from mlplat_runtime.monitoring.logschema import INPUT_PREFIX, OUTPUT_PREFIX, TEMP_SUFFIX, quote

# Vectors wider than this are written through per-row objects instead of one column each.
MAX_LIST_COLUMNS = 64


class Captured(NamedTuple):
    """One request as the hot path queued it (no copies; the arrays are the request's own)."""

    wall: float  # time.time() when answered
    model: Any  # LoadedModel: name, version, bundle_id, inputs, outputs, keep (the Bundle)
    request_id: str
    inputs: dict[str, np.ndarray] | None  # None: the request failed before it was decoded
    names: Sequence[str]  # outputs returned, aligned with ``arrays``
    arrays: Sequence[np.ndarray]
    status: int
    error: str | None
    latency_s: float
    rate: float  # sample rate in force


@dataclass(frozen=True)
class InputColumn:
    tensor: str
    column: int | None  # None: a 1-D tensor
    name: str  # the SQL column (``in_<feature>``)
    dtype: np.dtype[Any]


@dataclass(frozen=True)
class OutputColumn:
    output: str
    name: str  # ``out_<output>``
    width: int | None  # None: one scalar per row; else a vector of this width
    dtype: np.dtype[Any]


@dataclass(frozen=True)
class Layout:
    """Which input and output columns one model version's rows have."""

    inputs: tuple[InputColumn, ...]
    outputs: tuple[OutputColumn, ...]


def _log_dtype(dtype: np.dtype[Any]) -> np.dtype[Any]:
    return np.dtype(np.float32) if dtype == np.float16 else dtype


def layout_of(model: Any, exclude: frozenset[str] = frozenset()) -> Layout:
    """The columns of a loaded model: features named from its bundle's v2 reference, if any."""
    from mlplat_runtime.monitoring.reference import default_feature_name, parse_reference

    names_by_column: dict[tuple[str, int], str] = {}
    bundle = getattr(model, "keep", None)
    try:
        raw = bundle.reference() if bundle is not None and hasattr(bundle, "reference") else None
        ref = parse_reference(raw) if raw else None
    except Exception:  # a bad reference must not stop the log; the columns get default names
        ref = None
    if ref is not None:
        for feature in ref.features.values():
            if feature.column is not None:
                names_by_column[(feature.input, feature.column)] = feature.name
    slots = [s for s in model.inputs.values() if len(s.shape) in (1, 2)]
    single = len(slots) == 1
    inputs: list[InputColumn] = []
    for slot in slots:
        dtype = _log_dtype(slot.dtype)
        if len(slot.shape) == 1:
            if slot.name not in exclude:
                inputs.append(InputColumn(slot.name, None, INPUT_PREFIX + slot.name, dtype))
            continue
        width = slot.shape[1]
        for i in range(max(width, 0)):
            name = names_by_column.get((slot.name, i)) or default_feature_name(
                slot.name, i, single_input=single
            )
            if name not in exclude:
                inputs.append(InputColumn(slot.name, i, INPUT_PREFIX + name, dtype))
    outputs: list[OutputColumn] = []
    for out in model.outputs:
        if out.name in exclude or len(out.shape) not in (1, 2):
            continue
        width = None if len(out.shape) == 1 or out.shape[1] == 1 else out.shape[1]
        if width is not None and width < 0:
            continue  # a vector of unknown width cannot be a fixed column
        outputs.append(OutputColumn(out.name, OUTPUT_PREFIX + out.name, width, _log_dtype(out.dtype)))
    return Layout(tuple(inputs), tuple(outputs))


def _rows(item: Captured) -> int:
    if item.inputs:
        for arr in item.inputs.values():
            return int(arr.shape[0]) if arr.ndim else 1
    return 1


def prediction_columns(items: Sequence[Captured], layout: Layout) -> tuple[dict[str, np.ndarray], str]:
    """The arrays of one segment and the SELECT list that turns them into its columns."""
    counts = np.fromiter((_rows(it) for it in items), dtype=np.int64, count=len(items))
    n = int(counts.sum())
    first = items[0].model

    def per_request(values: list[Any], dtype: Any) -> np.ndarray:
        return np.repeat(np.array(values, dtype=dtype), counts)

    walls = np.array([it.wall for it in items], dtype=np.float64)
    cols: dict[str, np.ndarray] = {
        "time": np.repeat((walls * 1e6).astype("datetime64[us]"), counts),
        "model": np.full(n, first.name, dtype=object),
        "version": np.full(n, first.version, dtype=object),
        "bundle_id": np.full(n, first.bundle_id, dtype=object),
        "request_id": per_request([it.request_id for it in items], object),
        "row": np.concatenate([np.arange(c, dtype=np.int32) for c in counts]),
        "status": per_request([it.status for it in items], np.int32),
        "error": per_request([it.error for it in items], object),
        "latency_ms": per_request([it.latency_s * 1000.0 for it in items], np.float64),
        "sample_rate": per_request([it.rate for it in items], np.float64),
    }
    select = [quote(c) for c in cols]
    by_tensor: dict[str, list[InputColumn]] = {}
    for col in layout.inputs:
        by_tensor.setdefault(col.tensor, []).append(col)
    for t, (tensor, columns) in enumerate(by_tensor.items()):
        ok, block = _stack(
            items, counts, lambda it, tensor=tensor: (it.inputs or {}).get(tensor), columns[0].dtype
        )
        valid = f"_in{t}"
        cols[valid] = ok
        for col in columns:
            values = block if col.column is None else block[:, col.column]
            key = f"_c{len(cols)}"
            cols[key] = np.ascontiguousarray(values.reshape(n))
            select.append(f"CASE WHEN {valid} THEN {key} END AS {quote(col.name)}")
    for o, out in enumerate(layout.outputs):

        def get(it: Captured, name: str = out.output) -> np.ndarray | None:
            for got, arr in zip(it.names, it.arrays, strict=False):
                if got == name:
                    return arr
            return None

        ok, block = _stack(items, counts, get, out.dtype)
        valid = f"_out{o}"
        cols[valid] = ok
        if out.width is None:
            key = f"_c{len(cols)}"
            cols[key] = np.ascontiguousarray(block.reshape(n))
            expr = key
        elif out.width <= MAX_LIST_COLUMNS:
            keys = []
            for j in range(out.width):
                key = f"_c{len(cols)}"
                cols[key] = np.ascontiguousarray(block[:, j])
                keys.append(key)
            expr = f"list_value({', '.join(keys)})"
        else:
            key = f"_c{len(cols)}"
            rows = np.empty(n, dtype=object)
            rows[:] = list(block)
            cols[key] = rows
            expr = key
        select.append(f"CASE WHEN {valid} THEN {expr} END AS {quote(out.name)}")
    return cols, ", ".join(select)


def _stack(
    items: Sequence[Captured], counts: np.ndarray, get: Any, dtype: np.dtype[Any]
) -> tuple[np.ndarray, np.ndarray]:
    """(per-row validity, the rows of one tensor across requests; zeros where it is missing)."""
    parts: list[np.ndarray] = []
    valid: list[bool] = []
    width: int | None = None
    for item, rows in zip(items, counts, strict=True):
        arr = get(item)
        if arr is not None and arr.ndim in (1, 2) and arr.shape[0] == rows:
            parts.append(arr.astype(dtype, copy=False))
            valid.append(True)
            if arr.ndim == 2:
                width = arr.shape[1]
        else:
            parts.append(None)  # type: ignore[arg-type]
            valid.append(False)
    shape_tail: tuple[int, ...] = () if width is None else (width,)
    filled = [
        p if p is not None and p.shape[1:] == shape_tail else np.zeros((int(r), *shape_tail), dtype=dtype)
        for p, r in zip(parts, counts, strict=True)
    ]
    ok = np.repeat(np.array(valid, dtype=bool), counts)
    return ok, np.concatenate(filled) if filled else np.zeros((0, *shape_tail), dtype=dtype)


def write_segment(con: Any, data: dict[str, np.ndarray], select: str, final: Path) -> int:
    """Write ``data`` as ``final`` (zstd Parquet) through a temp file; returns its size in bytes."""
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = final.with_name(final.name[: -len(".parquet")] + TEMP_SUFFIX)
    target = str(temp).replace("'", "''")
    con.register("segment_data", data)
    try:
        con.execute(
            f"COPY (SELECT {select} FROM segment_data) TO '{target}' "
            "(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 65536)"
        )
    finally:
        con.unregister("segment_data")
    fd = os.open(temp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, final)
    dir_fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return final.stat().st_size
