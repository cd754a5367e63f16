"""Serving a run the metadata store remembers: the dashboard's "serve this run" and ``mlplat rollback``.

Both resolve a run to its bundle the same way (it must have one, its gates must have passed,
its folder must still be there) and then call the one use case, ``serve_bundle``. What counts
as "the previous deployment" for a rollback is decided here once: the newest successful
deploy or rollback on the target whose bundle differs from the one serving now.

Imports the client protocols and ``serve.py``; never the cycle or the front ends.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mlplat_runtime.errors import NotFoundError, UsageError
from mlplat_tui.clients.protocols import MetadataApi
from mlplat_tui.deploy.serve import (
    LOCAL,
    BundleToServe,
    DeployAction,
    DeployResult,
    DeployTarget,
    serve_bundle,
)
from mlplat_tui.events import EventSink, null_sink

if TYPE_CHECKING:
    from mlplat_runtime.metadata.records import DeploymentRecord


def run_bundle(metadata: MetadataApi, run_id: str) -> BundleToServe:
    """The bundle of a recorded run, ready to serve; ``UsageError`` saying why when it is not."""
    detail = metadata.run_detail(run_id)
    bundle = detail.bundle
    if bundle is None:
        raise UsageError(
            f"run {run_id} has no bundle to serve", hint="only runs that trained and bundled can be served"
        )
    failed = [g.name for g in detail.gates if not g.passed]
    if failed:
        raise UsageError(
            f"v{bundle.version} failed its gates ({', '.join(failed)}): not served",
            hint="the guardrails decide what serves; fix the model and train again",
        )
    path = Path(bundle.path)
    if not path.exists():
        raise NotFoundError(
            f"the bundle of run {run_id} is gone from {path}", hint="train again to rebuild it"
        )
    return BundleToServe(
        model_name=bundle.model_name,
        version=bundle.version,
        bundle_id=bundle.bundle_id,
        path=path,
        run_id=detail.run.run_id,
    )


def _older(version: str, than: str) -> bool:
    return version.isdigit() and than.isdigit() and int(version) < int(than)


def serve_run(
    metadata: MetadataApi,
    target: DeployTarget,
    run_id: str,
    *,
    action: DeployAction | None = None,
    emit: EventSink = null_sink,
    by: str = "",
) -> DeployResult:
    """Serve a recorded run on ``target``. ``action`` defaults to ``rollback`` when the run's
    version is older than the one serving there now, else ``deploy``."""
    bundle = run_bundle(metadata, run_id)
    current = metadata.current_deployment(bundle.model_name, target=target.name)
    if action is None:
        action = "rollback" if current is not None and _older(bundle.version, current.version) else "deploy"
    return serve_bundle(
        target,
        bundle,
        metadata=metadata,
        action=action,
        emit=emit,
        serving_before=current.version if current else None,
        by=by,
    )


def previous_deployment(metadata: MetadataApi, model: str, target: str = LOCAL) -> DeploymentRecord | None:
    """The deployment a plain rollback returns to: the newest successful deploy or rollback on
    ``target`` with another bundle than the one serving now."""
    current = metadata.current_deployment(model, target=target)
    if current is None:
        return None
    for deployment in metadata.deployments(model, limit=500, target=target):
        if deployment.status != "ok" or deployment.action == "undeploy":
            continue
        if deployment.bundle_id != current.bundle_id and deployment.run_id:
            return deployment
    return None


def rollback_run(metadata: MetadataApi, model: str, to: str | None, target: str = LOCAL) -> str:
    """The run id ``mlplat rollback [--to VERSION|RUN]`` serves.

    ``to`` is a version (``3`` or ``v3``), a run id or a unique prefix of one; None means the
    previous successful deployment.
    """
    if to is None:
        previous = previous_deployment(metadata, model, target)
        if previous is None or previous.run_id is None:
            raise UsageError(
                f"nothing to roll back to: {model} has no earlier successful deployment on {target}",
                hint="name one with `mlplat rollback --to VERSION` (see `mlplat runs`)",
            )
        return previous.run_id
    version = to[1:] if to[:1] in ("v", "V") and to[1:].isdigit() else to
    if version.isdigit():
        page = metadata.query_runs(model=model, version=version, limit=50)
        found = [r.run.run_id for r in page.rows if r.run.bundle_id]
        if not found:
            raise NotFoundError(f"{model} has no run with version {version}", hint="see `mlplat runs`")
        return found[0]
    # Two rows are enough to tell one match from many; ``total`` counts them all.
    page = metadata.query_runs(model=model, run_id_prefix=to, limit=2)
    if page.total == 1:
        return page.rows[0].run.run_id
    if page.total == 0:
        raise NotFoundError(f"no run or version {to!r} of {model}", hint="see `mlplat runs`")
    raise UsageError(f"{to!r} matches {page.total} runs", hint="give more of the run id")
