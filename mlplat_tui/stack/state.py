"""What a project's stack keeps on disk between commands: the one lock, the backend that is up,
and what ``down --volumes`` removes.

- **One lock** (``paths.lock``) for every backend's ``up`` and ``down``: with one lock per
  backend, ``mlplat up`` and ``mlplat up --backend docker`` could both start in one project
  and fight over the same four ports.
- **The backend that is up** (``paths.stack_state``, written by a successful ``up``, removed by
  ``down``): ``status``, ``down``, ``logs`` and the dashboard act on it without a flag
  (``stack.base.get_backend``), and ``up --backend X`` while the other backend's stack runs is
  refused with how to stop it.
- **The data** is exactly ``paths.data_paths()``.

Imports the standard library, pydantic and ``project`` only; never a backend.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from mlplat_runtime.errors import StackError
from mlplat_tui.project.config import Project
from mlplat_tui.project.paths import StateLayout

BackendName = Literal["local", "docker"]


class StackRecord(BaseModel):
    """``stack.json``: which backend brought the stack up, when, from which process."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    backend: BackendName
    since: float
    pid: int | None = None


@contextlib.contextmanager
def project_lock(project: Project) -> Iterator[None]:
    """Hold the project's lock for one ``up`` or ``down``; another one holding it is an error
    naming its pid (the file holds the holder's pid while it is held)."""
    path = project.paths.lock
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise StackError(
                f"another `mlplat up`/`down` is already running for project '{project.name}' (pid {holder})",
                hint="wait for it to finish, then run `mlplat status`",
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        try:
            yield
        finally:
            fh.seek(0)
            fh.truncate()
            fcntl.flock(fh, fcntl.LOCK_UN)


def recorded_backend(paths: StateLayout) -> BackendName | None:
    """The backend whose stack was last brought up and not yet taken down, if any."""
    try:
        return StackRecord.model_validate_json(paths.stack_state.read_bytes()).backend
    except (OSError, ValidationError):
        return None


def record_backend(paths: StateLayout, backend: BackendName) -> None:
    paths.stack_state.parent.mkdir(parents=True, exist_ok=True)
    record = StackRecord(backend=backend, since=time.time(), pid=os.getpid())
    tmp = paths.stack_state.with_name(paths.stack_state.name + ".tmp")
    tmp.write_text(record.model_dump_json())
    tmp.replace(paths.stack_state)


def forget_backend(paths: StateLayout, backend: BackendName) -> None:
    """Remove the record if it names ``backend`` (a ``down --backend`` of the other leaves it)."""
    if recorded_backend(paths) in (backend, None):
        paths.stack_state.unlink(missing_ok=True)


def other_backend_up(
    project: Project, backend: BackendName, is_up: Callable[[BackendName], bool]
) -> StackError | None:
    """The error for ``up`` of ``backend`` while the recorded other backend still runs.

    ``is_up(name)`` says whether anything of that backend's stack is running (the caller asks
    the backend: the lower layer never imports one). A record of a stack that is gone (the
    machine rebooted, the engine was reset) is stale and allows the ``up``.
    """
    other = recorded_backend(project.paths)
    if other is None or other == backend or not is_up(other):
        return None
    where = "" if project.root == Path.cwd() else f"--project {project.root} "
    return StackError(
        f"the {other} stack of project '{project.name}' is up; one project runs one stack",
        hint=f"stop it with `mlplat {where}down` (it acts on the {other} stack), "
        f"then `mlplat {where}up --backend {backend}`",
    )


def remove_data(paths: StateLayout, say: Callable[[str], None]) -> None:
    """Delete exactly ``paths.data_paths()``: runs, metadata, bundles, tracker store, monitoring."""
    removed = []
    for path in paths.data_paths():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        else:
            continue
        removed.append(path.name)
    if removed:
        say(f"data removed ({', '.join(removed)})")
