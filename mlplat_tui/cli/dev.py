"""CLI: ``mlplat dev`` — watch the project; retrain, gate and hot-swap on every save.

With a terminal it opens the dashboard in dev mode (``mlplat_tui.cli.ui.open_dashboard``) when
the dashboard is installed, else prints one readable line per step. ``--headless`` prints JSON
lines instead (one ``Event.to_json()`` per line, on stdout), for scripts and CI.
"""

from __future__ import annotations

import inspect
import json
import signal
import sys
from pathlib import Path
from typing import Any

import click

from mlplat_runtime.errors import MlplatError, ServiceError
from mlplat_tui.cli.common import project_dir
from mlplat_tui.cli.stack import BACKEND_OPTION
from mlplat_tui.cli.train import EXIT_CODES, ElapsedLine

# exit codes of `mlplat dev --once`: cli.train.EXIT_CODES (one per cycle outcome), and this one
EXIT_INTERRUPTED = 130
DEFAULT_DEBOUNCE_MS = 150


def _dashboard() -> Any:
    """The dashboard's dev-mode entry point, when the dashboard is there."""
    try:
        from mlplat_tui.cli import ui
    except ImportError:
        return None
    return getattr(ui, "open_dashboard", None)


def _printer(headless: bool, verbose: bool) -> Any:
    out = sys.stdout
    if headless:
        # stdout carries only JSON lines: anything else printed in this process (libraries
        # announce runs with print) goes to stderr
        sys.stdout = sys.stderr
    # On a terminal a status line under the output counts the training time, as in `mlplat
    # train`: a long run that prints nothing must not look hung.
    ticker = None

    def write(text: str) -> None:
        out.write(text)
        out.flush()

    if not headless and out.isatty():
        ticker = ElapsedLine(write)

    def echo(line: str) -> None:
        if ticker is not None:
            ticker.echo(line)
        else:
            click.echo(line)

    def show(event: Any) -> None:
        if headless:
            out.write(json.dumps(event.to_json(), default=str) + "\n")
            out.flush()
            return
        if event.kind == "output":
            echo(click.style("  | ", dim=True) + event.message)
            return
        if ticker is not None and event.kind in ("trained", "failed", "cancelled", "stopped"):
            ticker.stop()
        _show_step(event, echo, verbose)
        if ticker is not None and event.kind == "training":
            ticker.start()

    return show


def _show_step(event: Any, echo: Any, verbose: bool) -> None:
    colour = {"swapped": "green", "rejected": "yellow", "failed": "red", "cancelled": "yellow"}
    if event.kind == "stopped" and event.error:
        colour["stopped"] = "red"  # the loop died: say it as loudly as a failed step
    line = event.line()
    echo(click.style(line, fg=colour[event.kind]) if event.kind in colour else line)
    if event.kind == "failed" and event.data.get("output_tail") and not verbose:
        for tail_line in str(event.data["output_tail"]).splitlines()[-15:]:
            echo(click.style("  | ", dim=True) + tail_line)


def _exit_code(result: Any) -> int:
    """One exit code per cycle outcome, the same as ``mlplat train``'s."""
    if result is None:
        return EXIT_INTERRUPTED
    return EXIT_CODES[result.outcome.value]


def _sigterm_as_interrupt() -> None:
    """SIGTERM ends the loop the same clean way as Ctrl-C (training stopped, worker closed)."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    if sys.platform != "win32":
        signal.signal(signal.SIGTERM, handler)


@click.command()
@click.option("--headless", is_flag=True, help="No dashboard: print one JSON event per line.")
@click.option(
    "--once", is_flag=True, help="Run one cycle and exit (exit code 0 serving, 1 failed, 3 rejected)."
)
@BACKEND_OPTION
@click.option("--no-warm", is_flag=True, help="Start every run as a fresh process (no warm worker).")
@click.option(
    "--down-on-exit", is_flag=True, help="Stop the stack when the loop ends (default: leave it up)."
)
@click.option(
    "--debounce",
    "debounce_ms",
    type=click.IntRange(0, 10_000),
    default=DEFAULT_DEBOUNCE_MS,
    show_default=True,
    help="Quiet time (ms) after the last save before a cycle starts.",
)
@click.option(
    "--verbose",
    "-v",
    is_flag=True,
    help="Also show every line of training output (with --headless: as 'output' events).",
)
@click.pass_context
def dev(
    ctx: click.Context,
    headless: bool,
    once: bool,
    backend: str | None,
    no_warm: bool,
    down_on_exit: bool,
    debounce_ms: int,
    verbose: bool,
) -> None:
    """Watch the project; on every save retrain, check the gates and hot-swap the new model.

    Starts the stack if it is down, trains once, then watches [train] watch (minus [train]
    ignore). A save while training cancels that run and starts a new one. A bundle that misses
    a gate, or that serving refuses, is rejected and the previous version keeps serving.
    Ctrl-C stops the loop and any training run; the stack stays up unless --down-on-exit.

    \b
    Output: the dashboard on a terminal (readable lines when it is not installed);
    --headless: JSON lines, one event each (kinds: stack, watching, change, training,
    trained, bundled, gated, swapped, rejected, cancelled, failed, cycle, stopped). Training
    output lines ('output' events) are included with --verbose. The 'cycle' event's data
    holds save_to_serving_s and overhead_s. The last event is 'stopped'; its error says why
    when the loop died, and then mlplat dev exits 1.
    \b
    Exit code with --once: 0 the new version serves (or passed its gates with no stack),
    1 a step failed, 3 rejected by a gate or by serving, 130 interrupted.
    """
    from mlplat_tui.devloop.loop import DevLoop
    from mlplat_tui.project.config import load_project
    from mlplat_tui.stack.base import get_backend

    root: Path = project_dir(ctx)
    project = load_project(root)
    interactive = not headless and not once and sys.stdin.isatty() and sys.stdout.isatty()
    options: dict[str, Any] = {
        "warm": not no_warm,
        "debounce_s": debounce_ms / 1000,
        "down_on_exit": down_on_exit,
    }
    if interactive:
        open_dashboard = _dashboard()
        if open_dashboard is not None:
            kwargs: dict[str, Any] = {"dev": True, "backend": backend}
            if "dev_options" in inspect.signature(open_dashboard).parameters:
                kwargs["dev_options"] = options  # forwarded to DevLoop(...)
            elif no_warm or down_on_exit or debounce_ms != DEFAULT_DEBOUNCE_MS:
                click.echo(
                    "note: the dashboard runs the dev loop with its defaults; "
                    "use --headless for --no-warm, --down-on-exit and --debounce",
                    err=True,
                )
            open_dashboard(root, **kwargs)
            return
    stack = get_backend(project, backend)
    loop = DevLoop(project, backend=stack, emit=_printer(headless, verbose), headless=not verbose, **options)
    _sigterm_as_interrupt()
    try:
        if once:
            result = loop.run_once()
            sys.exit(_exit_code(result))
        loop.run_forever()
    except KeyboardInterrupt:
        if not headless:
            click.echo("stopped", err=True)
        sys.exit(EXIT_INTERRUPTED if once else 0)
    except MlplatError:
        raise  # printed with its hint, exit 1 (2 for config)
    except Exception as exc:  # the loop died on something outside the error tree
        raise _died(exc) from None


def _died(exc: BaseException) -> ServiceError:
    return ServiceError(
        f"the dev loop died: {type(exc).__name__}: {exc}",
        hint="fix the cause, then run `mlplat dev` again",
    )
