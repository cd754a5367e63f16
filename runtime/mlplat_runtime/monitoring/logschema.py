"""The prediction log's files: folder layout, segment names and columns (the reader's contract).

Layout under the log root (serving's ``--log-dir``; the local stack passes
``.mlplat/monitoring/predictions``)::

    <root>/<model>/<start>-<boot>-<seq>.parquet     closed prediction segments of one model
    <root>/_feedback/<start>-<boot>-<seq>.parquet   closed feedback segments
    *.parquet.tmp                                   being written: never read these

``<start>`` is the UTC time the segment was opened (``20261201T123000123456Z``), ``<boot>`` the
writing process's boot id, ``<seq>`` a per-process counter: names sort by time and two serving
processes never collide. A segment is written as ``.parquet.tmp``, fsynced and renamed into
place, so every ``*.parquet`` is whole; stale ``.tmp`` files (a killed process) are removed at
start. Retention deletes whole closed files, oldest first. Globs: predictions
``<root>/[!_]*/*.parquet`` (model names cannot start with ``_``), feedback
``<root>/_feedback/*.parquet``. Read with ``union_by_name=true``: versions may differ in inputs.

Prediction columns, one row per input row (a request of 8 rows gives 8):

    time         TIMESTAMP  UTC, microseconds: when the request was answered
    model        VARCHAR
    version      VARCHAR
    bundle_id    VARCHAR    the bundle digest
    request_id   VARCHAR    the client's OIP ``id``, else ``<boot>-<seq>`` (echoed in the response)
    row          INTEGER    row index within the request (0 for a failure without inputs)
    status       INTEGER    HTTP status (200, or the failure's 4xx/5xx)
    error        VARCHAR    NULL when ok
    latency_ms   DOUBLE     request received to response ready
    sample_rate  DOUBLE     the probability this row was kept (1.0 under the budget)
    in_<feature> typed from the signature (FP16/FP32 FLOAT, FP64 DOUBLE, INTn integers, BOOL
                 BOOLEAN, BYTES VARCHAR); NaN is NULL; NULL when a failed request had no inputs
    out_<output> per-row scalars as scalars, per-row vectors (probabilities) as LISTs; NULL on
                 failures

Feature names: column ``i`` of a 2-D input is the reference v2 feature with that input and
column, else ``x<i>`` (the only input) or ``<input>_x<i>``; a 1-D input is one column named
after it; inputs and outputs of more than 2 dimensions are not logged. ``[monitor] exclude``
names features or outputs to leave out (personal data).

Feedback columns: ``time`` TIMESTAMP (received), ``model`` VARCHAR, ``request_id`` VARCHAR,
``row`` INTEGER, ``label`` VARCHAR (JSON text of what was sent; NULL when a value was sent),
``value`` DOUBLE (NULL when a label was sent).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

SEGMENT_SUFFIX: Final = ".parquet"
TEMP_SUFFIX: Final = ".parquet.tmp"
FEEDBACK_DIR: Final = "_feedback"
PREDICTIONS_GLOB: Final = "[!_]*/*.parquet"
FEEDBACK_GLOB: Final = f"{FEEDBACK_DIR}/*.parquet"
INPUT_PREFIX: Final = "in_"
OUTPUT_PREFIX: Final = "out_"

PREDICTION_COLUMNS: Final = (
    ("time", "TIMESTAMP"),
    ("model", "VARCHAR"),
    ("version", "VARCHAR"),
    ("bundle_id", "VARCHAR"),
    ("request_id", "VARCHAR"),
    ("row", "INTEGER"),
    ("status", "INTEGER"),
    ("error", "VARCHAR"),
    ("latency_ms", "DOUBLE"),
    ("sample_rate", "DOUBLE"),
)
FEEDBACK_COLUMNS: Final = (
    ("time", "TIMESTAMP"),
    ("model", "VARCHAR"),
    ("request_id", "VARCHAR"),
    ("row", "INTEGER"),
    ("label", "VARCHAR"),
    ("value", "DOUBLE"),
)

_NAME = re.compile(r"^(\d{8}T\d{12}Z)-([0-9a-z]+)-(\d{8})\.parquet$")


def segment_name(opened: datetime, boot: str, seq: int) -> str:
    """The closed file name of a segment opened at ``opened`` (UTC)."""
    return f"{opened.astimezone(UTC).strftime('%Y%m%dT%H%M%S%fZ')}-{boot}-{seq:08d}{SEGMENT_SUFFIX}"


def segment_opened(path: Path) -> datetime | None:
    """When the segment named ``path`` was opened (None for a name that is not a segment's)."""
    m = _NAME.match(path.name)
    if m is None:
        return None
    return datetime.strptime(m.group(1), "%Y%m%dT%H%M%S%fZ").replace(tzinfo=UTC)


def closed_segments(root: Path) -> list[Path]:
    """Every closed segment (predictions and feedback) under ``root``, oldest first."""
    found = [p for p in root.glob(f"*/*{SEGMENT_SUFFIX}") if segment_opened(p) is not None]
    return sorted(found, key=lambda p: (p.name, str(p)))


def quote(identifier: str) -> str:
    """A SQL identifier in double quotes (feature names come from training scripts)."""
    return '"' + identifier.replace('"', '""') + '"'
