"""What was pushed where, from the local metadata store: the push side of "what served at time T".

Every push, rollout and rollback to a target is a ``DeploymentRecord`` with ``target = NAME``
(plus the registry version, the image digest, who pushed and the receipt, schema v4). A push that
failed or was rolled back is recorded with ``status = "failed"`` and its reason, so the last
``ok`` record on a target is what serves there, and the last one at or before T is what served
then. ``requires`` is answered from the same rows.

Imports the records and the errors only; the client is described by ``PushHistory``.
"""

from __future__ import annotations

import getpass
import socket
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from mlplat_runtime.metadata.records import DeploymentRecord

HISTORY_LIMIT = 1000


class PushHistory(Protocol):
    """What this module needs of the metadata client (``clients.metadata.MetadataClient``)."""

    def deployments(
        self, model: str | None = None, *, limit: int = 100, target: str | None = None
    ) -> list[DeploymentRecord]: ...

    def current_deployment(self, model: str, *, target: str | None = None) -> DeploymentRecord | None: ...

    def deployed_at(self, model: str, ts: Any, *, target: str | None = None) -> DeploymentRecord | None: ...

    def record_deployment(self, deployment: DeploymentRecord) -> DeploymentRecord: ...


def who() -> str:
    """The user who pushed, as ``user@host``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def succeeded_on(history: PushHistory, model: str, bundle_id: str, target: str) -> DeploymentRecord | None:
    """The newest successful push (deploy or rollback) of ``bundle_id`` to ``target``, if any."""
    for record in history.deployments(model, limit=HISTORY_LIMIT, target=target):
        if record.status == "ok" and record.bundle_id == bundle_id and record.action != "undeploy":
            return record
    return None


def served(history: PushHistory, model: str, target: str) -> list[DeploymentRecord]:
    """Every successful deploy or rollback on ``target``, newest first."""
    return [
        r
        for r in history.deployments(model, limit=HISTORY_LIMIT, target=target)
        if r.status == "ok" and r.action != "undeploy"
    ]


def served_at(history: PushHistory, model: str, target: str, at: datetime | None) -> DeploymentRecord | None:
    """What served on ``target`` at ``at`` (None: now)."""
    if at is None:
        return history.current_deployment(model, target=target)
    return history.deployed_at(model, at, target=target)
