"""Is the service on this port this project's? Ask ``GET /identity`` before trusting it.

Every project uses ports 7800-7803 unless ``[stack] port_base`` says otherwise, so a stack left
running by another project (the demo's, say) answers this project's clients: ``mlplat runs``
once listed the demo's runs in a fresh project. The metadata and serving services report the
project and folder they were started for (``mlplat_runtime.identity``); every client factory
and read command calls ``check_identity`` on the metadata URL before use, and ``up`` and
``status`` name the holder of the ports instead of blaming "another program".

A service that does not answer, or answers without an identity (an older mlplat, another
program), is not refused here: the caller's own request then fails with its own message.

Imports httpx and ``project`` only.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import httpx
from pydantic import ValidationError

from mlplat_runtime.errors import StackError
from mlplat_runtime.identity import IDENTITY_PATH, StackIdentity
from mlplat_tui.project.config import Project

__all__ = ["StackIdentity", "check_identity", "fetch_identity", "foreign_stack_error", "is_ours"]


def fetch_identity(
    url: str, *, timeout: float = 1.0, transport: httpx.BaseTransport | None = None
) -> StackIdentity | None:
    """What the service at ``url`` says it belongs to; None when it does not say."""
    try:
        with httpx.Client(timeout=timeout, transport=transport, trust_env=False) as http:
            response = http.get(url.rstrip("/") + IDENTITY_PATH)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    try:
        return StackIdentity.model_validate_json(response.content)
    except ValidationError:
        return None


def is_ours(identity: StackIdentity, project: Project) -> bool:
    """The folder decides: two copies of one sample share a name, never a folder."""
    return Path(identity.project_root) == project.root


def foreign_stack_error(url: str, holder: StackIdentity, project: Project) -> StackError:
    """The one message for "this port answers for another project"."""
    where = urlsplit(url).netloc or url
    return StackError(
        f"port {where} answers for project '{holder.project}' ({holder.project_root}), "
        f"not for '{project.name}' ({project.root})",
        hint=f"stop it with `mlplat --project {holder.project_root} down`, or set [stack] port_base "
        "in mlplat.toml to the start of a free range of 4 ports",
    )


def check_identity(url: str, project: Project, *, transport: httpx.BaseTransport | None = None) -> None:
    """Raise ``StackError`` naming the holder when the service at ``url`` is another project's."""
    holder = fetch_identity(url, transport=transport)
    if holder is not None and not is_ours(holder, project):
        raise foreign_stack_error(url, holder, project)
