"""Real parts for the push tests: a project with local targets, bundles, and a target MLflow
with its basic-auth app (``mlflow server --app-name basic-auth``) and an admin-made user store.

Nothing here fakes a service: the MLflow server, the metadata service and the target's second
stack are real processes on free loopback ports, stopped by the tests.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import onnx
from onnx import TensorProto, helper

from tests.helpers.models import make_bundle, make_logreg_onnx
from tests.helpers.stack import free_port_base

MODEL = "churn-classifier"
ADMIN = ("admin", "Admin-pass-0123456789")


def write_project(root: Path, *, name: str = "shop", model: str = MODEL, targets: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    base = free_port_base()
    (root / "mlplat.toml").write_text(
        f"""[project]
name = "{name}"

[model]
name = "{model}"

[gates]
"metrics.roc_auc" = ">= 0.8"
no_regression = {{ metric = "roc_auc", tolerance = 0.05 }}

[stack]
port_base = {base}

{targets}
"""
    )
    return root


def local_target(name: str, *, stage: str | None = None, extra: str = "") -> str:
    return f"""[targets.{name}]
kind = "local"
stage = "{stage or name}"
port_base = {free_port_base()}
{extra}
"""


def bundle(project: Path, version: str, *, auc: float, seed: int, model: str = MODEL) -> Path:
    """A bundle of ``model`` at ``version`` under the project's ``.mlplat/bundles``."""
    src = project / ".mlplat" / "src" / f"v{version}"
    onnx_path = make_logreg_onnx(src / "model.onnx", seed=seed)
    out = project / ".mlplat" / "bundles" / f"{model}-v{version}"
    rows = np.random.default_rng(seed).normal(size=(16, 4)).astype(np.float32)
    samples = src / "samples.npz"
    np.savez(samples, **{"input:input": rows})
    return make_bundle(
        src, name=model, version=version, model=onnx_path, out=out, metrics={"roc_auc": auc}, samples=samples
    )


def batch_dependent_bundle(project: Path, version: str, *, auc: float, model: str = MODEL) -> Path:
    """The logistic regression's signature, but rows are centred on their batch's mean first: its
    recorded outputs (one batch) pass serving's load check, and a row sent alone answers wrongly
    (alone, it is its own mean)."""
    from onnx import numpy_helper

    from tests.helpers.models import logreg_weights

    src = project / ".mlplat" / "src" / f"v{version}-batchy"
    src.mkdir(parents=True, exist_ok=True)
    w, b = logreg_weights(4, seed=11)
    nodes = [
        helper.make_node("ReduceMean", ["input", "axes"], ["mean"], keepdims=1),
        helper.make_node("Sub", ["input", "mean"], ["centred"]),
        helper.make_node("MatMul", ["centred", "W"], ["z0"]),
        helper.make_node("Add", ["z0", "b"], ["z"]),
        helper.make_node("Sigmoid", ["z"], ["p1"]),
        helper.make_node("Sub", ["one", "p1"], ["p0"]),
        helper.make_node("Concat", ["p0", "p1"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "batchy",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2]),
        ],
        initializer=[
            helper.make_tensor("axes", TensorProto.INT64, [1], [0]),
            numpy_helper.from_array(w, "W"),
            numpy_helper.from_array(b, "b"),
            numpy_helper.from_array(np.array([1.0], dtype=np.float32), "one"),
        ],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 9
    onnx.checker.check_model(m)
    path = src / "model.onnx"
    onnx.save(m, path)
    rows = np.random.default_rng(7).normal(size=(8, 4)).astype(np.float32)
    np.savez(src / "samples.npz", **{"input:input": rows})
    out = project / ".mlplat" / "bundles" / f"{model}-v{version}"
    return make_bundle(
        src,
        name=model,
        version=version,
        model=path,
        out=out,
        metrics={"roc_auc": auc},
        samples=src / "samples.npz",
    )


# -- a target MLflow with basic auth --------------------------------------------------------------


@dataclass
class AuthMlflow:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def create_user(self, username: str, password: str) -> None:
        resp = httpx.post(
            f"{self.url}/api/2.0/mlflow/users/create",
            json={"username": username, "password": password},
            auth=ADMIN,
            timeout=30,
        )
        assert resp.status_code == 200, resp.text

    def registered_models(self) -> list[str]:
        resp = httpx.get(f"{self.url}/api/2.0/mlflow/registered-models/search", auth=ADMIN, timeout=30)
        assert resp.status_code == 200, resp.text
        return sorted(m["name"] for m in resp.json().get("registered_models", []))

    def versions(self, model: str) -> list[dict[str, object]]:
        resp = httpx.get(
            f"{self.url}/api/2.0/mlflow/model-versions/search",
            params={"filter": f"name = '{model}'"},
            auth=ADMIN,
            timeout=30,
        )
        assert resp.status_code == 200, resp.text
        return list(resp.json().get("model_versions", []))

    def create_model(self, name: str) -> None:
        resp = httpx.post(
            f"{self.url}/api/2.0/mlflow/registered-models/create", json={"name": name}, auth=ADMIN, timeout=30
        )
        assert resp.status_code == 200, resp.text


@contextlib.contextmanager
def auth_mlflow(folder: Path, startup_timeout: float = 120.0) -> Iterator[AuthMlflow]:
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port_base(1)
    ini = folder / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{folder / 'auth.db'}\n"
        f"admin_username = {ADMIN[0]}\n"
        f"admin_password = {ADMIN[1]}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    log = folder / "mlflow.log"
    env = dict(
        os.environ,
        MLFLOW_AUTH_CONFIG_PATH=str(ini),
        MLFLOW_FLASK_SERVER_SECRET_KEY="push-tests-secret-key-0123456789",
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
    )
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        env.pop(key, None)
    mlflow_bin = str(Path(sys.executable).with_name("mlflow"))
    with log.open("ab") as out:
        process = subprocess.Popen(
            [
                mlflow_bin,
                "server",
                "--app-name",
                "basic-auth",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--backend-store-uri",
                f"sqlite:///{folder / 'mlflow.db'}",
                "--artifacts-destination",
                str(folder / "artifacts"),
                "--serve-artifacts",
                "--workers",
                "1",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    server = AuthMlflow(url, process, log)
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if process.poll() is not None:
                raise AssertionError(f"mlflow basic-auth server exited:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise AssertionError(f"mlflow basic-auth server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
