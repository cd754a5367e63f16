"""CLI: ``mlplat runs``, ``show`` and ``sql`` — questions answered by the metadata store."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from mlplat_tui.cli.common import echo_json, project_dir


def _client(ctx: click.Context):  # type: ignore[no-untyped-def]
    from mlplat_tui.clients.metadata import MetadataClient
    from mlplat_tui.project.config import load_project
    from mlplat_tui.stack.base import Ports, Service

    project = load_project(project_dir(ctx))
    return project, MetadataClient(Ports.from_project(project).url(Service.METADATA))


def _table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _dump(model: Any) -> Any:
    return model.model_dump(mode="json") if hasattr(model, "model_dump") else model


@click.command()
@click.option("-n", "--limit", default=20, show_default=True, help="How many runs.")
@click.option("--search", default=None, help="Only runs whose id, model or status contains this.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def runs(ctx: click.Context, limit: int, search: str | None, as_json: bool) -> None:
    """List runs, newest first, with key metrics, gates and whether each is serving."""
    _, client = _client(ctx)
    items = client.runs(limit=limit, search=search)
    if as_json:
        echo_json([_dump(r) for r in items])
        return
    if not items:
        click.echo("no runs yet: `mlplat train` makes one")
        return
    rows = [("CREATED", "RUN", "STATUS", "VERSION", "GATES", "SERVED", "METRICS")]
    for r in items:
        metrics = " ".join(f"{k}={v:.3g}" for k, v in sorted(r.metrics.items())[:3])
        gates = "-" if r.gates_passed is None else ("✓" if r.gates_passed else "✗")
        created = str(r.created_at)[:19].replace("T", " ")
        rows.append(
            (created, r.run_id[:12], r.status, r.version or "-", gates, "yes" if r.deployed else "", metrics)
        )
    _table(rows)


@click.command()
@click.argument("ident")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def show(ctx: click.Context, ident: str, as_json: bool) -> None:
    """Show one run (by run id, or a unique prefix) or bundle (sha256:...) with gates and lineage."""
    from mlplat_runtime.errors import NotFoundError

    _, client = _client(ctx)
    if ident.startswith("sha256:"):
        bundle = client.bundle(ident)
        ident = bundle.run_id or ident
    try:
        run = client.run(ident)
    except NotFoundError:
        matches = [r for r in client.runs(limit=50, search=ident) if r.run_id.startswith(ident)]
        if len(matches) != 1:
            raise
        run = client.run(matches[0].run_id)
    gates = client.gates(run.bundle_id) if run.bundle_id else []
    if as_json:
        echo_json({"run": _dump(run), "gates": [_dump(g) for g in gates]})
        return
    click.secho(f"run {run.run_id}", bold=True)
    for key in (
        "status",
        "model_name",
        "version",
        "created_at",
        "finished_at",
        "command",
        "bundle_id",
        "git_commit",
        "dirty_hash",
        "tracker_uri",
        "error",
    ):
        value = getattr(run, key, None)
        if value not in (None, ""):
            click.echo(f"  {key:<12} {value}")
    if run.params:
        click.echo("params:")
        for k, v in sorted(run.params.items()):
            click.echo(f"  {k:<24} {v}")
    if run.metrics:
        click.echo("metrics:")
        for k, v in sorted(run.metrics.items()):
            click.echo(f"  {k:<24} {v:.6g}")
    if run.data_hashes:
        click.echo("data:")
        for k, v in sorted(run.data_hashes.items()):
            click.echo(f"  {k:<24} {v}")
    if gates:
        click.echo("gates:")
        for g in gates:
            mark = "✓" if g.passed else "✗"
            click.echo(f"  {mark} {g.name:<18} {g.measured!s:>10}  {g.threshold}  {g.detail}")


@click.command()
@click.argument("query")
@click.option("--json", "as_json", is_flag=True, help="Rows as a list of JSON objects.")
@click.pass_context
def sql(ctx: click.Context, query: str, as_json: bool) -> None:
    """Read-only SQL over the metadata store (tables: runs, bundles, gate_results, deployments, events).

    Writes are refused.

    \b
    Example:
      mlplat sql "SELECT run_id, status, metrics FROM runs ORDER BY created_at DESC LIMIT 5"
    """
    _, client = _client(ctx)
    result = client.sql(query)
    if as_json:
        echo_json([dict(zip(result.columns, row, strict=True)) for row in result.rows])
        return
    rows = [tuple(result.columns)] + [tuple("" if v is None else str(v) for v in row) for row in result.rows]
    _table(rows)
    click.echo(f"({len(result.rows)} rows)")
