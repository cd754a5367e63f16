"""Dynamic batching, per model and opt-in: concurrent requests queued, combined into one ONNX
Runtime call, split back.

Only for models whose first dimension is a batch dimension (-1 on every input and output):
the rows of the queued requests are concatenated along it, and each output is sliced back
at the same offsets. Requests whose other dimensions differ (a dynamic width) cannot share
a call; each batch takes the oldest request and the queued ones that match it.

When a batch fires (``Batcher``): never on a timer a lone client waits for. Requests are
queued on the event loop; a batch is formed as soon as the loop has taken in what arrived
in its turn (``call_soon``), so one client's request runs alone and at once, while 32
connections whose requests arrive together share a call. While every runner is busy (one
ONNX Runtime call per runner in flight, ``instances`` runners), requests queue; a runner
that comes free takes what is queued, up to ``max_batch_size`` rows. Only when another call
is still in flight (so more requests are on their way) and the queue holds fewer rows than
the smallest preferred size does a free runner wait, at most ``max_queue_delay_us`` from the
oldest queued request's arrival. MLServer's fixed window cut a single client from 793 to
282 req/s; this rule cannot.

A batch that fails (one bad request among many) is run again one request at a time, so a
request fails only for its own reason. Metrics: rows per call and time in the queue.

Off the default path: a model without a ``BatchingConfig`` never reaches this module.
Must not import onnxruntime, textual, mlflow, docker or mlplat_tui.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlplat_runtime.errors import RequestError

if TYPE_CHECKING:
    from mlplat_runtime.serving.protocol import TensorSlot

MAX_BATCH_SIZE_LIMIT = 65536
MAX_QUEUE_DELAY_US_LIMIT = 1_000_000


@dataclass(frozen=True)
class BatchingConfig:
    """How one model batches (Triton's ``dynamic_batching`` plus ``max_batch_size``)."""

    max_batch_size: int = 32  # rows in one ONNX Runtime call
    max_queue_delay_us: int = 0  # the longest a request waits for company while a call is in flight
    preferred_batch_sizes: tuple[int, ...] = ()  # a free runner fires at once at one of these
    instances: int = 1  # ONNX Runtime calls of this model in flight at once

    def __post_init__(self) -> None:
        if not 1 <= self.max_batch_size <= MAX_BATCH_SIZE_LIMIT:
            raise RequestError(f"max_batch_size must be 1..{MAX_BATCH_SIZE_LIMIT}, got {self.max_batch_size}")
        if not 0 <= self.max_queue_delay_us <= MAX_QUEUE_DELAY_US_LIMIT:
            raise RequestError(
                f"max_queue_delay_us must be 0..{MAX_QUEUE_DELAY_US_LIMIT}, got {self.max_queue_delay_us}"
            )
        bad = [s for s in self.preferred_batch_sizes if not 1 <= s <= self.max_batch_size]
        if bad:
            raise RequestError(
                f"preferred_batch_sizes {bad} are not within 1..max_batch_size ({self.max_batch_size})"
            )
        if not 1 <= self.instances <= 64:
            raise RequestError(f"instances must be 1..64, got {self.instances}")

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> BatchingConfig:
        """From a JSON object (an admin load's ``dynamic_batching`` parameter)."""
        known = {"max_batch_size", "max_queue_delay_us", "preferred_batch_sizes", "instances"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise RequestError(f"dynamic_batching: unknown key(s) {unknown}; known: {sorted(known)}")
        ints = {k: raw[k] for k in ("max_batch_size", "max_queue_delay_us", "instances") if k in raw}
        for key, value in ints.items():
            if type(value) is not int:
                raise RequestError(f"dynamic_batching.{key} must be an integer, got {value!r}")
        sizes = raw.get("preferred_batch_sizes", [])
        if not isinstance(sizes, list) or not all(type(s) is int for s in sizes):
            raise RequestError("dynamic_batching.preferred_batch_sizes must be a list of integers")
        return cls(**ints, preferred_batch_sizes=tuple(sorted(set(sizes))))

    def to_json(self) -> dict[str, Any]:
        return {
            "max_batch_size": self.max_batch_size,
            "max_queue_delay_us": self.max_queue_delay_us,
            "preferred_batch_sizes": list(self.preferred_batch_sizes),
            "instances": self.instances,
        }


def batch_dimension_problems(inputs: Sequence[TensorSlot], outputs: Sequence[TensorSlot]) -> list[str]:
    """Why a model cannot be batched (empty when its first dimension is a batch dimension)."""
    return [
        f"{kind} '{s.name}' has shape {list(s.shape)}: its first dimension is not a batch dimension (-1)"
        for kind, slots in (("input", inputs), ("output", outputs))
        for s in slots
        if not s.shape or s.shape[0] != -1
    ]
