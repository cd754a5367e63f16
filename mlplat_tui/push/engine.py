"""The seam between the push pipeline and the places a bundle can run.

The pipeline (``push/pipeline.py``) owns the steps every target shares: verify, gates,
register, smoke test, alias, receipt, and the decision to roll back. An **engine** owns only
what differs per kind: whether it needs an image, how it rolls out and detects the outcome,
how it rolls back, and where the smoke test reaches the model.

=============  ===========================================================================
kind           engine
=============  ===========================================================================
local          ``push/local.py``: a second local stack, serves the bundle folder itself
swarm          ``push/swarm.py``: a Swarm service per model, image by digest, start-first
gitops-k8s     ``push/gitops.py``: manifests validated and committed; applied by Argo/Flux
=============  ===========================================================================

Every engine call that changes the target takes a ``RolloutRequest`` and returns a
``RolloutResult``; it raises ``MlplatError`` only when it could not even try (unreachable
engine, refused credentials): then nothing changed. Engines never record, never touch the
registry and never move aliases; the pipeline does.

Imports the project's target models and the runtime's errors only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Protocol


class RolloutOutcome(StrEnum):
    COMPLETED = "completed"  # every replica serves the new version and is healthy
    ROLLED_BACK = "rolled_back"  # the engine (or mlplat's deadline) put the previous version back
    FAILED = "failed"  # it did not roll out and could not roll back cleanly: say what serves
    COMMITTED = "committed"  # gitops: the change is in the repository; the cluster applies it


@dataclass(frozen=True)
class ImageRef:
    """An image pinned by digest: ``repository@digest`` is what every engine deploys."""

    repository: str  # e.g. "127.0.0.1:5001/mlplat/churn-classifier"
    digest: str  # "sha256:<64 hex>"
    tag: str = ""  # the human tag it was pushed with (never used to deploy)

    @property
    def pinned(self) -> str:
        return f"{self.repository}@{self.digest}"


@dataclass(frozen=True)
class Transition:
    """One state change seen on the target, with the engine's own timestamp when it gives one."""

    at: datetime
    state: str  # engine words: "updating", "new", "running", "paused", "rollback_completed", ...
    message: str = ""
    subject: str = ""  # task / replica / commit the change is about


@dataclass(frozen=True)
class Deployed:
    """What serves on a target now, as the engine sees it."""

    model_name: str
    version: str
    bundle_id: str
    image: ImageRef | None = None
    replicas: int = 1
    healthy: int = 0  # replicas that answer ready
    since: datetime | None = None
    spec: dict[str, object] = field(default_factory=dict)  # the engine's spec, to re-apply on rollback


@dataclass(frozen=True)
class RolloutRequest:
    model_name: str
    version: str
    bundle_id: str
    bundle_path: Path  # the verified bundle folder on this machine
    image: ImageRef | None  # None for engines that do not need one (local)
    previous: Deployed | None  # what served before; rollback targets this
    deadline_s: float  # mlplat's own deadline for the outcome; never wait forever
    reason: str = ""  # for rollbacks: why (goes into the engine's record / commit message)
    evidence: str = ""  # gate table and lineage, for engines that write it down (gitops commits)


@dataclass(frozen=True)
class RolloutResult:
    outcome: RolloutOutcome
    reason: str  # why it rolled back or failed; "" when completed
    transitions: tuple[Transition, ...] = ()
    deployed: Deployed | None = None  # what serves after the attempt, when known
    endpoint: str | None = None  # base URL the smoke test uses (None: no live endpoint, e.g. gitops)


Progress = Callable[[str], None]  # one human line per step ("replica 1/2 running")


class Engine(Protocol):
    """One target's engine. Construct it from the target's config and resolved credentials."""

    @property
    def kind(self) -> str: ...

    @property
    def needs_image(self) -> bool: ...

    def check_access(self) -> None:
        """Prove the engine answers and the credentials are accepted, changing nothing.
        Raises ``MlplatError`` (``TargetError``) naming what was refused."""

    def current(self, model_name: str) -> Deployed | None:
        """What serves the model now, or None when the target has never served it."""

    def rollout(self, request: RolloutRequest, progress: Progress) -> RolloutResult:
        """Put ``request``'s version in place and wait (at most ``deadline_s``) for the outcome.
        On failure the engine rolls back to ``request.previous`` itself and says why."""

    def rollback(self, request: RolloutRequest, progress: Progress) -> RolloutResult:
        """Serve ``request``'s version again (an earlier one), the same way as a rollout."""

    def endpoint(self, model_name: str) -> str | None:
        """The inference base URL for the smoke test (``http://127.0.0.1:8802``), if any."""
