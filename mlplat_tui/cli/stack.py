"""CLI: ``mlplat up``, ``down``, ``status``, ``logs`` — the stack's lifecycle.

Without ``--backend``, ``down``, ``status`` and ``logs`` act on the backend whose stack is up
(``stack.base.get_backend`` reads the record ``up`` leaves); ``up`` restores what served before
through ``deploy.restore.up_and_restore``.
"""

from __future__ import annotations

import time

import click

from mlplat_runtime.errors import MlplatError
from mlplat_tui.cli.common import echo_json, project_dir

BACKEND_OPTION = click.option(
    "--backend",
    type=click.Choice(["local", "docker"]),
    default=None,
    help="Where the services run (default: the backend whose stack is up, else [stack] backend in "
    "mlplat.toml, else local).",
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
    from mlplat_tui.deploy.restore import up_and_restore

    stack = _backend(ctx, backend)
    started = time.monotonic()
    status = up_and_restore(stack, lambda line: click.echo(f"  {line}", err=as_json))
    served = _served(stack)
    if as_json:
        echo_json(_status_json(status, served))
        return
    click.secho(
        f"stack '{status.project}' up ({stack.name}) in {time.monotonic() - started:.1f}s", fg="green"
    )
    _print_status(status, served)


@click.command()
@BACKEND_OPTION
@click.option(
    "--volumes",
    is_flag=True,
    help="Also delete the stack's data: tracker store, metadata, bundles, runs (and docker volumes).",
)
@click.pass_context
def down(ctx: click.Context, backend: str | None, volumes: bool) -> None:
    """Stop the stack. Data is kept unless --volumes is given."""
    stack = _backend(ctx, backend)
    stack.down(volumes=volumes, progress=lambda line: click.echo(f"  {line}"))
    click.echo(f"stack down ({stack.name})")


def _served(stack):  # type: ignore[no-untyped-def]
    """What serving serves now (None when nothing, or the stack is not up)."""
    from mlplat_tui.stack.served import served_now

    try:
        return served_now(stack.project, stack.ports)
    except MlplatError:
        return None


def _status_json(status, served=None) -> dict:  # type: ignore[no-untyped-def]
    from dataclasses import asdict

    data = asdict(status)
    data["up"] = status.up
    data["serving"] = asdict(served) if served is not None else None
    return data


def _serves(served) -> str:  # type: ignore[no-untyped-def]
    if served is None:
        return "-"
    text = f"{served.model} v{served.version}"
    if served.since is not None:
        local = served.since.astimezone()
        text += f" since {local:%Y-%m-%d %H:%M:%S} ({_uptime(served.since.timestamp())})"
    return text


def _print_status(status, served=None) -> None:  # type: ignore[no-untyped-def]
    from mlplat_tui.cli.common import print_table

    rows = [
        (
            str(s.name),
            s.state,
            "ok" if s.healthy else "-",
            s.address,
            _uptime(s.started_at),
            f"{s.cpu_percent:.0f}%" if s.cpu_percent is not None else "-",
            _fmt_bytes(s.memory_bytes),
            (s.ident or "-")[:12],
            _serves(served) if str(s.name) == "serving" else "",
        )
        for s in status.services
    ]
    print_table(("SERVICE", "STATE", "HEALTH", "ADDRESS", "UPTIME", "CPU", "MEM", "ID", "SERVES"), rows)
    if status.gpu:
        click.echo(f"GPU: {status.gpu}")


@click.command()
@BACKEND_OPTION
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--target", "target", default=None, metavar="NAME", help="What serves on a push target instead."
)
@click.option(
    "--at", "at", default=None, metavar="TIME", help="With --target: what served then (ISO 8601 or unix s)."
)
@click.pass_context
def status(
    ctx: click.Context, backend: str | None, as_json: bool, target: str | None, at: str | None
) -> None:
    """Show each service's state, health, address, uptime, CPU and memory, and what serves
    (model, version, since when).

    With --target NAME: what serves on that push target (version, bundle digest, since when,
    pushed by whom, lineage back to run, data and commit); with --at TIME, what served then.

    Exit code 0 when every service is healthy, 3 otherwise (handy in scripts).
    """
    if target is not None or at is not None:
        from mlplat_tui.cli.push import target_status

        if target is None:
            raise click.UsageError("--at needs --target NAME")
        target_status(ctx, target, at, as_json)
        return
    stack = _backend(ctx, backend)
    st = stack.status()
    served = _served(stack) if st.up else None
    if as_json:
        echo_json(_status_json(st, served))
    else:
        state = "up" if st.up else "not up"
        if st.held_by is not None:
            holder = st.held_by
            state = (
                f"not up: its ports are held by project '{holder.project}' ({holder.project_root}); "
                f"stop that stack with `mlplat --project {holder.project_root} down`"
            )
        click.echo(f"project {st.project} · backend {st.backend} · {state}")
        _print_status(st, served)
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
