"""Fixtures for bundle tests: a built bundle, a resealer and an archive crafter.

``reseal`` plays the careful attacker: after changing a bundle it recomputes every checksum
and the bundle id, so only the deeper checks (safety, external data, model, samples) can
catch the change.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from mlplat_runtime.bundle.hashing import bundle_id, file_digest
from tests.helpers.models import make_bundle


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    return make_bundle(tmp_path, "churn", version="3", metrics={"roc_auc": 0.91})


def reseal(root: Path) -> None:
    """Rewrite manifest.json so that ``files`` and ``bundle_id`` match what is on disk."""
    manifest = json.loads((root / "manifest.json").read_text())
    files = {
        p.relative_to(root).as_posix(): file_digest(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink() and p.relative_to(root).as_posix() != "manifest.json"
    }
    manifest["files"] = files
    manifest["bundle_id"] = bundle_id(files)
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))


Member = tuple[tarfile.TarInfo, bytes | None]


def file_member(name: str, data: bytes) -> Member:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def special_member(name: str, kind: bytes, linkname: str = "") -> Member:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3
    return info, None


def bundle_members(root: Path) -> list[Member]:
    """The members of a good bundle, as a starting point for crafted archives."""
    return [
        file_member(p.relative_to(root).as_posix(), p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    ]


def write_tar(path: Path, members: Iterable[Member], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode, format=tarfile.GNU_FORMAT) as tar:  # type: ignore[call-overload]
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


@pytest.fixture
def craft(tmp_path: Path) -> Callable[..., Path]:
    """craft(members, name="evil.mlbundle") -> path of a tar.gz holding exactly ``members``."""

    def _craft(members: Iterable[Member], name: str = "evil.mlbundle") -> Path:
        return write_tar(tmp_path / name, members)

    return _craft
