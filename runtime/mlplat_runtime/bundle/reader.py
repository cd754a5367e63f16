"""``open_bundle`` and ``Bundle``: a checked, read-only view of a bundle folder or archive.

Opening checks the structure (safe tree, schema, file set, checksums, id, external data
inside) but does not run the model: serving loads and checks it itself, and ``verify_bundle``
does the full check. An archive is extracted safely into a fresh folder first.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlplat_runtime.bundle.manifest import MODEL_NAME, REFERENCE_NAME, SAMPLES_NAME, Manifest
from mlplat_runtime.bundle.safety import Limits
from mlplat_runtime.errors import BundleError, NotFoundError


@dataclass(frozen=True)
class Bundle:
    """An opened bundle. ``extracted`` is True when ``root`` is a folder ``open_bundle``
    extracted from an archive: the caller owns it and removes it when done."""

    root: Path
    manifest: Manifest
    model_path: Path
    extracted: bool = False

    @property
    def name(self) -> str:
        return self.manifest.model_name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def bundle_id(self) -> str:
        return self.manifest.bundle_id

    def samples(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(inputs, expected outputs) by tensor name, read without pickle."""
        inputs, outputs, _stray = self.checked_samples()
        return inputs, outputs

    def checked_samples(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[str]]:
        """(inputs, expected outputs, problems): the problems ``verify_bundle`` reports for them."""
        from mlplat_runtime.bundle.samples import read_npz, split_samples
        from mlplat_runtime.bundle.verify import sample_problems

        inputs, outputs, stray = split_samples(read_npz(self.root / SAMPLES_NAME))
        return inputs, outputs, sample_problems(self.manifest, inputs, outputs, stray)

    def reference(self) -> dict[str, Any] | None:
        """The training distributions for drift (``reference.json``), or None when absent."""
        if REFERENCE_NAME not in self.manifest.files:
            return None
        try:
            value = json.loads((self.root / REFERENCE_NAME).read_text(encoding="utf-8"))
        except ValueError as exc:
            raise BundleError(
                f"'{REFERENCE_NAME}' is not valid JSON: {exc}", hint="rebuild the bundle"
            ) from exc
        if not isinstance(value, dict):
            raise BundleError(f"'{REFERENCE_NAME}' is not a JSON object", hint="rebuild the bundle")
        return value


def open_bundle(path: Path, *, extract_to: Path | None = None, limits: Limits | None = None) -> Bundle:
    """Open a bundle folder or ``.mlbundle`` archive after checking its structure.

    Raises UnsafeArchiveError (a safety rule broken) or BundleError (anything else wrong),
    listing every problem. An archive is extracted into a fresh folder under ``extract_to``
    (default: the system temp dir); that folder is removed again when the check fails.
    """
    from mlplat_runtime.bundle.archive import extract_archive
    from mlplat_runtime.bundle.integrity import check_structure
    from mlplat_runtime.bundle.safety import DEFAULT_LIMITS

    path = Path(path)
    limits = limits or DEFAULT_LIMITS
    if path.is_dir():
        root = path.resolve()
        structure = check_structure(root, limits)
        structure.raise_for_problems()
        assert structure.manifest is not None  # no problems implies a parsed manifest
        return Bundle(root, structure.manifest, root / MODEL_NAME)
    if not path.is_file():
        raise NotFoundError(
            f"no bundle at '{path}'", hint="pass a bundle folder or a .mlbundle archive (mlplat bundle build)"
        )
    root = extract_archive(path, extract_to, limits=limits)
    try:
        structure = check_structure(root, limits)
        structure.raise_for_problems()
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    assert structure.manifest is not None
    return Bundle(root, structure.manifest, root / MODEL_NAME, extracted=True)
