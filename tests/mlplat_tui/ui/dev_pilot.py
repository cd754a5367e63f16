"""Pilot the ``mlplat dev`` dashboard in a fresh interpreter, as a terminal user starts it.

``python -m tests.mlplat_tui.ui.dev_pilot PROJECT_DIR`` builds the dashboard exactly as
``mlplat dev`` does (``cli.ui.dashboard_app(dev=True)``), waits for the first cycle to serve,
saves ``train.py``, waits for the retrained version to serve, then quits. It prints one JSON
object (what it saw) and exits 0 only when all of that happened.

A fresh process matters: the bug it guards against (mlflow imported by two threads at once)
only shows when nothing imported mlflow before the dev loop started, which a pytest process
that already ran a cycle cannot show. ``SlowFirstMlflowImport`` makes the race's timing
certain instead of likely: the first thread that imports mlflow pauses inside it (holding
mlflow's import lock), which is when a second importer used to meet a partially initialised
``mlflow.tracking``. It changes no module; it only waits.
"""

from __future__ import annotations

import asyncio
import importlib.abc
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any


class SlowFirstMlflowImport(importlib.abc.MetaPathFinder):
    """A finder that finds nothing: it notes which threads import mlflow, and makes the first
    one pause once, inside ``import mlflow``, before its first submodule."""

    def __init__(self, pause_s: float) -> None:
        self.pause_s = pause_s
        self.threads: list[str] = []
        self._first: int | None = None
        self._paused = False

    def find_spec(self, name: str, path: Any, target: Any = None) -> None:
        if name == "mlflow" or name.startswith("mlflow."):
            me = threading.current_thread()
            if me.name not in self.threads:
                self.threads.append(me.name)
            if self._first is None:
                self._first = me.ident
            elif name.startswith("mlflow.") and me.ident == self._first and not self._paused:
                self._paused = True
                time.sleep(self.pause_s)
        return None


async def _pilot(root: Path, seen: dict[str, Any]) -> None:
    from mlplat_tui.cli.ui import dashboard_app
    from mlplat_tui.project.config import load_project
    from mlplat_tui.ui.main_screen import MainScreen
    from mlplat_tui.ui.serving_panel import ServingPanel
    from tests.mlplat_tui.ui.conftest import text_of, wait_until

    seen["mlflow_imported_before"] = "mlflow" in sys.modules
    hook = SlowFirstMlflowImport(pause_s=15.0)
    sys.meta_path.insert(0, hook)
    seen["mlflow_import_threads"] = hook.threads
    app = dashboard_app(load_project(root), dev=True)
    app.poll_s = 0.5
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        assert isinstance(screen, MainScreen)
        panel, serving = screen.devloop, screen.query_one(ServingPanel)

        def state() -> str:
            return f"phase={panel.state.phase} died={panel.state.died!r} last={panel.state.last_result!r}"

        def dead() -> bool:  # the panel says so, or (before it could) the events do
            return bool(panel.state.died) or "dev loop stopped:" in text_of(screen.events)

        try:
            await wait_until(
                pilot,
                lambda: dead() or (panel.state.phase == "watching" and panel.state.cycles),
                "the first cycle, then watching",
                timeout=200,
            )
            assert not dead(), state() + " " + text_of(screen.events)[-800:]
            # The panel polls serving every poll_s: on a loaded machine its snapshot can still
            # be the v1 that `mlplat train` served when the first cycle ends; wait for the swap.
            await wait_until(
                pilot,
                lambda: (
                    (s := serving.snapshot) is not None
                    and (s.version or "0").isdigit()
                    and int(s.version or "0") >= 2
                ),
                "the first dev cycle's version to serve",
                timeout=60,
            )
            assert serving.snapshot is not None
            seen["first_version"] = first = serving.snapshot.version
            train = root / "train.py"
            train.write_text(train.read_text() + "\n# saved while the dashboard watches\n")
            await wait_until(
                pilot,
                lambda: dead() or ((s := serving.snapshot) and s.version != first),
                "the retrained version to serve",
                timeout=200,
            )
            assert not dead(), state() + " " + text_of(screen.events)[-800:]
            seen["second_version"] = serving.snapshot.version if serving.snapshot else None
            await wait_until(pilot, lambda: panel.state.phase == "watching", "watching again", timeout=60)
            seen["last_result_ok"] = panel.state.last_result_ok
            seen["panel"] = text_of(panel)
        finally:
            seen["state"] = state()
            await pilot.press("q")
            await wait_until(pilot, lambda: not app.is_running, "the app to leave", timeout=60)
    seen["return_code"] = app.return_code


def main() -> int:
    seen: dict[str, Any] = {}
    try:
        asyncio.run(_pilot(Path(sys.argv[1]), seen))
        ok = True
    except AssertionError as exc:
        seen["failure"] = str(exc)
        ok = False
    print(json.dumps(seen, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
