"""CLI: ``mlplat monitor`` — is the served model still seeing the data it was trained on?

The metadata service's monitor turns the prediction log into per-minute profiles and compares
each window with the bundle's training reference (``mlplat_runtime.metadata.monitor``); this
command asks it for the last ``--window`` and prints it (``monitoring/report.py``).
"""

from __future__ import annotations

import click

from mlplat_tui.cli.common import echo_json, print_table


@click.command()
@click.option(
    "--window",
    default="15m",
    show_default=True,
    help="How far back to look: 90s, 15m, 1h, 2d.",
)
@click.option("--model", default=None, help="Only this model (default: every model logged).")
@click.option(
    "--now",
    "process_now",
    is_flag=True,
    help="First read the segments serving has closed since the last scan and evaluate the windows "
    "that are over (the monitor does it every few seconds on its own).",
)
@click.option("--json", "as_json", is_flag=True, help="The monitor's answer as JSON.")
@click.pass_context
def monitor(ctx: click.Context, window: str, model: str | None, process_now: bool, as_json: bool) -> None:
    """Drift, traffic and alerts of what serves now, per model version.

    \b
    For each version seen in the window:
      traffic    rows logged, request rate, latency p50/p99, error rate, uncertain
                 predictions (top-2 margin < 0.1), accuracy estimated from confidence
      features   worst first: drift score and state, PSI / KS / JS against the training
                 reference, missing, out-of-range and unseen-category shares
      output     drift of the predicted class mix against the test split's
    then open alerts, and realised accuracy per window where labels came back
    (`mlplat feedback`). A "▲ swap" line marks where a new version started serving.

    \b
    States: drift = over the trigger (numeric PSI >= 0.1 or KS >= 0.1, categorical JS or
    PSI >= 0.1, each raised to the floor calibrated on the training data; [monitor] in
    mlplat.toml overrides), warn = over half of it, ok, not enough data = fewer than 1000
    rows in the window. An alert opens after 3 windows in a row over the trigger and
    resolves after 3 under it; each is an event (`mlplat sql "SELECT * FROM alerts"`).

    \b
    Examples:
      mlplat monitor
      mlplat monitor --window 1h --json
      mlplat sql "SELECT feature, psi, state FROM drift ORDER BY window_id DESC LIMIT 20"
    """
    from mlplat_runtime.errors import UsageError
    from mlplat_runtime.metadata.monitor_records import as_dict
    from mlplat_tui.cli.query import _client
    from mlplat_tui.monitoring.report import sections

    if not _valid_window(window):
        raise UsageError(f"--window takes a duration like 90s, 15m, 1h or 2d, got {window!r}")
    _, client = _client(ctx)
    with client:
        if process_now:
            client.monitor_process()
        report = client.monitor_report(window, model)
    if as_json:
        echo_json(as_dict(report))
        return
    for section in sections(report):
        click.secho(section.heading, bold=True)
        for line in section.lines:
            click.echo(f"  {line}")
        if section.headers:
            print_table(section.headers, section.rows)
        click.echo("")


def _valid_window(text: str) -> bool:
    raw = text.strip().lower()
    number = raw[:-1] if raw[-1:] in ("s", "m", "h", "d") else raw
    try:
        return float(number) > 0
    except ValueError:
        return False
