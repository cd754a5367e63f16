"""ONNX Runtime on the CPU, for building and verifying bundles.

Expected outputs are recorded and re-checked on the CPU provider on purpose: it is present
everywhere, so a bundle built on a GPU machine verifies on a laptop. Serving picks its own
providers (``mlplat_runtime.providers``). ``onnxruntime`` is imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mlplat_runtime.errors import ModelLoadError


def cpu_session(model_path: Path) -> Any:
    """An ``InferenceSession`` on CPUExecutionProvider; ModelLoadError if ONNX Runtime refuses."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: warnings about unused initializers are noise here
    options.intra_op_num_threads = 1  # tiny sample batches; threads would only contend
    try:
        return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelLoadError(
            f"ONNX Runtime cannot load '{model_path.name}': {_first_line(exc)}",
            hint="check the model with onnx.checker.check_model and export it with an opset "
            "this onnxruntime supports",
        ) from exc


def run(session: Any, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run every output of the model on ``inputs``; ModelLoadError if the run fails."""
    names = [o.name for o in session.get_outputs()]
    try:
        values = session.run(names, dict(inputs))
    except Exception as exc:
        raise ModelLoadError(
            f"the model failed on its sample inputs: {_first_line(exc)}",
            hint="pass --samples with inputs the model accepts (npz keys = input names)",
        ) from exc
    return {name: np.asarray(value) for name, value in zip(names, values, strict=True)}


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
