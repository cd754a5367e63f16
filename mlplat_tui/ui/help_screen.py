"""Help (``?``): every key and what each panel shows, built from ``actions.ACTIONS``."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from mlplat_tui.ui.actions import ACTIONS

PANELS = (
    (
        "Stack",
        "each service's state and health, address, uptime, CPU and memory; the GPU and the "
        "execution provider serving uses.",
    ),
    (
        "Serving",
        "the model and version answering now; req/s, p50/p99 latency and error rate, one "
        "point per second, figures over the last minute.",
    ),
    ("Dev loop", "what `mlplat dev` is doing, the last change, the current step and the training output."),
    (
        "Targets",
        "each push target's kind and stage, the version serving there, health, replicas, and "
        "its last push with the outcome; the row under the cursor is the one p and z act on.",
    ),
    ("Events", "every step of training, the dev loop, the stack and pushes, as it happens."),
    ("Runs", "newest first; gates ✓/✗, the bundle version and which one is serving."),
    (
        "Monitoring (m)",
        "the served version's features ranked by drift score (ok / warn / drift), training vs "
        "live histograms of the selected one, drift, rows, error rate and p99 per window with ▲ at "
        "each swap, open alerts; w cycles the window (15m, 1h, 24h).",
    ),
)


class HelpScreen(ModalScreen[None]):
    CSS_PATH = "help_screen.tcss"
    BINDINGS: ClassVar[list[Binding | tuple[str, str] | tuple[str, str, str]]] = [
        Binding("escape,q,question_mark", "dismiss", "close"),
    ]

    def compose(self) -> ComposeResult:
        keys = Table(box=None, show_header=False, padding=(0, 2, 0, 0))
        keys.add_column(style="bold", no_wrap=True)
        keys.add_column()
        for a in ACTIONS:
            label = a.key_label or "palette"
            keys.add_row(label, Text.assemble((a.title, "bold"), "  ", a.help))
        keys.add_row("ctrl+p", Text.assemble(("Command palette", "bold"), "  every action above, by name"))
        panels = Table(box=None, show_header=False, padding=(0, 2, 0, 0))
        panels.add_column(style="bold", no_wrap=True)
        panels.add_column()
        for name, text in PANELS:
            panels.add_row(name, text)
        with VerticalScroll(id="help-box"):
            yield Static("mlplat dashboard — keys", classes="help-title")
            yield Static(keys, id="help-keys")
            yield Static("Panels", classes="help-title")
            yield Static(panels, id="help-panels")
            yield Static(
                "Anything that changes what is serving asks first.  esc closes.", classes="help-foot"
            )
