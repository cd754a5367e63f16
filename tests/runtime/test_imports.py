"""The data plane stays light: importing every module of mlplat_runtime pulls in no control-plane
or UI library (the runtime image ships without them). Checked in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("textual", "mlflow", "docker", "mlplat_tui")

SCRIPT = """
import importlib, json, pkgutil, sys
import mlplat_runtime
names = ["mlplat_runtime"]
for info in pkgutil.walk_packages(mlplat_runtime.__path__, "mlplat_runtime."):
    if info.name.rsplit(".", 1)[-1] == "__main__":  # entry points run servers when imported
        continue
    names.append(info.name)
for name in names:
    importlib.import_module(name)
loaded = sorted({m.split(".")[0] for m in sys.modules})
print(json.dumps({"imported": names, "loaded": loaded}))
"""


def test_runtime_imports_no_control_plane_library() -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "mlplat_runtime.bundle.archive" in report["imported"]
    leaked = [name for name in FORBIDDEN if name in report["loaded"]]
    assert leaked == [], f"mlplat_runtime imports {leaked}"


def test_bundle_api_imports_no_onnxruntime() -> None:
    """`mlplat --help` and light readers stay fast: onnxruntime is imported only when a model runs."""
    proc = subprocess.run(
        [sys.executable, "-c", "import sys, mlplat_runtime.bundle; print('onnxruntime' in sys.modules)"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
