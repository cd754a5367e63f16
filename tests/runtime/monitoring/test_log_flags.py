"""``[monitor]`` in mlplat.toml -> the stack's serving command -> serving's own parser: one chain."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlplat_runtime.errors import ConfigError
from mlplat_runtime.serving.__main__ import parse_args
from mlplat_tui.project.config import parse_config
from mlplat_tui.stack.base import Service
from mlplat_tui.stack.services import SPECS, Placement, command

BASE = '[project]\nname = "p"\n[model]\nname = "m"\n'


def placement(flags: tuple[str, ...] | None) -> Placement:
    return Placement(
        python=("python",),
        host="127.0.0.1",
        admin_host="127.0.0.1",
        ports={"tracker": 1, "metadata": 2, "serving": 3, "admin": 4},
        data={"monitoring": "/state/monitoring"},
        admin_token_file="/t",
        serving_log_flags=flags,
    )


def test_monitor_section_reaches_serving_as_a_log_config() -> None:
    cfg = parse_config(
        BASE + '[monitor]\nbudget = 50\nretention_hours = 2.5\nexclude = ["email", "name"]\n'
        'features = { contract = "categorical" }\n'
    )
    argv = command(SPECS[Service.SERVING], placement(cfg.monitor.serving_log_flags()))
    assert argv[argv.index("--log-dir") + 1] == "/state/monitoring/predictions"
    log = parse_args(argv[3:]).log
    assert log is not None and log.root == Path("/state/monitoring/predictions")
    assert (log.budget, log.retention_hours, log.exclude) == (50, 2.5, frozenset({"email", "name"}))
    assert cfg.monitor.features == {"contract": "categorical"}


def test_log_off_and_defaults() -> None:
    off = parse_config(BASE + "[monitor]\nlog = false\n")
    assert "--log-dir" not in command(SPECS[Service.SERVING], placement(off.monitor.serving_log_flags()))
    default = parse_config(BASE).monitor
    log = parse_args(command(SPECS[Service.SERVING], placement(default.serving_log_flags()))[3:]).log
    assert log is not None and log.budget == 1000 and log.retention_mb == 1024


def test_bad_monitor_keys_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"monitor\.budget"):
        parse_config(BASE + "[monitor]\nbudget = -1\n")
    with pytest.raises(ConfigError, match=r"monitor\.features\.x"):
        parse_config(BASE + '[monitor]\nfeatures = { x = "ordinal" }\n')
