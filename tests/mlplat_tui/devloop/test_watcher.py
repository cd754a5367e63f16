"""Which paths count as a change, and the real watchdog observer reporting them."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from mlplat_tui.devloop.watcher import PathFilter, ProjectWatcher, glob_match
from mlplat_tui.project.config import parse_config


@pytest.mark.parametrize(
    ("path", "pattern", "expected"),
    [
        ("train.py", "*.py", True),
        ("src/features.py", "*.py", True),  # a bare name pattern matches at any depth
        ("train.pyc", "*.py", False),
        ("data/churn.csv", "data/**", True),
        ("data/raw/2024/part.csv", "data/**", True),
        ("other/data/x.csv", "data/**", False),  # a pattern with a slash is anchored at the root
        ("data.csv", "data/**", False),
        ("a/b/__pycache__/m.pyc", "**/__pycache__/**", True),
        ("__pycache__/m.pyc", "**/__pycache__/**", True),
        ("src/pkg/mod.py", "src/**/*.py", True),
        ("src/mod.py", "src/**/*.py", True),
        ("src/mod.txt", "src/**/*.py", False),
        ("src/a/mod.py", "src/*.py", False),  # * does not cross folders
        ("out/model.onnx", "out", True),  # a folder covers what is inside
        ("out/model.onnx", "out/", True),
        ("x1.py", "x?.py", True),
        ("x12.py", "x?.py", False),
        ("v2.py", "v[0-9].py", True),
        ("va.py", "v[!a].py", False),
        ("train.py", "./train.py", True),
    ],
)
def test_glob_match(path: str, pattern: str, expected: bool) -> None:
    assert glob_match(path, pattern) is expected


def _filter(toml: str = "") -> PathFilter:
    cfg = parse_config('[project]\nname = "p"\n[model]\nname = "m"\n' + toml)

    class _P:
        config = cfg

    return PathFilter.from_project(_P())


def test_default_filter_watches_code_and_data() -> None:
    f = _filter()
    assert f.matches("train.py")
    assert f.matches("lib/features.py")
    assert f.matches("data/churn.csv")
    assert f.matches("mlplat.toml")  # config edits always count
    assert not f.matches("README.md")
    assert not f.matches("../outside.py")


@pytest.mark.parametrize(
    "path",
    [
        ".train.py.swp",
        ".train.py.swx",
        "train.py~",
        ".#train.py",
        "4913",
        "train.py.tmp",
        ".~lock.data.csv#",
        "#train.py#",
        ".mlplat/runs/x/out/model.py",
        "__pycache__/train.cpython-311.pyc",
        "pkg/__pycache__/m.py",
        ".git/hooks/pre-commit.py",
        ".venv/lib/site.py",
        "mlruns/0/meta.py",
        "data/.churn.csv.swp",
    ],
)
def test_editor_temp_files_and_platform_dirs_never_count(path: str) -> None:
    f = _filter('[train]\nwatch = ["**"]\nignore = []\n')
    assert f.matches("anything.txt")  # the watch list itself is wide open
    assert not f.matches(path)


def test_ignore_wins_over_watch() -> None:
    f = _filter('[train]\nwatch = ["*.py", "data/**"]\nignore = ["data/cache/**", "scratch_*.py"]\n')
    assert f.matches("data/churn.csv")
    assert not f.matches("data/cache/blob.csv")
    assert not f.matches("scratch_try.py")
    assert f.matches("train.py")


def test_scan_lists_matching_files_and_prunes_ignored_dirs(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.csv").write_text("1")
    (tmp_path / ".mlplat" / "runs").mkdir(parents=True)
    (tmp_path / ".mlplat" / "runs" / "x.py").write_text("")
    (tmp_path / "train.py").write_text("")
    (tmp_path / "notes.md").write_text("")
    assert sorted(_filter().scan(tmp_path)) == ["data/a.csv", "train.py"]


class _Collector:
    def __init__(self) -> None:
        self.paths: list[str] = []
        self.cond = threading.Condition()

    def __call__(self, rel: str) -> None:
        with self.cond:
            self.paths.append(rel)
            self.cond.notify_all()

    def wait_for(self, rel: str, timeout: float = 5.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: rel in self.paths, timeout)


def test_watcher_reports_saves_not_reads_or_temp_files(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("x = 1\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "d.csv").write_text("a\n1\n")
    seen = _Collector()
    watcher = ProjectWatcher(tmp_path, _filter(), seen)
    watcher.start()
    try:
        # reads (open/close without write) are not changes: the training run reads its inputs
        (tmp_path / "train.py").read_text()
        (tmp_path / "data" / "d.csv").read_bytes()
        # noise that must never count
        (tmp_path / ".train.py.swp").write_text("swap")
        (tmp_path / ".mlplat").mkdir()
        (tmp_path / ".mlplat" / "log.py").write_text("x")
        (tmp_path / "README.md").write_text("docs")
        # an atomic save (write a temp file, rename it over the original), like vim and VS Code
        tmp = tmp_path / "4913"
        tmp.write_text("x = 2\n")
        tmp.replace(tmp_path / "train.py")
        (tmp_path / "data" / "d.csv").write_text("a\n2\n")
        assert seen.wait_for("train.py")
        assert seen.wait_for("data/d.csv")
        time.sleep(0.3)  # let any stray event arrive before checking there was none
        assert set(seen.paths) == {"train.py", "data/d.csv"}, seen.paths
    finally:
        watcher.stop()
    assert not watcher.running


def test_watcher_follows_new_folders_but_never_watches_platform_state(tmp_path: Path) -> None:
    (tmp_path / ".mlplat" / "runs").mkdir(parents=True)
    (tmp_path / "data").mkdir()
    seen = _Collector()
    watcher = ProjectWatcher(tmp_path, _filter('[train]\nwatch = ["*.py", "data/**", "src/**"]\n'), seen)
    watcher.start()
    try:
        assert watcher.watched == ("data",)
        (tmp_path / "src" / "pkg").mkdir(parents=True)
        (tmp_path / "src" / "pkg" / "model.py").write_text("x = 1\n")
        assert seen.wait_for("src/pkg/model.py")
        assert "src" in watcher.watched
        # a folder that arrives whole (moved in) is reported with its files
        staged = tmp_path.parent / f"{tmp_path.name}-staged"
        (staged / "raw").mkdir(parents=True)
        (staged / "raw" / "part.csv").write_text("a\n")
        staged.replace(tmp_path / "data" / "batch")
        assert seen.wait_for("data/batch/raw/part.csv")
        (tmp_path / ".mlplat" / "runs" / "r1").mkdir()
        (tmp_path / ".mlplat" / "runs" / "r1" / "train.py").write_text("")
        time.sleep(0.3)
        assert not any(p.startswith(".mlplat") for p in seen.paths)
        assert ".mlplat" not in watcher.watched
    finally:
        watcher.stop()
