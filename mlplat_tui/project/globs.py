"""One glob dialect for every project-relative pattern: ``[train] watch``, ``[train] ignore``
and ``[data] paths``.

The dialect is gitignore's wildmatch, as implemented by ``pathspec`` (its ``gitignore``
patterns; the ``gitwildmatch`` name of pathspec < 1.0). Patterns are matched against posix
paths relative to the project folder:

- ``*`` and ``?`` never cross ``/``; ``[abc]`` / ``[!a]`` are character classes;
- ``**`` crosses folders: ``data/**`` is everything under ``data``, ``**/x`` is ``x`` at any
  depth, ``src/**/*.py`` is every ``.py`` under ``src``;
- a pattern without a ``/`` (other than a trailing one) matches a name at any depth:
  ``*.csv`` matches ``churn.csv`` and ``data/raw/churn.csv``;
- a pattern with a ``/`` is anchored at the project folder (``data/churn.csv``, ``/train.py``);
- a pattern that matches a folder covers everything inside it (``data``, ``data/``);
- ``!pattern`` takes back what an earlier pattern of the same list matched.

Before, ``[train] watch`` had its own translator (``*.csv`` at any depth) while ``[data] paths``
used ``glob.glob`` (``*.csv`` at the top level only), so one pattern meant two things in one
file. Walking the project skips ``SKIPPED_DIRS`` (the platform's state, caches, version control,
environments): a data glob never hashes ``.mlplat/runs`` or a virtual environment.

Imports pathspec lazily (inside ``compile_globs``) and nothing from ``mlplat_tui``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

# Folders whose contents are never project files: the platform's own state (training writes
# there), caches, version control, environments, and local MLflow stores a script may write to.
SKIPPED_DIRS: frozenset[str] = frozenset(
    {
        ".mlplat",
        "__pycache__",
        ".git",
        ".hg",
        ".svn",
        ".venv",
        "venv",
        ".tox",
        ".nox",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".ipynb_checkpoints",
        "node_modules",
        "mlruns",
        "mlartifacts",
    }
)


def _normal(pattern: str) -> str:
    pattern = pattern.strip()
    return pattern[2:] if pattern.startswith("./") else pattern


@lru_cache(maxsize=256)
def compile_globs(patterns: tuple[str, ...]) -> Any:
    """A ``pathspec.PathSpec`` for ``patterns`` (cached: the watcher asks on every event)."""
    import pathspec

    return pathspec.PathSpec.from_lines("gitignore", [_normal(p) for p in patterns if _normal(p)])


def matches(rel_path: str, patterns: Iterable[str]) -> bool:
    """Does any of ``patterns`` match the project-relative posix path (or a folder holding it)?"""
    return bool(compile_globs(tuple(patterns)).match_file(rel_path))


def glob_match(rel_path: str, pattern: str) -> bool:
    """Does the one ``pattern`` match the project-relative posix path?"""
    return matches(rel_path, (pattern,))


def project_files(root: Path) -> Iterator[str]:
    """Every regular file under ``root`` as a posix relative path (``SKIPPED_DIRS`` pruned)."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_DIRS)
        rel_dir = os.path.relpath(dirpath, root)
        for name in sorted(filenames):
            rel = name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/")
            if os.path.isfile(os.path.join(dirpath, name)):
                yield rel


def matching_files(root: Path, pattern: str, files: Iterable[str] | None = None) -> list[str]:
    """The project files (``files``, or a fresh walk of ``root``) that ``pattern`` matches."""
    spec = compile_globs((pattern,))
    return [rel for rel in (project_files(root) if files is None else files) if spec.match_file(rel)]
