from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mlplat_runtime.metadata.store import MetadataStore


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "stack" / "metadata.duckdb"


@pytest.fixture
def store(db_path: Path) -> Iterator[MetadataStore]:
    with MetadataStore(db_path) as opened:
        yield opened
