"""After ``up``: serve again what was serving locally before the stack went down.

Serving keeps models in memory only; the metadata store remembers the last successful local
deployment, so a restarted stack answers with the same version instead of 404 until the next
training. It goes through the one deploy use case (``serve.py``) without writing a new
deployment record: what serves is unchanged from the store's point of view. Best effort: a
bundle that is gone or refused is reported, never fatal to ``up``.
"""

from __future__ import annotations

from pathlib import Path

from mlplat_runtime.errors import MlplatError
from mlplat_tui.clients.protocols import MetadataApi
from mlplat_tui.deploy.serve import LOCAL, BundleToServe, DeployTarget, serve_bundle
from mlplat_tui.stack.base import Progress, Service, StackBackend, StackStatus


def up_and_restore(backend: StackBackend, progress: Progress) -> StackStatus:
    """``backend.up``, then serve again the last local deployment when serving does not serve
    the project's model (it was just started). What every front end calls instead of
    ``backend.up``: the backends, a lower layer, do not restore serving themselves."""
    from mlplat_tui.clients.serving import model_metadata

    status = backend.up(progress)
    try:
        serving = model_metadata(backend.ports.url(Service.SERVING), backend.project.config.model.name)
    except MlplatError as exc:  # not our serving on the port: nothing to restore into; `up` stands
        progress(f"serving: nothing restored: {exc.message}")
        return status
    if serving is None:
        restore_serving(backend, progress)
    return status


def restore_with(metadata: MetadataApi, target: DeployTarget, model: str, progress: Progress) -> str | None:
    """Serve on ``target`` what the store says served there last; the version restored, or None."""
    current = metadata.current_deployment(model, target=target.name)
    if current is None:
        return None
    record = metadata.bundle(current.bundle_id)
    path = Path(record.path)
    if not path.exists():
        progress(f"serving: v{current.version} was serving, but its bundle {path} is gone")
        return None
    bundle = BundleToServe(
        model_name=model,
        version=current.version,
        bundle_id=current.bundle_id,
        path=path,
        run_id=current.run_id,
    )
    result = serve_bundle(target, bundle, metadata=metadata, record=False, by="restore")
    if not result.served:
        progress(f"serving: could not restore v{current.version}: {result.reason}")
        return None
    progress(f"serving: restored {model} v{result.serving_version}")
    return result.serving_version


def restore_serving(backend: StackBackend, progress: Progress) -> str | None:
    """Load the current local deployment into the backend's serving; the version, or None."""
    from mlplat_tui.clients.factory import Endpoints, connect_admin, connect_metadata
    from mlplat_tui.deploy.serve import LocalTarget

    project = backend.project
    endpoints = Endpoints.of(project, backend.ports)
    try:
        metadata = connect_metadata(project, backend.ports.url(Service.METADATA))
        if metadata is None:
            progress("serving: the metadata service is not answering; nothing restored")
            return None
        admin = connect_admin(endpoints)
        try:
            if admin is None:
                progress("serving: the admin port is not answering; nothing restored")
                return None
            target = LocalTarget(admin, backend.serving_bundle_path, name=LOCAL)
            return restore_with(metadata, target, project.config.model.name, progress)
        finally:
            metadata.close()
            if admin is not None:
                admin.close()
    except MlplatError as exc:
        progress(f"serving: could not restore the last deployment: {exc.message}")
        return None
    except Exception as exc:  # best effort: `up` already succeeded, never fail it here
        progress(f"serving: could not restore the last deployment: {exc}")
        return None
