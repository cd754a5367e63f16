"""Structural checks of a bundle folder: safe tree, manifest schema, file set, checksums, id.

Shared by ``open_bundle`` (which raises on any problem) and ``verify_bundle`` (which lists
them all and goes on to run the model). Nothing here runs ONNX Runtime or writes a byte.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from mlplat_runtime.bundle.hashing import bundle_id, file_digest
from mlplat_runtime.bundle.manifest import MANIFEST_NAME, MODEL_NAME, SAMPLES_NAME, Manifest
from mlplat_runtime.bundle.safety import (
    DEFAULT_LIMITS,
    HINT_REBUILD,
    MAX_MANIFEST_BYTES,
    Limits,
    path_problem,
    scan_tree,
)
from mlplat_runtime.errors import BundleError, UnsafeArchiveError

REQUIRED_FILES = (MODEL_NAME, SAMPLES_NAME)


@dataclass(frozen=True)
class Structure:
    root: Path
    manifest: Manifest | None  # None when manifest.json is missing or does not parse
    sizes: dict[str, int]  # every regular file found (manifest.json included) -> bytes
    problems: tuple[str, ...]  # every problem, each naming the member and the rule
    unsafe: tuple[str, ...]  # the subset that breaks a safety rule

    def raise_for_problems(self) -> None:
        """UnsafeArchiveError when a safety rule is broken, else BundleError, listing all."""
        if not self.problems:
            return
        cls = UnsafeArchiveError if self.unsafe else BundleError
        listed = "\n  ".join(self.problems)
        raise cls(f"bundle '{self.root}' is not valid:\n  {listed}", hint=HINT_REBUILD)


def parse_manifest(path: Path) -> tuple[Manifest | None, list[str]]:
    """The manifest, or None and one problem per schema error."""
    size = path.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        return None, [
            f"bundle member '{MANIFEST_NAME}': {size} bytes is over the {MAX_MANIFEST_BYTES}-byte cap "
            "(rule: member size is capped)"
        ]
    raw = path.read_bytes()
    try:
        json.loads(raw)
    except ValueError as exc:
        return None, [f"bundle member '{MANIFEST_NAME}': not valid JSON ({exc})"]
    except RecursionError:
        return None, [f"bundle member '{MANIFEST_NAME}': not a manifest (JSON nested too deeply)"]
    try:
        return Manifest.model_validate_json(raw), []
    except ValidationError as exc:
        return None, [
            f"bundle member '{MANIFEST_NAME}': schema: {'.'.join(str(p) for p in err['loc']) or '(root)'}: "
            f"{err['msg']}"
            for err in exc.errors()
        ]


def check_structure(root: Path, limits: Limits = DEFAULT_LIMITS) -> Structure:
    """Every structural problem of the bundle folder ``root`` (none means it is intact)."""
    scan = scan_tree(root, limits)
    unsafe: list[str] = list(scan.problems)
    problems: list[str] = list(scan.problems)
    sizes = {entry.rel: entry.size for entry in scan.files}

    if MANIFEST_NAME not in sizes:
        problems.append(f"bundle member '{MANIFEST_NAME}': missing (rule: every bundle has a manifest)")
        return Structure(root, None, sizes, tuple(problems), tuple(unsafe))
    manifest, schema_problems = parse_manifest(root / MANIFEST_NAME)
    problems += schema_problems
    if manifest is None:
        return Structure(root, None, sizes, tuple(problems), tuple(unsafe))

    listed = dict(manifest.files)
    for rel in sorted(listed):
        bad = path_problem(rel)
        if bad is None and rel != "/".join(p for p in rel.split("/") if p not in ("", ".")):
            bad = "not in normal form (rule: plain relative posix paths only)"
        if bad:
            msg = f"manifest lists '{rel}': {bad}"
            problems.append(msg)
            unsafe.append(msg)
            del listed[rel]
    if MANIFEST_NAME in listed:
        problems.append(f"manifest lists '{MANIFEST_NAME}' (rule: the manifest does not list itself)")
        del listed[MANIFEST_NAME]
    for rel in REQUIRED_FILES:
        if rel not in listed:
            problems.append(f"bundle member '{rel}': not listed in the manifest (rule: every bundle has it)")
    for rel in sorted(set(sizes) - set(listed) - {MANIFEST_NAME}):
        problems.append(f"bundle member '{rel}': not listed in the manifest (rule: no unlisted files)")
    for rel in sorted(listed):
        if rel not in sizes:
            problems.append(f"bundle member '{rel}': listed in the manifest but missing")
        elif file_digest(root / rel) != listed[rel]:
            problems.append(
                f"bundle member '{rel}': checksum differs from the manifest (rule: files are unchanged)"
            )
    if not problems and bundle_id(manifest.files) != manifest.bundle_id:
        problems.append(
            f"bundle member '{MANIFEST_NAME}': bundle_id {manifest.bundle_id} is not the digest of the "
            "listed files (rule: the id covers the content)"
        )
    if MODEL_NAME in listed and MODEL_NAME in sizes:
        unreadable, ext = _external_data_problems(root, set(listed))
        problems += unreadable + ext
        unsafe += ext
    return Structure(root, manifest, sizes, tuple(problems), tuple(unsafe))


def _external_data_problems(root: Path, files: set[str]) -> tuple[list[str], list[str]]:
    """([the model does not parse], [external data pointing outside the bundle])."""
    from mlplat_runtime.bundle.graph import external_data_problems, load_proto

    try:
        proto = load_proto(root / MODEL_NAME)
    except BundleError as exc:
        return [f"bundle member '{MODEL_NAME}': {exc.message}"], []
    return [], external_data_problems(proto, MODEL_NAME, files)
