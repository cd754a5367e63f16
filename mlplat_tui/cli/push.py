"""CLI: ``mlplat push`` and the ``--target`` part of ``mlplat status``.

Progress lines go to stderr, the result to stdout (text, or one JSON object with ``--json``), so
``mlplat push --json | jq`` sees only the result. The exit code is the outcome's
(``push.pipeline.EXIT_CODES``): 0 completed, 3 rejected, 4 rolled back, 1 failed, 2 for a wrong
request (no such target, no such bundle).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mlplat_tui.cli.common import echo_json, print_table, project_dir

if TYPE_CHECKING:
    from mlplat_tui.clients.protocols import MetadataApi
    from mlplat_tui.project.config import Project
    from mlplat_tui.push.pipeline import PushResult


def _metadata(project: Project) -> MetadataApi | None:
    from mlplat_tui.clients.factory import connect_metadata
    from mlplat_tui.stack.base import Ports, Service

    return connect_metadata(project, Ports.from_project(project).url(Service.METADATA))


def resolve_bundle(project: Project, what: str | None, metadata: MetadataApi | None) -> Path:
    """``BUNDLE`` (a folder or ``.mlbundle``), ``RUN`` (a run id the store knows) or ``latest``
    (the newest bundle of the project's model under ``.mlplat/bundles``)."""
    from mlplat_runtime.errors import NotFoundError, UsageError

    if what is not None and what != "latest":
        path = Path(what).expanduser()
        if path.exists():
            return path.resolve()
        if metadata is None:
            raise UsageError(
                f"{what} is no bundle path, and the metadata store is not up to look it up as a run",
                hint="start the stack with `mlplat up`, or give a bundle folder",
            )
        from mlplat_tui.deploy.runs import run_bundle

        return run_bundle(metadata, what).path
    model = project.config.model.name
    prefix = f"{model}-v"
    found = [
        (int(p.name[len(prefix) :]), p)
        for p in project.paths.bundles.glob(f"{prefix}*")
        if p.is_dir() and p.name[len(prefix) :].isdigit()
    ]
    if not found:
        raise NotFoundError(
            f"no bundle of {model} under {project.paths.bundles}", hint="train one: `mlplat train`"
        )
    return max(found)[1]


def _say(line: str) -> None:
    click.echo(line, err=True)


def show_result(result: PushResult, as_json: bool) -> None:
    if as_json:
        echo_json(result.to_json())
        return
    verb = "rollback" if result.action == "rollback" else "push"
    head = f"{verb} of {result.model_name} v{result.version} to {result.target}: {result.outcome.value}"
    color = {"completed": "green", "rejected": "yellow", "rolled_back": "yellow", "failed": "red"}
    click.secho(head, fg=color[result.outcome.value])
    if result.reason:
        click.echo(f"  why: {result.reason}")
    for change in result.changes:
        click.echo(f"  would: {change}")
    if result.registry_version:
        click.echo(f"  registry version: {result.registry_version}")
    if result.image:
        click.echo(f"  image: {result.image}")
    if result.serving_version:
        click.echo(f"  serving now: v{result.serving_version}")
    if result.receipt:
        click.echo(f"  receipt: {result.receipt}")


@click.command()
@click.argument("bundle", required=False, metavar="[BUNDLE|RUN|latest]")
@click.option(
    "--target", "-t", "target", required=True, metavar="NAME", help="A [targets.NAME] of mlplat.toml."
)
@click.option("--dry-run", is_flag=True, help="Verify and run the gates only; say what would change.")
@click.option(
    "--insecure", is_flag=True, help="Allow plain HTTP to a registry or endpoint that is not loopback."
)
@click.option(
    "--deadline", type=float, default=180.0, show_default=True, help="Seconds the rollout may take."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the outcome.")
@click.pass_context
def push(
    ctx: click.Context,
    bundle: str | None,
    target: str,
    dry_run: bool,
    insecure: bool,
    deadline: float,
    as_json: bool,
) -> None:
    """Push a bundle to a target: gates, registry, rollout, smoke test, alias, receipt.

    \b
    Steps (one progress line each, on stderr; each an event in the metadata store):
      1 verify    the bundle's digest and checksums
      2 gates     the target's gates (a stage only tightens [gates]), no regression against
                  what the target serves now, and `requires` (pushed there successfully first)
      3 register  a version in the target's MLflow registry (one per bundle digest)
      4 image     swarm / gitops-k8s: an image holding the bundle, pinned by digest
      5 rollout   the target's engine, with a deadline of its own
      6 smoke     through the target's endpoint: signature, the bundle's samples, the version
      7 alias     alias = stage moves; a receipt (JSON) is written and attached to the version
      8 rollback  any failure after step 4 puts back what served before; the alias stays

    \b
    BUNDLE is a bundle folder or .mlbundle, a run id, or `latest` (the default): the newest
    bundle of the project's model. Wrong or missing credentials change nothing on the target.

    \b
    Exit code: 0 completed, 3 rejected (nothing changed), 4 rolled back (the previous version
    serves), 1 failed (the reason says what serves), 2 a wrong request.

    \b
    Examples:
      mlplat push --target staging
      mlplat push .mlplat/bundles/churn-classifier-v7 --target prod --dry-run
      mlplat push latest --target prod --json | jq .outcome
    """
    from mlplat_tui.project.config import load_project
    from mlplat_tui.push.fleet import remember
    from mlplat_tui.push.pipeline import PushOptions, PushOutcome
    from mlplat_tui.push.pipeline import push as run_push

    project = load_project(project_dir(ctx))
    if target not in project.config.targets:
        from mlplat_runtime.errors import UsageError

        names = ", ".join(project.config.targets) or "none: add a [targets.NAME] table"
        raise UsageError(f"no target {target!r} in {project.config_path}", hint=f"targets: {names}")
    metadata = _metadata(project)
    if metadata is None:
        _say("note: the local metadata store is not up: this push is not recorded (`mlplat up` to record it)")
    try:
        path = resolve_bundle(project, bundle, metadata)
        options = PushOptions(dry_run=dry_run, insecure=insecure, deadline_s=deadline)
        result = run_push(project, target, path, metadata=metadata, options=options, progress=_say)
    finally:
        if metadata is not None:
            metadata.close()
    if not result.dry_run and result.outcome in (PushOutcome.COMPLETED, PushOutcome.ROLLED_BACK):
        remember(project.root, project.name, target)
    show_result(result, as_json)
    sys.exit(result.exit_code)


# -- mlplat status --target NAME [--at TIME] ---------------------------------------------------


def _lineage(metadata: MetadataApi, bundle_id: str) -> dict[str, Any]:
    from mlplat_runtime.errors import MlplatError

    try:
        record = metadata.bundle(bundle_id)
    except MlplatError:
        return {}
    lineage = dict(record.manifest.get("lineage") or {})
    lineage["bundle_path"] = record.path
    return lineage


def target_status(ctx: click.Context, target: str, at: str | None, as_json: bool) -> None:
    """What serves on ``target`` now, or at ``at``: version, digest, since, by whom, lineage."""
    from mlplat_runtime.errors import ServiceError, UsageError
    from mlplat_runtime.metadata.records import parse_ts
    from mlplat_tui.project.config import load_project
    from mlplat_tui.push.history import served_at

    project = load_project(project_dir(ctx))
    if target not in project.config.targets:
        raise UsageError(f"no target {target!r} in {project.config_path}", hint="see `mlplat targets`")
    when = None
    if at is not None:
        try:
            when = parse_ts(at.replace(" ", "T", 1) if " " in at else at)
        except ValueError:
            raise UsageError(
                f"--at {at!r} is not a time", hint="ISO 8601 (2026-12-01T12:00:00Z) or unix seconds"
            ) from None
    metadata = _metadata(project)
    if metadata is None:
        raise ServiceError(
            "the local metadata store is not up: it holds the push history", hint="`mlplat up`"
        )
    model = project.config.model.name
    try:
        record = served_at(metadata, model, target, when)  # type: ignore[arg-type]
        lineage = _lineage(metadata, record.bundle_id) if record else {}
    finally:
        metadata.close()
    live: dict[str, Any] | None = None
    if when is None:
        live = _live(project, target, model)
    out = {
        "target": target,
        "model": model,
        "at": when.isoformat() if when else None,
        "serving": None
        if record is None
        else {
            "version": record.version,
            "bundle_id": record.bundle_id,
            "since": record.ts.isoformat(),
            "action": record.action,
            "pushed_by": record.pushed_by,
            "registry_version": record.registry_version,
            "image_digest": record.image_digest,
            "receipt": record.receipt_path,
            "run_id": record.run_id,
        },
        "lineage": lineage,
        "live": live,
    }
    if as_json:
        echo_json(out)
        ctx.exit(0)
    moment = f"at {when.isoformat(timespec='seconds')}" if when else "now"
    if record is None:
        click.echo(f"{model} on {target} {moment}: nothing served")
        ctx.exit(0)
    rows = [
        ("version", f"v{record.version}"),
        ("bundle", record.bundle_id),
        ("since", record.ts.isoformat(timespec="seconds")),
        ("by", record.pushed_by or "-"),
        ("action", record.action),
        ("registry version", record.registry_version or "-"),
        ("image", record.image_digest or "-"),
        ("receipt", record.receipt_path or "-"),
        ("run", lineage.get("run_id") or record.run_id or "-"),
        ("git commit", lineage.get("git_commit") or "-"),
        (
            "data",
            ", ".join(f"{k} {str(v)[:19]}" for k, v in (lineage.get("data_hashes") or {}).items()) or "-",
        ),
    ]
    if live is not None:
        rows.append(("live", live.get("health", "-")))
    print_table(("FIELD", "VALUE"), rows, title=f"{model} on {target} {moment}")
    ctx.exit(0)


def _live(project: Project, target: str, model: str) -> dict[str, Any]:
    from mlplat_runtime.errors import MlplatError
    from mlplat_tui.push.credentials import resolve_credentials
    from mlplat_tui.push.engines import engine_for

    spec = project.config.targets[target]
    try:
        current = engine_for(
            project, target, spec, resolve_credentials(spec.credentials, project.root)
        ).current(model)
    except MlplatError as exc:
        return {"health": f"unreachable: {exc.message}"}
    if current is None:
        return {"health": "nothing serves"}
    health = "healthy" if current.healthy >= current.replicas else ("degraded" if current.healthy else "down")
    return {
        "version": current.version,
        "replicas": current.replicas,
        "healthy": current.healthy,
        "health": health,
    }
