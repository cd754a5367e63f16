"""CLI: ``mlplat train`` (one full cycle) and ``mlplat validate`` (the gates alone).

On a terminal, ``train`` keeps one status line under the training output ("training… 42s"),
redrawn every second, so a long run that prints nothing does not look hung; piped output and
``--json`` get no such line.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mlplat_tui.cli.common import echo_json, project_dir
from mlplat_tui.cli.stack import BACKEND_OPTION

if TYPE_CHECKING:
    from mlplat_tui.cycle.pipeline import CycleResult

# exit codes of `mlplat train`, one per cycle outcome (the same as `mlplat dev --once`)
EXIT_CODES = {"deployed": 0, "passed": 0, "failed": 1, "rejected": 3, "cancelled": 130}
_CLEAR = "\r\x1b[K"


def elapsed_text(seconds: float) -> str:
    whole = int(seconds)
    return f"training… {whole}s" if whole < 60 else f"training… {whole // 60}m{whole % 60:02d}s"


class ElapsedLine:
    """A status line redrawn in place under the output while training runs (terminals only).

    ``write`` receives raw text (no newline added); ``clock`` is injectable so a test can
    check the line without waiting.
    """

    def __init__(
        self,
        write: Callable[[str], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        interval_s: float = 1.0,
    ) -> None:
        self.write, self.clock, self.interval_s = write, clock, interval_s
        self._lock = threading.Lock()
        self._since: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self._lock:
            self._since = self.clock()
        self._stop.clear()
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="mlplat-elapsed", daemon=True)
            self._thread.start()
        self.tick()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            if self._since is not None:
                self.write(_CLEAR)
            self._since = None

    def tick(self) -> None:
        with self._lock:
            if self._since is not None:
                self.write(_CLEAR + elapsed_text(self.clock() - self._since))

    def echo(self, line: str) -> None:
        """Print one output line above the status line."""
        with self._lock:
            if self._since is None:
                self.write(line + "\n")
            else:
                self.write(_CLEAR + line + "\n" + elapsed_text(self.clock() - self._since))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.tick()


def _print_gates(gates) -> None:  # type: ignore[no-untyped-def]
    for g in gates:
        mark = click.style("✓", fg="green") if g.passed else click.style("✗", fg="red")
        measured = f"{g.measured:.4g}" if isinstance(g.measured, float) else str(g.measured)
        detail = f"  ({g.detail})" if g.detail else ""
        click.echo(f"  {mark} {g.name:<18} {measured:>10}  {g.threshold}{detail}")


def _terminal_writer() -> Callable[[str], None]:
    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    return write


def _cancellable(cycle: Callable[[threading.Event], CycleResult]) -> CycleResult:
    """Run the cycle in a thread so Ctrl-C cancels it (training stopped, run recorded as
    cancelled) instead of leaving the training process behind."""
    cancel = threading.Event()
    done: list[CycleResult] = []
    failed: list[BaseException] = []

    def work() -> None:
        try:
            done.append(cycle(cancel))
        except BaseException as exc:  # handed to the main thread, which raises it
            failed.append(exc)

    worker = threading.Thread(target=work, name="mlplat-train", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.2)
    except KeyboardInterrupt:
        cancel.set()
        click.echo("cancelling…", err=True)
        worker.join()
    if failed:
        raise failed[0]
    return done[0]


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

    \b
    Exit code, one per outcome:
      0    deployed: the new version serves
      0    passed: every gate held, not deployed (serving down, or --no-deploy)
      1    failed: training, bundling or another step failed
      3    rejected: a gate missed or could not be evaluated, or serving refused the bundle
      130  cancelled: Ctrl-C stopped training (the run is recorded as cancelled)
      2    usage or config error
    """
    from mlplat_tui.cycle.pipeline import run_cycle
    from mlplat_tui.events import Event
    from mlplat_tui.project.config import load_project
    from mlplat_tui.stack.base import get_backend

    project = load_project(project_dir(ctx))
    stack = get_backend(project, backend)
    ticker = ElapsedLine(_terminal_writer()) if not as_json and sys.stdout.isatty() else None

    def show(event: Event) -> None:
        if event.kind == "output":
            if ticker is not None:
                ticker.echo(f"  | {event.message}")
            else:
                click.echo(f"  | {event.message}", err=as_json)
            return
        if ticker is not None and event.kind in ("trained", "failed", "cancelled"):
            ticker.stop()
        if event.kind != "gated":
            click.echo(event.line(), err=as_json)
        if ticker is not None and event.kind == "training":
            ticker.start()

    try:
        result = _cancellable(
            lambda cancel: run_cycle(project, backend=stack, emit=show, deploy=not no_deploy, cancel=cancel)
        )
    finally:
        if ticker is not None:
            ticker.stop()
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
            click.echo(f"bundle {result.bundle_path} passed its gates; {result.reason}")
    sys.exit(EXIT_CODES[result.outcome.value])


@click.command()
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def validate(ctx: click.Context, bundle: Path, as_json: bool) -> None:
    """Run the project's guardrail gates (and the platform policy) against BUNDLE.

    Compares with the model serving now when the stack is up (no regression, signature);
    when the champion cannot be looked up, those gates are not evaluated and do not pass.
    Exit code 0 when every gate passes, 1 otherwise.
    """
    from mlplat_tui.cycle.pipeline import Pipeline
    from mlplat_tui.gates.evaluate import all_passed
    from mlplat_tui.project.config import load_project
    from mlplat_tui.stack.base import get_backend

    project = load_project(project_dir(ctx))
    pipe = Pipeline(project, get_backend(project))
    try:
        pipe.connect()
        champion = pipe.champion(project.config.model.name)
        gates = pipe.evaluate_gates(bundle, champion)
    finally:
        pipe.close()
    if as_json:
        echo_json(
            {"bundle": str(bundle), "passed": all_passed(gates), "gates": [g.model_dump() for g in gates]}
        )
    else:
        _print_gates(gates)
    sys.exit(0 if all_passed(gates) else 1)
