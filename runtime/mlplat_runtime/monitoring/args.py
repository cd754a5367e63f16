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


# --log-<flag>: the LogConfig field it sets, its type, its help ("{}": the default)
_FLAGS: tuple[tuple[str, str, type, str], ...] = (
    ("budget", "budget", int,
     "rows per second per model logged in full (default {}); above it, a deterministic sample on the"
     " request id"),
    ("segment-seconds", "segment_seconds", float, "close a segment after this long (default {:g})"),
    ("segment-rows", "segment_rows", int, "... or after this many requests (default {})"),
    ("retention-hours", "retention_hours", float, "delete segments older than this (default {:g})"),
    ("retention-mb", "retention_mb", int, "keep at most this much, oldest deleted first (default {})"),
    ("queue", "queue_requests", int,
     "requests waiting for the writer at most; more are dropped and counted (default {})"),
    ("queue-mb", "queue_mb", int,
     "input megabytes the log holds at most: large requests lower --log-queue to fit, and open"
     " segments past it are written early (default {})"),
    ("flush-ms", "flush_ms", int, "how often the writer takes the queue (default {})"),
)  # fmt: skip


def add_log_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("prediction log (off unless --log-dir is given; see mlplat_runtime.monitoring)")
    g.add_argument("--log-dir", type=Path, default=None, help="write prediction and feedback segments here")
    for flag, name, kind, text in _FLAGS:
        default = getattr(_DEFAULTS, name)
        g.add_argument(f"--log-{flag}", type=kind, default=default, help=text.format(default))
    g.add_argument(
        "--log-exclude",
        default="",
        help="comma-separated feature or output names never written (personal data)",
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
    values = {name: getattr(a, "log_" + flag.replace("-", "_")) for flag, name, _, _ in _FLAGS}
    try:
        return LogConfig(
            root=a.log_dir,
            exclude=frozenset(n.strip() for n in a.log_exclude.split(",") if n.strip()),
            **values,
        )
    except Exception as exc:
        raise UsageError(str(exc)) from None
