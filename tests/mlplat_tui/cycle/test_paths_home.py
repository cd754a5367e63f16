"""The names below ``.mlplat/`` have one home, ``mlplat_tui/project/paths.py``: two copies of the
layout had disagreed before (``down --volumes`` deleted a folder nothing wrote to). The cycle's
bundle folder and the metadata store's file name were rebuilt elsewhere; this keeps them home."""

from __future__ import annotations

import re
from pathlib import Path

import mlplat_tui
from mlplat_tui.project.paths import METADATA_DB, StateLayout
from mlplat_tui.stack.base import Service
from mlplat_tui.stack.services import SPECS, Placement, command

PACKAGE = Path(mlplat_tui.__file__).parent
HOME = PACKAGE / "project" / "paths.py"
# a bundle folder's name (<model>-v<N>) and the store's file name, spelled out
REBUILT = re.compile(r"""-v\{|["']metadata\.duckdb["']""")


def test_bundle_and_store_names_are_spelled_only_in_the_paths_module() -> None:
    found = [
        f"{path.relative_to(PACKAGE)}:{n}: {line.strip()}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != HOME
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if REBUILT.search(line)
    ]
    assert not found, "\n".join(found)


def test_the_metadata_service_is_started_on_the_layouts_file(tmp_path: Path) -> None:
    layout = StateLayout.of(tmp_path)
    spec = SPECS[Service.METADATA]
    at = Placement(
        python=("python",),
        host="127.0.0.1",
        admin_host="127.0.0.1",
        ports=dict.fromkeys(("tracker", "metadata", "serving", "admin"), 7801),
        data={spec.data: str(layout.metadata_db.parent)},
        admin_token_file=str(layout.admin_token),
    )
    argv = command(spec, at)
    assert argv[argv.index("--db") + 1] == str(layout.metadata_db)
    assert layout.metadata_db.name == METADATA_DB
