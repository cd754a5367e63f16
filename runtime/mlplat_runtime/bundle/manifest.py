"""Bundle v1 manifest: the typed contents of ``manifest.json``.

Parsed from outside (a bundle may come from anywhere), so it is a pydantic model with
``extra="forbid"``: an unknown key is a schema error, not silently ignored.

The optional ``serving`` block says how the bundle asks to be served; today only dynamic
batching (``serving.batching``, from ``[serving.batching]`` in mlplat.toml). It is written only
when present, so manifests without it read exactly as before.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Annotated, Final, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SCHEMA_VERSION: Final[Literal[1]] = 1
MANIFEST_NAME = "manifest.json"
MODEL_NAME = "model.onnx"
SAMPLES_NAME = "samples.npz"
REFERENCE_NAME = "reference.json"

# OIP v2 datatypes we serve, and their numpy dtype names.
OIP_TO_NUMPY: dict[str, str] = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
}
NUMPY_TO_OIP: dict[str, str] = {v: k for k, v in OIP_TO_NUMPY.items()}

# A model name or version: 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"

OipDatatype = Literal["BOOL", "UINT8", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES"]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpec(_Frozen):
    """One graph input or output. ``shape`` uses -1 for a dynamic dimension (OIP convention)."""

    name: str
    datatype: OipDatatype
    shape: tuple[int, ...]


class Signature(_Frozen):
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


class Lineage(_Frozen):
    run_id: str | None = None
    tracker_uri: str | None = None
    git_commit: str | None = None
    dirty_hash: str | None = None  # sha256 of uncommitted changes; None when the tree is clean
    data_hashes: dict[str, str] = Field(default_factory=dict)  # relative path -> sha256
    training_command: str | None = None


GateOp = Literal[">=", "<=", ">", "<", "=="]


class GateResult(_Frozen):
    """One guardrail evaluated against a bundle.

    ``threshold`` and ``detail`` are for people; what code needs travels as fields: ``op`` and
    ``bound`` (the comparison that was applied, e.g. ``>=`` and ``0.85``; None for gates that are
    not a comparison, such as ``signature``), ``evaluated`` (False when the gate could not be
    evaluated at all, e.g. the champion could not be looked up: such a gate is never passed) and
    ``policy_floor`` (the bound is the platform policy's floor, not the project's own).
    The four have defaults, so manifests written before they existed still validate.
    """

    name: str  # e.g. "metrics.roc_auc", "latency.p95_ms", "size_mb", "no_regression", "signature"
    measured: float | str | None
    threshold: str  # human form: ">= 0.85", "<= 5", "compatible with v3"
    passed: bool
    detail: str = ""
    op: GateOp | None = None
    bound: float | None = None
    evaluated: bool = True
    policy_floor: bool = False


MAX_BATCH_SIZE_LIMIT = 65536
MAX_QUEUE_DELAY_US_LIMIT = 1_000_000
MAX_BATCH_INSTANCES = 64

_StrictInt = Annotated[int, Field(strict=True)]


class BatchingSpec(_Frozen):
    """Dynamic batching a bundle asks for (Triton's ``dynamic_batching`` plus ``max_batch_size``).

    Only for a model whose first dimension is a batch dimension (``batch_dimension_problems``);
    ``build_bundle`` refuses it for any other model. Serving's ``--max-batch-size`` flags and an
    admin load's ``dynamic_batching`` parameter override it.
    """

    max_batch_size: _StrictInt = Field(ge=1, le=MAX_BATCH_SIZE_LIMIT)  # rows in one ONNX Runtime call
    # while a call is in flight, the longest a request waits for company (0: never waits)
    max_queue_delay_us: _StrictInt = Field(default=0, ge=0, le=MAX_QUEUE_DELAY_US_LIMIT)
    preferred_batch_sizes: tuple[_StrictInt, ...] = ()  # row counts a batch fires at without waiting
    instances: _StrictInt = Field(default=1, ge=1, le=MAX_BATCH_INSTANCES)  # calls in flight at once

    @field_validator("preferred_batch_sizes")
    @classmethod
    def _sorted(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(sorted(set(v)))

    @model_validator(mode="after")
    def _within(self) -> BatchingSpec:
        bad = [s for s in self.preferred_batch_sizes if not 1 <= s <= self.max_batch_size]
        if bad:
            raise ValueError(
                f"preferred_batch_sizes {bad} are not within 1..max_batch_size ({self.max_batch_size})"
            )
        return self


class ServingSpec(_Frozen):
    """How the bundle asks to be served."""

    batching: BatchingSpec | None = None


class _Shaped(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def shape(self) -> Sequence[int]: ...


def batch_dimension_problems(inputs: Iterable[_Shaped], outputs: Iterable[_Shaped]) -> list[str]:
    """Why a model cannot batch dynamically (empty when its first dimension is a batch
    dimension: -1 on every input and output)."""
    return [
        f"{kind} '{s.name}' has shape {list(s.shape)}: its first dimension is not a batch dimension (-1)"
        for kind, slots in (("input", inputs), ("output", outputs))
        for s in slots
        if not s.shape or s.shape[0] != -1
    ]


class Manifest(_Frozen):
    schema_version: Literal[1] = SCHEMA_VERSION
    # names travel in URLs, folder names and registry entries: no NUL, no "../", no 100k characters
    model_name: str = Field(pattern=NAME_PATTERN)
    version: str = Field(pattern=NAME_PATTERN)  # human ("3"); bring-your-own: bundle_id[:12]
    bundle_id: str  # "sha256:<hex>" over the content files (not over manifest.json)
    created_at: str  # ISO 8601, UTC
    signature: Signature
    metrics: dict[str, float] = Field(default_factory=dict)
    params: dict[str, str] = Field(default_factory=dict)
    lineage: Lineage = Field(default_factory=Lineage)
    gates: tuple[GateResult, ...] = ()
    files: dict[str, str]  # relative posix path -> "sha256:<hex>", every file except manifest.json
    # how it asks to be served; left out of the JSON when absent (older readers forbid the key)
    serving: ServingSpec | None = Field(default=None, exclude_if=lambda v: v is None)
