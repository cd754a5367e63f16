"""The champion a bundle is gated against, and how to say it could not be looked up.

``champion`` in ``validate_bundle`` is a ``Manifest`` (what serves now), ``None`` (there truly
is no champion: nothing was ever deployed) or ``ChampionUnknown(reason)`` (the metadata store
could not be asked, or its answer could not be opened). The last one is not "no champion":
the gates that compare with the champion (``no_regression``, ``signature``) are then reported as
not evaluated, and therefore not passed. Reading "cannot tell" as "nothing to compare with"
let a regression through whenever the stack was down.

Imports only the standard library at import time (``mlplat_tui.gates`` re-exports it, and the
config imports the gate kinds through that package); the bundle reader inside ``lookup_champion``.
Nothing from ``mlplat_tui``: the metadata client is described by the ``ChampionSource`` protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from mlplat_runtime.bundle.manifest import Manifest


@dataclass(frozen=True)
class ChampionUnknown:
    """The champion could not be looked up; ``reason`` says why (shown in the gate's detail)."""

    reason: str

    def __str__(self) -> str:
        return self.reason


class _DeploymentLike(Protocol):
    bundle_id: str
    version: str


class _BundleLike(Protocol):
    path: str


class ChampionSource(Protocol):
    """What ``lookup_champion`` needs of the metadata client (``clients.metadata.MetadataClient``)."""

    def current_deployment(self, model: str, *, target: str | None = None) -> Any: ...

    def bundle(self, bundle_id: str) -> Any: ...


def lookup_champion(
    metadata: ChampionSource | None, model: str, *, target: str = "local", why_absent: str = ""
) -> Manifest | ChampionUnknown | None:
    """The manifest serving ``model`` on ``target`` now, None when nothing was ever deployed there.

    ``metadata`` None (the store is not up) and every failure to ask it or to open the recorded
    bundle give ``ChampionUnknown`` with the reason: the store's answer, not a guess, decides
    whether there is a champion. ``why_absent`` is the reason given when ``metadata`` is None.
    """
    from mlplat_runtime.errors import MlplatError

    if metadata is None:
        return ChampionUnknown(why_absent or "the metadata service is not up")
    try:
        current: _DeploymentLike | None = metadata.current_deployment(model, target=target)
    except MlplatError as exc:
        return ChampionUnknown(f"the metadata service could not say what serves {model}: {exc}")
    if current is None:
        return None
    try:
        from mlplat_runtime.bundle import open_bundle

        record: _BundleLike = metadata.bundle(current.bundle_id)
        return open_bundle(Path(record.path)).manifest
    except MlplatError as exc:
        return ChampionUnknown(f"the champion {model} v{current.version} could not be opened: {exc}")
