"""``with_gates``: record guardrail results in a bundle's manifest.

Gate results live in ``manifest.json``, which the bundle id does not cover, so stamping them
keeps the id. The new manifest is written beside the bundle and renamed over the old one, so
a reader sees the old or the new manifest, never half of one, and never an unlisted file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from mlplat_runtime.bundle.manifest import MANIFEST_NAME, GateResult, Manifest
from mlplat_runtime.errors import BundleError


def with_gates(bundle_dir: Path, gates: Sequence[GateResult]) -> Manifest:
    """Replace the gate results of the (intact) bundle folder ``bundle_dir``; returns the new manifest."""
    from mlplat_runtime.bundle.build import write_failed
    from mlplat_runtime.bundle.integrity import check_structure

    bundle_dir = Path(bundle_dir)
    if not bundle_dir.is_dir():
        raise BundleError(
            f"'{bundle_dir}' is not a bundle folder",
            hint="gates are stamped on a bundle folder before it is packed into a .mlbundle",
        )
    structure = check_structure(bundle_dir)
    structure.raise_for_problems()
    assert structure.manifest is not None
    manifest = structure.manifest.model_copy(
        update={"gates": tuple(GateResult.model_validate(g) for g in gates)}
    )
    # Validate the whole manifest again: model_copy skips validation.
    manifest = Manifest.model_validate_json(manifest.model_dump_json())
    what = f"the new manifest of '{bundle_dir}' (the old one is kept)"
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{bundle_dir.name}.manifest-", dir=bundle_dir.parent)
    except OSError as exc:
        raise write_failed(what, exc) from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(manifest.model_dump_json(indent=2) + "\n")
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, bundle_dir / MANIFEST_NAME)
    except BaseException as exc:
        Path(tmp_name).unlink(missing_ok=True)
        if isinstance(exc, OSError):  # a full disk, most often
            raise write_failed(what, exc) from exc
        raise
    return manifest
