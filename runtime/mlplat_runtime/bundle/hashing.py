"""Content digests: each file's sha256, and the bundle id derived from them.

The bundle id is ``"sha256:" + hex`` of sha256 over the content files (every file but
``manifest.json``), in sorted path order, each contributing ``<path>\\0<file digest>\\n``.
Because the manifest is left out, rewriting it (``with_gates``) keeps the id, and two builds
of the same model with the same samples share an id. Standard library only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

PREFIX = "sha256:"


def file_digest(path: Path) -> str:
    """``"sha256:<hex>"`` of a file's bytes, streamed by ``hashlib.file_digest`` (models can be
    gigabytes)."""
    with open(path, "rb") as f:
        return PREFIX + hashlib.file_digest(f, "sha256").hexdigest()


def bundle_id(files: Mapping[str, str]) -> str:
    """The bundle id over ``{relative posix path: "sha256:<hex>"}`` of the content files."""
    h = hashlib.sha256()
    for rel in sorted(files):
        h.update(rel.encode("utf-8"))
        h.update(b"\0")
        h.update(files[rel].encode("ascii"))
        h.update(b"\n")
    return PREFIX + h.hexdigest()


def short_id(bid: str) -> str:
    """The first 12 hex digits: the default version of a bring-your-own bundle."""
    return bid.removeprefix(PREFIX)[:12]
