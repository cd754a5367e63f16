"""``mlplat fleet``: every model of every project on every target this user can reach.

The answer to "how many models do we have in production" cannot come from one project's
metadata store: each project keeps its own. So a push remembers its project in a per-user index,
``$XDG_STATE_HOME/mlplat/fleet.json`` (default ``~/.local/state/mlplat/fleet.json``; the folder
is 0700), and ``fleet`` asks each indexed project's targets' engines what serves now (``current``:
version, bundle, replicas, healthy). A target that cannot be asked says so (``unreachable:
why``) instead of failing the list; a project folder that is gone or whose ``mlplat.toml`` no
longer parses says that too.

Imports the engines (lazily, through ``engines.py``) and the project config.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlplat_runtime.errors import MlplatError

INDEX_NAME = "fleet.json"


def index_path() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "mlplat" / INDEX_NAME


def _read(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"projects": {}}
    if not isinstance(raw, dict) or not isinstance(raw.get("projects"), dict):
        return {"projects": {}}
    return raw


def remember(project_root: Path, project_name: str, target: str) -> Path:
    """Add the project (and the target it pushed to) to this user's index; returns its path."""
    path = index_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(path.with_suffix(".lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = _read(path)
        key = str(Path(project_root).resolve())
        entry = data["projects"].setdefault(key, {"name": project_name, "targets": []})
        entry["name"] = project_name
        if target not in entry["targets"]:
            entry["targets"].append(target)
        entry["last_push"] = datetime.now(UTC).isoformat()
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".fleet.")
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
        os.replace(tmp, path)
    return path


@dataclass(frozen=True)
class FleetRow:
    project: str
    root: str
    target: str
    kind: str
    stage: str
    model: str
    version: str | None
    bundle_id: str | None
    replicas: int | None
    healthy: int | None
    since: str | None
    health: str  # healthy | degraded | down | nothing | unreachable: why | unreadable: why

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def cells(self) -> tuple[str, ...]:
        """The columns every view of the fleet shows first: project, target, kind, stage, model,
        version ("v3" or "-") and replicas ("healthy/replicas" or "-")."""
        version = f"v{self.version}" if self.version else "-"
        replicas = f"{self.healthy}/{self.replicas}" if self.replicas is not None else "-"
        return (self.project, self.target, self.kind, self.stage, self.model, version, replicas)


def _health(replicas: int, healthy: int) -> str:
    if healthy >= replicas > 0:
        return "healthy"
    return "degraded" if healthy > 0 else "down"


def project_rows(root: Path, name: str) -> list[FleetRow]:
    """One project's rows: each of its targets, what serves there and its health (the dashboard's
    Targets panel); a project or target that cannot be read says why in its row."""
    return _rows_of(root, name)


def _rows_of(root: Path, name: str) -> list[FleetRow]:
    from mlplat_tui.project.config import load_project
    from mlplat_tui.push.credentials import resolve_credentials
    from mlplat_tui.push.engines import engine_for

    try:
        project = load_project(root)
    except MlplatError as exc:
        why = f"unreadable: {exc.message.splitlines()[0]}"
        return [FleetRow(name, str(root), "-", "-", "-", "-", None, None, None, None, None, why)]
    model = project.config.model.name
    rows = []
    for target_name, target in project.config.targets.items():
        common = (project.name, str(root), target_name, target.kind, target.stage, model)
        try:
            credentials = None
            with contextlib.suppress(MlplatError):
                credentials = resolve_credentials(target.credentials, project.root)
            current = engine_for(project, target_name, target, credentials).current(model)
        except MlplatError as exc:
            rows.append(FleetRow(*common, None, None, None, None, None, f"unreachable: {exc.message}"))
            continue
        except Exception as exc:  # an engine's client library failing (docker down, ...)
            rows.append(FleetRow(*common, None, None, None, None, None, f"unreachable: {exc}"[:200]))
            continue
        if current is None:
            rows.append(FleetRow(*common, None, None, None, None, None, "nothing"))
            continue
        rows.append(
            FleetRow(
                *common,
                current.version,
                current.bundle_id,
                current.replicas,
                current.healthy,
                current.since.isoformat() if current.since else None,
                _health(current.replicas, current.healthy),
            )
        )
    return rows


def fleet_rows(path: Path | None = None) -> list[FleetRow]:
    """One row per target of every indexed project, in the index's order."""
    data = _read(path or index_path())
    rows: list[FleetRow] = []
    for root, entry in sorted(data["projects"].items()):
        name = str(entry.get("name", Path(root).name))
        if not Path(root, "mlplat.toml").is_file():
            rows.append(
                FleetRow(name, root, "-", "-", "-", "-", None, None, None, None, None, "unreadable: gone")
            )
            continue
        rows += _rows_of(Path(root), name)
    return rows
