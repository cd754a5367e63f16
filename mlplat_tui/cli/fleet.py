"""CLI: ``mlplat fleet`` — every model of every project on every target this user can reach.

The projects come from this user's index (``push/fleet.py``: written by every push); each
target's engine is asked what serves now. A target that cannot be asked says so.
"""

from __future__ import annotations

import click

from mlplat_tui.cli.common import echo_json, print_table


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output: a list of objects.")
def fleet(as_json: bool) -> None:
    """List every model of every project you pushed, on every target, with what serves there.

    \b
    PROJECT   a project that pushed from this machine (the index: $XDG_STATE_HOME/mlplat/fleet.json)
    TARGET    each [targets.NAME] of that project, with its kind and stage
    VERSION   what the target's engine says serves now, with replicas healthy/total
    HEALTH    healthy | degraded | down | nothing | unreachable: why

    \b
    Examples:
      mlplat fleet
      mlplat fleet --json | jq '[.[] | select(.stage == "prod" and .version != null)] | length'
    """
    from mlplat_tui.push.fleet import fleet_rows, index_path

    rows = fleet_rows()
    if as_json:
        echo_json([r.to_json() for r in rows])
        return
    if not rows:
        click.echo(f"no projects yet: `mlplat push` adds its project to {index_path()}")
        return
    serving = sum(1 for r in rows if r.version is not None)
    print_table(
        ("PROJECT", "TARGET", "KIND", "STAGE", "MODEL", "VERSION", "REPLICAS", "HEALTH"),
        [(*r.cells(), r.health) for r in rows],
        title=f"fleet: {serving} model(s) serving on {len(rows)} target(s)",
    )
