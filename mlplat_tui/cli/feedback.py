"""CLI: ``mlplat feedback FILE.csv`` — send the true labels (or values) of logged predictions.

Serving keeps them beside its prediction log (``POST /v2/feedback``); the monitor joins them on
the request id and reports realised accuracy (or MAE) per prediction-time window with the share
of predictions that got a label (``mlplat monitor``).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from mlplat_tui.cli.common import echo_json, project_dir

BATCH = 1000


def read_feedback(path: Path, default_model: str | None) -> Iterator[dict[str, Any]]:
    """The CSV's rows as feedback items; a ``UsageError`` names the line that is wrong."""
    from mlplat_runtime.errors import UsageError

    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = set(reader.fieldnames or ())
        if "request_id" not in columns or not ({"label", "value"} & columns):
            raise UsageError(
                f"{path}: needs a request_id column and a label or value column, got {sorted(columns)}",
                hint="e.g. a header line: request_id,label",
            )
        for line, row in enumerate(reader, start=2):
            model = (row.get("model") or "").strip() or default_model
            if not model:
                raise UsageError(f"{path}:{line}: no model (add a model column, or pass --model)")
            request_id = (row.get("request_id") or "").strip()
            if not request_id:
                raise UsageError(f"{path}:{line}: empty request_id")
            item: dict[str, Any] = {"model": model, "request_id": request_id}
            if (row.get("row") or "").strip():
                try:
                    item["row"] = int(row["row"])
                except ValueError:
                    raise UsageError(f"{path}:{line}: row must be an integer, got {row['row']!r}") from None
            label, value = (row.get("label") or "").strip(), (row.get("value") or "").strip()
            if label:
                item["label"] = label
            elif value:
                try:
                    item["value"] = float(value)
                except ValueError:
                    raise UsageError(f"{path}:{line}: value must be a number, got {value!r}") from None
            else:
                raise UsageError(f"{path}:{line}: neither a label nor a value")
            yield item


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--model", default=None, help="The model, for a CSV without a model column (default [model] name)."
)
@click.option("--json", "as_json", is_flag=True, help="Print {sent, accepted} as JSON.")
@click.pass_context
def feedback(ctx: click.Context, file: Path, model: str | None, as_json: bool) -> None:
    """Send the true outcomes of served predictions, from a CSV file.

    \b
    Columns (a header line first):
      request_id   the id serving answered with (the OIP "id" you sent, or the one it made)
      row          the row of a batched request (optional, default 0)
      label        the true class, for classifiers   } one of the two
      value        the true number, for regression   }
      model        optional; default --model, else [model] name of mlplat.toml

    \b
    Example:
      printf 'request_id,label\\nr-1,1\\nr-2,0\\n' > labels.csv
      mlplat feedback labels.csv
      mlplat monitor            # realised accuracy and label coverage per window
    """
    import httpx

    from mlplat_runtime.errors import ServiceError
    from mlplat_tui.clients.identity import check_identity
    from mlplat_tui.project.config import load_project
    from mlplat_tui.stack.base import Ports, Service

    project = load_project(project_dir(ctx))
    ports = Ports.from_project(project)
    url = ports.url(Service.SERVING)
    check_identity(url, project)
    items = list(read_feedback(file, model or project.config.model.name))
    accepted = 0
    with httpx.Client(base_url=url, timeout=30.0, trust_env=False) as http:
        for start in range(0, len(items), BATCH):
            batch = items[start : start + BATCH]
            try:
                response = http.post("/v2/feedback", json=batch)
            except httpx.TransportError as exc:
                raise ServiceError(
                    f"cannot reach serving at {url}: {exc}", hint="start the stack with `mlplat up`"
                ) from None
            if response.status_code >= 400:
                try:
                    why = response.json().get("error", response.text[:200])
                except ValueError:
                    why = response.text[:200]
                raise ServiceError(
                    f"serving refused feedback lines {start + 2}-{start + 1 + len(batch)}: {why}",
                    hint="the prediction log must be on ([monitor] log = true)",
                )
            accepted += int(response.json().get("accepted", len(batch)))
    if as_json:
        echo_json({"sent": len(items), "accepted": accepted})
        return
    click.echo(f"sent {len(items)} feedback rows, {accepted} accepted")
