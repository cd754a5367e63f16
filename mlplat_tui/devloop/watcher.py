"""Which saved files count as a change, and a watchdog observer that reports them.

``PathFilter`` decides from ``[train] watch`` / ``ignore`` (project-relative globs) plus the
paths that never count (editor temp files, ``.mlplat/``, ``__pycache__``, ``.git``, virtual
environments, local MLflow folders). ``ProjectWatcher`` runs a watchdog observer over the project
and hands each relevant project-relative path to a callback; the debouncer (``debounce.py``)
turns a burst of them into one change.

Globs are ``project/globs.py``'s one dialect (gitignore's wildmatch, through pathspec), the
same ``[data] paths`` uses: ``*.py`` matches ``src/features.py``, ``data/**`` everything under
``data``, a pattern that matches a folder covers what is inside it.

Imports watchdog lazily (in ``start``) and nothing from the UI.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlplat_tui.project.globs import SKIPPED_DIRS, glob_match, matches, project_files

# Editors write these around a save; they are never the change itself. ("\\#" because a
# gitignore line starting with "#" is a comment.)
EDITOR_TEMP_GLOBS: tuple[str, ...] = (
    "*.swp",
    "*.swx",
    "*.swo",
    "*~",
    ".#*",
    "\\#*#",
    "4913",
    "*.tmp",
    ".~lock*",
    "*.pyc",
    ".DS_Store",
)
# Folders whose contents never trigger a cycle (the project layer's one list).
IGNORED_DIRS: frozenset[str] = SKIPPED_DIRS

__all__ = ["EDITOR_TEMP_GLOBS", "IGNORED_DIRS", "PathFilter", "ProjectWatcher", "glob_match"]


@dataclass(frozen=True)
class PathFilter:
    """``watch`` minus ``ignore`` minus what never counts."""

    watch: tuple[str, ...]
    ignore: tuple[str, ...] = ()
    always: tuple[str, ...] = field(default=("mlplat.toml",))  # config edits reload the project

    @classmethod
    def from_project(cls, project: Any) -> PathFilter:
        train = project.config.train
        return cls(watch=tuple(train.watch), ignore=tuple(train.ignore))

    @staticmethod
    def never(rel_path: str) -> bool:
        parts = rel_path.split("/")
        if any(p in IGNORED_DIRS for p in parts[:-1]) or parts[-1] in IGNORED_DIRS:
            return True
        return matches(parts[-1], EDITOR_TEMP_GLOBS)

    def matches(self, rel_path: str) -> bool:
        rel_path = rel_path.replace(os.sep, "/").lstrip("/")
        if not rel_path or rel_path.startswith("../") or rel_path == ".." or self.never(rel_path):
            return False
        if rel_path in self.always:
            return True
        if matches(rel_path, self.ignore):
            return False
        return matches(rel_path, self.watch)

    def scan(self, root: Path) -> Iterable[str]:
        """Every existing file under ``root`` that matches (pruning folders that never count)."""
        return (rel for rel in project_files(root) if self.matches(rel))


PathCallback = Callable[[str], None]


class ProjectWatcher:
    """A watchdog observer over the project; calls ``on_path(rel_path)`` per relevant event.

    Reads (open/close-without-write) and attribute changes are not changes: the training run
    itself reads ``train.py`` and the data, and must not re-trigger the loop.

    The root is watched on its own and each top-level folder recursively, except the folders
    that never count: ``.mlplat/`` (runs, bundles, tracker artifacts, logs) grows by several
    folders per cycle, and watching it would only burn inotify watches on events we drop.
    """

    def __init__(self, root: Path, path_filter: PathFilter, on_path: PathCallback) -> None:
        self.root = Path(root).resolve()
        self.filter = path_filter
        self.on_path = on_path
        self._observer: Any = None
        self._handler: Any = None
        self._kinds: list[Any] = []
        self._subdirs: dict[str, Any] = {}  # top-level folder name -> its recursive watch
        self._lock = threading.Lock()

    def _rel(self, raw: bytes | str) -> str | None:
        path = os.fsdecode(raw)
        if not path:
            return None
        rel = os.path.relpath(path, self.root).replace(os.sep, "/")
        return None if rel == "." or rel.startswith("../") else rel

    def _handle(self, event: Any) -> None:
        if event.is_directory:
            self._handle_dir(event)
            return
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            rel = self._rel(raw)
            if rel is not None and self.filter.matches(rel):
                self.on_path(rel)

    def _handle_dir(self, event: Any) -> None:
        """Keep one recursive watch per top-level folder as folders come and go."""
        src = self._rel(event.src_path)
        dest = self._rel(getattr(event, "dest_path", ""))
        if event.event_type in ("deleted", "moved") and src is not None and "/" not in src:
            self._unwatch(src)
        new = dest if event.event_type == "moved" else src if event.event_type == "created" else None
        if new is None or (PathFilter.never(new + "/x")):
            return
        if "/" not in new:
            self._watch(new)
        # files that arrived with the folder (a checkout, an unzip, a move) before it was watched
        base = self.root / new
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if d not in IGNORED_DIRS]
            for name in filenames:
                rel = self._rel(os.path.join(dirpath, name))
                if rel is not None and self.filter.matches(rel):
                    self.on_path(rel)

    def _watch(self, name: str) -> None:
        with self._lock:
            if self._observer is None or name in self._subdirs or name in IGNORED_DIRS:
                return
            path = self.root / name
            if not path.is_dir() or path.is_symlink():
                return
            with contextlib.suppress(OSError):  # vanished meanwhile
                self._subdirs[name] = self._observer.schedule(
                    self._handler, str(path), recursive=True, event_filter=self._kinds
                )

    def _unwatch(self, name: str) -> None:
        with self._lock:
            watch = self._subdirs.pop(name, None)
            if watch is not None and self._observer is not None:
                with contextlib.suppress(KeyError, OSError):
                    self._observer.unschedule(watch)

    def start(self) -> None:
        from watchdog.events import (
            DirCreatedEvent,
            DirDeletedEvent,
            DirMovedEvent,
            FileClosedEvent,
            FileCreatedEvent,
            FileDeletedEvent,
            FileModifiedEvent,
            FileMovedEvent,
            FileSystemEvent,
            FileSystemEventHandler,
        )
        from watchdog.observers import Observer

        watcher = self

        class _Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                watcher._handle(event)

        with self._lock:
            if self._observer is not None:
                return
            self._kinds = [
                FileCreatedEvent,
                FileModifiedEvent,
                FileMovedEvent,
                FileDeletedEvent,
                FileClosedEvent,
                DirCreatedEvent,
                DirDeletedEvent,
                DirMovedEvent,
            ]
            self._handler = _Handler()
            observer = Observer()
            observer.daemon = True
            observer.schedule(self._handler, str(self.root), recursive=False, event_filter=self._kinds)
            self._observer = observer
        for entry in sorted(os.listdir(self.root)):
            self._watch(entry)
        observer.start()

    def stop(self) -> None:
        with self._lock:
            observer, self._observer = self._observer, None
            self._subdirs.clear()
        if observer is not None:
            observer.stop()
            observer.join(timeout=5)

    @property
    def running(self) -> bool:
        return self._observer is not None

    @property
    def watched(self) -> tuple[str, ...]:
        """The top-level folders watched (recursively) besides the root itself."""
        with self._lock:
            return tuple(sorted(self._subdirs))
