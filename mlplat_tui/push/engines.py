"""Which engine a target's ``kind`` gets: one table, the other engines imported only when used.

``swarm`` and ``gitops-k8s`` pull in docker and git tooling; ``mlplat push --target staging``
to a local target must not import them.

Imports the engine seam; the engines themselves inside ``engine_for``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mlplat_runtime.errors import UsageError

if TYPE_CHECKING:
    from mlplat_tui.project.config import Project
    from mlplat_tui.push.credentials import Credentials
    from mlplat_tui.push.engine import Engine

# kind -> (module, class); each class is constructed as Cls(project, name, target, credentials)
ENGINES: dict[str, tuple[str, str]] = {
    "local": ("mlplat_tui.push.local", "LocalEngine"),
    "swarm": ("mlplat_tui.push.swarm", "SwarmEngine"),
    "gitops-k8s": ("mlplat_tui.push.gitops", "GitopsEngine"),
}


def engine_for(project: Project, name: str, target: Any, credentials: Credentials | None) -> Engine:
    """The engine of ``[targets.NAME]`` (``target`` is its parsed model)."""
    entry = ENGINES.get(target.kind)
    if entry is None:
        raise UsageError(
            f"target {name}: no engine for kind {target.kind!r}", hint=f"one of {', '.join(ENGINES)}"
        )
    module, cls = entry
    engine: Engine = getattr(importlib.import_module(module), cls)(project, name, target, credentials)
    return engine
