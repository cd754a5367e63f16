"""Triton's model configuration extension: ``GET /v2/models/{name}[/versions/{v}]/config``.

Triton's ``perf_analyzer`` (and ``tritonclient``'s ``get_model_config``) ask for this before
they send a request: it reads ``max_batch_size`` to know whether the tensors it sends carry
a batch dimension, and ``input[].dims`` for the rest of each shape. The answer is Triton's
``ModelConfig`` in its JSON form, derived from the graph's signature, never stored:

- a model whose first dimension is a batch dimension (-1 on every input and output) reports
  ``max_batch_size`` > 0 and dims without that dimension, as Triton's ONNX Runtime backend
  does for such a model: the dynamic batcher's ``max_batch_size`` when batching is on, else
  ``UNBATCHED_MAX_BATCH_SIZE`` (the largest ``-b`` perf_analyzer will then accept; mlplat
  itself limits the rows of a request only through the body size). A per-row scalar output
  (shape ``[-1]``) is written as Triton writes it, ``dims: [1]`` with ``reshape: {shape: []}``;
- any other model reports ``max_batch_size: 0`` and its full shapes (perf_analyzer then needs
  ``--shape`` for dynamic dimensions);
- ``dynamic_batching`` appears only when the model batches; ``instance_group`` says where it
  runs (``KIND_GPU`` under the CUDA provider).

Must not import onnxruntime, textual, mlflow, docker or mlplat_tui.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from mlplat_runtime.serving.batching import BatchingConfig, batch_dimension_problems
from mlplat_runtime.serving.protocol import PLATFORM, TensorSlot

UNBATCHED_MAX_BATCH_SIZE = 1024
BACKEND = "onnxruntime"


def _tensor(slot: TensorSlot, batched: bool) -> dict[str, Any]:
    dims = list(slot.shape[1:] if batched else slot.shape)
    doc: dict[str, Any] = {"name": slot.name, "data_type": f"TYPE_{slot.datatype}"}
    if batched and not dims:
        doc["dims"] = [1]
        doc["reshape"] = {"shape": []}
    else:
        doc["dims"] = dims
    return doc


def model_config(
    name: str,
    inputs: Iterable[TensorSlot],
    outputs: Iterable[TensorSlot],
    *,
    provider: str,
    batching: BatchingConfig | None = None,
    parameters: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The model's configuration as Triton writes it in JSON."""
    ins: Sequence[TensorSlot] = list(inputs)
    outs: Sequence[TensorSlot] = list(outputs)
    batched = not batch_dimension_problems(ins, outs)
    if batched and batching is not None:
        max_batch = batching.max_batch_size
    elif batched:
        max_batch = UNBATCHED_MAX_BATCH_SIZE
    else:
        max_batch = 0
    gpu = provider.startswith("CUDA") or provider.startswith("Tensorrt")
    doc: dict[str, Any] = {
        "name": name,
        "platform": PLATFORM,
        "backend": BACKEND,
        "version_policy": {"latest": {"num_versions": 1}},  # one version serves at a time
        "max_batch_size": max_batch,
        "input": [_tensor(s, batched) for s in ins],
        "output": [_tensor(s, batched) for s in outs],
        "instance_group": [
            {
                "name": f"{name}_0",
                "kind": "KIND_GPU" if gpu else "KIND_CPU",
                "count": batching.instances if batching is not None else 1,
            }
        ],
        "default_model_filename": "model.onnx",
        "parameters": {k: {"string_value": str(v)} for k, v in (parameters or {}).items()},
    }
    if batching is not None and batched:
        doc["dynamic_batching"] = {
            "preferred_batch_size": list(batching.preferred_batch_sizes),
            "max_queue_delay_microseconds": batching.max_queue_delay_us,
        }
    return doc
