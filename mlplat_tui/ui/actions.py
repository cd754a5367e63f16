"""Every user action of the dashboard, declared once: its key, its title and help, and
whether it changes what is serving (then the screen asks first).

The main screen's key bindings, the command palette provider (``commands.py``) and the help
screen are all built from ``ACTIONS``, so a key shown in help is the key that works.

No textual in this module.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class UiAction:
    action: str  # action name on the main screen (``action_<name>``); may carry an argument
    key: str  # textual key name ("" when only in the palette)
    key_label: str  # how help shows the key
    title: str  # the command palette entry
    help: str
    changes_serving: bool = False
    footer: bool = True  # shown in the footer
    short: str = ""  # the footer's label (default: the title)


ACTIONS: tuple[UiAction, ...] = (
    UiAction(
        "stack_up",
        "u",
        "u",
        "Start the stack",
        "Start tracker, metadata and serving (keys keep working while it starts).",
        short="start",
    ),
    UiAction(
        "stack_down",
        "x",
        "x",
        "Stop the stack",
        "Stop every service of the stack; serving stops answering.",
        changes_serving=True,
        short="stop",
    ),
    UiAction(
        "train_now",
        "t",
        "t",
        "Train now",
        "Run one cycle now: train, bundle, check gates, serve when they pass.",
        changes_serving=True,
        short="train",
    ),
    UiAction(
        "serve_selected",
        "v",
        "v",
        "Serve the selected run's bundle",
        "Load the selected run's bundle into serving (a hot swap; the old version serves "
        "until the new one is ready).",
        changes_serving=True,
        short="serve",
    ),
    UiAction(
        "open_run",
        "enter",
        "enter",
        "Open the selected run",
        "Params, metrics, each gate with measured value and threshold, lineage.",
        footer=False,
    ),
    UiAction(
        "inspect_bundle",
        "b",
        "b",
        "Inspect the selected run's bundle",
        "The bundle's manifest: signature, files and checksums, verification.",
        short="bundle",
    ),
    UiAction(
        "push_target",
        "p",
        "p",
        "Push the selected run to the selected target",
        "mlplat push: the target's gates, registry, rollout, smoke test and alias, with live "
        "progress in the Targets panel; a failure rolls back.",
        changes_serving=True,
        footer=False,
    ),
    UiAction(
        "rollback_target",
        "z",
        "z",
        "Roll the selected target back",
        "Serve any version the target served before (pick one), smoke-tested; the alias follows.",
        changes_serving=True,
        footer=False,
    ),
    UiAction(
        "open_fleet",
        "f",
        "f",
        "Open the fleet",
        "Every model of every project on every target you pushed to: version, replicas, health.",
        footer=False,
    ),
    UiAction(
        "open_monitoring",
        "m",
        "m",
        "Monitoring: drift and alerts",
        "Features ranked by drift against the training reference, training vs live histograms, "
        "drift, latency and errors per window with swap markers, open alerts.",
        short="monitor",
        footer=False,  # the footer is full at 100 columns; help and the palette list it
    ),
    UiAction(
        "open_logs('serving')", "l", "l", "Logs: serving", "Follow the serving runtime's log.", short="logs"
    ),
    UiAction("open_logs('metadata')", "", "", "Logs: metadata", "Follow the metadata service's log."),
    UiAction("open_logs('tracker')", "", "", "Logs: tracker", "Follow the MLflow tracker's log."),
    UiAction("filter", "slash", "/", "Filter runs", "Show only runs matching a text.", short="filter"),
    UiAction(
        "sort_next", "s", "s", "Sort runs by the next column", "Or click a column header.", footer=False
    ),
    UiAction(
        "sort_reverse", "o", "o", "Reverse the sort order", "Newest first / oldest first.", footer=False
    ),
    UiAction("page(-1)", "left_square_bracket", "[", "Previous page of runs", "", footer=False),
    UiAction("page(1)", "right_square_bracket", "]", "Next page of runs", "", footer=False),
    UiAction("refresh", "r", "r", "Refresh now", "Read every panel again.", footer=False),
    UiAction("app.help", "question_mark", "?", "Help", "Keys and what each panel shows.", short="help"),
    UiAction(
        "app.quit",
        "q",
        "q, ctrl+c",
        "Quit",
        "Leave the dashboard, stopping the dev loop (the stack keeps running).",
        short="quit",
    ),
)


def find(action: str) -> UiAction:
    return next(a for a in ACTIONS if a.action == action)
