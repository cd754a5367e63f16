"""Monitoring, data-plane half: the training reference (v2), drift scores, the prediction log.

Modules: ``reference`` (the typed ``reference.json`` v2 schema and ``compute_reference``, which
training scripts call), ``drift`` (bin counts and PSI / Jensen-Shannon / KS from the same
counts, shared by training-time calibration and the monitor), ``logschema`` (the segment
layout and columns of the prediction and feedback logs), ``predlog`` (serving's bounded capture
queue and its Parquet writer thread). Part of the data plane: numpy, duckdb and pydantic only;
never textual, mlflow, docker or mlplat_tui.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlplat_runtime.monitoring.drift import bin_counts, js, ks_from_counts, psi
    from mlplat_runtime.monitoring.reference import FeatureRef, OutputRef, Reference, compute_reference

# Resolved on first use (PEP 562): importing this package must not pull numpy in.
_EXPORTS = {
    "bin_counts": "drift",
    "js": "drift",
    "ks_from_counts": "drift",
    "psi": "drift",
    "FeatureRef": "reference",
    "OutputRef": "reference",
    "Reference": "reference",
    "compute_reference": "reference",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "FeatureRef",
    "OutputRef",
    "Reference",
    "bin_counts",
    "compute_reference",
    "js",
    "ks_from_counts",
    "psi",
]
