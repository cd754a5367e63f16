"""The inference and admin handlers, driven in-process through ``as_asgi`` and httpx's ASGI transport."""

from __future__ import annotations

import gzip
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from mlplat_runtime.errors import UsageError
from mlplat_runtime.serving import app as serving_app
from mlplat_runtime.serving.admin import AdminHandler, default_token_path, ensure_admin_token
from mlplat_runtime.serving.app import InferenceHandler
from mlplat_runtime.serving.checker import Checker
from mlplat_runtime.serving.http import as_asgi
from mlplat_runtime.serving.repository import Repository
from tests.runtime.serving.conftest import build_version, logreg_expected, sample, scrape, tampered_bundle

CPU = ["CPUExecutionProvider"]
TOKEN = "s3cret-token"


@pytest.fixture
def repo(tmp_path: Path) -> object:
    r = Repository(providers=CPU)  # no checker: these tests are about HTTP
    r.load(build_version(tmp_path, "1", seed=4))
    yield r
    r.close()


@pytest.fixture
async def client(repo: Repository) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=as_asgi(InferenceHandler(repo)))
    async with httpx.AsyncClient(transport=transport, base_url="http://serving") as c:
        yield c


@pytest.fixture
async def admin(repo: Repository) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=as_asgi(AdminHandler(repo, TOKEN)))
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as c:
        yield c


def infer_body(x: np.ndarray, **extra: object) -> dict[str, object]:
    return {
        "inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.tolist()}],
        **extra,
    }


async def test_health_and_server_metadata(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v2/health/live")).json() == {"live": True}
    assert (await client.get("/v2/health/ready")).status_code == 200
    meta = (await client.get("/v2")).json()
    assert meta["name"] == "mlplat" and "binary_tensor_data" in meta["extensions"]


async def test_model_metadata_and_readiness(client: httpx.AsyncClient, repo: Repository) -> None:
    for path in ("/v2/models/m", "/v2/models/m/versions/1"):
        doc = (await client.get(path)).json()
        assert doc["name"] == "m" and doc["versions"] == ["1"] and doc["platform"] == "onnxruntime_onnx"
        assert doc["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
        assert doc["parameters"]["execution_provider"] == "CPUExecutionProvider"
        assert doc["parameters"]["bundle_id"] == repo.get("m").bundle_id
    r = await client.get("/v2/models/m/ready")
    assert r.status_code == 200 and r.json()["ready"] is True
    assert (await client.get("/v2/models/m/versions/1/ready")).status_code == 200
    assert (await client.get("/v2/models/m/versions/9/ready")).status_code == 404
    assert (await client.get("/v2/models/nope/ready")).status_code == 404


async def test_infer_matches_the_model_and_echoes_the_id(client: httpx.AsyncClient) -> None:
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    for path in ("/v2/models/m/infer", "/v2/models/m/versions/1/infer"):
        r = await client.post(path, json=infer_body(x, id="abc"))
        assert r.status_code == 200, r.text
        doc = r.json()
        assert (doc["model_name"], doc["model_version"], doc["id"]) == ("m", "1", "abc")
        label, probs = doc["outputs"]
        want_label, want_probs = logreg_expected(x, seed=4)
        assert label == {"name": "label", "datatype": "INT64", "shape": [3], "data": want_label.tolist()}
        assert probs["shape"] == [3, 2]
        assert np.allclose(probs["data"], want_probs.reshape(-1), atol=1e-6)


async def test_outputs_subset_and_gzip_body(client: httpx.AsyncClient) -> None:
    x = np.ones((1, 4), np.float32)
    raw = httpx.Request("POST", "/", json=infer_body(x, outputs=[{"name": "probabilities"}])).content
    r = await client.post(
        "/v2/models/m/infer", content=gzip.compress(raw), headers={"Content-Encoding": "gzip"}
    )
    assert r.status_code == 200, r.text
    assert [o["name"] for o in r.json()["outputs"]] == ["probabilities"]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "error"),
    [
        ("POST", "/v2/models/nope/infer", {}, 404, "model 'nope' is not loaded"),
        ("POST", "/v2/models/m/versions/7/infer", {}, 404, "version '7' is not loaded (serving '1')"),
        ("GET", "/v2/models/nope", None, 404, "model 'nope' is not loaded"),
        ("GET", "/v2/nowhere", None, 404, "no route for /v2/nowhere"),
        ("GET", "/v2/models/m/explain", None, 404, "no route for /v2/models/m/explain"),
        ("GET", "/v2/models/m/infer", None, 405, "GET is not allowed on /v2/models/m/infer; use POST"),
        ("POST", "/v2/models/m", {}, 405, "POST is not allowed on /v2/models/m; use GET"),
        ("DELETE", "/v2/health/live", None, 405, "use GET"),
        ("POST", "/v2/models/m/infer", {"inputs": 3}, 400, "'inputs' must be a non-empty list"),
        (
            "POST", "/v2/models/m/infer",
            {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]},
            400, "input 'input': shape [1, 3] does not fit the model's [-1, 4]",
        ),
    ],
)  # fmt: skip
async def test_errors_are_json_with_the_right_status(
    client: httpx.AsyncClient, method: str, path: str, body: object, status: int, error: str
) -> None:
    r = await client.request(method, path, json=body)
    assert r.status_code == status
    assert error in r.json()["error"]
    if status == 405:
        assert r.headers["allow"] in ("GET", "POST")


async def test_bad_encoding_and_json(client: httpx.AsyncClient) -> None:
    r = await client.post("/v2/models/m/infer", content=b"{", headers={"Content-Encoding": "br"})
    assert r.status_code == 415 and "Content-Encoding br is not supported" in r.json()["error"]
    r = await client.post("/v2/models/m/infer", content=b"{not json")
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]


async def test_metrics_exposition(client: httpx.AsyncClient) -> None:
    await client.post("/v2/models/m/infer", json=infer_body(np.ones((1, 4), np.float32)))
    await client.post("/v2/models/m/infer", json={"inputs": []})
    await client.post("/v2/models/ghost/infer", json={})
    r = await client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    req = "mlplat_requests_total"
    assert sample(text, req, model="m", version="1", endpoint="infer", code="200") == 1
    assert sample(text, req, model="m", version="1", endpoint="infer", code="400") == 1
    assert sample(text, req, model="", version="", endpoint="infer", code="404") == 1  # bounded labels
    assert sample(text, "mlplat_request_duration_seconds_count", model="m", endpoint="infer") == 2
    assert sample(text, "mlplat_inference_duration_seconds_count", model="m", version="1") == 1
    active = [dict(labels) for (name, labels) in scrape(text) if name == "mlplat_model_active_info"]
    assert [a["version"] for a in active] == ["1"] and active[0]["bundle_id"].startswith("sha256:")
    assert sample(text, "mlplat_model_loads_total", model="m", result="ok") == 1


async def test_model_routes_are_remembered_only_up_to_the_cap(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serving_app, "ROUTE_CACHE", 4)
    monkeypatch.setattr(serving_app, "_ROUTES", {})
    for i in range(10):
        assert (await client.get(f"/v2/models/ghost{i}/ready")).status_code == 404
    for _ in range(2):  # parsed, then remembered: the same answers
        assert (await client.get("/v2/models/m/versions/1/ready")).status_code == 200
        assert (await client.get("/v2/models/m/versions/9/ready")).status_code == 404
        assert (await client.get("/v2/models/m/nope")).status_code == 404
    long = "/v2/models/" + "x" * 300 + "/ready"
    assert (await client.get(long)).status_code == 404
    assert 0 < len(serving_app._ROUTES) <= 4
    assert long not in serving_app._ROUTES and "/v2/models/m/nope" not in serving_app._ROUTES


# -- admin -----------------------------------------------------------------------------------


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    "headers", [{}, auth("wrong"), {"Authorization": TOKEN}, {"Authorization": "Basic x"}]
)
async def test_admin_needs_the_token(admin: httpx.AsyncClient, headers: dict[str, str]) -> None:
    r = await admin.post("/v2/repository/index", headers=headers)
    assert r.status_code == 401
    assert r.json() == {"error": "missing or wrong admin token"}
    assert r.headers["www-authenticate"].startswith("Bearer")


async def test_admin_index_load_and_unload(
    admin: httpx.AsyncClient, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    (entry,) = (await admin.post("/v2/repository/index", headers=auth())).json()
    assert (entry["name"], entry["version"], entry["state"]) == ("m", "1", "READY")
    r = await admin.post(
        "/v2/repository/models/m/load",
        headers=auth(),
        json={"parameters": {"bundle": str(build_version(tmp_path, "2", seed=5))}},
    )
    assert r.status_code == 200, r.text
    doc = r.json()
    assert set(doc) == {"name", "version", "bundle_id", "provider", "swap_ms"}
    assert (doc["name"], doc["version"]) == ("m", "2") and doc["swap_ms"] > 0
    assert (await client.get("/v2/models/m")).json()["versions"] == ["2"]

    r = await admin.post(
        "/v2/repository/models/m/load",
        headers=auth(),
        json={"parameters": {"bundle": str(tampered_bundle(tmp_path, "3"))}},
    )
    assert r.status_code == 400 and "checksum differs" in r.json()["error"]
    (entry,) = (await admin.post("/v2/repository/index", headers=auth())).json()
    assert entry["version"] == "2" and "checksum differs" in entry["reason"]

    assert (await admin.post("/v2/repository/models/m/unload", headers=auth())).status_code == 200
    assert (await client.get("/v2/models/m")).status_code == 404
    assert (await admin.post("/v2/repository/models/m/unload", headers=auth())).status_code == 404


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"", "bad load request: parameters: Field required"),
        (b'{"parameters": {}}', "bad load request: parameters.bundle: Field required"),
        (b'{"parameters": {"bundle": 3}}', "bad load request: parameters.bundle"),
        (b"{nope", "bad load request"),
        (b'{"parameters": {"bundle": "/x"}, "more": 1}', "bad load request: more: Extra inputs"),
    ],
)
async def test_admin_bad_load_bodies(admin: httpx.AsyncClient, body: bytes, error: str) -> None:
    r = await admin.post("/v2/repository/models/m/load", headers=auth(), content=body)
    assert r.status_code == 400
    assert r.json()["error"].startswith(error)


async def test_admin_routes_and_methods(admin: httpx.AsyncClient, tmp_path: Path) -> None:
    assert (await admin.get("/v2/repository/index", headers=auth())).status_code == 405
    assert (await admin.post("/v2/repository/models/m/explode", headers=auth())).status_code == 404
    r = await admin.post(
        "/v2/repository/models/m/load",
        headers=auth(),
        json={"parameters": {"bundle": str(tmp_path / "missing")}},
    )
    assert r.status_code == 404 and "bundle not found" in r.json()["error"]


def test_token_file_is_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "state" / "mlplat" / "admin.token"
    token, where = ensure_admin_token(path)
    assert where == path and len(token) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert ensure_admin_token(path) == (token, path)
    path.write_text("\n")
    with pytest.raises(UsageError, match="is empty"):
        ensure_admin_token(path)


def test_default_token_path_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert default_token_path() == tmp_path / "xdg" / "mlplat" / "admin.token"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_token_path() == tmp_path / "home" / ".local" / "state" / "mlplat" / "admin.token"


def test_loads_start_the_check_process_on_demand(tmp_path: Path) -> None:
    # A repository given a checker that was never started starts it on its first load.
    checker = Checker(providers=CPU)
    r = Repository(checker=checker, providers=CPU)
    try:
        r.load(build_version(tmp_path, "1"))
        assert checker.alive
    finally:
        r.close()
        checker.close()
