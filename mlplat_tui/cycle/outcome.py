"""How a training cycle ended: ``CycleOutcome`` (an enum) with a reason, in a ``CycleResult``.

Front ends map the outcome (exit codes, colours, the dev loop's ``cycle`` event); nobody
parses the reason: the old ``error.startswith("rejected")`` in four places is what this
replaces. No I/O; imports only the manifest's ``GateResult``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from mlplat_runtime.bundle.manifest import GateResult


class CycleOutcome(StrEnum):
    """How a cycle ended. Front ends map it (exit codes, colours); nobody parses ``reason``."""

    DEPLOYED = "deployed"  # gates passed and the new version serves
    PASSED = "passed"  # gates passed, not deployed (no serving up, or --no-deploy)
    REJECTED = "rejected"  # a gate missed (or could not be evaluated), or serving refused the bundle
    FAILED = "failed"  # training, bundling or another step failed
    CANCELLED = "cancelled"  # a newer change (or the user) cancelled it


# The run status the metadata store keeps for each outcome.
RUN_STATUS = {
    CycleOutcome.DEPLOYED: "deployed",
    CycleOutcome.PASSED: "finished",
    CycleOutcome.REJECTED: "rejected",
    CycleOutcome.FAILED: "failed",
    CycleOutcome.CANCELLED: "cancelled",
}


@dataclass(frozen=True)
class CycleResult:
    outcome: CycleOutcome = CycleOutcome.FAILED
    reason: str = ""  # why it ended so: the gate misses, serving's refusal, the error...
    run_id: str | None = None
    bundle_id: str | None = None
    bundle_path: Path | None = None
    version: str | None = None
    gates: tuple[GateResult, ...] = ()
    passed: bool = False  # every gate passed (true also when serving then refused the bundle)
    serving_version: str | None = None
    train_s: float | None = None
    total_s: float = 0.0
    tracked: bool = False  # the run is in MLflow
    recorded: bool = False  # the run is in the metadata store
    run_url: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def deployed(self) -> bool:
        return self.outcome is CycleOutcome.DEPLOYED

    @property
    def cancelled(self) -> bool:
        return self.outcome is CycleOutcome.CANCELLED

    @property
    def error(self) -> str | None:
        """The reason of a rejected or failed cycle; None otherwise."""
        bad = self.outcome in (CycleOutcome.REJECTED, CycleOutcome.FAILED)
        return (self.reason or self.outcome.value) if bad else None

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome.value,
            "reason": self.reason,
            "run_id": self.run_id,
            "bundle_id": self.bundle_id,
            "bundle_path": str(self.bundle_path) if self.bundle_path else None,
            "version": self.version,
            "passed": self.passed,
            "deployed": self.deployed,
            "serving_version": self.serving_version,
            "train_s": self.train_s,
            "total_s": self.total_s,
            "error": self.error,
            "cancelled": self.cancelled,
            "tracked": self.tracked,
            "recorded": self.recorded,
            "run_url": self.run_url,
            "metrics": self.metrics,
            "gates": [g.model_dump() for g in self.gates],
        }
