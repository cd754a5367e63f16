"""What `mlplat sql` tells a user about the tables: the refusal's hint and `mlplat sql --help`
name every table the store answers (the real store, a DuckDB file) and the log's two views."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlplat_runtime.errors import MlplatError
from mlplat_runtime.metadata.store import MetadataStore
from mlplat_tui.cli import cli

STORE_TABLES = ["runs", "bundles", "gate_results", "deployments", "events"]
MONITOR_TABLES = ["profiles", "traffic", "drift", "alerts"]
LOG_VIEWS = ["predictions", "feedback"]


def test_the_refusal_hint_names_every_table_and_each_is_there(tmp_path: Path) -> None:
    store = MetadataStore(tmp_path / "meta.duckdb")
    try:
        with pytest.raises(MlplatError) as info:
            store.sql("SELEC nonsense")
        hint = info.value.hint or ""
        named = set(re.findall(r"[a-z_]+", hint))
        for table in STORE_TABLES + MONITOR_TABLES + LOG_VIEWS:
            assert table in named, f"{table} missing from the hint: {hint}"
        for table in STORE_TABLES + MONITOR_TABLES:  # the store's own: each answers DESCRIBE
            assert store.sql(f"DESCRIBE {table}").rows, table
    finally:
        store.close()


def test_sql_help_lists_the_monitoring_tables() -> None:
    result = CliRunner().invoke(cli, ["sql", "--help"])
    assert result.exit_code == 0, result.output
    for table in STORE_TABLES + MONITOR_TABLES + LOG_VIEWS:
        assert re.search(rf"\b{table}\b", result.output), f"{table} missing from:\n{result.output}"
