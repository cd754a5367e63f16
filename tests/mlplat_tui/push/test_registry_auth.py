"""The target registry against a real MLflow server with its basic-auth app.

An admin-made user store (``default_permission = READ``): wrong credentials and a read-only user
are refused before anything is created; a writer's two racing registrations of one bundle give
one version.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlplat_runtime.bundle import open_bundle
from mlplat_runtime.errors import TargetError
from mlplat_tui.project.config import load_project
from mlplat_tui.push.credentials import Credentials
from mlplat_tui.push.local import LocalEngine
from mlplat_tui.push.pipeline import PushOutcome, push
from mlplat_tui.push.registry import DIGEST_TAG, RegistryVersion, TargetRegistry, version_tags
from tests.mlplat_tui.push.push_helpers import (
    ADMIN,
    AuthMlflow,
    auth_mlflow,
    bundle,
    local_target,
    write_project,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PUSHER = ("pusher", "Pusher-pass-0123456789")
READER = ("reader", "Reader-pass-0123456789")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthMlflow]:
    with auth_mlflow(tmp_path_factory.mktemp("authmlflow")) as running:
        running.create_user(*PUSHER)
        running.create_user(*READER)
        running.create_model("ro-model")  # the platform team's model: the reader may only read it
        yield running


def _project(tmp_path: Path, server: AuthMlflow, model: str, env: str) -> Path:
    extra = f'registry = "{server.url}"\ncredentials = {{ env = "{env}" }}\n'
    return write_project(tmp_path / "proj", model=model, targets=local_target("staging", extra=extra))


def test_wrong_credentials_are_refused_and_nothing_is_created(
    server: AuthMlflow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = server.registered_models()
    wrong = TargetRegistry(server.url, "auth-model", Credentials("pusher", "not-the-password"))
    with pytest.raises(TargetError, match="not authenticated"):
        wrong.check_access()
    root = _project(tmp_path, server, "auth-model", "MLPLAT_T_WRONG")
    monkeypatch.setenv("MLPLAT_T_WRONG", "pusher:not-the-password")
    project = load_project(root)
    result = push(project, "staging", bundle(root, "1", auc=0.9, seed=1, model="auth-model"), metadata=None)
    assert result.outcome is PushOutcome.FAILED and result.exit_code == 1
    assert "nothing changed" in result.reason and "not-the-password" not in result.reason
    assert server.registered_models() == before
    engine = LocalEngine(project, "staging", project.config.targets["staging"])  # type: ignore[arg-type]
    assert not engine.backend.status().up and engine.current("auth-model") is None


def test_a_read_only_user_is_refused_and_nothing_is_created(
    server: AuthMlflow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = TargetRegistry(server.url, "ro-model", Credentials(*READER))
    with pytest.raises(TargetError, match="read-only"):
        reader.check_access()
    root = _project(tmp_path, server, "ro-model", "MLPLAT_T_READER")
    monkeypatch.setenv("MLPLAT_T_READER", ":".join(READER))
    result = push(
        load_project(root), "staging", bundle(root, "1", auc=0.9, seed=2, model="ro-model"), metadata=None
    )
    assert result.outcome is PushOutcome.FAILED and "read-only" in result.reason
    assert server.versions("ro-model") == []
    assert not (root / ".mlplat" / "targets" / "staging" / "deployed.json").exists()


def test_two_racing_registrations_of_one_bundle_give_one_version(server: AuthMlflow, tmp_path: Path) -> None:
    registry = TargetRegistry(server.url, "race-model", Credentials(*PUSHER))
    registry.check_access()  # not created yet: any authenticated user may create it
    path = bundle(tmp_path, "1", auc=0.9, seed=3, model="race-model")
    manifest = open_bundle(path).manifest
    tags = version_tags(manifest, [], target="staging", stage="staging")
    got: list[RegistryVersion] = []
    barrier = threading.Barrier(2)

    def one() -> None:
        barrier.wait()
        got.append(registry.register(path, tags))

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(got) == 2 and got[0].version == got[1].version
    versions = server.versions("race-model")
    assert [v["version"] for v in versions] == [got[0].version]
    assert {t["key"]: t["value"] for t in versions[0]["tags"]}[DIGEST_TAG] == manifest.bundle_id
    # the writer owns the model it created: later checks prove write access, changing nothing
    registry.check_access()
    assert (
        registry.register(path, tags).version == got[0].version
        and not registry.find(manifest.bundle_id).created
    )  # type: ignore[union-attr]
    registry.set_alias("staging", got[0].version)
    assert registry.alias("staging") == got[0].version
    assert TargetRegistry(server.url, "race-model", Credentials(*READER)).alias("staging") == got[0].version
    with pytest.raises(TargetError, match="read-only"):
        TargetRegistry(server.url, "race-model", Credentials(*READER)).check_access()


def _active_runs_of(server: AuthMlflow, bundle_id: str) -> list[dict[str, object]]:
    import httpx

    from mlplat_tui.push.registry import EXPERIMENT

    got = httpx.get(
        f"{server.url}/api/2.0/mlflow/experiments/get-by-name",
        params={"experiment_name": EXPERIMENT},
        auth=ADMIN,
        timeout=30,
    )
    if got.status_code == 404:
        return []
    assert got.status_code == 200, got.text
    found = httpx.post(
        f"{server.url}/api/2.0/mlflow/runs/search",
        json={
            "experiment_ids": [got.json()["experiment"]["experiment_id"]],
            "filter": f"tags.`{DIGEST_TAG}` = '{bundle_id}'",
        },
        auth=ADMIN,
        timeout=30,
    )
    assert found.status_code == 200, found.text
    return list(found.json().get("runs", []))


def test_a_refused_registration_leaves_no_run_behind(server: AuthMlflow, tmp_path: Path) -> None:
    # the pusher may create runs but not versions of the platform team's model: the version is
    # refused after the run and its artifacts were made, and the run goes with it
    registry = TargetRegistry(server.url, "ro-model", Credentials(*PUSHER))
    path = bundle(tmp_path, "1", auc=0.9, seed=4, model="ro-model")
    manifest = open_bundle(path).manifest
    tags = version_tags(manifest, [], target="staging", stage="staging")
    with pytest.raises(TargetError, match="its run was deleted"):
        registry.register(path, tags)
    assert server.versions("ro-model") == []
    assert _active_runs_of(server, manifest.bundle_id) == []


def test_a_push_whose_image_step_fails_leaves_no_registry_version(
    server: AuthMlflow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess

    from mlplat_tui.push import image

    bare = tmp_path / "gitops.git"
    subprocess.run(["git", "init", "--quiet", "--bare", "--initial-branch=main", str(bare)], check=True)
    extra = f"""[targets.k8s]
kind = "gitops-k8s"
stage = "prod"
repo = "{bare}"
path = "models/m"
kubernetes_version = "1.33"
image_registry = "127.0.0.1:5001"
registry = "{server.url}"
credentials = {{ env = "MLPLAT_T_IMG" }}
"""
    root = write_project(tmp_path / "proj", model="img-model", targets=extra)
    monkeypatch.setenv("MLPLAT_T_IMG", ":".join(PUSHER))

    def refused(*_: object) -> image.ImageRef:
        raise TargetError("the image registry refused the push (a stand-in for the registry)")

    monkeypatch.setattr(image, "build_and_push", refused)
    path = bundle(root, "1", auc=0.9, seed=5, model="img-model")
    result = push(load_project(root), "k8s", path, metadata=None)
    assert result.outcome is PushOutcome.FAILED and "refused the push" in result.reason, result.reason
    assert "deleted" in result.reason and not result.rolled_out
    assert result.to_json()["rolled_out"] is False
    assert server.versions("img-model") == []
    assert _active_runs_of(server, open_bundle(path).manifest.bundle_id) == []
