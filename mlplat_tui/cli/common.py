"""Small helpers shared by the CLI modules: project resolution, JSON output and tables."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import click


def project_dir(ctx: click.Context) -> Path:
    """The project folder: ``--project`` on the root command, else the current folder."""
    root = ctx.find_root()
    value = (root.obj or {}).get("project") if root.obj else None
    return Path(value or ".").resolve()


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def print_table(
    headers: Sequence[str], rows: Iterable[Sequence[object]], *, title: str | None = None
) -> None:
    """A plain table through rich: no box, bold headers, columns sized to their content.

    Every CLI table goes through here, so ``runs``, ``status`` and ``targets`` look alike and a
    piped output stays plain text (rich drops styles when stdout is not a terminal).
    """
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(*headers, box=box.SIMPLE_HEAD, title=title, header_style="bold", pad_edge=False)
    for row in rows:
        table.add_row(*("" if c is None else str(c) for c in row))
    console = Console(soft_wrap=True)
    if not console.is_terminal:
        console.width = 10_000  # piped: whole cells, never squeezed to 80 columns with an ellipsis
    console.print(table)
