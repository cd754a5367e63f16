"""A model ready to serve: an ONNX Runtime session that has loaded, warmed up and passed its
sample check, with the signature requests are decoded against.

Plain classes and functions, no HTTP (MLServer's split): the HTTP handlers (``app``, ``admin``)
call ``load_bundle`` / ``LoadedModel.predict`` and map the exceptions to status codes.

A ``LoadedModel`` exists only after a warm-up inference succeeded, so "loaded" and "ready"
are the same thing here; the repository never publishes a model before that.

Must not import textual, mlflow, docker or mlplat_tui; onnxruntime is imported inside functions.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlplat_runtime.bundle.manifest import Signature, TensorSpec
from mlplat_runtime.errors import MlplatError, ModelLoadError, RequestError
from mlplat_runtime.providers import active_provider, make_session
from mlplat_runtime.serving.batching import BatchingConfig
from mlplat_runtime.serving.protocol import TensorSlot

if TYPE_CHECKING:
    from mlplat_runtime.bundle import Bundle

# A model whose call takes longer than this runs in a worker thread instead of inline on the
# event loop, so health checks, metrics and other models are not held up behind it. Below it
# (a tabular model takes microseconds) the thread hand-off would cost more than the call.
INLINE_MAX_MS = 1.0

# ONNX Runtime type strings -> OIP datatypes.
ORT_TO_OIP: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
}

# Sample check tolerances: loose enough for CPU-vs-GPU and ORT-version differences (TF32
# matmuls on GPU move the 4th significant digit), tight enough to catch a different model.
TOLERANCES: dict[str, tuple[float, float]] = {  # numpy dtype kind/name -> (rtol, atol)
    "float16": (1e-2, 1e-3),
    "float32": (1e-3, 1e-5),
    "float64": (1e-3, 1e-5),
}


class InferenceFailed(MlplatError):
    """ONNX Runtime failed on a request that passed the protocol checks (HTTP 500)."""

    http_status = 500


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    bundle_id: str
    provider: str
    inputs: Mapping[str, TensorSlot]  # in graph order
    outputs: tuple[TensorSlot, ...]
    session: Any = field(repr=False)
    inline: bool
    call_ms: float  # one call on the samples, measured after warm-up
    load_ms: float
    keep: Any = field(default=None, repr=False, compare=False)  # e.g. the Bundle owning a temp dir
    batching: BatchingConfig | None = None  # dynamic batching, when this model has it on
    threads: int = 1  # the session's intra-op threads

    @functools.cached_property
    def output_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.outputs)

    @property
    def signature(self) -> Signature:
        return Signature(
            inputs=tuple(s.spec for s in self.inputs.values()),
            outputs=tuple(s.spec for s in self.outputs),
        )

    def parameters(self) -> dict[str, Any]:
        return {"execution_provider": self.provider, "bundle_id": self.bundle_id, "version": self.version}

    def predict(self, inputs: Mapping[str, np.ndarray], names: Sequence[str]) -> list[np.ndarray]:
        """Run the session; a bad input ORT catches is the caller's fault (400), else 500."""
        try:
            return self._run(names, inputs, self._run_options)  # type: ignore[no-any-return]
        except Exception as exc:
            raise _run_error(exc, self.name) from exc

    @functools.cached_property
    def _run(self) -> Any:
        # The C++ session's run, without the Python wrapper's per-call re-validation of the
        # feed (~4 µs, a third of a tabular model's call): protocol.decode_infer_request has
        # already checked every input against the signature. Falls back to the public API.
        inner = getattr(self.session, "_sess", None)
        if inner is not None and callable(getattr(inner, "run", None)):
            return inner.run
        return lambda names, feeds, opts: self.session.run(names, feeds, opts)

    @functools.cached_property
    def _run_options(self) -> Any:
        # One RunOptions for every call, from every thread (ORT only reads it; nothing may set
        # it, its terminate flag would stop every later call): given None, the binding builds a
        # default one per call, ~5,500 of the ~34,000 instructions of a one-row tabular model's
        # call (ORT 1.31).
        import onnxruntime as ort

        return ort.RunOptions()


def _run_error(exc: Exception, name: str) -> MlplatError:
    from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, InvalidArgument):
        return RequestError(f"model '{name}' rejected the input: {text}")
    return InferenceFailed(f"inference failed in model '{name}': {text}")


def graph_signature(session: Any) -> Signature:
    """The session's inputs and outputs as OIP tensor specs (-1 for dynamic dimensions)."""

    def spec(arg: Any, kind: str) -> TensorSpec:
        datatype = ORT_TO_OIP.get(arg.type)
        if datatype is None:
            hint = (
                "export scikit-learn classifiers with options={'zipmap': False}"
                if "map" in arg.type
                else None
            )
            raise ModelLoadError(
                f"{kind} '{arg.name}' has type {arg.type}, which OIP serving does not carry", hint=hint
            )
        shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or ()))
        return TensorSpec(name=arg.name, datatype=datatype, shape=shape)  # type: ignore[arg-type]

    return Signature(
        inputs=tuple(spec(a, "input") for a in session.get_inputs()),
        outputs=tuple(spec(a, "output") for a in session.get_outputs()),
    )


def signature_differences(expected: Signature, actual: Signature, *, left: str, right: str) -> list[str]:
    """Human-readable differences between two signatures (empty when they match)."""
    problems: list[str] = []
    for kind, exp, act in (
        ("input", expected.inputs, actual.inputs),
        ("output", expected.outputs, actual.outputs),
    ):
        e_by, a_by = {s.name: s for s in exp}, {s.name: s for s in act}
        for name in e_by.keys() - a_by.keys():
            problems.append(f"{kind} '{name}' is in {left} but not in {right}")
        for name in a_by.keys() - e_by.keys():
            problems.append(f"{kind} '{name}' is in {right} but not in {left}")
        for name in sorted(e_by.keys() & a_by.keys()):
            e, a = e_by[name], a_by[name]
            if e.datatype != a.datatype:
                problems.append(f"{kind} '{name}': {e.datatype} in {left}, {a.datatype} in {right}")
            elif list(e.shape) != list(a.shape):
                problems.append(
                    f"{kind} '{name}': shape {list(e.shape)} in {left}, {list(a.shape)} in {right}"
                )
    return sorted(problems)


def outputs_mismatch(name: str, got: np.ndarray, expected: np.ndarray) -> str | None:
    """Why ``got`` is not ``expected`` (None when it is): exact for ints/bools, allclose for floats."""
    got = np.asarray(got)
    expected = np.asarray(expected)
    if got.shape != expected.shape:
        return f"sample output '{name}' has shape {list(got.shape)}, expected {list(expected.shape)}"
    tol = TOLERANCES.get(got.dtype.name) if got.dtype.kind == "f" else None
    if tol is None:
        if expected.dtype.kind == "f" and got.dtype.kind != "f":
            return f"sample output '{name}' is {got.dtype}, expected {expected.dtype}"
        if np.array_equal(got, expected):
            return None
        bad = int(np.count_nonzero(got != expected))
        return f"sample output '{name}' differs from the expected values in {bad} of {got.size} element(s)"
    rtol, atol = tol
    if np.allclose(got, expected, rtol=rtol, atol=atol, equal_nan=True):
        return None
    diff = float(np.nanmax(np.abs(got.astype(np.float64) - expected.astype(np.float64))))
    return (
        f"sample output '{name}' differs from the expected values "
        f"(max abs difference {diff:.3g}; allowed rtol={rtol:g}, atol={atol:g})"
    )


def synthetic_inputs(inputs: Sequence[TensorSlot]) -> dict[str, np.ndarray]:
    """Zeros of one row for each input (dynamic dimensions = 1): a warm-up when there are no samples."""
    return {s.name: np.zeros([d if d >= 0 else 1 for d in s.shape], dtype=s.dtype) for s in inputs}


def load_onnx(
    model_path: Path,
    *,
    name: str,
    version: str,
    bundle_id: str = "",
    providers: list[str] | None = None,
    expected_signature: Signature | None = None,
    samples: tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]] | None = None,
    sample_problems: Sequence[str] = (),
    keep: Any = None,
    threads: int | None = None,
) -> LoadedModel:
    """Load, warm up and check one model; ModelLoadError (with the reason) when anything is off.

    ``expected_signature`` (the manifest's) must match the graph's; ``sample_problems`` (from
    ``bundle.verify.sample_problems``) refuse the load; ``samples`` (inputs, expected outputs)
    are run as the warm-up and compared; without samples a one-row zero input is the warm-up.
    ``threads``: the session's intra-op threads, if not ``providers.intra_op_threads()``.
    """
    from mlplat_runtime.providers import intra_op_threads

    t0 = time.perf_counter()
    threads = intra_op_threads() if threads is None else threads
    session = make_session(model_path, providers, threads=threads)
    graph = graph_signature(session)
    if expected_signature is not None:
        diffs = signature_differences(expected_signature, graph, left="the manifest", right="the model graph")
        if diffs:
            raise ModelLoadError(
                "the bundle's manifest signature does not match its model: " + "; ".join(diffs),
                hint="rebuild the bundle with `mlplat bundle build` so the manifest is read from the graph",
            )
    if sample_problems:  # the rule of `mlplat bundle verify`: what it refuses, serving refuses
        raise ModelLoadError(
            "the bundle's samples do not match its signature: " + "; ".join(sample_problems),
            hint="`mlplat bundle verify` lists the same problems; rebuild the bundle",
        )
    in_slots = {s.name: TensorSlot.from_spec(s) for s in graph.inputs}
    out_slots = tuple(TensorSlot.from_spec(s) for s in graph.outputs)
    out_names = [s.name for s in out_slots]

    if samples is not None:
        feeds = {k: np.asarray(v) for k, v in samples[0].items()}
        missing = [n for n in in_slots if n not in feeds]
        if missing:
            raise ModelLoadError(f"the bundle's samples lack input(s) {missing}")
        feeds = {n: feeds[n].astype(in_slots[n].dtype, copy=False) for n in in_slots}
    else:
        feeds = synthetic_inputs(list(in_slots.values()))
    try:
        got = session.run(out_names, feeds)  # the warm-up inference
    except Exception as exc:
        raise ModelLoadError(f"warm-up inference failed: {str(exc).strip().splitlines()[0]}") from exc
    if samples is not None:
        expected = samples[1]
        problems = []
        for out_name, value in zip(out_names, got, strict=True):
            if out_name not in expected:
                continue  # a bundle may record only some outputs
            why = outputs_mismatch(out_name, value, expected[out_name])
            if why:
                problems.append(why)
        if problems:
            raise ModelLoadError(
                "sample check failed: " + "; ".join(problems),
                hint="the model does not reproduce the outputs recorded when the bundle was built",
            )
    provider = active_provider(session)
    call_ms = _time_call(session, out_names, feeds, cpu_clock=computes_in_caller(provider, threads))
    return LoadedModel(
        name=name,
        version=version,
        bundle_id=bundle_id,
        provider=provider,
        inputs=in_slots,
        outputs=out_slots,
        session=session,
        inline=call_ms <= INLINE_MAX_MS,
        call_ms=call_ms,
        load_ms=(time.perf_counter() - t0) * 1000.0,
        keep=keep,
        threads=threads,
    )


def computes_in_caller(provider: str, threads: int) -> bool:
    """Whether ONNX Runtime does a call's work in the calling thread (CPU provider, one
    intra-op thread: the default), so that thread's CPU time is the call's cost."""
    return provider.startswith("CPU") and threads == 1


def _time_call(
    session: Any, names: list[str], feeds: dict[str, np.ndarray], repeats: int = 3, *, cpu_clock: bool = False
) -> float:
    """The best of a few calls, in ms: with ``cpu_clock`` the CPU time of this thread (see
    ``computes_in_caller``), so a loaded machine that deschedules the process mid-call does
    not make a fast model look slow (and move it off the event loop); else wall time (a GPU,
    or ONNX Runtime's own threads sharing the work)."""
    clock = time.thread_time if cpu_clock else time.perf_counter
    best = float("inf")
    for _ in range(repeats):
        t = clock()
        session.run(names, feeds)
        best = min(best, clock() - t)
        if best * 1000.0 > INLINE_MAX_MS:
            break  # slow model: one timing is enough, do not stall the load
    return best * 1000.0


def load_bundle(
    bundle: Bundle, *, providers: list[str] | None = None, threads: int | None = None
) -> LoadedModel:
    """Load an opened (already verified) bundle: manifest signature checked, samples compared."""
    m = bundle.manifest
    try:
        inputs, outputs, problems = bundle.checked_samples()
    except MlplatError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"could not read the bundle's samples: {exc}") from exc
    samples = (inputs, outputs)
    return load_onnx(
        bundle.model_path,
        name=m.model_name,
        version=m.version,
        bundle_id=m.bundle_id,
        providers=providers,
        expected_signature=m.signature,
        samples=samples,
        sample_problems=problems,
        keep=bundle,
        threads=threads,
    )
