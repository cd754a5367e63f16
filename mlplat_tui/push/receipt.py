"""The receipt of a push or rollback: everything needed to tell later what happened, as JSON.

Written under ``.mlplat/push/<target>/receipts/`` (``StateLayout.receipts``) for every push
that reached the registry, whatever its outcome, and attached to the registry version (an
artifact of its run, a summary tag). It holds the bundle digest, the gate evidence, the registry
version, the image digest, what served before, every state change the engine reported with the
engine's timestamps, the smoke results and the outcome with its reason.

Imports pydantic and the engine seam only.
"""

from __future__ import annotations

import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mlplat_tui.project.paths import StateLayout
from mlplat_tui.push.engine import Deployed, Transition

SCHEMA = 1


class TransitionOut(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    at: datetime
    state: str
    message: str = ""
    subject: str = ""

    @classmethod
    def of(cls, t: Transition) -> TransitionOut:
        return cls(at=t.at, state=t.state, message=t.message, subject=t.subject)


class Receipt(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA
    action: str  # push | rollback
    target: str
    kind: str
    stage: str
    model_name: str
    version: str
    bundle_id: str
    run_id: str | None = None
    lineage: dict[str, Any] = Field(default_factory=dict)
    registry: str = ""
    registry_version: str | None = None
    image: str | None = None  # repository@digest
    image_digest: str | None = None
    previous: dict[str, Any] | None = None  # version, bundle_id, image digest of what served before
    gates: list[dict[str, Any]] = Field(default_factory=list)
    evidence: dict[str, Any] = Field(default_factory=dict)  # e.g. both models on the samples
    transitions: list[TransitionOut] = Field(default_factory=list)
    smoke: dict[str, Any] | None = None
    outcome: str = ""
    reason: str = ""
    pushed_by: str = ""
    started_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime | None = None

    def summary(self) -> dict[str, Any]:
        """The short form that goes into the registry version's tag."""
        return {
            "outcome": self.outcome,
            "target": self.target,
            "bundle_id": self.bundle_id,
            "image_digest": self.image_digest,
            "previous": (self.previous or {}).get("version"),
            "smoke": None if self.smoke is None else self.smoke.get("passed"),
            "finished_at": None if self.finished_at is None else self.finished_at.isoformat(),
        }


def previous_of(deployed: Deployed | None) -> dict[str, Any] | None:
    if deployed is None:
        return None
    return {
        "version": deployed.version,
        "bundle_id": deployed.bundle_id,
        "image_digest": deployed.image.digest if deployed.image else None,
        "since": deployed.since.isoformat() if deployed.since else None,
    }


def write_receipt(folder: Path, receipt: Receipt) -> Path:
    """Write atomically as ``<UTC time>-<model>-v<version>-<action>.json``; returns the path."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = receipt.started_at.astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    path = folder / StateLayout.receipt_name(stamp, receipt.model_name, receipt.version, receipt.action)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".receipt.")
    with os.fdopen(fd, "w") as fh:
        fh.write(receipt.model_dump_json(indent=2))
    os.replace(tmp, path)
    return path


def read_receipt(path: Path) -> Receipt:
    return Receipt.model_validate_json(path.read_text())
