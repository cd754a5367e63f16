"""``verify_bundle``: every problem of a bundle, from checksums to whether the model still
reproduces its samples in ONNX Runtime. Never raises for a bad bundle: it lists why.

An unsafe bundle (a safety rule broken) is reported and never handed to ONNX Runtime.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mlplat_runtime.bundle.manifest import MODEL_NAME, SAMPLES_NAME, Manifest
from mlplat_runtime.bundle.safety import DEFAULT_LIMITS, Limits
from mlplat_runtime.errors import BundleError, ModelLoadError

if TYPE_CHECKING:
    import numpy as np


def verify_bundle(path: Path, *, limits: Limits | None = None) -> list[str]:
    """Every problem found in the bundle folder or archive at ``path``; empty means good."""
    from mlplat_runtime.bundle.archive import extract_archive

    path = Path(path)
    limits = limits or DEFAULT_LIMITS
    if path.is_dir():
        return _verify_folder(path.resolve(), limits)
    if not path.is_file():
        return [f"'{path}': no bundle folder or archive there"]
    with tempfile.TemporaryDirectory(prefix="mlplat-verify-") as tmp:
        try:
            root = extract_archive(path, Path(tmp), limits=limits)
        except BundleError as exc:
            return [exc.message]
        return _verify_folder(root, limits)


def _verify_folder(root: Path, limits: Limits) -> list[str]:
    from mlplat_runtime.bundle.integrity import check_structure

    structure = check_structure(root, limits)
    problems = list(structure.problems)
    manifest = structure.manifest
    if manifest is None or structure.unsafe or MODEL_NAME not in structure.sizes:
        return problems
    problems += _model_problems(root, manifest)
    return problems


def _model_problems(root: Path, manifest: Manifest) -> list[str]:
    from mlplat_runtime.bundle.graph import read_signature
    from mlplat_runtime.bundle.samples import compare_outputs, read_npz, split_samples
    from mlplat_runtime.bundle.session import cpu_session, run

    problems: list[str] = []
    try:
        graph_signature = read_signature(root / MODEL_NAME)
    except BundleError as exc:
        return [f"bundle member '{MODEL_NAME}': {exc.message}"]
    if graph_signature != manifest.signature:
        problems.append(
            f"bundle member '{MODEL_NAME}': the graph's signature differs from the manifest's "
            f"(graph: {_describe(graph_signature.inputs)} -> {_describe(graph_signature.outputs)})"
        )
    try:
        session = cpu_session(root / MODEL_NAME)
    except ModelLoadError as exc:
        return [*problems, f"bundle member '{MODEL_NAME}': {exc.message}"]
    if SAMPLES_NAME not in manifest.files or not (root / SAMPLES_NAME).is_file():
        return problems
    try:
        inputs, outputs, stray = split_samples(read_npz(root / SAMPLES_NAME))
    except BundleError as exc:
        return [*problems, f"bundle member '{SAMPLES_NAME}': {exc.message}"]
    found = sample_problems(manifest, inputs, outputs, stray)
    problems += found
    if any(p.startswith("samples: input ") for p in found):
        return problems
    try:
        actual = run(session, inputs)
    except ModelLoadError as exc:
        return [*problems, f"samples: {exc.message}"]
    problems += [f"samples: {p}" for p in compare_outputs(outputs, actual)]
    return problems


def sample_problems(
    manifest: Manifest,
    inputs: Mapping[str, np.ndarray],
    outputs: Mapping[str, np.ndarray],
    stray: Sequence[str] = (),
) -> list[str]:
    """Every way a bundle's samples differ from its signature: stray keys, a missing or extra
    input or output, a dtype or shape off. The one rule for ``verify_bundle`` and for serving's
    load, so a bundle that one refuses the other refuses too."""
    from mlplat_runtime.bundle.samples import spec_problems

    problems = [f"samples: key '{k}' has neither 'input:' nor 'output:' prefix" for k in stray]
    problems += spec_problems("input", manifest.signature.inputs, inputs)
    problems += spec_problems("output", manifest.signature.outputs, outputs)
    return problems


def _describe(specs: tuple) -> str:  # type: ignore[type-arg]
    return ", ".join(f"{s.name} {s.datatype}{list(s.shape)}" for s in specs)
