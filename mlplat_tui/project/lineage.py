"""Lineage: which code and which data a run was trained from.

``code_version`` answers "which commit, and what was changed on top of it" (the git commit and
a hash of every uncommitted change under the project folder, untracked files included);
``data_hashes`` content-hashes the files named by ``[data] paths``; ``build_lineage`` puts both
into the bundle manifest's ``Lineage``.

The dirty hash covers only the project folder (a project inside a bigger repository is not
"dirty" because of edits elsewhere) and never the platform's own state under ``.mlplat/``,
which changes with every run. Git is used through its command line; no git, or a folder that
is not in a repository, gives ``(None, None)``, never an error.

Imports only the stdlib, the config, the project's globs and the bundle's manifest and digest.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from mlplat_runtime.bundle.hashing import file_digest
from mlplat_runtime.bundle.manifest import Lineage
from mlplat_runtime.errors import ConfigError
from mlplat_tui.project.config import Project
from mlplat_tui.project.globs import matching_files, project_files
from mlplat_tui.project.paths import STATE_DIR

_GIT_TIMEOUT_S = 30.0
# Ignore the user's git config where it would change the bytes of a diff.
_DIFF_ARGS = ("--binary", "--full-index", "--no-color", "--no-ext-diff", "--no-textconv", "--no-renames")


def hash_file(path: Path | str) -> str:
    """``"sha256:<hex>"`` of a file's content: the bundle's own file digest (streamed)."""
    return file_digest(Path(path))


def _git(root: Path, *args: str) -> bytes | None:
    """Run git in ``root``; None when git is missing or the command fails."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}  # read-only: never take index.lock
    try:
        proc = subprocess.run(
            ["git", *args],
            cwd=root,
            env=env,
            capture_output=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def code_version(root: Path | str) -> tuple[str | None, str | None]:
    """``(git commit, dirty hash)`` for the project folder ``root``.

    The commit is ``HEAD`` of the repository that holds ``root`` (None outside a repository or
    before the first commit). The dirty hash is ``"sha256:<hex>"`` over the diff of the
    folder's tracked files against ``HEAD`` plus the path and content of every untracked,
    non-ignored file; None when there is nothing uncommitted.
    """
    root = Path(root).resolve()
    if (_git(root, "rev-parse", "--is-inside-work-tree") or b"").strip() != b"true":
        return None, None
    head = _git(root, "rev-parse", "--verify", "-q", "HEAD^{commit}")
    commit = head.decode().strip() if head else None
    pathspec = ("--", ".", f":(exclude){STATE_DIR}")

    digest = hashlib.sha256()
    changed = False
    untracked_args: tuple[str, ...]
    if commit is not None:
        diff = _git(root, "diff", "HEAD", *_DIFF_ARGS, *pathspec)
        if diff is None:
            return commit, None
        if diff:
            digest.update(b"diff\0" + diff)
            changed = True
        untracked_args = ("ls-files", "-z", "--others", "--exclude-standard", *pathspec)
    else:
        # No commit yet: everything under the folder is uncommitted.
        untracked_args = ("ls-files", "-z", "--cached", "--others", "--exclude-standard", *pathspec)
    listing = _git(root, *untracked_args)
    names = sorted({n for n in (listing or b"").decode("utf-8", "surrogateescape").split("\0") if n})
    for name in names:
        path = root / name
        if not path.is_file():  # e.g. staged then deleted: the diff already says so
            continue
        digest.update(b"file\0" + name.encode("utf-8", "surrogateescape") + b"\0")
        digest.update(hash_file(path).encode() + b"\0")
        changed = True
    return commit, (f"sha256:{digest.hexdigest()}" if changed else None)


def data_hashes(project: Project) -> dict[str, str]:
    """``{relative posix path: "sha256:<hex>"}`` for every file matched by ``[data] paths``.

    Each entry is a path or a glob in ``project/globs.py``'s dialect (the one ``[train] watch``
    uses), relative to the project folder; a folder means every file below it. An entry that
    matches nothing is a ``ConfigError`` naming ``data.paths``: hashing silently nothing would
    record a lineage that is not true.
    """
    root = project.root
    patterns = project.config.data.paths
    files = list(project_files(root)) if patterns else []
    found: set[str] = set()
    for pattern in patterns:
        matched = matching_files(root, pattern, files)
        if not matched:
            raise ConfigError(
                str(project.config_path),
                "data.paths",
                "paths or globs (relative to the project folder) that match existing files",
                got=pattern,
            )
        found.update(matched)
    return {rel: hash_file(root / rel) for rel in sorted(found)}


def build_lineage(project: Project, run_id: str | None = None, tracker_uri: str | None = None) -> Lineage:
    """Everything a bundle records about where it came from."""
    commit, dirty = code_version(project.root)
    return Lineage(
        run_id=run_id,
        tracker_uri=tracker_uri,
        git_commit=commit,
        dirty_hash=dirty,
        data_hashes=data_hashes(project),
        training_command=project.config.train.command,
    )
