"""Captured requests to columns, and columns to a closed Parquet segment (see ``logschema``).

Runs on the prediction log's writer thread only, never on the event loop. Columns are built
with numpy over each batch of requests the writer takes (one join of buffers per tensor), as
a ``Chunk``; at close a segment's chunks are concatenated (``merge_chunks``), handed to DuckDB
as dicts of arrays (DuckDB scans numpy arrays directly: neither pandas nor
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
    """One request as the hot path queued it (no copies; the arrays are the request's own).

    The hot path queues plain tuples in this field order (a NamedTuple costs more to build);
    this class names the fields. The writer adds wall time, sample rate and rows per request.
    """

    t0: float  # perf_counter() when the request arrived
    t1: float  # perf_counter() when it was answered
    model: Any  # LoadedModel: name, version, bundle_id, inputs, outputs, keep (the Bundle)
    request_id: str
    inputs: dict[str, np.ndarray] | None  # None: the request failed before it was decoded
    names: Sequence[str]  # outputs returned, aligned with ``arrays``
    arrays: Sequence[np.ndarray]
    status: int
    error: str | None


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


class Chunk(NamedTuple):
    """Some requests of one model version as columns, and the SELECT list that names them."""

    columns: dict[str, np.ndarray]
    select: str
    nbytes: int  # held by the numeric columns


def prediction_columns(
    items: Sequence[Any], layout: Layout, *, walls: np.ndarray, rates: np.ndarray, counts: np.ndarray
) -> Chunk:
    """The arrays of some requests and the SELECT list that turns them into a segment's columns.

    ``items`` are ``Captured`` tuples; ``walls``, ``rates`` and ``counts`` hold each one's wall
    time, sample rate and rows. Fields are transposed once (``zip(*items)``) and every column
    is built by numpy; the common case (every request succeeded and asked for every output)
    concatenates the requests' own arrays without a per-request branch.
    """
    t0s, t1s, models, rids, inputs, names, arrays, statuses, errors = zip(*items, strict=True)
    counts = np.asarray(counts, dtype=np.int64)
    n = int(counts.sum())
    single = n == len(items)  # one row per request: nothing to repeat

    def per_request(values: Any, dtype: Any) -> np.ndarray:
        arr = np.asarray(values, dtype=dtype)
        return arr if single else np.repeat(arr, counts)

    first = models[0]
    starts = np.cumsum(counts) - counts
    all_ok = statuses.count(200) == len(statuses)
    # Constant columns are SQL literals: a numpy object column costs DuckDB a Python string per row.
    cols: dict[str, np.ndarray] = {
        "time": per_request(
            (np.asarray(walls, dtype=np.float64) * 1e6).astype("datetime64[us]"), "datetime64[us]"
        ),
        "request_id": per_request(rids, object),
        "row": np.zeros(n, dtype=np.int32)
        if single
        else (np.arange(n) - np.repeat(starts, counts)).astype(np.int32),
        "status": per_request(statuses, np.int32),
        "latency_ms": per_request(np.subtract(t1s, t0s), np.float64) * 1000.0,
        "sample_rate": per_request(rates, np.float64),
    }
    if not all_ok:
        cols["error"] = per_request(errors, object)
    select = [
        '"time"',
        f"{literal(first.name)} AS model",
        f"{literal(first.version)} AS version",
        f"{literal(first.bundle_id)} AS bundle_id",
        "request_id",
        '"row"',
        "status",
        '"error"' if not all_ok else 'CAST(NULL AS VARCHAR) AS "error"',
        "latency_ms",
        "sample_rate",
    ]
    all_outputs = all_ok and names.count(first.output_names) == len(names)
    by_tensor: dict[str, list[InputColumn]] = {}
    for col in layout.inputs:
        by_tensor.setdefault(col.tensor, []).append(col)
    for t, (tensor, columns) in enumerate(by_tensor.items()):
        if all_ok:
            ok, block = None, _concat([inp[tensor] for inp in inputs], columns[0].dtype, n)
        else:
            wide = None if columns[0].column is None else max(c.column or 0 for c in columns) + 1
            got_in = [(inp or {}).get(tensor) for inp in inputs]
            ok, block = _stack(got_in, counts, columns[0].dtype, wide)
        valid = f"_in{t}"
        if ok is not None:
            cols[valid] = ok
        for col in columns:
            values = block if col.column is None else block[:, col.column]
            key = f"_c{len(cols)}"
            cols[key] = np.ascontiguousarray(values.reshape(n))
            select.append(
                f"CASE WHEN {valid} THEN {key} END AS {quote(col.name)}"
                if ok is not None
                else f"{key} AS {quote(col.name)}"
            )
    positions = {name: i for i, name in enumerate(first.output_names)}
    for o, out in enumerate(layout.outputs):
        if all_outputs:
            i = positions[out.output]
            ok, block = None, _concat([a[i] for a in arrays], out.dtype, n)
        else:
            got = []
            for nm, arrs in zip(names, arrays, strict=True):
                j = nm.index(out.output) if out.output in nm else -1
                got.append(arrs[j] if j >= 0 else None)
            ok, block = _stack(got, counts, out.dtype, out.width)
        valid = f"_out{o}"
        if ok is not None:
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
            objs = np.empty(n, dtype=object)
            objs[:] = list(block)
            cols[key] = objs
            expr = key
        select.append(
            f"CASE WHEN {valid} THEN {expr} END AS {quote(out.name)}"
            if ok is not None
            else f"{expr} AS {quote(out.name)}"
        )
    nbytes = sum(a.nbytes for a in cols.values() if a.dtype != object)
    return Chunk(cols, ", ".join(select), nbytes)


def merge_chunks(chunks: Sequence[Chunk]) -> list[tuple[dict[str, np.ndarray], str]]:
    """A segment's chunks as few parts as possible: runs of chunks with the same columns are
    concatenated (the common case: one part); a chunk that differs (failures, outputs left
    out) starts a new part, and ``write_segment`` unions the parts by column name."""
    runs: list[list[Chunk]] = []
    for chunk in chunks:
        if runs and runs[-1][0].select == chunk.select and runs[-1][0].columns.keys() == chunk.columns.keys():
            runs[-1].append(chunk)
        else:
            runs.append([chunk])
    parts = []
    for run in runs:
        if len(run) == 1:
            parts.append((run[0].columns, run[0].select))
        else:
            keys = run[0].columns.keys()
            parts.append(({k: np.concatenate([c.columns[k] for c in run]) for k in keys}, run[0].select))
    return parts


def literal(text: str) -> str:
    """A SQL string literal."""
    return "'" + str(text).replace("'", "''") + "'"


def _concat(parts: list[np.ndarray], dtype: np.dtype[Any], rows: int) -> np.ndarray:
    """The parts (``rows`` rows in all) one after another.

    The parts are one tensor of one model version's requests, and the layout holds only
    tensors whose non-batch dimensions the signature fixes: decoding checks every input's
    shape against it and gives it the signature's dtype, and the session gives every output
    its own dtype (only an output whose width varies between requests, against its graph's
    declaration, is left to the byte count below). So when they are C-contiguous
    their buffers are joined as bytes (a third of ``np.concatenate``'s cost for many one-row
    parts), the byte count checked against ``rows`` rows of the first part's shape and dtype;
    anything else (a part that is not contiguous, a count that differs) numpy concatenates."""
    block: np.ndarray | None = parts[0] if len(parts) == 1 else None
    if block is None:
        first = parts[0]
        tail = first.shape[1:]
        width = int(np.prod(tail)) * first.itemsize
        if width and first.ndim >= 1:
            try:
                raw = b"".join(parts)  # type: ignore[arg-type]  # arrays export their buffers
            except (BufferError, TypeError):  # a non-contiguous part
                raw = b""
            if len(raw) == rows * width:
                block = np.frombuffer(raw, dtype=first.dtype).reshape((rows, *tail))
        if block is None:
            block = np.concatenate(parts)
    return block if block.dtype == dtype else block.astype(dtype)


def _stack(
    got: Sequence[np.ndarray | None], counts: np.ndarray, dtype: np.dtype[Any], width: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """(per-row validity, the rows of one tensor across requests; zeros where it is missing).

    ``width``: the columns the layout reads of a 2-D tensor (None: 1-D), the shape of the zeros
    when no request of these has the tensor (a batch of failures only); a request's own
    2-D width wins when there is one."""
    usable: list[np.ndarray | None] = []
    for arr, rows in zip(got, counts, strict=True):
        if arr is not None and arr.ndim in (1, 2) and arr.shape[0] == rows:
            usable.append(arr)
            if arr.ndim == 2:
                width = arr.shape[1]
        else:
            usable.append(None)
    tail: tuple[int, ...] = () if width is None else (width,)
    filled = [
        a.astype(dtype, copy=False)
        if a is not None and a.shape[1:] == tail
        else np.zeros((int(r), *tail), dtype=dtype)
        for a, r in zip(usable, counts, strict=True)
    ]
    valid = np.array([a is not None and a.shape[1:] == tail for a in usable], dtype=bool)
    return np.repeat(valid, counts), np.concatenate(filled)


def write_segment(con: Any, parts: Sequence[tuple[dict[str, np.ndarray], str]], final: Path) -> int:
    """Write ``parts`` (arrays and the SELECT list over them; several are unioned by column
    name) as ``final`` (zstd Parquet) through a temp file; returns its size in bytes."""
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = final.with_name(final.name[: -len(".parquet")] + TEMP_SUFFIX)
    target = str(temp).replace("'", "''")
    names = [f"segment_part{i}" for i in range(len(parts))]
    for name, (data, _) in zip(names, parts, strict=True):
        con.register(name, data)
    try:
        query = " UNION ALL BY NAME ".join(
            f"SELECT {select} FROM {name}" for name, (_, select) in zip(names, parts, strict=True)
        )
        con.execute(f"COPY ({query}) TO '{target}' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 65536)")
    finally:
        for name in names:
            con.unregister(name)
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
