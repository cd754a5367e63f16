"""The images: pins consistent with the repository's lock, the build context, the labels and the
lock file inside the built images, and ``mlplat images build`` from the command line."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import docker
import pytest

from mlplat_runtime.errors import MlplatError, UsageError
from mlplat_tui.docker.images import (
    LABEL_LOCK,
    LABEL_VERSION,
    REQUIREMENTS,
    _stream,
    build_images,
    context_files,
    lock_digest,
    pins,
)
from tests.mlplat_tui.stack.conftest import BASE_IMAGE, REPO, TEST_TAGS, WHEELHOUSE

RUNTIME_TOP_LEVEL = {"numpy", "onnx", "onnxruntime-gpu", "uvicorn", "orjson", "prometheus-client", "duckdb",
                     "pydantic"}  # fmt: skip


@pytest.mark.parametrize("target", ["runtime", "tracker"])
def test_image_pins_match_the_repository_lock(target: str) -> None:
    lock = pins((REPO / "requirements.lock").read_text())
    wanted = pins((REPO / REQUIREMENTS[target]).read_text())
    assert wanted, REQUIREMENTS[target]
    differ = {n: (v, lock.get(n)) for n, v in wanted.items() if lock.get(n) != v}
    assert not differ, f"{REQUIREMENTS[target]} disagrees with requirements.lock: {differ}"


def test_runtime_image_holds_the_data_plane_only() -> None:
    wanted = set(pins((REPO / REQUIREMENTS["runtime"]).read_text()))
    assert wanted >= RUNTIME_TOP_LEVEL
    assert not wanted & {"mlflow", "textual", "docker", "click-default-group", "torch", "scikit-learn"}


def test_lock_digest_ignores_spelling_order_and_comments() -> None:
    a = "# pins\nPyYAML==6.0.4\nuvicorn[standard]==0.54.0\nprometheus_client==0.26.0\n"
    b = "prometheus-client==0.26.0\nuvicorn==0.54.0\npyyaml==6.0.4\n"
    assert lock_digest(a) == lock_digest(b)
    assert lock_digest(a) != lock_digest(b.replace("0.54.0", "0.54.1"))


def test_build_context_is_the_allow_list() -> None:
    files = context_files(REPO)
    assert {"Dockerfile", "dockerfiles/healthcheck.py", "runtime/requirements.txt",
            "runtime/mlplat_runtime/serving/__main__.py"} <= set(files)  # fmt: skip
    assert all(f.startswith(("runtime/mlplat_runtime/", "dockerfiles/")) or f in
               {"Dockerfile", ".dockerignore", "runtime/requirements.txt"} for f in files), files  # fmt: skip
    assert not [f for f in files if "__pycache__" in f or f.startswith("wheelhouse")]


def test_build_errors_carry_the_failing_lines_and_a_hint() -> None:
    chunks = [
        {"stream": "Step 9/40 : RUN pip install ...\n"},
        {"stream": "ERROR: Could not find a version that satisfies the requirement numpy==2.4.6\n"},
        {"error": "The command '/bin/sh -c pip install' returned a non-zero code: 1"},
    ]
    seen: list[str] = []
    with pytest.raises(MlplatError) as err:
        _stream(iter(chunks), "runtime", seen.append)
    assert "building the runtime image failed" in str(err.value)
    assert "Could not find a version" in str(err.value)
    assert err.value.hint and "scripts/build-wheelhouse.sh" in err.value.hint
    assert seen[0] == "[runtime] Step 9/40 : RUN pip install ..."


def test_an_empty_wheelhouse_is_refused_before_any_build(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="holds no wheels"):
        build_images(wheelhouse=tmp_path)


@pytest.mark.docker
@pytest.mark.xdist_group("docker")
@pytest.mark.timeout(900)
def test_built_images_are_labelled_with_what_they_hold(docker_client, mlplat_images) -> None:
    for target in ("runtime", "tracker"):
        image = docker_client.images.get(TEST_TAGS[target])
        labels = image.labels
        assert labels[LABEL_VERSION] == version("mlplat")
        assert labels[LABEL_LOCK] == lock_digest((REPO / REQUIREMENTS[target]).read_text())
        assert image.attrs["Config"]["User"] == "mlplat"
        assert image.attrs["Config"]["Healthcheck"]["Test"][-1] == "/opt/mlplat/healthcheck.py"
        frozen = docker_client.containers.run(image.id, ["cat", "/opt/mlplat/lock.txt"], remove=True)
        assert lock_digest(frozen.decode()) == labels[LABEL_LOCK], target
        print(f"\n{target}: {image.attrs['Size'] / 1e6:.0f} MB")
    # The data plane image imports its service entry points and nothing of the control plane.
    probe = (
        "import importlib, sys\n"
        "for m in ('mlplat_runtime.serving.server', 'mlplat_runtime.metadata.service'):\n"
        "    importlib.import_module(m)\n"
        "bad = [m for m in ('mlflow', 'textual', 'docker', 'mlplat_tui') if importlib.util.find_spec(m)]\n"
        "print('ok' if not bad else bad)\n"
    )
    out = docker_client.containers.run(TEST_TAGS["runtime"], ["python", "-c", probe], remove=True)
    assert out.decode().strip() == "ok"


@pytest.mark.docker
@pytest.mark.xdist_group("docker")
@pytest.mark.timeout(900)
def test_images_build_command_keeps_unchanged_images(mlplat_images, tmp_path: Path) -> None:
    (tmp_path / "mlplat.toml").write_text(
        '[project]\nname = "imgs"\n[model]\nname = "m"\n[stack]\n'
        f'runtime_image = "{TEST_TAGS["runtime"]}"\ntracker_image = "{TEST_TAGS["tracker"]}"\n'
    )
    out = subprocess.run(
        [sys.executable, "-m", "mlplat_tui", "--project", str(tmp_path), "images", "build", "--if-changed",
         "--json", "--base-image", BASE_IMAGE, "--wheelhouse", str(WHEELHOUSE)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    built = json.loads(out.stdout)
    assert [(b["target"], b["tag"], b["reused"]) for b in built] == [
        ("runtime", TEST_TAGS["runtime"], True),
        ("tracker", TEST_TAGS["tracker"], True),
    ]
    assert "is current" in out.stderr


@pytest.mark.docker
@pytest.mark.xdist_group("docker")
@pytest.mark.timeout(900)
def test_rebuild_after_a_source_change_replaces_the_old_image(
    docker_client, mlplat_images, tmp_path: Path
) -> None:
    # A copy of the build context with one data-plane file changed: only the last layers rebuild,
    # the tag moves, and the image it named before is removed rather than left dangling; an
    # image another tag still names (the session's) is never touched.
    root = tmp_path / "src"
    for rel in context_files(REPO):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes((REPO / rel).read_bytes())
    tag = f"mlplat-runtime:rebuild-{os.getpid()}"
    common: dict[str, Any] = dict(
        targets=["runtime"], tags={"runtime": tag}, base_image=BASE_IMAGE, wheelhouse=WHEELHOUSE,
        root=root, client=docker_client,
    )  # fmt: skip
    init = root / "runtime/mlplat_runtime/__init__.py"
    try:
        init.write_text(f'"""first {os.getpid()}"""\n')  # an image of its own, no other tag on it
        first = build_images(**common)[0]
        init.write_text('"""changed"""\n')
        lines: list[str] = []
        second = build_images(**common, progress=lines.append)[0]
        assert second.image_id != first.image_id
        assert any("Using cache" in line for line in lines)  # the dependency layers were kept
        assert second.seconds < 120
        with pytest.raises(docker.errors.ImageNotFound):
            docker_client.images.get(first.image_id)
        changed = docker_client.containers.run(
            tag, ["cat", "/opt/mlplat/app/mlplat_runtime/__init__.py"], remove=True
        )
        assert changed.decode() == '"""changed"""\n'
        assert docker_client.images.get(TEST_TAGS["runtime"])
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(tag)
