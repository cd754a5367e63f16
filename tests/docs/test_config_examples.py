"""Every ```toml block of docs/config.md parses through the real config loader (``load_project``
on an ``mlplat.toml`` in a temp folder), so the examples a user copies stay true. A block that
shows one part of the file (no ``[project]`` or ``[model]``) gets the two required tables."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mlplat_tui.project.config import load_project

DOC = Path(__file__).resolve().parents[2] / "docs" / "config.md"
BLOCKS = re.findall(r"^```toml\n(.*?)^```", DOC.read_text(), flags=re.S | re.M)
REQUIRED = {"project": '[project]\nname = "example"\n', "model": '[model]\nname = "example"\n'}


def test_the_page_has_toml_examples() -> None:
    assert len(BLOCKS) >= 3  # the full file, targets, [monitor]


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_each_example_parses(tmp_path: Path, block: str) -> None:
    missing = "".join(t for name, t in REQUIRED.items() if not re.search(rf"^\[{name}\]", block, re.M))
    # top-level keys (policy = ...) must come before any table: keep the block first
    (tmp_path / "mlplat.toml").write_text(block + "\n" + missing if missing else block)
    project = load_project(tmp_path)
    assert project.config.project.name


def test_the_monitor_example_shows_the_defaults(tmp_path: Path) -> None:
    from mlplat_tui.project.config import MonitorSection

    (block,) = [b for b in BLOCKS if b.lstrip().startswith("[monitor]")]
    (tmp_path / "mlplat.toml").write_text(block + "\n" + "".join(REQUIRED.values()))
    shown = load_project(tmp_path).config.monitor
    defaults = MonitorSection()
    for key in MonitorSection.model_fields:
        if key not in ("exclude", "features"):  # the example names some; the default is none
            assert getattr(shown, key) == getattr(defaults, key), key
