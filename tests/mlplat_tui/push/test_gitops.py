"""The gitops-k8s engine against a real local bare repository (``git init --bare``), checked by
cloning it with git: one commit per push with the evidence, the same bundle twice commits
nothing, rollback is a revert commit that says why, and a refused push leaves the repository
as it was. No cluster and no Docker: the image is a synthetic reference with a valid digest."""

from __future__ import annotations

import getpass
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlplat_runtime.errors import TargetError
from mlplat_tui.project.config import CONFIG_NAME, Project, load_project
from mlplat_tui.project.targets import GitopsK8sTarget
from mlplat_tui.push import k8s_manifests as km
from mlplat_tui.push.engine import ImageRef, RolloutOutcome, RolloutRequest, RolloutResult
from mlplat_tui.push.gitops import GitopsEngine, trailers
from mlplat_tui.push.k8s_validate import ManifestRefused, findings

MODEL = "churn-classifier"
PATH = "models/churn"
EVIDENCE = """gates
  metrics.roc_auc   0.91 >= 0.87   pass
  latency.p95_ms    1.2  <= 5      pass
receipt: registry version 7, run 3f2a9c, data sha256:77aa"""


def git(*args: str, cwd: Path | None = None) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return out.stdout


def project(tmp_path: Path, extra: str = "", repo: str = "../gitops.git") -> Project:
    root = tmp_path / "proj"
    root.mkdir(exist_ok=True)
    (root / CONFIG_NAME).write_text(
        f"""
[project]
name = "churn"
[model]
name = "{MODEL}"
[targets.k8s]
kind = "gitops-k8s"
stage = "prod"
repo = "{repo}"
path = "{PATH}"
kubernetes_version = "1.33"
image_registry = "127.0.0.1:5001"
replicas = 2
resources = {{ cpus = 0.5, memory = "512m" }}
{extra}
""",
        encoding="utf-8",
    )
    return load_project(root)


@pytest.fixture
def bare(tmp_path: Path) -> Path:
    repo = tmp_path / "gitops.git"
    git("init", "--quiet", "--bare", "--initial-branch=main", str(repo))
    return repo


def engine(tmp_path: Path, extra: str = "", repo: str = "../gitops.git") -> GitopsEngine:
    proj = project(tmp_path, extra, repo)
    target = proj.config.targets["k8s"]
    assert isinstance(target, GitopsK8sTarget)
    return GitopsEngine(proj, "k8s", target, None)


def bundle(n: int) -> str:
    return "sha256:" + f"{n:02x}" * 32


def request(n: int, *, reason: str = "", model: str = MODEL, image: ImageRef | None = None) -> RolloutRequest:
    return RolloutRequest(
        model_name=model,
        version=str(n),
        bundle_id=bundle(n),
        bundle_path=Path("/nonexistent/bundle"),
        image=image or ImageRef(f"127.0.0.1:5001/mlplat/{model}", "sha256:" + f"{n + 100:02x}" * 32, f"{n}"),
        previous=None,
        deadline_s=30.0,
        reason=reason,
        evidence=EVIDENCE if not reason else "",
    )


def commits(bare: Path) -> list[str]:
    out = subprocess.run(
        ["git", "--git-dir", str(bare), "log", "--format=%H", "main"], capture_output=True, text=True
    )
    return out.stdout.split() if out.returncode == 0 else []


def message(bare: Path, rev: str = "main") -> str:
    return git("--git-dir", str(bare), "log", "-1", "--format=%B", rev)


def checkout(bare: Path, dest: Path) -> Path:
    if dest.exists():
        git("pull", "--quiet", cwd=dest)
    else:
        git("clone", "--quiet", str(bare), str(dest))
    return dest / PATH


def manifests(folder: Path) -> dict[str, Any]:
    return {f.name: yaml.safe_load(f.read_text()) for f in sorted(folder.glob("*.yaml"))}


class Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)


def test_one_commit_per_push_with_the_evidence(tmp_path: Path, bare: Path) -> None:
    eng = engine(tmp_path)
    eng.check_access()
    assert eng.kind == "gitops-k8s" and eng.needs_image and eng.endpoint(MODEL) is None
    assert eng.current(MODEL) is None  # an empty repository serves nothing
    progress = Lines()
    result = eng.rollout(request(1), progress)
    assert result.outcome is RolloutOutcome.COMMITTED and result.endpoint is None
    (sha,) = commits(bare)
    assert [t.state for t in result.transitions] == ["validated", "committed", "pushed"]
    assert result.transitions[-1].subject == sha
    msg = message(bare)
    assert msg.startswith(f"mlplat push: {MODEL} v1 to k8s (prod)")
    assert EVIDENCE in msg  # the gate table and the receipt summary, verbatim
    tr = trailers(msg)
    assert tr["Mlplat-Version"] == "1" and tr["Mlplat-Bundle"] == bundle(1)
    assert tr["Pushed-by"] == getpass.getuser()
    assert any("valid against the Kubernetes 1.33 API schemas" in line for line in progress.lines)
    # what was committed is what a cluster would apply: valid, pinned by digest
    folder = checkout(bare, tmp_path / "check")
    docs = manifests(folder)
    assert sorted(docs) == ["deployment.yaml", "service.yaml"]
    assert findings(list(docs.values()), "1.33") == []
    (c,) = docs["deployment.yaml"]["spec"]["template"]["spec"]["containers"]
    assert c["image"] == request(1).image.pinned  # type: ignore[union-attr]
    assert docs["deployment.yaml"]["spec"]["replicas"] == 2
    # current() reads HEAD
    now = eng.current(MODEL)
    assert now is not None and (now.version, now.bundle_id, now.replicas) == ("1", bundle(1), 2)
    assert now.image == ImageRef(request(1).image.repository, request(1).image.digest)  # type: ignore[union-attr]
    assert now.since is not None and now.spec["commit"] == sha
    assert result.deployed == now


def test_the_same_bundle_twice_commits_once(tmp_path: Path, bare: Path) -> None:
    eng = engine(tmp_path)
    eng.rollout(request(1), Lines())
    progress = Lines()
    again = eng.rollout(request(1), progress)
    assert len(commits(bare)) == 1
    assert again.outcome is RolloutOutcome.COMMITTED
    assert again.transitions[-1].state == "unchanged"
    assert any(line.startswith("nothing changed") and "no commit" in line for line in progress.lines)
    assert again.deployed is not None and again.deployed.version == "1"


def test_rollback_is_a_revert_commit_that_says_why(tmp_path: Path, bare: Path) -> None:
    eng = engine(tmp_path)
    eng.rollout(request(1), Lines())
    v1_files = {f: p.read_text() for f, p in _files(checkout(bare, tmp_path / "c1")).items()}
    eng.rollout(request(2), Lines())
    v1_sha, v2_sha = reversed(commits(bare))
    why = "smoke test failed: output 0 differs from the bundle's expected output"
    result = eng.rollback(request(1, reason=why), Lines())
    assert result.outcome is RolloutOutcome.COMMITTED
    assert len(commits(bare)) == 3
    msg = message(bare)
    assert msg.startswith(f"mlplat rollback: {MODEL} to v1 on k8s (was v2)")
    assert f"Why: {why}" in msg and f"This reverts commit {v2_sha}." in msg
    assert trailers(msg)["Mlplat-Reverts"] == v2_sha
    assert [t.state for t in result.transitions] == ["reverted", "pushed"]
    # a clone of the repository holds v1's manifests again, byte for byte
    folder = checkout(bare, tmp_path / "c1")
    assert {f: p.read_text() for f, p in _files(folder).items()} == v1_files
    now = eng.current(MODEL)
    assert now is not None and (now.version, now.bundle_id) == ("1", bundle(1))
    assert v1_sha in commits(bare)
    # asking again for what already serves commits nothing
    eng.rollback(request(1, reason=why), Lines())
    assert len(commits(bare)) == 3


def test_rollback_two_versions_back_restores_that_version(tmp_path: Path, bare: Path) -> None:
    eng = engine(tmp_path)
    for n in (1, 2, 3):
        eng.rollout(request(n), Lines())
    v1_sha = commits(bare)[-1]
    v1_files = {
        f: git("--git-dir", str(bare), "show", f"{v1_sha}:{PATH}/{f}")
        for f in km.FILE_OF_KIND.values()
        if f != "inferenceservice.yaml"
    }
    result = eng.rollback(request(1, reason="v2 and v3 drift on Mondays"), Lines())
    assert [t.state for t in result.transitions] == ["restored", "pushed"]
    msg = message(bare)
    assert "(was v3)" in msg and "Why: v2 and v3 drift on Mondays" in msg
    assert f"restores the manifests of {v1_sha[:12]}" in msg
    folder = checkout(bare, tmp_path / "c")
    assert {f: p.read_text() for f, p in _files(folder).items()} == v1_files
    assert result.deployed is not None and result.deployed.version == "1"


def test_a_missing_repository_is_a_clear_error_and_changes_nothing(tmp_path: Path) -> None:
    eng = engine(tmp_path, repo="../no-such-gitops")
    missing = tmp_path / "no-such-gitops"
    for call in (eng.check_access, lambda: eng.rollout(request(1), Lines()), lambda: eng.current(MODEL)):
        with pytest.raises(
            TargetError, match=r"gitops repository \.\./no-such-gitops \(.*\) does not exist"
        ) as info:
            call()
        assert "git init --bare" in str(info.value)
    assert not missing.exists()
    # a folder that is not a git repository: git's own refusal, named
    missing.mkdir()
    with pytest.raises(TargetError, match="could not clone the repository"):
        eng.rollout(request(1), Lines())
    assert list(missing.iterdir()) == []


def test_refused_manifests_commit_nothing(tmp_path: Path, bare: Path) -> None:
    eng = engine(tmp_path)
    eng.rollout(request(1), Lines())
    by_tag = ImageRef("127.0.0.1:5001/mlplat/churn-classifier", "latest")  # not a digest
    with pytest.raises(ManifestRefused) as info:
        eng.rollout(request(2, image=by_tag), Lines())
    assert "image-not-digest" in info.value.rules and "nothing was committed" in str(info.value)
    assert len(commits(bare)) == 1
    assert eng.current(MODEL).version == "1"  # type: ignore[union-attr]


def test_a_folder_holding_another_model_is_refused(tmp_path: Path, bare: Path) -> None:
    eng = engine(tmp_path)
    eng.rollout(request(1), Lines())
    with pytest.raises(TargetError, match=f"holds model {MODEL}, not fraud-model"):
        eng.rollout(request(1, model="fraud-model"), Lines())
    assert len(commits(bare)) == 1
    assert eng.current("fraud-model") is None


def test_a_push_that_loses_a_race_lands_on_the_winner(tmp_path: Path, bare: Path) -> None:
    """Another push lands between our clone and our push: ours is rejected by git, retried on a
    fresh clone of the winner's commit, and both are in the history (nothing forced)."""
    eng = engine(tmp_path)
    other = engine(tmp_path)
    eng.rollout(request(1), Lines())
    real_write = eng._write
    raced = threading.Event()

    def write_then_lose(co: Any, files: dict[str, str]) -> None:
        if not raced.is_set():
            raced.set()
            other.rollout(request(2), Lines())  # lands first
        real_write(co, files)

    eng._write = write_then_lose  # type: ignore[method-assign]
    progress = Lines()
    result = eng.rollout(request(3), progress)
    assert any("lost a race" in line for line in progress.lines)
    history = [trailers(message(bare, sha))["Mlplat-Version"] for sha in commits(bare)]
    assert history == ["3", "2", "1"]
    assert trailers(message(bare))["Mlplat-Previous"] == "2"
    assert result.deployed is not None and result.deployed.version == "3"


def test_kserve_and_files_mlplat_does_not_own(tmp_path: Path, bare: Path) -> None:
    kserve = engine(tmp_path, extra='kserve = true\nnamespace = "ml"')
    kserve.rollout(request(1), Lines())
    folder = checkout(bare, tmp_path / "c")
    docs = manifests(folder)
    assert sorted(docs) == ["inferenceservice.yaml"]
    isvc = docs["inferenceservice.yaml"]
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1" and isvc["metadata"]["namespace"] == "ml"
    assert findings([isvc], "1.33") == []
    # someone adds their own file beside ours; then the target goes back to plain Deployments
    (folder / "kustomization.yaml").write_text("resources: []\n")
    git("add", ".", cwd=tmp_path / "c")
    git(
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t",
        "commit",
        "--quiet",
        "-m",
        "kustomize",
        cwd=tmp_path / "c",
    )
    git("push", "--quiet", cwd=tmp_path / "c")
    engine(tmp_path).rollout(request(2), Lines())
    folder = checkout(bare, tmp_path / "c")
    assert sorted(p.name for p in folder.iterdir()) == [
        "deployment.yaml",
        "kustomization.yaml",
        "service.yaml",
    ]


def test_a_path_through_a_symlink_is_refused(tmp_path: Path, bare: Path) -> None:
    seed = tmp_path / "seed"
    git("clone", "--quiet", str(bare), str(seed))
    (seed / "models").symlink_to(tmp_path)  # would lead the write out of the clone
    git("add", ".", cwd=seed)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "-m", "link", cwd=seed)
    git("push", "--quiet", "origin", "HEAD:main", cwd=seed)
    with pytest.raises(TargetError, match="symbolic link"):
        engine(tmp_path).rollout(request(1), Lines())
    assert not (tmp_path / "churn").exists()
    assert len(commits(bare)) == 1


def test_a_branch_of_its_own(tmp_path: Path, bare: Path) -> None:
    eng = engine(tmp_path, extra='branch = "deploy/prod"')
    result: RolloutResult = eng.rollout(request(1), Lines())
    assert result.deployed is not None and result.deployed.spec["branch"] == "deploy/prod"
    assert commits(bare) == []  # main untouched
    assert "mlplat push" in git("--git-dir", str(bare), "log", "-1", "--format=%s", "deploy/prod")


def _files(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(folder.glob("*.yaml"))}


def test_plan_renders_and_checks_without_a_repository(tmp_path: Path) -> None:
    eng = engine(tmp_path, repo="../not-there")
    files = eng.plan(request(1))
    assert sorted(files) == ["deployment.yaml", "service.yaml"]
    assert files == km.files(
        km.render(
            km.ManifestSpec.for_target(
                eng._target,
                MODEL,
                "1",
                bundle(1),
                request(1).image,  # type: ignore[arg-type]
            )
        )
    )
    assert not (tmp_path / "not-there").exists()


def test_the_deadline_bounds_the_push(tmp_path: Path, bare: Path) -> None:
    eng = engine(tmp_path)
    late = RolloutRequest(**{**request(1).__dict__, "deadline_s": 0.0})
    with pytest.raises(TargetError, match="deadline passed before git could"):
        eng.rollout(late, Lines())
    assert commits(bare) == []
    eng.rollout(request(1), Lines())  # the next call has its own deadline
    assert len(commits(bare)) == 1


def test_a_token_reaches_git_through_its_environment_only(tmp_path: Path) -> None:
    from mlplat_tui.push.credentials import Credentials

    proj = project(tmp_path, repo="https://127.0.0.1:1/gitops.git")
    target = proj.config.targets["k8s"]
    assert isinstance(target, GitopsK8sTarget)
    secret = "s3cr3t-token-value-0123456789"
    eng = GitopsEngine(proj, "k8s", target, Credentials(username=None, secret=secret))
    env = eng._env()
    assert (env["GIT_CONFIG_KEY_0"], env["GIT_CONFIG_VALUE_0"]) == (
        "http.extraHeader",
        f"Authorization: Bearer {secret}",
    )
    assert env["GIT_TERMINAL_PROMPT"] == "0"
    with pytest.raises(TargetError) as info:
        eng.check_access()  # nothing listens on port 1: git's refusal, without the secret
    assert "could not reach the repository" in str(info.value) and secret not in str(info.value)
    basic = GitopsEngine(proj, "k8s", target, Credentials(username="ci", secret=secret))._env()
    assert basic["GIT_CONFIG_VALUE_0"].startswith("Authorization: Basic ")
    # a local repository never gets the header
    local = engine(tmp_path)
    assert "GIT_CONFIG_KEY_0" not in local._env()
