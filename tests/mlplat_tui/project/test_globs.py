"""One glob dialect for ``[train] watch``, ``ignore`` and ``[data] paths`` (``project/globs.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlplat_tui.devloop.watcher import PathFilter
from mlplat_tui.project.config import load_project
from mlplat_tui.project.globs import glob_match, matching_files, project_files
from mlplat_tui.project.lineage import data_hashes

FILES = ("x.csv", "data/a.csv", "data/raw/2024/b.csv", "data/notes.txt", "src/train.py")


def _project(root: Path, pattern: str) -> Path:
    for rel in (*FILES, ".mlplat/runs/r1/out/leak.csv", ".venv/lib/site.csv"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
    (root / "mlplat.toml").write_text(
        f'[project]\nname = "p"\n[model]\nname = "m"\n'
        f'[train]\nwatch = ["{pattern}"]\n[data]\npaths = ["{pattern}"]\n'
    )
    return root


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        # Bug (issue 9): `*.csv` was any depth for `watch` and top level only for `[data] paths`.
        ("*.csv", {"x.csv", "data/a.csv", "data/raw/2024/b.csv"}),
        ("/*.csv", {"x.csv"}),
        ("data/*.csv", {"data/a.csv"}),
        ("data/**/*.csv", {"data/a.csv", "data/raw/2024/b.csv"}),
        ("data", {"data/a.csv", "data/raw/2024/b.csv", "data/notes.txt"}),
        ("data/raw/", {"data/raw/2024/b.csv"}),
    ],
)
def test_watch_and_data_paths_agree(tmp_path: Path, pattern: str, expected: set[str]) -> None:
    project = load_project(_project(tmp_path, pattern))
    hashed = set(data_hashes(project))
    watched = {rel for rel in FILES if PathFilter.from_project(project).matches(rel)}
    assert hashed == expected
    assert watched == expected
    # a scan of the folder finds the same files (and mlplat.toml, which always counts)
    assert set(PathFilter.from_project(project).scan(tmp_path)) == expected | {"mlplat.toml"}


def test_the_platforms_state_and_environments_are_never_project_files(tmp_path: Path) -> None:
    _project(tmp_path, "*.csv")
    files = list(project_files(tmp_path))
    assert not any(f.startswith((".mlplat/", ".venv/")) for f in files)
    assert "data/a.csv" in files and len(files) == len(set(files))
    assert matching_files(tmp_path, "**/leak.csv") == []


def test_negation_and_comments_follow_gitignore() -> None:
    assert glob_match("data/a.csv", "data/**")
    spec = ("data/**", "!data/raw/**")
    from mlplat_tui.project.globs import matches

    assert matches("data/a.csv", spec) and not matches("data/raw/b.csv", spec)
    assert not glob_match("#x#", "#x#")  # a line starting with # is a comment
    assert glob_match("#x#", "\\#x#")
