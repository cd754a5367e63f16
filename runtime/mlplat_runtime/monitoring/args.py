"""Serving's ``--log-*`` flags (argparse: the runtime image has no click) -> ``LogConfig``.

The stack backends render them from ``[monitor]`` in mlplat.toml; without ``--log-dir`` the
prediction log is off.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mlplat_runtime.errors import UsageError
from mlplat_runtime.monitoring.predlog import LogConfig

_DEFAULTS = LogConfig(root=Path("."))


def add_log_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("prediction log (off unless --log-dir is given; see mlplat_runtime.monitoring)")
    g.add_argument("--log-dir", type=Path, default=None, help="write prediction and feedback segments here")
    g.add_argument(
        "--log-budget",
        type=int,
        default=_DEFAULTS.budget,
        help=f"rows per second per model logged in full (default {_DEFAULTS.budget}); above it, a"
        " deterministic sample on the request id",
    )
    g.add_argument(
        "--log-segment-seconds",
        type=float,
        default=_DEFAULTS.segment_seconds,
        help=f"close a segment after this long (default {_DEFAULTS.segment_seconds:g})",
    )
    g.add_argument(
        "--log-segment-rows",
        type=int,
        default=_DEFAULTS.segment_rows,
        help=f"... or after this many requests (default {_DEFAULTS.segment_rows})",
    )
    g.add_argument(
        "--log-retention-hours",
        type=float,
        default=_DEFAULTS.retention_hours,
        help=f"delete segments older than this (default {_DEFAULTS.retention_hours:g})",
    )
    g.add_argument(
        "--log-retention-mb",
        type=int,
        default=_DEFAULTS.retention_mb,
        help=f"keep at most this much, oldest deleted first (default {_DEFAULTS.retention_mb})",
    )
    g.add_argument(
        "--log-exclude",
        default="",
        help="comma-separated feature or output names never written (personal data)",
    )
    g.add_argument(
        "--log-queue",
        type=int,
        default=_DEFAULTS.queue_requests,
        help=f"requests waiting for the writer at most; more are dropped and counted (default"
        f" {_DEFAULTS.queue_requests})",
    )
    g.add_argument(
        "--log-queue-mb",
        type=int,
        default=_DEFAULTS.queue_mb,
        help="input megabytes the log holds at most: large requests lower --log-queue to fit, and open"
        f" segments past it are written early (default {_DEFAULTS.queue_mb})",
    )
    g.add_argument(
        "--log-flush-ms",
        type=int,
        default=_DEFAULTS.flush_ms,
        help=f"how often the writer takes the queue (default {_DEFAULTS.flush_ms})",
    )


def log_from_args(a: argparse.Namespace) -> LogConfig | None:
    if a.log_dir is None:
        return None
    if (
        a.log_flush_ms < 1
        or a.log_segment_seconds <= 0
        or a.log_retention_hours <= 0
        or a.log_retention_mb < 1
    ):
        raise UsageError("--log-flush-ms, --log-segment-seconds and the retention flags must be positive")
    try:
        return LogConfig(
            root=a.log_dir,
            budget=a.log_budget,
            queue_requests=a.log_queue,
            queue_mb=a.log_queue_mb,
            flush_ms=a.log_flush_ms,
            segment_seconds=a.log_segment_seconds,
            segment_rows=a.log_segment_rows,
            retention_hours=a.log_retention_hours,
            retention_mb=a.log_retention_mb,
            exclude=frozenset(n.strip() for n in a.log_exclude.split(",") if n.strip()),
        )
    except Exception as exc:
        raise UsageError(str(exc)) from None
