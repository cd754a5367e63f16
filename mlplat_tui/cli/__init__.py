"""The ``mlplat`` command line.

Each command group lives in its own module and is imported only when it is invoked, so
``mlplat --help`` stays fast. Errors from the one exception tree are printed to stderr with
their hint and turned into an exit code (2 for usage/config, 1 otherwise).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

# command name -> (module, attribute, one-line help shown by `mlplat --help`)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "init": ("mlplat_tui.cli.init", "init", "Create a new project from a template."),
    "up": ("mlplat_tui.cli.stack", "up", "Start the local stack (tracker, metadata, serving)."),
    "down": ("mlplat_tui.cli.stack", "down", "Stop the stack."),
    "status": ("mlplat_tui.cli.stack", "status", "Show each service's state and health."),
    "logs": ("mlplat_tui.cli.stack", "logs", "Show (or follow) a service's log."),
    "train": ("mlplat_tui.cli.train", "train", "Train, bundle, gate, record and deploy."),
    "validate": ("mlplat_tui.cli.train", "validate", "Run the guardrail gates against a bundle."),
    "dev": ("mlplat_tui.cli.dev", "dev", "Watch the project: retrain and hot-swap on every save."),
    "runs": ("mlplat_tui.cli.query", "runs", "List runs, newest first."),
    "show": ("mlplat_tui.cli.query", "show", "Show one run or bundle with gates and lineage."),
    "sql": ("mlplat_tui.cli.query", "sql", "Read-only SQL over the metadata store."),
    "targets": ("mlplat_tui.cli.targets", "targets", "List the push targets and what each serves."),
    "push": (
        "mlplat_tui.cli.push",
        "push",
        "Push a bundle to a target: gates, registry, rollout, smoke test.",
    ),
    "rollback": ("mlplat_tui.cli.rollback", "rollback", "Serve an earlier run again, as a rollback."),
    "fleet": ("mlplat_tui.cli.fleet", "fleet", "Every model of every project on every target you reach."),
    "replay": ("mlplat_tui.cli.replay", "replay", "Compare a candidate with the champion on live traffic."),
    "bundle": ("mlplat_tui.cli.bundle", "bundle", "Build, verify and inspect model bundles."),
    "serve": ("mlplat_tui.cli.serve", "serve", "Serve a bundle over the Open Inference Protocol v2."),
    "images": ("mlplat_tui.cli.images", "images", "Build the runtime and tracker Docker images."),
    "monitor": ("mlplat_tui.cli.monitor", "monitor", "Drift, traffic and alerts of what serves now."),
    "feedback": ("mlplat_tui.cli.feedback", "feedback", "Send true labels of served predictions (CSV)."),
    "ui": ("mlplat_tui.cli.ui", "ui", "Open the dashboard (also: `mlplat` with no arguments)."),
}


class LazyGroup(click.Group):
    """A click group that imports a command's module only when that command runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module_name, attr, _ = entry
        cmd = getattr(importlib.import_module(module_name), attr)
        assert isinstance(cmd, click.Command)
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Help text without importing every module.
        with formatter.section("Commands"):
            formatter.write_dl([(name, entry[2]) for name, entry in COMMANDS.items()])


@click.group(
    cls=LazyGroup, invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.version_option(package_name="mlplat")
@click.option(
    "--project",
    "project",
    type=click.Path(file_okay=False),
    default=None,
    help="Project folder (default: the current folder).",
)
@click.pass_context
def cli(ctx: click.Context, project: str | None) -> None:
    """mlplat — a local-first ML platform in your terminal.

    \b
    Write train.py and mlplat.toml, then:
      mlplat up        start tracker, metadata and serving on 127.0.0.1
      mlplat train     train, bundle, check the gates, serve when they pass
      mlplat dev       retrain and hot-swap on every save
      mlplat           open the dashboard
    """
    ctx.ensure_object(dict)
    ctx.obj["project"] = project
    if ctx.invoked_subcommand is None:
        from mlplat_tui.cli.ui import open_dashboard

        open_dashboard(project)


def main(argv: list[str] | None = None) -> Any:
    from mlplat_runtime.errors import MlplatError

    try:
        return cli.main(args=argv, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except MlplatError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
