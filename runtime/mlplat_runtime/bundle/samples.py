"""``samples.npz``: example inputs with the outputs the model gave for them at build time.

Keys are ``input:<name>`` and ``output:<name>``. The file is written byte-for-byte
deterministically (fixed zip timestamps, sorted keys) so that two builds of the same model
share a bundle id, and read with ``allow_pickle=False`` after checking the inflated size:
no pickle, no zip bomb. Serving reuses ``compare_outputs`` for its own pre-load check.

Imports numpy only; ONNX Runtime is run by the callers through ``session.py``.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mlplat_runtime.bundle.manifest import OIP_TO_NUMPY, Signature, TensorSpec
from mlplat_runtime.errors import BundleError

INPUT_PREFIX = "input:"
OUTPUT_PREFIX = "output:"
GENERATED_ROWS = 8
GENERATED_SEED = 0
MAX_SAMPLES_BYTES = 512 * 1024**2  # inflated size of every array together
MAX_NPY_HEADER = 10_000  # numpy's own safe limit for an .npy header

# Float outputs may differ in the last bits between CPUs (vector widths, thread splits).
FLOAT_TOLERANCE: dict[str, tuple[float, float]] = {  # numpy dtype -> (rtol, atol)
    "float16": (1e-2, 1e-3),
    "float32": (1e-4, 1e-5),
    "float64": (1e-7, 1e-9),
}

HINT_SAMPLES = (
    "save the inputs with numpy.savez('inputs.npz', **{'<input name>': array}) using the dtypes "
    "and shapes of `mlplat bundle inspect` (keys may also be 'input:<name>')"
)


def generate_inputs(
    signature: Signature, rows: int = GENERATED_ROWS, seed: int = GENERATED_SEED
) -> dict[str, np.ndarray]:
    """Valid inputs made up from the signature: a dynamic first dimension gets ``rows``, any
    other dynamic dimension 1. Floats are standard normal; integers small (0..3), so that
    index-like inputs stay in range; the seed is fixed so builds are reproducible."""
    rng = np.random.default_rng(seed)
    inputs: dict[str, np.ndarray] = {}
    total = 0
    for spec in signature.inputs:
        shape = tuple((rows if i == 0 else 1) if d == -1 else d for i, d in enumerate(spec.shape))
        total += math.prod(shape) * (
            8 if spec.datatype == "BYTES" else np.dtype(OIP_TO_NUMPY[spec.datatype]).itemsize
        )
        if total > MAX_SAMPLES_BYTES:
            raise BundleError(
                f"input '{spec.name}' declares shape {list(spec.shape)}: generated samples would take"
                f" {total} bytes, over the {MAX_SAMPLES_BYTES}-byte cap for samples",
                hint="pass --samples with a few rows of real inputs (" + HINT_SAMPLES + ")",
            )
        if spec.datatype == "BYTES":
            inputs[spec.name] = np.full(shape, "a", dtype="<U1")
            continue
        dtype = np.dtype(OIP_TO_NUMPY[spec.datatype])
        if dtype.kind == "f":
            value = rng.standard_normal(size=shape).astype(dtype)
        elif dtype.kind == "b":
            value = rng.integers(0, 2, size=shape).astype(bool)
        else:
            value = rng.integers(0, 4, size=shape).astype(dtype)
        inputs[spec.name] = np.asarray(value)
    return inputs


def _dtype_ok(spec: TensorSpec, array: np.ndarray) -> bool:
    if spec.datatype == "BYTES":
        return array.dtype.kind in "US"
    return array.dtype == np.dtype(OIP_TO_NUMPY[spec.datatype])


def _shape_ok(spec: TensorSpec, shape: tuple[int, ...]) -> bool:
    return len(shape) == len(spec.shape) and all(d in (-1, s) for d, s in zip(spec.shape, shape, strict=True))


def spec_problems(role: str, specs: tuple[TensorSpec, ...], arrays: Mapping[str, np.ndarray]) -> list[str]:
    """Every way ``arrays`` differs from the specs: missing, extra, dtype, rank, fixed dims."""
    problems: list[str] = []
    names = {s.name for s in specs}
    for extra in sorted(set(arrays) - names):
        problems.append(f"samples: {role} '{extra}' is not in the signature (expected {sorted(names)})")
    for spec in specs:
        if spec.name not in arrays:
            problems.append(f"samples: {role} '{spec.name}' is missing")
            continue
        array = arrays[spec.name]
        if not _dtype_ok(spec, array):
            problems.append(
                f"samples: {role} '{spec.name}' has dtype {array.dtype}, the signature says {spec.datatype}"
            )
        if not _shape_ok(spec, array.shape):
            problems.append(
                f"samples: {role} '{spec.name}' has shape {list(array.shape)}, "
                f"the signature says {list(spec.shape)} (-1 = any)"
            )
    return problems


def conform_inputs(inputs: Mapping[str, np.ndarray], signature: Signature) -> dict[str, np.ndarray]:
    """User inputs cast to the signature's dtypes where numpy calls the cast same-kind
    (float64 -> float32, int64 -> int32, int -> float); BundleError for anything else."""
    cast: dict[str, np.ndarray] = {}
    for spec in signature.inputs:
        if spec.name not in inputs or spec.datatype == "BYTES":
            continue
        array = np.asarray(inputs[spec.name])
        target = np.dtype(OIP_TO_NUMPY[spec.datatype])
        if array.dtype != target and np.can_cast(array.dtype, target, "same_kind"):
            array = array.astype(target)
        cast[spec.name] = array
    merged = {**dict(inputs), **cast}
    problems = spec_problems("input", signature.inputs, merged)
    if problems:
        raise BundleError(
            "the sample inputs do not match the model:\n  " + "\n  ".join(problems), hint=HINT_SAMPLES
        )
    return merged


def read_npz(path: Path, max_bytes: int = MAX_SAMPLES_BYTES) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, without pickle and within ``max_bytes`` inflated."""
    try:
        with zipfile.ZipFile(path) as zf:
            inflated = sum(info.file_size for info in zf.infolist())
            if inflated <= max_bytes:
                _check_headers(path, zf)
    except (OSError, zipfile.BadZipFile) as exc:
        raise BundleError(f"'{path.name}' is not a readable .npz file: {exc}", hint=HINT_SAMPLES) from exc
    if inflated > max_bytes:
        raise BundleError(
            f"'{path.name}' inflates to {inflated} bytes, over the {max_bytes}-byte cap for samples",
            hint="keep samples to a few rows; they are examples, not a data set",
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: np.asarray(data[key]) for key in data.files}
    except ValueError as exc:  # object arrays need pickle, which we never allow
        raise BundleError(
            f"'{path.name}' holds an array numpy can only read with pickle: {exc}",
            hint="save plain numeric or string arrays (no dtype=object)",
        ) from exc
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise BundleError(f"'{path.name}' is not a readable .npz file: {exc}", hint=HINT_SAMPLES) from exc


def _check_headers(path: Path, zf: zipfile.ZipFile) -> None:
    """Refuse an ``.npy`` member whose header is over ``MAX_NPY_HEADER`` bytes before numpy reads
    it (numpy would refuse too, but with advice to turn pickle on)."""
    for info in zf.infolist():
        with zf.open(info) as member:
            head = member.read(12)
        if len(head) < 10 or head[:6] != b"\x93NUMPY":
            raise BundleError(
                f"'{path.name}': member '{info.filename}' is not an .npy array", hint=HINT_SAMPLES
            )
        size = int.from_bytes(head[8:10], "little") if head[6] == 1 else int.from_bytes(head[8:12], "little")
        if size > MAX_NPY_HEADER:
            raise BundleError(
                f"'{path.name}': member '{info.filename}' has a {size}-byte .npy header, over the"
                f" {MAX_NPY_HEADER}-byte cap",
                hint=HINT_SAMPLES,
            )


def read_user_inputs(path: Path) -> dict[str, np.ndarray]:
    """A user's inputs file: keys are input names, or ``input:<name>``; ``output:*`` keys are
    ignored (expected outputs are always recorded by running the model)."""
    inputs: dict[str, np.ndarray] = {}
    for key, value in read_npz(path).items():
        if key.startswith(OUTPUT_PREFIX):
            continue
        inputs[key.removeprefix(INPUT_PREFIX)] = value
    if not inputs:
        raise BundleError(f"'{path.name}' holds no inputs", hint=HINT_SAMPLES)
    return inputs


def split_samples(
    arrays: Mapping[str, np.ndarray],
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[str]]:
    """(inputs, outputs, keys with neither prefix) of a bundle's ``samples.npz``."""
    inputs: dict[str, np.ndarray] = {}
    outputs: dict[str, np.ndarray] = {}
    stray: list[str] = []
    for key, value in arrays.items():
        if key.startswith(INPUT_PREFIX):
            inputs[key.removeprefix(INPUT_PREFIX)] = value
        elif key.startswith(OUTPUT_PREFIX):
            outputs[key.removeprefix(OUTPUT_PREFIX)] = value
        else:
            stray.append(key)
    return inputs, outputs, sorted(stray)


def write_samples(path: Path, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]) -> None:
    """Write ``samples.npz`` deterministically (same arrays -> same bytes -> same bundle id)."""
    arrays = {INPUT_PREFIX + k: v for k, v in inputs.items()} | {
        OUTPUT_PREFIX + k: v for k, v in outputs.items()
    }
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for key in sorted(arrays):
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(arrays[key]), allow_pickle=False)


def compare_outputs(expected: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray]) -> list[str]:
    """Every output of ``expected`` that ``actual`` does not reproduce (floats within
    ``FLOAT_TOLERANCE``, everything else exactly); empty when they match."""
    problems: list[str] = []
    for name, want in expected.items():
        got = actual.get(name)
        if got is None:
            problems.append(f"output '{name}' was not produced")
            continue
        if got.shape != want.shape:
            problems.append(f"output '{name}' has shape {list(got.shape)}, expected {list(want.shape)}")
            continue
        tol = FLOAT_TOLERANCE.get(want.dtype.name)
        if tol is not None:
            ok = bool(np.allclose(got, want, rtol=tol[0], atol=tol[1], equal_nan=True))
        else:
            ok = bool(np.array_equal(got, want))
        if not ok:
            if tol is not None:
                worst = float(np.nanmax(np.abs(got.astype(np.float64) - want.astype(np.float64))))
                detail = f"largest difference {worst:.3g}"
            else:
                detail = f"{int(np.sum(got != want))} of {want.size} values differ"
            problems.append(f"output '{name}' no longer matches the recorded sample ({detail})")
    return problems
