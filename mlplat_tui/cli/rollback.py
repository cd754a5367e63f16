"""CLI: ``mlplat rollback [--to VERSION|RUN]`` — serve an earlier run on the local stack.

The same deploy use case as a cycle's deploy and the dashboard's "serve this run"
(``mlplat_tui.deploy``): serving checks and warms the bundle up and swaps atomically, a refusal
leaves the current version serving, and the attempt is recorded as a ``rollback`` on the
target. ``--target`` arrives with push; today the target is the local stack.
"""

from __future__ import annotations

import contextlib
import sys

import click

from mlplat_tui.cli.common import echo_json, project_dir
from mlplat_tui.cli.stack import BACKEND_OPTION

EXIT_SERVED = 0
EXIT_REFUSED = 3  # serving refused the bundle; what served before still serves


@click.command()
@click.option("--to", "to", default=None, metavar="VERSION|RUN", help="Version (3 or v3) or run id (prefix).")
@click.option(
    "--target", "target", default=None, metavar="NAME", help="A push target instead of the local stack."
)
@click.option("--insecure", is_flag=True, help="With --target: allow plain HTTP to a non-loopback registry.")
@BACKEND_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the outcome.")
@click.pass_context
def rollback(
    ctx: click.Context, to: str | None, target: str | None, insecure: bool, backend: str | None, as_json: bool
) -> None:
    """Serve an earlier run on the local stack, recorded as a rollback.

    Without --to, serves the previous successful deployment (the newest one with another
    bundle than the one serving now). The run must have passed its gates and its bundle must
    still be on disk.

    With --target NAME: any earlier version that push target served (--to VERSION), else the
    newest other one; the engine rolls back, the smoke test runs, the alias = stage moves and a
    receipt is written. Exit codes as `mlplat push`: 0 completed, 1 failed, 2 a wrong request.

    Exit code: 0 when the run serves now, 3 when serving refused it (the current version
    keeps serving), 1 when the stack is not up, 2 for a run that cannot be served.
    """
    if target is not None:
        _target_rollback(ctx, target, to, insecure, as_json)
        return
    from mlplat_runtime.errors import MlplatError, ServiceError
    from mlplat_tui.clients.factory import Endpoints, connect_admin, connect_metadata
    from mlplat_tui.deploy.runs import rollback_run, serve_run
    from mlplat_tui.deploy.serve import LOCAL, LocalTarget
    from mlplat_tui.events import Event
    from mlplat_tui.project.config import load_project
    from mlplat_tui.stack.base import Service, get_backend

    project = load_project(project_dir(ctx))
    stack = get_backend(project, backend)
    metadata = connect_metadata(project, stack.ports.url(Service.METADATA))
    if metadata is None:
        raise ServiceError("the metadata service is not up", hint="start the stack with `mlplat up`")
    admin = connect_admin(Endpoints.of(project, stack.ports))
    try:
        if admin is None:
            raise ServiceError("serving is not up", hint="start the stack with `mlplat up`")
        model = project.config.model.name
        run_id = rollback_run(metadata, model, to, LOCAL)

        def show(event: Event) -> None:
            with contextlib.suppress(MlplatError):  # best effort: the deployment record has it
                metadata.record_event(event)
            if not as_json:
                click.echo(event.line())

        result = serve_run(
            metadata,
            LocalTarget(admin, stack.serving_bundle_path),
            run_id,
            action="rollback",
            emit=show,
            by="rollback",
        )
    finally:
        metadata.close()
        if admin is not None:
            admin.close()
    if as_json:
        echo_json(
            {
                "outcome": result.outcome.value,
                "reason": result.reason,
                "target": result.target,
                "action": result.action,
                "model": result.bundle.model_name,
                "version": result.bundle.version,
                "run_id": result.bundle.run_id,
                "bundle_id": result.bundle.bundle_id,
                "serving_version": result.serving_version,
                "recorded": result.recorded,
            }
        )
    elif result.served:
        click.secho(
            f"{model} v{result.serving_version} serves on {result.target} (run {run_id[:12]})", fg="green"
        )
    else:
        click.secho(f"error: {result.reason}", fg="red", err=True)
    sys.exit(EXIT_SERVED if result.served else EXIT_REFUSED)


def _target_rollback(ctx: click.Context, target: str, to: str | None, insecure: bool, as_json: bool) -> None:
    from mlplat_tui.cli.push import _metadata, _say, show_result
    from mlplat_tui.project.config import load_project
    from mlplat_tui.push.pipeline import PushOptions
    from mlplat_tui.push.rollback import rollback_target

    project = load_project(project_dir(ctx))
    metadata = _metadata(project)
    try:
        result = rollback_target(
            project, target, to, metadata=metadata, options=PushOptions(insecure=insecure), progress=_say
        )
    finally:
        if metadata is not None:
            metadata.close()
    show_result(result, as_json)
    sys.exit(result.exit_code)
