"""``mlplat ui`` (and ``mlplat`` with no arguments): open the dashboard for a project.

``open_dashboard`` is also what ``mlplat dev`` calls with ``dev=True`` to host the dev loop
inside the dashboard. Textual and the dashboard are imported inside the function, so
``mlplat --help`` stays fast.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mlplat_runtime.errors import ServiceError, UsageError

if TYPE_CHECKING:
    from mlplat_tui.project.config import Project
    from mlplat_tui.ui.app import DashboardApp


def _process_start() -> float:
    """When this process started, as epoch seconds (so first-paint time includes interpreter
    and import start-up). psutil's create_time rounds the boot time to whole seconds, so the
    age is taken from /proc against CLOCK_BOOTTIME instead (10 ms resolution)."""
    try:
        import os

        with open("/proc/self/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime, in ticks since boot
        return time.time() - (time.clock_gettime(time.CLOCK_BOOTTIME) - started)
    except (OSError, ValueError, IndexError, AttributeError):  # not Linux: from here on
        return time.time()


def open_dashboard(
    project_dir: str | Path | None,
    *,
    dev: bool = False,
    backend: str | None = None,
    dev_options: Mapping[str, Any] | None = None,
) -> None:
    """Open the dashboard for the project in ``project_dir`` (default: the current folder).

    With ``dev=True`` the dev loop runs inside it: the stack comes up, the model trains, and
    every save retrains and hot-swaps; ``dev_options`` are passed on to ``DevLoop`` (``warm``,
    ``debounce_s``, ``down_on_exit``). Blocks until the user quits; raises ``ServiceError``
    (exit 1) when the dev loop did not start or died, after the user has seen why.
    """
    launched_at = _process_start()
    from mlplat_tui.project.config import load_project

    project = load_project(Path(project_dir or ".").resolve())
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError(
            "the dashboard needs an interactive terminal",
            hint="use `mlplat status`, `mlplat runs` or `mlplat dev --headless` without one",
        )
    app = dashboard_app(project, dev=dev, backend=backend, dev_options=dev_options, launched_at=launched_at)
    app.run()
    if app.dev_failure:
        raise ServiceError(
            f"the dev loop died: {app.dev_failure}",
            hint="fix the cause, then run `mlplat dev` again (`mlplat dev --headless` prints every step)",
        )


def dashboard_app(
    project: Project,
    *,
    dev: bool = False,
    backend: str | None = None,
    dev_options: Mapping[str, Any] | None = None,
    launched_at: float | None = None,
) -> DashboardApp:
    """The dashboard wired to the real platform (what ``open_dashboard`` runs; tests pilot it).

    The dev loop and the dashboard act on one backend: the one ``DashboardData`` resolved
    (the stack that is up, else the configured one).
    """
    from mlplat_tui.ui.app import DashboardApp
    from mlplat_tui.ui.data import DashboardData
    from mlplat_tui.ui.devhost import DevLoopFactory

    data = DashboardData(project, backend_name=backend)
    factory: DevLoopFactory | None = None
    if dev:
        from mlplat_tui.devloop.loop import DevLoop

        def factory(emit):  # type: ignore[no-untyped-def]
            return DevLoop(project, backend=data.backend(), emit=emit, **dict(dev_options or {}))

    return DashboardApp(data, dev_loop=factory, launched_at=launched_at)


@click.command("ui")
@click.option(
    "--project",
    "project_opt",
    type=click.Path(file_okay=False),
    default=None,
    help="Project folder (default: the current folder).",
)
@click.option(
    "--backend",
    type=click.Choice(["local", "docker"]),
    default=None,
    help="Stack backend (default: [stack] backend in mlplat.toml).",
)
@click.pass_context
def ui(ctx: click.Context, project_opt: str | None, backend: str | None) -> None:
    """Open the dashboard: stack, serving, dev loop, events and runs on one screen."""
    root = ctx.find_root().obj or {}
    open_dashboard(project_opt or root.get("project"), backend=backend)
