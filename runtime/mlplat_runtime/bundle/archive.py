"""``.mlbundle`` archives: a gzip'd tar of the bundle folder, packed reproducibly, extracted safely.

Extraction never trusts the archive and never uses ``tarfile.extract``: it reads the stream
once, checks each member against the rules of ``safety.py`` *before* writing it, writes
regular files itself (``O_EXCL | O_NOFOLLOW``) into a fresh staging folder inside the
destination parent, and renames the result into place only when every member passed. On
any failure the staging folder is removed, so nothing is written outside the target and
nothing half-extracted is left behind. Standard library only.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from mlplat_runtime.bundle.manifest import MANIFEST_NAME
from mlplat_runtime.bundle.safety import (
    DEFAULT_LIMITS,
    Limits,
    check_inside,
    normalize_member,
    path_problem,
    unsafe,
)
from mlplat_runtime.errors import BundleError

SUFFIX = ".mlbundle"
_CHUNK = 1024 * 1024


def pack_archive(bundle_dir: Path, out: Path) -> Path:
    """Pack an intact bundle folder into ``out`` (a ``.mlbundle``); returns ``out``.

    The bundle is checked first (a tampered bundle is never packed). Members are written in
    sorted order with zeroed owners and times, so the same bundle always gives the same bytes.
    """
    from mlplat_runtime.bundle.integrity import check_structure

    bundle_dir = Path(bundle_dir)
    out = Path(out)
    structure = check_structure(bundle_dir)
    structure.raise_for_problems()
    if out.exists() or out.is_symlink():
        raise BundleError(f"'{out}' already exists", hint="pick another output path, or delete it first")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent)
    except OSError as exc:
        from mlplat_runtime.bundle.build import write_failed

        raise write_failed(f"the bundle archive '{out}'", exc) from exc
    tmp = Path(tmp_name)
    try:
        with (
            os.fdopen(fd, "wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            for rel in sorted(structure.sizes):
                info = tarfile.TarInfo(rel)
                info.size = structure.sizes[rel]
                info.mode = 0o644
                info.mtime = 0
                with open(bundle_dir / rel, "rb") as src:
                    tar.addfile(info, src)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; an archive is meant to be shared
        os.replace(tmp, out)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):  # a full disk, most often
            from mlplat_runtime.bundle.build import write_failed

            raise write_failed(f"the bundle archive '{out}'", exc) from exc
        raise
    return out


def _member_kind_problem(member: tarfile.TarInfo) -> str | None:
    if member.isreg() or member.isdir():
        return None
    if member.issym():
        return f"is a symlink to '{member.linkname}' (rule: no symlinks; only regular files and folders)"
    if member.islnk():
        return f"is a hard link to '{member.linkname}' (rule: no hard links; only regular files and folders)"
    if member.ischr() or member.isblk():
        return "is a device file (rule: no device files; only regular files and folders)"
    if member.isfifo():
        return "is a fifo (rule: no fifos; only regular files and folders)"
    return f"has unsupported tar type {member.type!r} (rule: only regular files and folders)"


def _extract_into(archive: Path, stage: Path, limits: Limits) -> None:
    files: set[str] = set()
    folders: set[str] = set()
    count = 0
    total = 0
    try:
        src = open(archive, "rb")  # noqa: SIM115 - closed by the with below, after tarfile
    except OSError as exc:
        raise BundleError(f"cannot read '{archive}': {exc.strerror}", hint="check the path") from exc
    with src, tarfile.open(fileobj=src, mode="r|*") as tar:
        for member in tar:
            count += 1
            if count > limits.max_members:
                raise unsafe(
                    member.name, f"more than {limits.max_members} members (rule: member count is capped)"
                )
            problem = path_problem(member.name) or _member_kind_problem(member)
            if problem and not (member.isdir() and normalize_member(member.name or ".") == ""):
                raise unsafe(member.name, problem)
            rel = normalize_member(member.name)
            if not rel:  # the archive's own "./" folder entry
                continue
            if member.isreg() and rel in folders:
                raise unsafe(member.name, "a folder and a file share this path (rule: one kind per path)")
            if rel in files:
                raise unsafe(
                    member.name,
                    "appears twice (rule: each path once; a second copy could replace a checked file)",
                )
            parents = ["/".join(rel.split("/")[:i]) for i in range(1, rel.count("/") + 1)]
            if any(p in files for p in parents) or (member.isdir() and rel in files):
                raise unsafe(member.name, "a folder and a file share this path (rule: one kind per path)")
            target = check_inside(stage, rel)
            if member.isdir():
                folders.add(rel)
                target.mkdir(mode=0o755, parents=True, exist_ok=True)
                continue
            if member.size > limits.max_member_bytes:
                raise unsafe(
                    member.name,
                    f"{member.size} bytes is over the {limits.max_member_bytes}-byte cap "
                    "(rule: member size is capped)",
                )
            total += member.size
            if total > limits.max_total_bytes:
                raise unsafe(
                    member.name,
                    f"brings the archive to {total} bytes, over the {limits.max_total_bytes}-byte cap "
                    "(rule: total size is capped)",
                )
            files.add(rel)
            folders.update(parents)
            target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            _write_member(tar, member, target)


def _write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> None:
    data = tar.extractfile(member)
    assert data is not None  # a regular member always has a file object
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    written = 0
    with data, os.fdopen(os.open(target, flags, 0o644), "wb") as dst:
        while chunk := data.read(_CHUNK):
            written += len(chunk)
            if written > member.size:  # cannot happen with tarfile; cheap to make sure
                raise unsafe(member.name, "holds more bytes than its header says (rule: sizes are capped)")
            dst.write(chunk)


def _bundle_root(stage: Path) -> Path:
    """The folder holding manifest.json: the stage itself, or its single top folder
    (archives made with ``tar czf x.mlbundle mybundle/``)."""
    if (stage / MANIFEST_NAME).exists():
        return stage
    entries = list(stage.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and (entries[0] / MANIFEST_NAME).exists():
        return entries[0]
    return stage


def extract_archive(archive: Path, dest_parent: Path | None = None, *, limits: Limits | None = None) -> Path:
    """Extract a ``.mlbundle`` into a fresh folder under ``dest_parent`` (default: the system
    temp dir) and return that folder. Raises UnsafeArchiveError naming the first member that
    breaks a rule; nothing is left behind then. The caller owns (and removes) the result."""
    archive = Path(archive)
    limits = limits or DEFAULT_LIMITS
    if not archive.is_file():
        raise BundleError(f"'{archive}' is not a file", hint="pass a .mlbundle archive or a bundle folder")
    parent = Path(dest_parent) if dest_parent is not None else Path(tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    stem = archive.name.removesuffix(SUFFIX) or "bundle"
    work = Path(tempfile.mkdtemp(prefix=f".{stem}.extract-", dir=parent))
    final: Path | None = None
    try:
        stage = work / "stage"
        stage.mkdir()
        try:
            _extract_into(archive, stage, limits)
        except (tarfile.TarError, EOFError, gzip.BadGzipFile) as exc:
            raise BundleError(
                f"'{archive.name}' is not a readable .mlbundle (tar) archive: {exc}",
                hint="make archives with `mlplat bundle build --archive`",
            ) from exc
        except OSError as exc:
            raise BundleError(
                f"extracting '{archive.name}' failed: {exc}", hint="check free disk space and permissions"
            ) from exc
        final = Path(tempfile.mkdtemp(prefix=f"{stem}-", dir=parent))
        os.replace(_bundle_root(stage), final)  # onto the empty folder: atomic on POSIX
        return final
    except BaseException:
        if final is not None:
            shutil.rmtree(final, ignore_errors=True)
        raise
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(work)
