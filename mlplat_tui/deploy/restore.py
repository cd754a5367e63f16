"""After ``up``: serve again what was serving locally before the stack went down.

Serving keeps models in memory only; the metadata store remembers the last successful local
deployment, so a restarted stack answers with the same version instead of 404 until the next
training. Best effort: a bundle that is gone or refused is reported, never fatal to ``up``.
"""

from __future__ import annotations

from pathlib import Path

from mlplat_runtime.errors import MlplatError
from mlplat_tui.stack.base import Progress, Service, StackBackend


def restore_serving(backend: StackBackend, progress: Progress) -> str | None:
    """Load the current local deployment into serving; the version restored, or None."""
    from mlplat_tui.clients.metadata import MetadataClient
    from mlplat_tui.clients.serving import ServingAdmin

    project = backend.project
    model = project.config.model.name
    try:
        with MetadataClient(backend.ports.url(Service.METADATA)) as meta:
            current = meta.current_deployment(model, target="local")
            if current is None:
                return None
            bundle = meta.bundle(current.bundle_id)
        path = Path(bundle.path)
        if not path.exists():
            progress(f"serving: v{current.version} was serving, but its bundle {path} is gone")
            return None
        admin = ServingAdmin.from_token_file(backend.ports.url("admin"), project.paths.admin_token)
        try:
            loaded = admin.load(model, backend.serving_bundle_path(path))
        finally:
            admin.close()
    except MlplatError as exc:
        progress(f"serving: could not restore the last deployment: {exc.message}")
        return None
    except Exception as exc:  # best effort: `up` already succeeded, never fail it here
        progress(f"serving: could not restore the last deployment: {exc}")
        return None
    progress(f"serving: restored {model} v{loaded.version}")
    return loaded.version
