"""CLI: ``mlplat train`` (one full cycle) and ``mlplat validate`` (the gates alone)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mlplat_tui.cli.common import echo_json, project_dir
from mlplat_tui.cli.stack import BACKEND_OPTION


def _print_gates(gates) -> None:  # type: ignore[no-untyped-def]
    for g in gates:
        mark = click.style("✓", fg="green") if g.passed else click.style("✗", fg="red")
        measured = f"{g.measured:.4g}" if isinstance(g.measured, float) else str(g.measured)
        detail = f"  ({g.detail})" if g.detail else ""
        click.echo(f"  {mark} {g.name:<18} {measured:>10}  {g.threshold}{detail}")


@click.command()
@BACKEND_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the outcome.")
@click.option("--no-deploy", is_flag=True, help="Train, bundle, gate and record, but do not serve.")
@click.pass_context
def train(ctx: click.Context, backend: str | None, as_json: bool, no_deploy: bool) -> None:
    """Train once: run [train] command, bundle the model, check the gates, record, serve.

    The command runs with MLPLAT_OUTPUT_DIR, MLFLOW_TRACKING_URI and MLFLOW_RUN_ID set and
    writes model.onnx (plus metrics.json, samples.npz, reference.json) there. When the stack
    is up and every gate passes, the new bundle is hot-swapped into local serving; otherwise
    the model that was serving keeps serving.

    Exit code: 0 when the run passed its gates, 1 when training failed or a gate missed.
    """
    from mlplat_tui.cycle.pipeline import run_cycle
    from mlplat_tui.events import Event
    from mlplat_tui.project.config import load_project
    from mlplat_tui.stack.base import get_backend

    project = load_project(project_dir(ctx))
    stack = get_backend(project, backend)

    def show(event: Event) -> None:
        if event.kind == "output":
            click.echo(f"  | {event.message}", err=as_json)
        elif event.kind != "gated":
            click.echo(event.line(), err=as_json)

    result = run_cycle(project, backend=stack, emit=show, deploy=not no_deploy)
    if as_json:
        echo_json(result.to_json())
    else:
        if result.gates:
            click.echo("gates:")
            _print_gates(result.gates)
        if result.run_url:
            click.echo(f"run: {result.run_url}")
        if result.error:
            click.secho(f"error: {result.error}", fg="red", err=True)
        elif result.deployed:
            click.secho(f"serving {project.config.model.name} v{result.serving_version}", fg="green")
        elif result.passed:
            click.echo(f"bundle {result.bundle_path} passed its gates (not deployed)")
    sys.exit(0 if result.passed and not result.error else 1)


@click.command()
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def validate(ctx: click.Context, bundle: Path, as_json: bool) -> None:
    """Run the project's guardrail gates (and the platform policy) against BUNDLE.

    Compares with the model serving now when the stack is up (no regression, signature).
    Exit code 0 when every gate passes, 1 otherwise.
    """
    from mlplat_tui.cycle.pipeline import Pipeline
    from mlplat_tui.gates.evaluate import all_passed
    from mlplat_tui.project.config import load_project
    from mlplat_tui.stack.base import get_backend

    project = load_project(project_dir(ctx))
    pipe = Pipeline(project, get_backend(project))
    pipe.connect()
    champion = pipe.champion(project.config.model.name)
    gates = pipe.evaluate_gates(bundle, champion)
    if as_json:
        echo_json(
            {"bundle": str(bundle), "passed": all_passed(gates), "gates": [g.model_dump() for g in gates]}
        )
    else:
        _print_gates(gates)
    sys.exit(0 if all_passed(gates) else 1)
