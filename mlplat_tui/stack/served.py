"""What the local stack serves now: model, version, bundle, since when.

Serving knows what it holds (``GET /v2/models/{name}``: version and bundle id in its
parameters); the metadata store knows since when (the current local deployment, when its
bundle is the one serving). ``mlplat status`` shows both, in the table and in ``--json``.
Best effort: a service that does not answer leaves its part empty.

Imports httpx (through the clients) only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from mlplat_runtime.errors import MlplatError
from mlplat_tui.project.config import Project
from mlplat_tui.stack.base import Ports, Service


@dataclass(frozen=True)
class Served:
    model: str
    version: str
    bundle_id: str
    provider: str | None = None
    since: datetime | None = None  # when the serving deployment was made (metadata store)
    run_id: str | None = None


def served_now(project: Project, ports: Ports, *, target: str = "local") -> Served | None:
    """The project's model as serving holds it now; None when serving holds none."""
    from mlplat_tui.clients.metadata import MetadataClient
    from mlplat_tui.clients.serving import model_metadata

    model = project.config.model.name
    meta = model_metadata(ports.url(Service.SERVING), model)
    if meta is None:
        return None
    params = meta.get("parameters") or {}
    versions = meta.get("versions") or [""]
    served = Served(
        model=model,
        version=str(params.get("version") or versions[0]),
        bundle_id=str(params.get("bundle_id") or ""),
        provider=params.get("execution_provider"),
    )
    try:
        with MetadataClient(ports.url(Service.METADATA), timeout=2.0) as client:
            current = client.current_deployment(model, target=target)
    except MlplatError:
        return served
    if current is None or current.bundle_id != served.bundle_id:
        return served
    return Served(
        model=served.model,
        version=served.version,
        bundle_id=served.bundle_id,
        provider=served.provider,
        since=current.ts,
        run_id=current.run_id,
    )
