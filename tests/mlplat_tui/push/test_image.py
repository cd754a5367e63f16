"""The bundle image against a real registry (Debian's docker-registry with htpasswd auth).

Wrong or missing credentials are refused before anything is built or pushed: the registry
and the engine's images stay as they were, and the swarm engine's access check refuses them
too without touching the Swarm. The right ones push once; the same bundle again is found in
the registry by its tag and not rebuilt, and the digest is the one the registry answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlplat_runtime.errors import TargetError
from mlplat_tui.project.config import Project
from mlplat_tui.push.image import build_and_push, image_repository, image_tag
from mlplat_tui.push.swarm import SwarmEngine
from tests.helpers.registry import RunningRegistry, started_registry
from tests.helpers.swarm import swarm_objects
from tests.mlplat_tui.push.swarm_fixtures import (  # noqa: F401 - fixtures
    RUNTIME_TEST_IMAGE,
    bundle,
    creds,
    remove_pushed,
    swarm,
    write_swarm_project,
)
from tests.mlplat_tui.stack.conftest import docker_client, mlplat_images  # noqa: F401 - fixtures

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(900)]

USER, PASSWORD = "pusher", "correct-horse-battery-staple"


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    with started_registry(tmp_path_factory.mktemp("auth-registry"), users={USER: PASSWORD}) as reg:
        yield reg


def _local_tags(client: Any, repository: str) -> list[str]:
    return sorted(t for img in client.images.list() for t in img.tags if t.startswith(repository + ":"))


def test_tag_names_version_and_bundle() -> None:
    assert image_tag("3", "sha256:" + "ab" * 32) == "3-abababababab"
    assert image_tag("1.0 rc/1", "sha256:" + "0f" * 32) == "1.0-rc-1-0f0f0f0f0f0f"
    assert image_repository("127.0.0.1:5001", "Churn_Classifier") == "127.0.0.1:5001/mlplat/churn_classifier"


@pytest.mark.parametrize("given", [creds(USER, "wrong-password"), creds("nobody", PASSWORD), None])
def test_wrong_or_missing_credentials_change_nothing(
    tmp_path: Path,
    given: Any,
    auth_registry: RunningRegistry,
    docker_client: Any,  # noqa: F811
    mlplat_images: dict[str, Any],  # noqa: F811
) -> None:
    path, bid = bundle(tmp_path, "1", seed=1)
    repository = image_repository(auth_registry.address, "m")
    said: list[str] = []
    with pytest.raises(TargetError) as err:
        build_and_push(
            path, "m", "1", bid, auth_registry.address, given, said.append, runtime_image=RUNTIME_TEST_IMAGE
        )
    assert "refused" in str(err.value) or "credentials" in str(err.value)
    assert PASSWORD not in str(err.value) and "wrong-password" not in str(err.value)
    assert not any("building" in line for line in said)  # refused before any build
    assert auth_registry.repositories() == []
    assert _local_tags(docker_client, repository) == []


def test_same_bundle_twice_is_pushed_once_and_pinned_by_the_registrys_digest(
    tmp_path: Path,
    auth_registry: RunningRegistry,
    docker_client: Any,  # noqa: F811
    mlplat_images: dict[str, Any],  # noqa: F811
) -> None:
    path, bid = bundle(tmp_path, "1", seed=1)
    good = creds(USER, PASSWORD)
    first_lines: list[str] = []
    first = build_and_push(
        path, "m", "1", bid, auth_registry.address, good, first_lines.append, runtime_image=RUNTIME_TEST_IMAGE
    )
    try:
        assert first.tag == image_tag("1", bid)
        assert first.pinned == f"{image_repository(auth_registry.address, 'm')}@{first.digest}"
        assert any("pushing" in line for line in first_lines)
        r = httpx.head(
            f"http://{auth_registry.address}/v2/mlplat/m/manifests/{first.tag}",
            auth=(USER, PASSWORD),
            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        )
        assert r.headers["Docker-Content-Digest"] == first.digest  # what the registry itself says

        again_lines: list[str] = []
        again = build_and_push(
            path,
            "m",
            "1",
            bid,
            auth_registry.address,
            good,
            again_lines.append,
            runtime_image=RUNTIME_TEST_IMAGE,
        )
        assert again == first
        assert any("not rebuilt" in line for line in again_lines)
        assert not any("building" in line or "pushing" in line for line in again_lines)
        assert auth_registry.tags("mlplat/m") == [first.tag]
    finally:
        remove_pushed(docker_client, [first])


def test_the_swarm_engines_access_check_refuses_wrong_credentials_and_changes_nothing(
    tmp_path: Path,
    auth_registry: RunningRegistry,
    swarm: Any,  # noqa: F811
) -> None:
    project: Project = write_swarm_project(tmp_path / "p", auth_registry.address, 18802)
    target = project.config.targets["prod"]
    held = auth_registry.repositories()
    wrong = SwarmEngine(project, "prod", target, creds(USER, "nope"))  # type: ignore[arg-type]
    with pytest.raises(TargetError, match="refused the credentials"):
        wrong.check_access()
    SwarmEngine(project, "prod", target, creds(USER, PASSWORD)).check_access()  # type: ignore[arg-type]
    assert swarm_objects(swarm, project.name) == {"services": [], "containers": [], "networks": []}
    assert auth_registry.repositories() == held


def test_step_4s_checks_change_nothing_and_judge_the_engines_own_transport(
    tmp_path: Path,
    auth_registry: RunningRegistry,
    docker_client: Any,  # noqa: F811
    mlplat_images: dict[str, Any],  # noqa: F811
) -> None:
    from mlplat_runtime.errors import UsageError
    from mlplat_tui.push.image import check_build, registry_url
    from mlplat_tui.push.pipeline import check_transport

    address = auth_registry.address
    held = auth_registry.repositories()
    # the engine's own registry config decides: its insecure CIDRs hold 127.0.0.0/8 by default
    assert registry_url(docker_client, address) == f"http://{address}"
    assert registry_url(docker_client, "10.255.0.1:5001/team") == "https://10.255.0.1:5001"
    seen: list[str] = []
    good = creds(USER, PASSWORD)
    kw: dict[str, Any] = {"client": docker_client, "runtime_image": RUNTIME_TEST_IMAGE}
    check_build(address, good, transport=seen.append, **kw)
    assert seen == [f"http://{address}"]
    check_build(address, good, transport=lambda u: check_transport(u, "image registry", False), **kw)
    with pytest.raises(TargetError, match="refused the credentials"):
        check_build(address, creds(USER, "wrong-password"), **kw)
    with pytest.raises(UsageError, match="runtime image mlplat-runtime:no-such-tag"):
        check_build(address, good, client=docker_client, runtime_image="mlplat-runtime:no-such-tag")
    assert auth_registry.repositories() == held  # nothing was built or pushed


def test_the_image_step_keeps_to_the_push_deadline(
    tmp_path: Path,
    auth_registry: RunningRegistry,
    docker_client: Any,  # noqa: F811
    mlplat_images: dict[str, Any],  # noqa: F811
) -> None:
    from mlplat_runtime.errors import MlplatError

    path, bid = bundle(tmp_path, "4", seed=4)
    held = auth_registry.repositories()
    with pytest.raises(MlplatError, match="the push's deadline passed during the build"):
        build_and_push(
            path, "m", "4", bid, auth_registry.address, creds(USER, PASSWORD), lambda _: None,
            client=docker_client, runtime_image=RUNTIME_TEST_IMAGE, timeout_s=0.0,
        )  # fmt: skip
    assert auth_registry.repositories() == held  # nothing pushed
    if "mlplat/m" in held:
        assert image_tag("4", bid) not in auth_registry.tags("mlplat/m")
