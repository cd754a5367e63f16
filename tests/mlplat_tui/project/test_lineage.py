"""Lineage against a real git repository in tmp_path: commit, dirty hash, data hashes."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from mlplat_runtime.bundle.manifest import Lineage
from mlplat_runtime.errors import ConfigError
from mlplat_tui.project.config import load_project
from mlplat_tui.project.lineage import build_lineage, code_version, data_hashes, hash_file

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}


@pytest.fixture(autouse=True)
def _isolated_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Never see a repository above tmp_path, nor the user's git config.
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    monkeypatch.setenv("HOME", str(tmp_path))
    for key, value in GIT_ENV.items():
        monkeypatch.setenv(key, value)


def git(root: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True)
    return out.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    (root / "train.py").write_text("C = 1.0\n")
    (root / ".gitignore").write_text("out/\n")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "first")
    return root


def test_not_a_repository(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("x = 1\n")
    assert code_version(tmp_path) == (None, None)


def test_no_git_binary(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "no-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert code_version(repo) == (None, None)


def test_clean_tree_has_commit_and_no_dirty_hash(repo: Path) -> None:
    commit, dirty = code_version(repo)
    assert commit == git(repo, "rev-parse", "HEAD")
    assert len(commit) == 40
    assert dirty is None


def test_edits_change_the_dirty_hash_and_reverting_cleans_it(repo: Path) -> None:
    commit, _ = code_version(repo)
    (repo / "train.py").write_text("C = 0.5\n")
    c1, d1 = code_version(repo)
    assert c1 == commit
    assert d1 is not None and d1.startswith("sha256:") and len(d1) == len("sha256:") + 64
    assert code_version(repo) == (c1, d1)  # stable while nothing changes

    (repo / "train.py").write_text("C = 0.25\n")
    _, d2 = code_version(repo)
    assert d2 is not None and d2 != d1

    git(repo, "add", "train.py")  # staging is still uncommitted: same content, same hash
    assert code_version(repo)[1] == d2

    (repo / "train.py").write_text("C = 1.0\n")
    git(repo, "add", "train.py")
    assert code_version(repo) == (commit, None)


def test_deleting_a_tracked_file_is_dirty(repo: Path) -> None:
    (repo / "train.py").unlink()
    assert code_version(repo)[1] is not None


def test_untracked_files_count_ignored_and_state_files_do_not(repo: Path) -> None:
    (repo / "out").mkdir()
    (repo / "out" / "model.onnx").write_bytes(b"ignored by .gitignore")
    (repo / ".mlplat" / "stack").mkdir(parents=True)
    (repo / ".mlplat" / "stack" / "serving.log").write_text("platform state, changes every run\n")
    assert code_version(repo)[1] is None

    (repo / "features.py").write_text("A = 1\n")
    _, d1 = code_version(repo)
    assert d1 is not None
    (repo / "features.py").write_text("A = 2\n")
    _, d2 = code_version(repo)
    assert d2 is not None and d2 != d1
    (repo / "features.py").rename(repo / "other.py")  # the path is part of the hash too
    _, d3 = code_version(repo)
    assert d3 not in (None, d1, d2)


def test_project_in_a_subfolder_ignores_changes_elsewhere(repo: Path) -> None:
    sub = repo / "projects" / "churn"
    sub.mkdir(parents=True)
    (sub / "train.py").write_text("print(1)\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "project")
    (repo / "train.py").write_text("edited outside the project\n")
    (repo / "notes.txt").write_text("untracked outside the project\n")
    commit, dirty = code_version(sub)
    assert commit == git(repo, "rev-parse", "HEAD")
    assert dirty is None
    (sub / "train.py").write_text("print(2)\n")
    assert code_version(sub)[1] is not None


def test_repository_without_commits(tmp_path: Path) -> None:
    root = tmp_path / "fresh"
    root.mkdir()
    git(root, "init", "-q")
    assert code_version(root) == (None, None)
    (root / "train.py").write_text("x = 1\n")
    commit, dirty = code_version(root)
    assert commit is None and dirty is not None


def test_hash_file_streams_large_files(tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 17)  # more than one read chunk
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    assert hash_file(path) == "sha256:" + hashlib.sha256(data).hexdigest()
    assert hash_file(str(path)) == hash_file(path)


def _project(root: Path, paths: list[str], command: str = "python train.py") -> Path:
    listed = ", ".join(f'"{p}"' for p in paths)
    (root / "mlplat.toml").write_text(
        f'[project]\nname = "p"\n[train]\ncommand = "{command}"\n'
        f'[data]\npaths = [{listed}]\n[model]\nname = "m"\n'
    )
    return root


def test_data_hashes_paths_globs_and_folders(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "parts").mkdir(parents=True)
    (data / "extra" / "deep").mkdir(parents=True)
    (data / "main.csv").write_text("a,b\n1,2\n")
    (data / "parts" / "p1.csv").write_text("1\n")
    (data / "parts" / "p2.csv").write_text("2\n")
    (data / "parts" / "skip.txt").write_text("not matched\n")
    (data / "extra" / "deep" / "x.bin").write_bytes(b"\x00\x01")
    project = load_project(_project(tmp_path, ["data/main.csv", "data/parts/*.csv", "data/extra"]))
    hashes = data_hashes(project)
    assert list(hashes) == [
        "data/extra/deep/x.bin",
        "data/main.csv",
        "data/parts/p1.csv",
        "data/parts/p2.csv",
    ]
    assert hashes["data/main.csv"] == "sha256:" + hashlib.sha256(b"a,b\n1,2\n").hexdigest()
    (data / "parts" / "p2.csv").write_text("changed\n")
    assert data_hashes(project)["data/parts/p2.csv"] != hashes["data/parts/p2.csv"]


def test_recursive_glob(tmp_path: Path) -> None:
    (tmp_path / "data" / "a" / "b").mkdir(parents=True)
    (tmp_path / "data" / "a" / "b" / "x.csv").write_text("x\n")
    (tmp_path / "data" / "y.csv").write_text("y\n")
    project = load_project(_project(tmp_path, ["data/**/*.csv"]))
    assert sorted(data_hashes(project)) == ["data/a/b/x.csv", "data/y.csv"]


@pytest.mark.parametrize("missing", ["data/nope.csv", "data/*.parquet"])
def test_missing_data_path_is_a_config_error(tmp_path: Path, missing: str) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.csv").write_text("a\n")
    project = load_project(_project(tmp_path, ["data/a.csv", missing]))
    with pytest.raises(ConfigError) as info:
        data_hashes(project)
    assert info.value.key == "data.paths"
    assert missing in str(info.value)
    assert "mlplat.toml" in str(info.value)


def test_build_lineage(repo: Path) -> None:
    (repo / "data").mkdir()
    (repo / "data" / "d.csv").write_text("1\n")
    project = load_project(_project(repo, ["data/d.csv"], command="python train.py --quick"))
    lineage = build_lineage(project, "run-1", "http://127.0.0.1:7800")
    assert isinstance(lineage, Lineage)
    assert lineage.run_id == "run-1"
    assert lineage.tracker_uri == "http://127.0.0.1:7800"
    assert lineage.git_commit == git(repo, "rev-parse", "HEAD")
    assert lineage.dirty_hash is not None  # mlplat.toml and data/ are not committed
    assert lineage.data_hashes == {"data/d.csv": hash_file(repo / "data" / "d.csv")}
    assert lineage.training_command == "python train.py --quick"
    assert Lineage.model_validate(lineage.model_dump()) == lineage

    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "data")
    untracked = build_lineage(project)
    assert untracked.dirty_hash is None
    assert (untracked.run_id, untracked.tracker_uri) == (None, None)
