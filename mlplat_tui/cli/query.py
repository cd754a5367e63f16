"""CLI: ``mlplat runs``, ``show`` and ``sql`` — questions answered by the metadata store."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from mlplat_tui.cli.common import echo_json, project_dir

if TYPE_CHECKING:
    from mlplat_runtime.metadata.runs_query import RunRow


def _client(ctx: click.Context):  # type: ignore[no-untyped-def]
    from mlplat_tui.clients.metadata import MetadataClient
    from mlplat_tui.project.config import load_project
    from mlplat_tui.stack.base import Ports, Service

    project = load_project(project_dir(ctx))
    url = Ports.from_project(project).url(Service.METADATA)
    from mlplat_tui.clients.identity import check_identity

    check_identity(url, project)  # another project's stack on our ports: refuse, naming it
    return project, MetadataClient(url, token_file=project.paths.metadata_token)  # POSTs need the token


def _dump(model: Any) -> Any:
    return model.model_dump(mode="json") if hasattr(model, "model_dump") else model


def run_row_json(row: RunRow) -> dict[str, Any]:
    """One line of ``mlplat runs --json``: the run's fields, what it serves on now, and whether
    it was ever deployed (the same answer the dashboard gives, from the same query)."""
    return {
        **row.run.model_dump(mode="json"),
        "served_on": list(row.served_on),
        "was_deployed": row.was_deployed,
        "gates_failed": list(row.gates_failed),
    }


@click.command()
@click.option("-n", "--limit", default=20, show_default=True, help="How many runs.")
@click.option("--offset", default=0, show_default=True, help="Skip this many (paging).")
@click.option(
    "--search",
    default=None,
    help="Only runs whose id, model, project, status, version or bundle id contains this "
    "(the dashboard's search).",
)
@click.option(
    "--sort",
    default="created_at",
    show_default=True,
    help="created_at, run_id, status, version, gates_passed or metric:<name>.",
)
@click.option("--asc", is_flag=True, help="Oldest (smallest) first.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def runs(
    ctx: click.Context, limit: int, offset: int, search: str | None, sort: str, asc: bool, as_json: bool
) -> None:
    """List runs, newest first, with key metrics and gates.

    \b
    SERVED    the targets the run serves on now (e.g. local); empty when it does not serve
    DEPLOYED  yes when it was ever deployed (it may have been replaced since)
    """
    from pydantic import ValidationError

    from mlplat_runtime.errors import UsageError
    from mlplat_runtime.metadata.runs_query import RunsQuery
    from mlplat_tui.cli.common import print_table

    _, client = _client(ctx)
    try:
        query = RunsQuery(search=search or "", sort=sort, descending=not asc, limit=limit, offset=offset)
    except ValidationError as exc:
        raise UsageError(exc.errors()[0]["msg"]) from None
    with client:
        page = client.query_runs(query)
    if as_json:
        echo_json([run_row_json(r) for r in page.rows])
        return
    if not page.rows:
        click.echo("no runs yet: `mlplat train` makes one" if not search and not offset else "no runs match")
        return
    rows = []
    for row in page.rows:
        r = row.run
        metrics = " ".join(f"{k}={v:.3g}" for k, v in sorted(r.metrics.items())[:3])
        gates = "-" if r.gates_passed is None else ("✓" if r.gates_passed else "✗")
        created = str(r.created_at)[:19].replace("T", " ")
        served = ",".join(row.served_on)
        deployed = "yes" if row.was_deployed else ""
        rows.append((created, r.run_id[:12], r.status, r.version or "-", gates, served, deployed, metrics))
    headers = ("CREATED", "RUN", "STATUS", "VERSION", "GATES", "SERVED", "DEPLOYED", "METRICS")
    more = f" (showing {offset + 1}-{offset + len(rows)} of {page.total})" if page.total > len(rows) else ""
    print_table(headers, rows, title=f"runs{more}" if more else None)


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
    """Read-only SQL over the metadata store and the prediction log.

    \b
    Tables:
      runs, bundles, gate_results, deployments, events   the cycle's records
      profiles, traffic, drift, alerts                   the monitor's (per minute / window)
      predictions, feedback                              the prediction log's closed segments
    `DESCRIBE <table>` lists a table's columns. predictions and feedback live in another
    database (the segments): query them on their own, not joined with the store's tables.

    Writes are refused. Queries run under the service's memory and time limits, and a long
    answer is cut (rows, bytes, oversized cells) with a note on stderr saying what was cut.

    \b
    Example:
      mlplat sql "SELECT run_id, status, metrics FROM runs ORDER BY created_at DESC LIMIT 5"
      mlplat sql "SELECT model_name, feature, psi, state FROM drift ORDER BY window_end DESC LIMIT 8"
      mlplat sql "SELECT status, count(*) FROM predictions GROUP BY status" --json
    """
    _, client = _client(ctx)
    result = client.sql(query)
    if result.note:  # the answer was cut (rows, bytes or oversized cells): say so on stderr
        click.echo(f"note: {result.note}", err=True)
    if as_json:
        echo_json([dict(zip(result.columns, row, strict=True)) for row in result.rows])
        return
    from mlplat_tui.cli.common import print_table

    print_table(result.columns, result.rows)
    click.echo(f"({len(result.rows)} rows{', cut' if result.truncated else ''})")
