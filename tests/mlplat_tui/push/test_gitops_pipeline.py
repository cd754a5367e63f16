"""End to end through the push pipeline to a gitops-k8s target, without Docker: a real bundle,
verified and gated by the pipeline, committed by the real engine to a real bare repository.
Step 4 (build and push the image) is the one part replaced: a stand-in returns an image
reference pinned by a valid digest, as the real step would after pushing to a registry."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from mlplat_tui.project.config import CONFIG_NAME, load_project
from mlplat_tui.push.engine import ImageRef
from mlplat_tui.push.gitops import trailers
from tests.helpers.models import make_bundle

CONFIG = """
[project]
name = "churn"
[model]
name = "m"
[targets.k8s]
kind = "gitops-k8s"
stage = "prod"
repo = "../gitops.git"
path = "models/m"
kubernetes_version = "1.33"
image_registry = "127.0.0.1:5001"
replicas = 2
"""


def test_mlplat_push_to_a_gitops_target_commits_the_evidence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlplat_tui.push import image, pipeline

    bare = tmp_path / "gitops.git"
    subprocess.run(["git", "init", "--quiet", "--bare", "--initial-branch=main", str(bare)], check=True)
    root = tmp_path / "proj"
    root.mkdir()
    (root / CONFIG_NAME).write_text(CONFIG, encoding="utf-8")
    project = load_project(root)
    bundle = make_bundle(tmp_path, name="m", version="1")
    built: list[dict[str, Any]] = []

    def stand_in(
        bundle_path: Path, model: str, version: str, bundle_id: str, registry: str, *_: Any
    ) -> ImageRef:
        built.append({"bundle": bundle_path, "version": version, "bundle_id": bundle_id})
        return ImageRef(f"{registry}/mlplat/{model}", "sha256:" + "e" * 64, f"{version}-{bundle_id[7:19]}")

    monkeypatch.setattr(image, "build_and_push", stand_in)
    lines: list[str] = []
    result = pipeline.push(project, "k8s", bundle, metadata=None, progress=lines.append)

    assert result.outcome.value == "completed", result.reason
    assert result.exit_code == 0 and result.rolled_out
    assert [b["version"] for b in built] == ["1"]
    log = subprocess.run(
        ["git", "--git-dir", str(bare), "log", "--format=%H%n%B%x00", "main"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (entry,) = [e for e in log.split("\x00") if e.strip()]
    assert "mlplat push: m v1 to k8s (prod)" in entry
    assert "PASS  signature" in entry  # the gate table the pipeline passed as evidence
    assert trailers(entry)["Mlplat-Bundle"] == built[0]["bundle_id"]
    assert any("committed: v1 on k8s" in line for line in lines)
    receipt = json.loads(Path(str(result.to_json()["receipt"])).read_text())
    assert receipt["smoke"]["skipped"] is True
    assert any(t["state"] == "pushed" for t in receipt["transitions"])


def _project(tmp_path: Path, config: str) -> Any:
    bare = tmp_path / "gitops.git"
    subprocess.run(["git", "init", "--quiet", "--bare", "--initial-branch=main", str(bare)], check=True)
    root = tmp_path / "proj"
    root.mkdir()
    (root / CONFIG_NAME).write_text(config, encoding="utf-8")
    return load_project(root), bare


def test_a_dry_run_renders_and_checks_the_manifests(tmp_path: Path) -> None:
    from mlplat_tui.push import pipeline

    project, bare = _project(tmp_path, CONFIG)
    bundle = make_bundle(tmp_path, name="m", version="1")
    result = pipeline.push(project, "k8s", bundle, metadata=None, options=pipeline.PushOptions(dry_run=True))
    assert result.outcome.value == "completed" and result.dry_run, result.reason
    assert any(
        "render 2 manifest(s), valid offline: deployment.yaml, service.yaml" in c for c in result.changes
    )
    log = subprocess.run(["git", "--git-dir", str(bare), "rev-list", "--all"], capture_output=True, text=True)
    assert log.stdout.strip() == ""  # a dry run commits nothing


def test_a_dry_run_whose_manifests_cannot_be_checked_is_not_completed(tmp_path: Path) -> None:
    from mlplat_tui.push import pipeline

    project, _ = _project(tmp_path, CONFIG.replace('"1.33"', '"1.99"'))  # no schemas shipped for it
    bundle = make_bundle(tmp_path, name="m", version="1")
    result = pipeline.push(project, "k8s", bundle, metadata=None, options=pipeline.PushOptions(dry_run=True))
    assert result.outcome.value == "failed" and result.exit_code == 1
    assert "no Kubernetes API schemas for kubernetes_version 1.99" in result.reason
