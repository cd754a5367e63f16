"""Platform events: every step of training, the dev loop and the stack is one ``Event``.

The CLI prints them as readable lines (or JSON lines with ``--headless``), the metadata store
records them, and the dashboard renders them. This module has no I/O of its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from mlplat_runtime.bundle.manifest import GateResult

# kinds, in the order a dev cycle emits them
KINDS = (
    "watching",  # the loop is idle, watching files
    "change",  # files changed (debounced); data.files lists them
    "training",  # the training command started
    "output",  # one line of training output (not recorded in the store)
    "trained",  # the training command finished; duration_s is its own run time
    "bundled",  # the bundle was built
    "gated",  # gates evaluated; gates holds the results
    "swapped",  # the new version is serving
    "rejected",  # gates failed or load refused; still serving the previous version
    "cancelled",  # a newer change cancelled this cycle
    "failed",  # training or another step failed; error holds why
    "cycle",  # a cycle ended; data has save_to_serving_s and overhead_s
    "stack",  # stack up/down/progress
    "stopped",  # the dev loop ended (its last event); error says why when it died
)


@dataclass(frozen=True)
class Event:
    kind: str
    message: str
    ts: float = field(default_factory=time.time)
    run_id: str | None = None
    bundle_id: str | None = None
    version: str | None = None
    gates: tuple[GateResult, ...] = ()
    duration_s: float | None = None
    error: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["gates"] = [g.model_dump() for g in self.gates]
        out["time"] = datetime.fromtimestamp(self.ts, UTC).isoformat()
        return {k: v for k, v in out.items() if v not in (None, {}, [])}

    def line(self) -> str:
        """The readable one-line form printed by the CLI."""
        stamp = datetime.fromtimestamp(self.ts).strftime("%H:%M:%S")
        dur = f" ({self.duration_s:.2f}s)" if self.duration_s is not None else ""
        return f"{stamp} {self.kind:<9} {self.message}{dur}"


EventSink = Callable[[Event], None]


def null_sink(_: Event) -> None:
    return None
