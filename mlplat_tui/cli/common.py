"""Small helpers shared by the CLI modules: project resolution and JSON output."""

from __future__ import annotations

import json
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
