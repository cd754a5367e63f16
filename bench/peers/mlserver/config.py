"""Write an MLServer model repository for one ONNX model, tuned as MLServer's docs advise.

Server-wide ``settings.json``:
- ``parallel_workers``: inference runs in a pool of worker processes; the docs advise one per
  CPU core available to the server (the default is 1);
- ``debug: false`` (the default, true, logs every request), ``gzip_enabled: false`` (the
  responses here are a few hundred bytes) and ``metrics_endpoint: null`` (no separate metrics
  server; mlplat's ``/metrics`` costs nothing per request, MLServer's middleware does);
- loopback only; REST and gRPC ports given.

``model-settings.json`` beside the model: our ``runtime.OnnxRuntimeModel``, ``parameters.uri``
the model file, and, for adaptive batching, ``max_batch_size`` (requests per batch) and
``max_batch_time`` (seconds to wait for a full batch) — MLServer leaves both off by default
and the docs say to find them by experiment; the benchmark passes what it uses.

Standard library only: imported by ``bench/serving.py`` in the project's venv; MLServer itself
runs from ``bench/.venv-mlserver``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = HERE.parents[1] / ".venv-mlserver"


def mlserver_binary() -> Path | None:
    """``bench/.venv-mlserver/bin/mlserver`` when ``setup.sh`` has made it, else None."""
    exe = VENV / "bin" / "mlserver"
    return exe if exe.exists() else None


def write_repository(
    root: Path,
    model: Path,
    name: str,
    *,
    http_port: int,
    grpc_port: int,
    parallel_workers: int | None = None,
    max_batch_size: int = 0,
    max_batch_time: float = 0.0,
) -> Path:
    """A folder ``mlserver start`` serves: settings.json plus ``<name>/model-settings.json``."""
    root.mkdir(parents=True, exist_ok=True)
    settings = {
        "debug": False,
        "host": "127.0.0.1",
        "http_port": http_port,
        "grpc_port": grpc_port,
        "parallel_workers": parallel_workers if parallel_workers is not None else (os.cpu_count() or 1),
        "metrics_endpoint": None,
        "gzip_enabled": False,
        "load_models_at_startup": True,
    }
    (root / "settings.json").write_text(json.dumps(settings, indent=2))
    model_dir = root / name
    model_dir.mkdir(exist_ok=True)
    model_settings: dict[str, object] = {
        "name": name,
        "implementation": "runtime.OnnxRuntimeModel",
        "parameters": {"uri": str(model.resolve())},
    }
    if max_batch_size > 1:
        model_settings["max_batch_size"] = max_batch_size
        model_settings["max_batch_time"] = max_batch_time
    (model_dir / "model-settings.json").write_text(json.dumps(model_settings, indent=2))
    return root


def command(root: Path) -> list[str]:
    """The command line that serves ``root`` (run with ``env()``)."""
    exe = mlserver_binary()
    if exe is None:
        raise FileNotFoundError(f"{VENV} has no mlserver: run bash bench/peers/mlserver/setup.sh")
    return [str(exe), "start", str(root)]


def env() -> dict[str, str]:
    """The environment for ``command``: runtime.py importable in every worker, the venv first."""
    path = os.environ.get("PATH", "")
    return {
        **os.environ,
        "PYTHONPATH": str(HERE),
        "PATH": f"{VENV / 'bin'}{os.pathsep}{path}",
        "VIRTUAL_ENV": str(VENV),
    }
