"""Push (p), rollback (z) and the fleet view (f) on the main screen, and the Targets panel's data.

A base class of ``MainScreen``, so that screen only assembles: it yields the ``TargetsPanel``
when the project has targets and polls ``targets`` with the other sources. Each action asks
first (``ConfirmModal``; a rollback to an older version first picks which one), then runs the
push pipeline in a thread worker: its progress lines arrive as ``TargetProgress`` messages and
are shown in the panel as they happen, its step events go to the Events panel, and its end is a
``TargetActionDone`` (a toast with the outcome and why). One action per target at a time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.screen import Screen

from mlplat_runtime.errors import MlplatError
from mlplat_tui.ui.confirm import ConfirmModal
from mlplat_tui.ui.messages import PlatformEvent, TargetActionDone, TargetProgress, TargetsUpdated
from mlplat_tui.ui.targets_panel import TargetsPanel

if TYPE_CHECKING:
    from collections.abc import Callable

    from mlplat_tui.events import Event
    from mlplat_tui.ui.runs_table import RunsTable
    from mlplat_tui.ui.targets_data import LastPush, TargetRow, TargetsSource

TARGETS_EVERY_TICKS = 5  # what a target serves changes on a push (which refreshes it at once)
_SEVERITY = {"completed": "information", "rejected": "warning", "rolled_back": "warning", "failed": "error"}


class TargetActions(Screen[None]):
    targets_source: TargetsSource | None = None

    if TYPE_CHECKING:  # MainScreen's

        @property
        def runs(self) -> RunsTable: ...

        def refresh_runs(self) -> None: ...

        def _poll(self, name: str) -> None: ...

    @property
    def _target_busy(self) -> dict[str, str]:
        """target -> the action running on it (created on first use: no __init__ of our own)."""
        busy: dict[str, str] | None = self.__dict__.get("_busy_targets")
        if busy is None:
            busy = self.__dict__["_busy_targets"] = {}
        return busy

    # ---- the panel ---------------------------------------------------------------------------
    @property
    def has_targets(self) -> bool:
        return bool(self.targets_source is not None and self.targets_source.names)

    def targets_panel(self) -> TargetsPanel | None:
        found = self.query(TargetsPanel)
        return found.first() if found else None

    def targets_reader(self) -> Callable[[], object]:
        source, post = self.targets_source, self.post_message
        assert source is not None
        return lambda: post(TargetsUpdated(source.targets()))

    def on_targets_updated(self, message: TargetsUpdated) -> None:
        panel = self.targets_panel()
        if panel is not None:
            panel.snapshot = message.snapshot

    def on_target_progress(self, message: TargetProgress) -> None:
        panel = self.targets_panel()
        if panel is not None:
            panel.show_activity(message.target, message.line)

    def _row(self, target: str) -> TargetRow | None:
        panel = self.targets_panel()
        snap = panel.snapshot if panel is not None else None
        return snap.row(target) if snap is not None else None

    def _chosen_target(self) -> str | None:
        panel = self.targets_panel()
        if panel is None or not self.has_targets:
            self.notify("no push targets: add a [targets.NAME] table to mlplat.toml", severity="warning")
            return None
        target = panel.selected
        if target is None:
            return None
        busy = self._target_busy
        if target in busy:
            self.notify(f"{target}: a {busy[target]} is running", severity="warning")
            return None
        return target

    def _serves(self, target: str) -> str:
        row = self._row(target)
        return f"v{row.version}" if row is not None and row.version else "nothing"

    # ---- push --------------------------------------------------------------------------------
    def action_push_target(self) -> None:
        target = self._chosen_target()
        if target is None:
            return
        row = self.runs.selected_row
        if row is None or not row.bundle_id:
            self.notify("the selected run has no bundle" if row else "select a run first", severity="warning")
            return
        bundle_id, version = row.bundle_id, row.version or "?"
        info = self._row(target)
        kind = f"{info.kind}, stage {info.stage}" if info else "target"
        requires = f" and requires {info.requires}" if info and info.requires else ""
        image = "" if info is None or info.kind == "local" else " build and push its image,"
        self.app.push_screen(
            ConfirmModal(
                f"Push v{version} to {target}?",
                f"{target} ({kind}) serves {self._serves(target)} now. The push checks the "
                f"target's gates (no regression against what serves there{requires}), registers "
                f"v{version},{image} rolls out and smoke-tests it; any failure after the rollout "
                f"starts puts {self._serves(target)} back.",
                confirm="Push",
            ),
            lambda ok: self._start(target, "push", bundle_id, version) if ok else None,
        )

    # ---- rollback ----------------------------------------------------------------------------
    def action_rollback_target(self) -> None:
        target = self._chosen_target()
        if target is None or self.targets_source is None:
            return
        source = self.targets_source
        self.run_worker(
            lambda: self._load_served(source, target), name="rollback", thread=True, exit_on_error=False
        )

    def _load_served(self, source: TargetsSource, target: str) -> None:
        try:
            served = source.served(target)
        except MlplatError as exc:
            self.app.call_from_thread(self.notify, str(exc), title="rollback", severity="error", markup=False)
            return
        self.app.call_from_thread(self._choose_rollback, target, served)

    def _choose_rollback(self, target: str, served: tuple[LastPush, ...]) -> None:
        from mlplat_tui.ui.rollback_picker import RollbackPicker

        row = self._row(target)
        current = row.version if row else None
        choices: list[LastPush] = []
        for entry in served:
            if entry.version != current and all(c.version != entry.version for c in choices):
                choices.append(entry)
        if not choices:
            self.notify(f"{target} served no other version: nothing to roll back to", severity="warning")
            return
        if len(choices) == 1:
            self._confirm_rollback(target, choices[0].version)
            return
        self.app.push_screen(
            RollbackPicker(target, current, tuple(choices)),
            lambda version: self._confirm_rollback(target, version) if version else None,
        )

    def _confirm_rollback(self, target: str, version: str) -> None:
        self.app.push_screen(
            ConfirmModal(
                f"Roll {target} back to v{version}?",
                f"{target} serves {self._serves(target)} now. v{version}'s bundle is verified, "
                f"rolled out and smoke-tested; the alias moves to it when it answers. If it fails, "
                f"{self._serves(target)} keeps serving.",
                confirm="Roll back",
            ),
            lambda ok: self._start(target, "rollback", version, version) if ok else None,
        )

    # ---- running one -------------------------------------------------------------------------
    def _start(self, target: str, action: str, what: str, version: str) -> None:
        source = self.targets_source
        if source is None:
            return
        self._target_busy[target] = action
        panel = self.targets_panel()
        if panel is not None:
            panel.show_activity(target, f"{action} v{version}: starting…")
        self.run_worker(
            lambda: self._run(source, target, action, what),
            name=f"{action} {target}",
            group=f"target-{target}",
            thread=True,
            exit_on_error=False,
        )

    def _run(self, source: TargetsSource, target: str, action: str, what: str) -> None:
        post = self.post_message

        def progress(line: str) -> None:
            post(TargetProgress(target, line.strip()))

        def emit(event: Event) -> None:
            post(PlatformEvent(event))

        try:
            if action == "push":
                result = source.push(target, what, progress, emit)
            else:
                result = source.rollback(target, what, progress, emit)
        except Exception as exc:  # the action's end must always be told, and the target freed
            error = str(exc) if isinstance(exc, MlplatError) else f"{type(exc).__name__}: {exc}"
            post(TargetActionDone(target, action, error=error))
            return
        post(TargetActionDone(target, action, result=result))

    def on_target_action_done(self, message: TargetActionDone) -> None:
        self._target_busy.pop(message.target, None)
        panel = self.targets_panel()
        title = f"{message.action} to {message.target}"
        result = message.result
        if result is None:
            text, outcome, severity = message.error or "failed", "failed", "error"
        else:
            outcome = result.outcome.value
            text = f"v{result.version}: {outcome}"
            if result.reason:
                text += f": {result.reason.splitlines()[0]}"
            if result.serving_version:
                text += f" (v{result.serving_version} serves)"
            severity = _SEVERITY.get(outcome, "information")
        if panel is not None:
            panel.show_activity(message.target, f"{message.action} {text}", outcome=outcome)
        self.notify(text, title=title, severity=severity, markup=False)  # type: ignore[arg-type]
        self._poll("targets")
        self.refresh_runs()

    # ---- fleet -------------------------------------------------------------------------------
    def action_open_fleet(self) -> None:
        from mlplat_tui.ui.fleet_screen import FleetScreen

        if self.targets_source is None:
            self.notify("the fleet needs the real platform behind the dashboard", severity="warning")
            return
        self.app.push_screen(FleetScreen(self.targets_source))
