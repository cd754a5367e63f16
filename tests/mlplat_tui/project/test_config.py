"""``mlplat.toml`` parsing: a valid file in full, and every malformed case names file, key and expectation."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlplat_runtime.errors import ConfigError, UsageError
from mlplat_tui.project.config import CONFIG_NAME, Threshold, load_project, parse_config

REPO = Path(__file__).resolve().parents[3]

FULL = """
[project]
name = "churn"

[train]
command = "python train.py --fast"
watch = ["*.py", "data/**"]
ignore = [".mlplat/**", "**/__pycache__/**"]
timeout_s = 120
preload = ["sklearn"]

[data]
paths = ["data/churn.csv"]

[model]
name = "churn-classifier"

[gates]
"metrics.roc_auc" = ">= 0.85"
"latency.p95_ms" = "<= 5"
"size_mb" = "<= 50"
no_regression = { metric = "roc_auc", tolerance = 0.01 }

[stack]
port_base = 9100
gpu = "off"

[targets.prod]
kind = "swarm"
registry = "https://mlflow.internal:5000"
docker_host = "tcp://swarm-manager:2376"
replicas = 2
"""

MINIMAL = '[project]\nname = "p"\n[model]\nname = "m"\n'


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / CONFIG_NAME).write_text(text, encoding="utf-8")
    return tmp_path / CONFIG_NAME


def test_full_file_parses_into_typed_sections(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    project = load_project(tmp_path)
    cfg = project.config
    assert project.name == "churn"
    assert project.root == tmp_path.resolve()
    assert project.config_path == path.resolve()
    assert project.state_dir == tmp_path.resolve() / ".mlplat"
    assert cfg.train.command == "python train.py --fast"
    assert cfg.train.timeout_s == 120.0
    assert cfg.train.preload == ("sklearn",)
    assert cfg.data.paths == ("data/churn.csv",)
    assert cfg.model.name == "churn-classifier"
    assert cfg.gates.thresholds == {
        "metrics.roc_auc": Threshold(op=">=", value=0.85),
        "latency.p95_ms": Threshold(op="<=", value=5),
        "size_mb": Threshold(op="<=", value=50),
    }
    assert cfg.gates.no_regression is not None
    assert (cfg.gates.no_regression.metric, cfg.gates.no_regression.tolerance) == ("roc_auc", 0.01)
    assert (cfg.stack.port_base, cfg.stack.gpu, cfg.stack.backend) == (9100, "off", "local")
    assert cfg.targets["prod"].kind == "swarm"
    assert cfg.targets["prod"].replicas == 2


def test_defaults_fill_a_minimal_file() -> None:
    cfg = parse_config(MINIMAL)
    assert cfg.train.command == "python train.py"
    assert cfg.data.paths == ()
    assert cfg.gates.thresholds == {}
    assert cfg.gates.no_regression is None
    assert cfg.stack.port_base == 7800
    assert cfg.targets == {}


def test_threshold_holds_and_prints() -> None:
    t = parse_config(MINIMAL + '[gates]\n"metrics.acc" = ">= 0.9"\n"size_mb" = "< 1e2"\n').gates
    acc, size = t.thresholds["metrics.acc"], t.thresholds["size_mb"]
    assert acc.holds(0.9) and not acc.holds(0.89)
    assert size.holds(99.9) and not size.holds(100)
    assert str(acc) == ">= 0.9"
    assert str(size) == "< 100"


def test_unquoted_dotted_gate_keys_read_as_the_quoted_form() -> None:
    quoted = parse_config(MINIMAL + '[gates]\n"metrics.roc_auc" = ">= 0.85"\n"latency.p95_ms" = "<= 5"\n')
    unquoted = parse_config(MINIMAL + '[gates]\nmetrics.roc_auc = ">= 0.85"\nlatency.p95_ms = "<= 5"\n')
    assert unquoted.gates == quoted.gates
    assert set(unquoted.gates.thresholds) == {"metrics.roc_auc", "latency.p95_ms"}


@pytest.mark.parametrize(
    ("raw", "value"), [(">= .85", 0.85), ("<=5.", 5.0), ("> +1e+2", 100.0), ("< -2", -2.0)]
)
def test_threshold_number_forms(raw: str, value: float) -> None:
    cfg = parse_config(MINIMAL + f'[gates]\n"metrics.x" = "{raw}"\n')
    assert cfg.gates.thresholds["metrics.x"].value == value


def test_config_is_frozen() -> None:
    cfg = parse_config(MINIMAL)
    with pytest.raises(ValueError):
        cfg.project.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        pytest.param('[project\nname = "x"', "(syntax)", "valid TOML", id="bad-toml"),
        pytest.param('[model]\nname = "m"\n', "project", "present", id="missing-project"),
        pytest.param('[project]\nname = "p"\n', "model", "present", id="missing-model"),
        pytest.param(
            MINIMAL + '[gates]\n"metrics.auc" = "at least 0.8"\n',
            "gates.metrics.auc",
            ">= 0.85",
            id="bad-threshold",
        ),
        pytest.param(
            MINIMAL + '[gates]\n"size_mb" = 50\n', "gates.size_mb", ">= 0.85", id="threshold-not-a-string"
        ),
        pytest.param(
            MINIMAL + '[gates]\n"accuracy" = ">= 0.8"\n',
            "gates.accuracy",
            "metrics.<name>",
            id="unknown-gate",
        ),
        pytest.param(
            MINIMAL + '[gates]\n"metrics." = ">= 0.8"\n',
            "gates.metrics.",
            "metrics.<name>",
            id="metric-without-name",
        ),
        pytest.param(
            MINIMAL + '[gates]\nmetrics.auc = "high"\n',
            "gates.metrics.auc",
            ">= 0.85",
            id="unquoted-bad-threshold",
        ),
        pytest.param(
            MINIMAL + "[train]\ncomand = 'python t.py'\n", "train.comand", "no such key", id="unknown-key"
        ),
        pytest.param("colour = 'blue'\n" + MINIMAL, "colour", "no such key", id="unknown-top-level-key"),
        pytest.param(
            MINIMAL + "[stack]\nport_base = 'high'\n", "stack.port_base", "integer", id="wrong-type"
        ),
        pytest.param(
            MINIMAL + "[stack]\nport_base = 80\n", "stack.port_base", "greater than", id="out-of-range"
        ),
        pytest.param(MINIMAL + "[train]\nwatch = '*.py'\n", "train.watch", "tuple", id="string-not-list"),
        pytest.param(
            '[project]\nname = "My Project"\n[model]\nname = "m"\n',
            "project.name",
            "lowercase",
            id="bad-name",
        ),
        pytest.param(
            MINIMAL + "[gates]\nno_regression = { tolerance = 0.1 }\n",
            "gates.no_regression.metric",
            "present",
            id="no-regression-without-metric",
        ),
        pytest.param(
            MINIMAL + '[targets.prod]\nkind = "ftp"\n', "targets.prod.kind", "swarm", id="bad-target-kind"
        ),
        pytest.param('gates = "strict"\n' + MINIMAL, "gates", "table", id="gates-not-a-table"),
    ],
)
def test_malformed_config_names_file_key_and_expectation(
    tmp_path: Path, text: str, key: str, expected: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_project(tmp_path)
    err = info.value
    assert err.file == str(path.resolve())
    assert err.key == key
    assert expected in err.expected
    assert str(path.resolve()) in str(err)
    assert f"'{key}'" in str(err)
    assert isinstance(err, UsageError) and err.exit_code == 2


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_project(tmp_path)
    assert CONFIG_NAME in str(info.value)


@pytest.mark.parametrize("sample", ["churn", "digits"])
def test_sample_projects_parse(sample: str) -> None:
    project = load_project(REPO / "sample_projects" / sample)
    assert project.name == sample
    assert project.config.gates.no_regression is not None
