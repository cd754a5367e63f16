"""Bundle v1: the unit that moves between stages (a folder, or a ``.mlbundle`` archive of it).

Public API::

    build_bundle(model, name, out, *, samples, metrics, params, lineage, reference, version, archive) -> Path
    open_bundle(path, *, extract_to=None, limits=None) -> Bundle
    verify_bundle(path, *, limits=None) -> list[str]
    with_gates(bundle_dir, gates) -> Manifest
    pack_archive(bundle_dir, out) -> Path
    extract_archive(archive, dest_parent=None, *, limits=None) -> Path

Modules: ``manifest`` (schema), ``safety`` (rules and caps), ``hashing`` (digests, bundle id),
``graph`` (signature and external data from the ONNX graph), ``samples`` (samples.npz),
``session`` (ONNX Runtime on CPU), ``integrity`` (structural checks), ``build``, ``reader``,
``verify``, ``gates``, ``archive``. Part of the data plane: never imports textual, mlflow,
docker or mlplat_tui; onnx and onnxruntime are imported inside functions.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlplat_runtime.bundle.archive import extract_archive, pack_archive
    from mlplat_runtime.bundle.build import build_bundle
    from mlplat_runtime.bundle.gates import with_gates
    from mlplat_runtime.bundle.manifest import GateResult, Lineage, Manifest, Signature, TensorSpec
    from mlplat_runtime.bundle.reader import Bundle, open_bundle
    from mlplat_runtime.bundle.safety import Limits
    from mlplat_runtime.bundle.verify import verify_bundle

# Exports are resolved on first use (PEP 562): importing the light ``manifest`` types must not
# pull numpy into every control-plane module (``mlplat --help``, first paint of the dashboard).
_EXPORTS = {
    "extract_archive": "archive",
    "pack_archive": "archive",
    "build_bundle": "build",
    "with_gates": "gates",
    "GateResult": "manifest",
    "Lineage": "manifest",
    "Manifest": "manifest",
    "Signature": "manifest",
    "TensorSpec": "manifest",
    "Bundle": "reader",
    "open_bundle": "reader",
    "Limits": "safety",
    "verify_bundle": "verify",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "Bundle",
    "GateResult",
    "Limits",
    "Lineage",
    "Manifest",
    "Signature",
    "TensorSpec",
    "build_bundle",
    "extract_archive",
    "open_bundle",
    "pack_archive",
    "verify_bundle",
    "with_gates",
]
