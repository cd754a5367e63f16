"""Hostile or careless ``mlplat.toml`` files: each is a ``ConfigError`` naming the file and key
(or a warning), never a traceback or a silent acceptance."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlplat_runtime.errors import ConfigError
from mlplat_tui.project.config import load_project, parse_config

BASE = '[project]\nname = "p"\n[model]\nname = "m"\n'


@pytest.mark.parametrize("value", ["0", "-5", "nan", "inf", "-inf"])
def test_a_timeout_that_is_not_a_positive_finite_number_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match=r"train\.timeout_s"):
        parse_config(BASE + f"[train]\ntimeout_s = {value}\n")
    assert parse_config(BASE + "[train]\ntimeout_s = 30\n").train.timeout_s == 30


def test_listening_on_every_interface_warns() -> None:
    with pytest.warns(UserWarning, match="every network interface"):
        parse_config(BASE + '[stack]\nhost = "0.0.0.0"\n')


def test_a_binary_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "mlplat.toml").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00binary")
    with pytest.raises(ConfigError, match=r"mlplat.toml: key '\(file\)': expected UTF-8 text"):
        load_project(tmp_path)
    (tmp_path / "mlplat.toml").write_bytes(BASE.encode() + b"x = \x00\n")
    with pytest.raises(ConfigError, match="valid TOML"):
        load_project(tmp_path)


def test_deeply_nested_toml_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="nested"):
        parse_config(BASE + "x = " + "[" * 100_000 + "]" * 100_000 + "\n")
