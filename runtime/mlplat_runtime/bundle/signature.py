"""Signature compatibility: may a new model replace the one serving, without breaking a client?

One rule, used by the control plane's ``signature`` gate and by serving's hot swap, so a bundle
that passes the gate is never refused by serving (and the other way round). Before, the gate let
a ``-1`` match any size on either side while serving wanted equal shapes.

The rule: **every client that worked against the serving model keeps working.** A client sends
inputs the serving model accepted and reads outputs the serving model could give. So:

- Names: the same inputs and the same outputs. A new input is one no client sends; a missing
  input is one every client sends; a missing output is one a client may read; an extra output
  changes OIP's default response (every output, in order), which clients may read by position.
- Datatypes: equal (OIP requests carry the datatype; FP32 data is not FP64 data).
- Rank: equal.
- Input dimensions may only widen: a fixed size may become ``-1`` (the new model accepts what
  clients sent and more), never the reverse (a client sending 8 rows to a ``[-1, 4]`` input
  would be refused by a ``[1, 4]`` one). Two fixed sizes must be equal.
- Output dimensions: two fixed sizes must be equal (a client may rely on the size it read);
  a ``-1`` on either side is accepted. A ``-1`` in an output is a size that follows the request
  (the batch), and clients keep sending the requests they sent; refusing ``[1, 2]`` -> ``[-1, 2]``
  would refuse every model re-exported with a dynamic batch, whose outputs widen with its inputs.

So inputs may only widen (``[1, 4]`` -> ``[-1, 4]`` is fine, ``[-1, 4]`` -> ``[1, 4]`` is not:
the case where the gate used to pass what serving then refused), and outputs may not change a
size clients can see. Loading with ``allow_signature_change`` (serving) is the way to break
clients on purpose.

Imports only the manifest model: serving, the bundle tools and the control plane all use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from mlplat_runtime.bundle.manifest import Signature, TensorSpec

Side = Literal["input", "output"]
DYNAMIC = -1


@dataclass(frozen=True)
class SignatureProblem:
    """One way a candidate signature would break clients of the serving one."""

    side: Side
    name: str
    what: str  # e.g. "missing", "datatype FP64, serving FP32", "shape [1, 4], serving [-1, 4]"

    def __str__(self) -> str:
        return f"{self.side} '{self.name}' {self.what}"


def _dim_ok(side: Side, serving: int, candidate: int) -> bool:
    if serving == candidate:
        return True
    if side == "input":
        return candidate == DYNAMIC  # widening: accepts what clients sent, and more
    return DYNAMIC in (serving, candidate)  # a size that follows the request


def _spec_problems(
    side: Side, serving: Sequence[TensorSpec], candidate: Sequence[TensorSpec], label: str
) -> list[SignatureProblem]:
    old = {s.name: s for s in serving}
    new = {s.name: s for s in candidate}
    problems = [SignatureProblem(side, n, f"missing ({label} has it)") for n in old if n not in new]
    problems += [SignatureProblem(side, n, f"is new ({label} lacks it)") for n in new if n not in old]
    for name in old.keys() & new.keys():
        a, b = old[name], new[name]
        if a.datatype != b.datatype:
            problems.append(SignatureProblem(side, name, f"datatype {b.datatype}, {label} {a.datatype}"))
        elif len(a.shape) != len(b.shape) or not all(
            _dim_ok(side, x, y) for x, y in zip(a.shape, b.shape, strict=True)
        ):
            problems.append(SignatureProblem(side, name, f"shape {list(b.shape)}, {label} {list(a.shape)}"))
    return sorted(problems, key=lambda p: (p.side, p.name, p.what))


def compatibility_problems(
    serving: Signature, candidate: Signature, *, label: str = "serving"
) -> list[SignatureProblem]:
    """Every way ``candidate`` would break a client of ``serving`` (empty = it may replace it).

    ``label`` names the serving side in the messages ("serving", "serving v3").
    """
    return _spec_problems("input", serving.inputs, candidate.inputs, label) + _spec_problems(
        "output", serving.outputs, candidate.outputs, label
    )


def is_compatible(serving: Signature, candidate: Signature) -> bool:
    """True when ``candidate`` may replace ``serving`` (see the module docstring for the rule)."""
    return not compatibility_problems(serving, candidate)
