"""CLI: ``mlplat up``, ``down``, ``status``, ``logs`` — the stack's lifecycle."""

from __future__ import annotations

import time

import click

from mlplat_tui.cli.common import echo_json, project_dir

BACKEND_OPTION = click.option(
    "--backend",
    type=click.Choice(["local", "docker"]),
    default=None,
    help="Where the services run (default: [stack] backend in mlplat.toml, else local).",
)


def _backend(ctx: click.Context, backend: str | None):  # type: ignore[no-untyped-def]
    from mlplat_tui.project.config import load_project
    from mlplat_tui.stack.base import get_backend

    return get_backend(load_project(project_dir(ctx)), backend)


def _fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f}{unit}"
        n = n / 1024  # type: ignore[assignment]
    return f"{n:.1f}TiB"


def _uptime(started: float | None) -> str:
    if not started:
        return "-"
    s = int(time.time() - started)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


@click.command()
@BACKEND_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the final status as JSON.")
@click.pass_context
def up(ctx: click.Context, backend: str | None, as_json: bool) -> None:
    """Start tracker (MLflow), metadata (DuckDB) and serving, and wait until all are healthy.

    Idempotent: services already running and healthy are kept. On any failure, what this
    command started is stopped again and the failing service's log tail is shown.

    \b
    Example:
      mlplat up && mlplat train
    """
    stack = _backend(ctx, backend)
    started = time.monotonic()
    status = stack.up(progress=lambda line: click.echo(f"  {line}", err=as_json))
    if as_json:
        echo_json(_status_json(status))
        return
    click.secho(
        f"stack '{status.project}' up ({stack.name}) in {time.monotonic() - started:.1f}s", fg="green"
    )
    _print_status(status)


@click.command()
@BACKEND_OPTION
@click.option("--volumes", is_flag=True, help="Also delete the stack's data (runs, metadata, bundles).")
@click.pass_context
def down(ctx: click.Context, backend: str | None, volumes: bool) -> None:
    """Stop the stack. Data is kept unless --volumes is given."""
    stack = _backend(ctx, backend)
    stack.down(volumes=volumes, progress=lambda line: click.echo(f"  {line}"))
    click.echo("stack down")


def _status_json(status) -> dict:  # type: ignore[no-untyped-def]
    from dataclasses import asdict

    data = asdict(status)
    data["up"] = status.up
    return data


def _print_status(status) -> None:  # type: ignore[no-untyped-def]
    rows = [("SERVICE", "STATE", "HEALTH", "ADDRESS", "UPTIME", "CPU", "MEM", "ID")]
    for s in status.services:
        rows.append(
            (
                str(s.name),
                s.state,
                "ok" if s.healthy else "-",
                s.address,
                _uptime(s.started_at),
                f"{s.cpu_percent:.0f}%" if s.cpu_percent is not None else "-",
                _fmt_bytes(s.memory_bytes),
                (s.ident or "-")[:12],
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    if status.gpu:
        click.echo(f"GPU: {status.gpu}")


@click.command()
@BACKEND_OPTION
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def status(ctx: click.Context, backend: str | None, as_json: bool) -> None:
    """Show each service's state, health, address, uptime, CPU and memory.

    Exit code 0 when every service is healthy, 3 otherwise (handy in scripts).
    """
    st = _backend(ctx, backend).status()
    if as_json:
        echo_json(_status_json(st))
    else:
        click.echo(f"project {st.project} · backend {st.backend} · {'up' if st.up else 'not up'}")
        _print_status(st)
    ctx.exit(0 if st.up else 3)


@click.command()
@click.argument("service", type=click.Choice(["tracker", "metadata", "serving"]))
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines (Ctrl-C to stop).")
@click.option("-n", "--tail", default=200, show_default=True, help="Lines of history to show.")
@BACKEND_OPTION
@click.pass_context
def logs(ctx: click.Context, service: str, follow: bool, tail: int, backend: str | None) -> None:
    """Show a service's log (tracker, metadata or serving)."""
    from mlplat_tui.stack.base import Service

    for line in _backend(ctx, backend).logs(Service(service), follow=follow, tail=tail):
        click.echo(line)
