"""Pick the version a push target rolls back to: any version it served, not only the last one
(``mlplat rollback --target NAME --to VERSION``). Dismisses with the version, or None."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from mlplat_tui.ui.targets_data import LastPush


def choice_text(entry: LastPush) -> str:
    when = datetime.fromtimestamp(entry.at).strftime("%Y-%m-%d %H:%M")
    by = f" by {entry.by}" if entry.by else ""
    return f"v{entry.version}  {entry.action} {when}{by}"


class RollbackPicker(ModalScreen[str | None]):
    CSS_PATH = "rollback_picker.tcss"
    BINDINGS: ClassVar[list[Binding | tuple[str, str] | tuple[str, str, str]]] = [
        Binding("escape,n", "cancel", "cancel"),
    ]

    def __init__(self, target: str, current: str | None, choices: tuple[LastPush, ...]) -> None:
        super().__init__()
        self.target = target
        self.current = current
        self.choices = choices

    def compose(self) -> ComposeResult:
        serves = f"v{self.current}" if self.current else "nothing"
        with Vertical(id="rollback-box"):
            yield Static(f"Roll {self.target} back to which version?", id="rollback-title", markup=False)
            yield Static(
                f"{self.target} serves {serves} now; every version it served before:",
                id="rollback-body",
                markup=False,
            )
            yield OptionList(
                *(Option(choice_text(c), id=c.version) for c in self.choices), id="rollback-choices"
            )
            yield Static("enter picks · esc cancels", id="rollback-foot")

    def on_mount(self) -> None:
        self.query_one(OptionList).focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)
