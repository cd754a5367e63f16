"""Every path mlplat writes under a project's ``.mlplat/`` folder, named once.

Nothing else in the control plane joins path segments below ``.mlplat/``: a backend, the
cycle, the dev loop and the dashboard ask ``project.paths`` (a ``StateLayout``). Two copies of
the layout had already disagreed (``down --volumes`` deleted ``stack/bundles`` while bundles
were written to ``bundles/``), so the layout, and what ``down --volumes`` removes, live here.

    .mlplat/
    ├── project.lock          the one lock every backend's up/down takes (holder pid inside)
    ├── stack/
    │   ├── stack.json        which backend is up (written by up, removed by down)
    │   ├── admin.token       serving admin token (0600)
    │   ├── metadata.token    metadata write token (0600): a second secret, so a client
    │   │                     that may record runs cannot swap the serving model
    │   ├── <service>.pid     local backend: pid, port, start time, command
    │   ├── <service>.log     local backend: the service's output
    │   ├── metadata.duckdb   local backend: the metadata store
    │   └── tracker/          local backend: MLflow's SQLite store and artifacts
    ├── bundles/<model>-v<N>/ bundles, one folder each
    ├── runs/<run id>/out/    scratch output of the training command (pruned)
    ├── devloop/worker.log    the dev loop's warm worker
    ├── push/                 push receipts (push/<target>/receipts/) and one lock per target
    ├── targets/<target>/     a local target's second stack (its own .mlplat/ inside)
    └── monitoring/           the prediction log and its profiles

Imports only the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STATE_DIR = ".mlplat"
METADATA_DB = "metadata.duckdb"  # the store's file, in .mlplat/stack/ or a backend's data folder


@dataclass(frozen=True)
class StateLayout:
    """The ``.mlplat/`` folder of one project; every property is a path, nothing is created."""

    root: Path  # <project>/.mlplat

    @classmethod
    def of(cls, project_root: Path) -> StateLayout:
        return cls(Path(project_root) / STATE_DIR)

    # -- the stack -------------------------------------------------------------------------
    @property
    def lock(self) -> Path:
        return self.root / "project.lock"

    @property
    def stack(self) -> Path:
        return self.root / "stack"

    @property
    def stack_state(self) -> Path:
        return self.stack / "stack.json"

    @property
    def admin_token(self) -> Path:
        return self.stack / "admin.token"

    @property
    def metadata_token(self) -> Path:
        return self.stack / "metadata.token"

    def pidfile(self, service: str) -> Path:
        return self.stack / f"{service}.pid"

    def logfile(self, service: str) -> Path:
        return self.stack / f"{service}.log"

    @property
    def metadata_db(self) -> Path:
        return self.stack / METADATA_DB

    @property
    def tracker(self) -> Path:
        return self.stack / "tracker"

    # -- what cycles write -----------------------------------------------------------------
    @property
    def bundles(self) -> Path:
        return self.root / "bundles"

    def bundle(self, model: str, version: str) -> Path:
        return self.bundles / f"{model}-v{version}"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    def run_output(self, run_id: str) -> Path:
        return self.runs / run_id / "out"

    @property
    def devloop_log(self) -> Path:
        return self.root / "devloop" / "worker.log"

    # -- later features ----------------------------------------------------------------------
    @property
    def push(self) -> Path:
        return self.root / "push"

    def push_lock(self, target: str) -> Path:
        """Held by one push or rollback to ``target`` at a time (on this machine)."""
        return self.push / f"{target}.lock"

    def receipts(self, target: str) -> Path:
        return self.push / target / "receipts"

    @staticmethod
    def receipt_name(stamp: str, model: str, version: str, action: str) -> str:
        """A receipt's file name in ``receipts(target)``: sorts by time, names what moved."""
        return f"{stamp}-{model}-v{version}-{action}.json"

    def target_stack(self, target: str) -> Path:
        """A ``local`` target's second stack: its own project folder (its ``.mlplat/`` inside)."""
        return self.root / "targets" / target

    @property
    def monitoring(self) -> Path:
        return self.root / "monitoring"

    # -- what `down --volumes` deletes -------------------------------------------------------
    def data_paths(self) -> tuple[Path, ...]:
        """The stack's data: runs, metadata, bundles, tracker store, monitoring log.

        Not the lock, the admin token, logs or push receipts (those describe other machines).
        """
        return (
            self.tracker,
            self.metadata_db,
            self.metadata_db.with_name(self.metadata_db.name + ".wal"),
            self.bundles,
            self.runs,
            self.monitoring,
        )
