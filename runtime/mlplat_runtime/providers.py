"""Which ONNX Runtime execution provider to use, and the session settings everyone shares.

Serving and the latency gate both build their sessions here, so a gate that measures p95 on
a model measures it the way serving will run it (same provider, same thread settings).

Why the CUDA probe: the onnxruntime-gpu wheel lists ``CUDAExecutionProvider`` as *available*
even on a machine with no GPU or no driver; asking for it there makes ONNX Runtime print a red
error and fall back to CPU. So CUDA is chosen only when the driver loads and reports at least
one device (``libcuda.so.1`` + ``cuInit`` + ``cuDeviceGetCount``), which is silent when there is
no GPU. ``MLPLAT_PROVIDERS`` (comma list, e.g. ``CPUExecutionProvider``) overrides the choice.

Thread settings (``session_options``): one intra-op thread and no spinning by default. The
models served here are small tabular or vision models whose ops take microseconds; ORT's
intra-op pool would spend more on waking and syncing threads than it saves, and its spinning
workers burn a core that the HTTP server (and, on a laptop, everything else) needs. The server
gets its parallelism from handling many requests, not from splitting one. A big model can ask
for more with ``MLPLAT_ORT_THREADS=N``.

A model served with dynamic batching is the exception (``batch_threads``): its calls are few
and large, one at a time per batcher, so one thread would leave the other cores idle while
the requests wait. Its session gets this worker's share of the usable cores (``MLPLAT_ORT_
THREADS`` still decides when set); the workers' supervisor tells each worker how many share
the machine (``MLPLAT_SERVING_WORKERS``).

Must not import textual, mlflow, docker or mlplat_tui; onnxruntime is imported inside the
functions, so importing this module is free.
"""

from __future__ import annotations

import ctypes
import functools
import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from mlplat_runtime.errors import ModelLoadError, UsageError

if TYPE_CHECKING:
    import onnxruntime as ort

ENV_PROVIDERS = "MLPLAT_PROVIDERS"
ENV_THREADS = "MLPLAT_ORT_THREADS"
ENV_WORKERS = "MLPLAT_SERVING_WORKERS"  # set by serving's supervisor for each of its workers
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


@functools.cache
def cuda_device_count() -> int:
    """GPUs the CUDA driver reports; 0 when there is no driver, no device or any error.

    Talks to the driver API directly: no CUDA toolkit needed, nothing printed on failure.
    """
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    try:
        if lib.cuInit(0) != 0:
            return 0
        count = ctypes.c_int(0)
        if lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0
        return max(count.value, 0)
    except (AttributeError, OSError):
        return 0


def _available() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def choose_providers() -> list[str]:
    """Providers in priority order: ``[CUDA, CPU]`` when a GPU is really usable, else ``[CPU]``.

    ``MLPLAT_PROVIDERS`` overrides; naming a provider this ONNX Runtime build lacks is a usage
    error rather than a silent fallback, so a forced GPU run cannot quietly measure the CPU.
    """
    available = _available()
    forced = os.environ.get(ENV_PROVIDERS, "").strip()
    if forced:
        wanted = [p.strip() for p in forced.split(",") if p.strip()]
        missing = [p for p in wanted if p not in available]
        if missing:
            raise UsageError(
                f"{ENV_PROVIDERS} names {', '.join(missing)}, which this ONNX Runtime does not offer",
                hint=f"available: {', '.join(available)}",
            )
        return wanted
    if CUDA in available and cuda_device_count() > 0:
        return [CUDA, CPU]
    return [CPU]


def intra_op_threads() -> int:
    raw = os.environ.get(ENV_THREADS, "").strip()
    if not raw:
        return 1
    try:
        value = int(raw)
    except ValueError:
        raise UsageError(
            f"{ENV_THREADS} must be an integer, got {raw!r}", hint="e.g. MLPLAT_ORT_THREADS=4"
        ) from None
    if value < 0:
        raise UsageError(f"{ENV_THREADS} must be >= 0 (0 = one per core), got {value}")
    return value


def batch_threads() -> int:
    """Intra-op threads for a session that runs dynamic batches: ``MLPLAT_ORT_THREADS`` when
    set, else the usable cores divided among the serving workers (at least 1)."""
    if os.environ.get(ENV_THREADS, "").strip():
        return intra_op_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        workers = max(1, int(os.environ.get(ENV_WORKERS, "1")))
    except ValueError:
        workers = 1
    return max(1, cores // workers)


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """The settings serving and the gates share (see the module docstring for why);
    ``threads``: intra-op threads other than ``intra_op_threads()`` (``batch_threads``)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra_op_threads() if threads is None else threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # errors only: warnings about unused initializers are noise here
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def make_session(
    model_path: Path | str, providers: list[str] | None = None, *, threads: int | None = None
) -> ort.InferenceSession:
    """An ``InferenceSession`` on the chosen providers; ModelLoadError when ORT refuses the model.

    When CUDA was chosen but its libraries (cuDNN, cuBLAS) are missing, ONNX Runtime falls back
    to CPU by itself; ``active_provider`` then tells the truth.
    """
    import onnxruntime as ort

    chosen = providers if providers is not None else choose_providers()
    try:
        return ort.InferenceSession(str(model_path), sess_options=session_options(threads), providers=chosen)
    except Exception as exc:  # ORT raises its own pybind exception types
        raise ModelLoadError(
            f"ONNX Runtime could not load {Path(model_path).name}: {_first_line(exc)}",
            hint="check the model with `python -c \"import onnx; onnx.checker.check_model('model.onnx')\"`",
        ) from exc


def active_provider(session: ort.InferenceSession) -> str:
    """The provider that actually runs the session (the first one ORT kept)."""
    providers = session.get_providers()
    return providers[0] if providers else CPU


def gpu_info() -> str | None:
    """``"NVIDIA H100 80GB HBM3 (79 GiB)"`` for the first GPU, via nvidia-smi; None without one."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return parse_nvidia_smi(out.stdout)


def parse_nvidia_smi(text: str) -> str | None:
    """Turn nvidia-smi's ``name, MiB`` CSV into ``name (N GiB)``, noting extra GPUs."""
    rows = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not rows:
        return None
    name, _, mem = rows[0].rpartition(",")
    name = name.strip() or mem.strip()
    try:
        label = f"{name} ({int(float(mem)) // 1024} GiB)"
    except ValueError:
        label = rows[0]
    return label if len(rows) == 1 else f"{label} ×{len(rows)}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
