"""The safety rules every bundle obeys, wherever it came from.

A bundle may come from anywhere (a colleague, a registry, a CI artefact), and serving loads it
with a privileged process, so reading one must never write, read or follow anything outside it.
The rules, in the issue's words:

- only regular files and folders: no symlinks, hard links, device files, fifos or sockets;
- every path is a plain relative posix path that resolves inside the bundle (no ``..``, no
  absolute paths, no backslashes or drive letters);
- total size, member size and member count are capped (``Limits``; the module-level
  ``MAX_*`` constants are the defaults, every reader takes ``limits=`` to override them).

This module only decides; ``archive.py`` and ``integrity.py`` apply the rules. It imports
nothing beyond the standard library and ``mlplat_runtime.errors``.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from mlplat_runtime.errors import UnsafeArchiveError

MAX_TOTAL_BYTES = 8 * 1024**3  # a bundle, all files together
MAX_MEMBER_BYTES = 4 * 1024**3  # one file (ONNX protobufs stop at 2 GiB; external data can be larger)
MAX_MEMBERS = 1024  # files and folders
MAX_MANIFEST_BYTES = 16 * 1024**2  # parsed as JSON in memory, so it gets its own small cap

HINT_REBUILD = "rebuild it with `mlplat bundle build` (add --archive for a .mlbundle) from a trusted model"


@dataclass(frozen=True)
class Limits:
    """Caps applied while reading or extracting a bundle."""

    max_total_bytes: int = MAX_TOTAL_BYTES
    max_member_bytes: int = MAX_MEMBER_BYTES
    max_members: int = MAX_MEMBERS


DEFAULT_LIMITS = Limits()


def unsafe(member: str, rule: str, *, hint: str = HINT_REBUILD) -> UnsafeArchiveError:
    """The one shape of a safety error: the member, the rule it breaks, what to do."""
    return UnsafeArchiveError(f"bundle member '{member}': {rule}", hint=hint)


def path_problem(name: str) -> str | None:
    """Why ``name`` is not an acceptable member path, or None when it is.

    Accepts plain relative posix paths only, so that joining it to a root can never leave it.
    """
    if not name or name in (".", "./"):
        return "empty path (rule: every member has a relative path)"
    if "\x00" in name:
        return "NUL byte in the path (rule: plain relative posix paths only)"
    if "\\" in name:
        return "backslash in the path (rule: plain relative posix paths only)"
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "absolute path (rule: every path must resolve inside the bundle)"
    parts = PurePosixPath(name).parts
    if ".." in parts:
        return "'..' in the path escapes the bundle (rule: every path must resolve inside the bundle)"
    return None


def normalize_member(name: str) -> str:
    """``./a//b/`` -> ``a/b``: the form used in the manifest. Call after ``path_problem``."""
    parts = [p for p in PurePosixPath(name).parts if p not in ("", ".")]
    return "/".join(parts)


def check_inside(root: Path, rel: str) -> Path:
    """``root / rel`` resolved, after making sure it stays inside ``root`` (raises otherwise)."""
    problem = path_problem(rel)
    if problem:
        raise unsafe(rel, problem)
    base = root.resolve()
    target = (base / rel).resolve()
    if target != base and base not in target.parents:
        raise unsafe(rel, "resolves outside the bundle (rule: every path must resolve inside the bundle)")
    return target


def kind_of_mode(mode: int) -> str:
    """A readable name for a non-regular file type."""
    if stat.S_ISLNK(mode):
        return "a symlink"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISFIFO(mode):
        return "a fifo"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


@dataclass(frozen=True)
class TreeEntry:
    rel: str  # posix path relative to the bundle root
    size: int


@dataclass(frozen=True)
class TreeScan:
    files: tuple[TreeEntry, ...]
    problems: tuple[str, ...]  # every safety problem found, each naming the member and the rule


def scan_tree(root: Path, limits: Limits = DEFAULT_LIMITS) -> TreeScan:
    """Walk a bundle folder without following anything; list its files and every unsafe entry.

    Hard links are not rejected in folders: a hard-linked file is a regular file whose bytes
    the checksums still cover, and nothing reading it can reach another path. They are
    rejected in archives, where extracting one would create a link to an arbitrary target.
    """
    files: list[TreeEntry] = []
    problems: list[str] = []
    count = 0
    total = 0
    stack: list[tuple[Path, str]] = [(root, "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            problems.append(f"bundle member '{prefix or '.'}': cannot be listed ({exc.strerror})")
            continue
        for entry in entries:
            rel = f"{prefix}{entry.name}"
            count += 1
            if count > limits.max_members:
                problems.append(
                    f"bundle member '{rel}': more than {limits.max_members} members "
                    "(rule: member count is capped)"
                )
                return TreeScan(tuple(files), tuple(problems))
            mode = entry.stat(follow_symlinks=False).st_mode
            if stat.S_ISDIR(mode):
                stack.append((Path(entry.path), rel + "/"))
            elif stat.S_ISREG(mode):
                size = entry.stat(follow_symlinks=False).st_size
                if size > limits.max_member_bytes:
                    problems.append(
                        f"bundle member '{rel}': {size} bytes is over the {limits.max_member_bytes}-byte "
                        "cap (rule: member size is capped)"
                    )
                total += size
                files.append(TreeEntry(rel, size))
            else:
                problems.append(
                    f"bundle member '{rel}': is {kind_of_mode(mode)} (rule: only regular files and folders)"
                )
    if total > limits.max_total_bytes:
        problems.append(
            f"bundle member '.': {total} bytes in all is over the {limits.max_total_bytes}-byte cap "
            "(rule: total size is capped)"
        )
    files.sort(key=lambda e: e.rel)
    return TreeScan(tuple(files), tuple(problems))
