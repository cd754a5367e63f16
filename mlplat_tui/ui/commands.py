"""The command palette's provider (ctrl+p): every dashboard action by name.

Actions run on the main screen whichever screen the palette was opened on, so "Serve the
selected run's bundle" means the run selected in the runs table.
"""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

from mlplat_tui.ui.actions import ACTIONS, UiAction


class DashboardCommands(Provider):
    def _run(self, action: UiAction) -> None:
        target = getattr(self.app, "main_screen", None) or self.screen
        self.app.call_later(self.app.run_action, action.action, target)

    async def discover(self) -> Hits:
        for action in ACTIONS:
            yield DiscoveryHit(action.title, partial(self._run, action), help=action.help or None)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for action in ACTIONS:
            score = matcher.match(action.title)
            if score > 0:
                yield Hit(
                    score,
                    matcher.highlight(action.title),
                    partial(self._run, action),
                    help=action.help or None,
                )
