"""Dev loop panel: the loop's phase (watching, training, gating, swapping, idle), the last
change, the current step with its elapsed time, the last outcome, and a live tail of the
training output. A loop that died says so, with the reason, in place of the phase: saves are
not watched any more, and the panel must not suggest otherwise.

Attributes down: the screen sets ``state`` (folded from events by ``devstate.apply``) and
``now`` (its clock tick), and calls ``add_output`` for each line of training output.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Log, Static

from mlplat_tui.ui.devstate import PHASES, DevLoopState
from mlplat_tui.ui.snapshots import fmt_duration, fmt_time

_TAIL_LINES = 200


class DevLoopPanel(Widget):
    DEFAULT_CSS = Path(__file__).with_suffix(".tcss").read_text(encoding="utf-8")
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "devloop-panel--active",
        "devloop-panel--ok",
        "devloop-panel--bad",
        "devloop-panel--dim",
        "devloop-panel--label",
    }

    state: reactive[DevLoopState] = reactive(DevLoopState)
    now: reactive[float] = reactive(0.0)

    def compose(self) -> ComposeResult:
        yield Static(id="devloop-status")
        yield Log(max_lines=_TAIL_LINES, id="devloop-output", auto_scroll=True)

    def on_mount(self) -> None:
        self.border_title = "Dev loop"
        self._show()

    def watch_state(self) -> None:
        if self.is_mounted:
            self._show()

    def watch_now(self) -> None:
        if self.is_mounted and self.state.step_started is not None:
            self._show()

    def add_output(self, line: str) -> None:
        self.query_one(Log).write_line(line)

    def clear_output(self) -> None:
        self.query_one(Log).clear()

    def _show(self) -> None:
        st = self.state
        style = self.get_component_rich_style
        label, dim = style("devloop-panel--label"), style("devloop-panel--dim")
        for phase in PHASES:
            self.set_class(st.phase == phase, f"-{phase}")
        phase = {
            "off": "idle (no dev loop: `mlplat dev`)",
            "stopped": "stopped (saves are not watched)",
            "died": "died: saves are not watched",
        }.get(st.phase, st.phase)
        bad = style("devloop-panel--bad")
        mark = {
            "off": dim,
            "idle": dim,
            "stopped": dim,
            "watching": style("devloop-panel--ok"),
            "died": bad,
        }.get(st.phase, style("devloop-panel--active"))
        lines = Text.assemble(("● ", mark), (phase, bad if st.phase == "died" else label))
        if st.step and st.step_started is not None:
            elapsed = max(0.0, (self.now or st.step_started) - st.step_started)
            lines.append_text(Text.assemble("  ", (st.step, ""), " ", (fmt_duration(elapsed), dim)))
        changed = ", ".join(st.last_change[:3]) + (" …" if len(st.last_change) > 3 else "")
        lines.append_text(
            Text.assemble(
                "\n",
                ("change  ", label),
                (
                    f"{fmt_time(st.last_change_at, self.now or None)}  {changed}"
                    if st.last_change_at
                    else "-",
                    dim,
                ),
            )
        )
        result_style = (
            dim
            if st.last_result_ok is None
            else style("devloop-panel--ok" if st.last_result_ok else "devloop-panel--bad")
        )
        if st.died:
            last, result_style = f"dev loop died: {st.died}", bad
        else:
            last = st.last_result or "-"
        lines.append_text(
            Text.assemble(
                "\n",
                ("last    ", label),
                (last, result_style),
                (f"  ({st.cycles} cycle{'s' if st.cycles != 1 else ''})" if st.cycles else "", dim),
            )
        )
        self.query_one("#devloop-status", Static).update(lines)
