"""Platform policy: floors, tightening, the floor winning over a looser project, errors, env."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlplat_runtime.errors import ConfigError
from mlplat_tui.gates.policy import (
    POLICY_ENV,
    at_least_as_strict,
    effective_gates,
    effective_policy,
    load_policy,
    policy_path,
)
from mlplat_tui.project.config import GatesSection, NoRegression, Project, Threshold, load_project

NO_ENV: dict[str, str] = {}


def make_project(root: Path, gates: str = "", policy: str | None = None) -> Project:
    root.mkdir(parents=True, exist_ok=True)
    top = f'policy = "{policy}"\n' if policy is not None else ""
    (root / "mlplat.toml").write_text(
        f'{top}[project]\nname = "churn"\n\n[model]\nname = "churn-classifier"\n\n[gates]\n{gates}\n',
        encoding="utf-8",
    )
    return load_project(root)


def write_policy(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body, encoding="utf-8")
    return path


FLOORS = """
[gates]
"metrics.roc_auc" = ">= 0.8"
"latency.p95_ms" = "<= 20"
"size_mb" = "<= 100"
"""


def test_no_policy_leaves_project_gates_as_written(tmp_path: Path) -> None:
    project = make_project(tmp_path, '"metrics.roc_auc" = ">= 0.7"')
    eff = effective_policy(project, NO_ENV)
    assert eff.policy is None
    assert eff.notes == {}
    assert eff.gates == project.config.gates


def test_project_may_tighten_a_floor(tmp_path: Path) -> None:
    write_policy(tmp_path / "platform" / "policy.toml", FLOORS)
    project = make_project(
        tmp_path / "p",
        '"metrics.roc_auc" = ">= 0.9"\n"latency.p95_ms" = "<= 5"\n"size_mb" = "<= 100"',
        policy="../platform/policy.toml",
    )
    eff = effective_policy(project, NO_ENV)
    assert eff.gates.thresholds["metrics.roc_auc"] == Threshold(op=">=", value=0.9)
    assert eff.gates.thresholds["latency.p95_ms"] == Threshold(op="<=", value=5)
    assert eff.gates.thresholds["size_mb"] == Threshold(op="<=", value=100)  # equal is allowed
    assert eff.notes == {}
    assert eff.policy is not None and eff.policy.path == (tmp_path / "platform" / "policy.toml").resolve()


def test_looser_project_threshold_is_replaced_by_the_floor_with_a_note(tmp_path: Path) -> None:
    write_policy(tmp_path / "policy.toml", FLOORS)
    project = make_project(
        tmp_path / "p",
        '"metrics.roc_auc" = ">= 0.7"\n"latency.p95_ms" = "<= 50"\n"size_mb" = "<= 100"',
        policy=str(tmp_path / "policy.toml"),
    )
    eff = effective_policy(project, NO_ENV)
    assert eff.gates.thresholds["metrics.roc_auc"] == Threshold(op=">=", value=0.8)
    assert eff.gates.thresholds["latency.p95_ms"] == Threshold(op="<=", value=20)
    assert eff.notes["metrics.roc_auc"] == "policy floor >= 0.8 (mlplat.toml asked >= 0.7)"
    assert eff.notes["latency.p95_ms"] == "policy floor <= 20 (mlplat.toml asked <= 50)"
    assert "size_mb" not in eff.notes


def test_gate_in_policy_but_not_in_project_is_added(tmp_path: Path) -> None:
    write_policy(tmp_path / "policy.toml", FLOORS)
    project = make_project(tmp_path / "p", "", policy="../policy.toml")
    gates = effective_gates(project, NO_ENV)
    assert isinstance(gates, GatesSection)
    assert set(gates.thresholds) == {"metrics.roc_auc", "latency.p95_ms", "size_mb"}
    notes = effective_policy(project, NO_ENV).notes
    assert notes["latency.p95_ms"] == "policy floor (not in mlplat.toml)"


@pytest.mark.parametrize(
    ("project", "floor", "ok"),
    [
        ((">=", 0.9), (">=", 0.8), True),
        ((">=", 0.8), (">=", 0.8), True),
        ((">", 0.8), (">=", 0.8), True),
        ((">=", 0.8), (">", 0.8), False),
        ((">=", 0.7), (">=", 0.8), False),
        (("<=", 5), ("<=", 20), True),
        (("<", 20), ("<=", 20), True),
        (("<=", 20), ("<", 20), False),
        (("<=", 21), ("<=", 20), False),
        (("<=", 0.9), (">=", 0.8), False),  # the other direction never satisfies a lower bound
        (("==", 0.85), (">=", 0.8), True),
        (("==", 0.75), (">=", 0.8), False),
        (("==", 1.0), ("==", 1.0), True),
        ((">=", 1.0), ("==", 1.0), False),
    ],
)
def test_at_least_as_strict(project: tuple[str, float], floor: tuple[str, float], ok: bool) -> None:
    p = Threshold(op=project[0], value=project[1])  # type: ignore[arg-type]
    f = Threshold(op=floor[0], value=floor[1])  # type: ignore[arg-type]
    assert at_least_as_strict(p, f) is ok


def test_no_regression_floor(tmp_path: Path) -> None:
    write_policy(
        tmp_path / "policy.toml",
        '[gates]\nno_regression = { metric = "roc_auc", tolerance = 0.02 }\n',
    )
    added = effective_policy(make_project(tmp_path / "a", "", policy="../policy.toml"), NO_ENV)
    assert added.gates.no_regression == NoRegression(metric="roc_auc", tolerance=0.02)
    assert added.notes["no_regression"].startswith("policy floor")

    tighter = effective_policy(
        make_project(
            tmp_path / "b", 'no_regression = { metric = "roc_auc", tolerance = 0.0 }', policy="../policy.toml"
        ),
        NO_ENV,
    )
    assert tighter.gates.no_regression == NoRegression(metric="roc_auc", tolerance=0.0)
    assert tighter.notes == {}

    looser = effective_policy(
        make_project(
            tmp_path / "c", 'no_regression = { metric = "roc_auc", tolerance = 0.1 }', policy="../policy.toml"
        ),
        NO_ENV,
    )
    assert looser.gates.no_regression == NoRegression(metric="roc_auc", tolerance=0.02)
    assert looser.notes["no_regression"] == "policy floor tolerance 0.02 (mlplat.toml asked 0.1)"

    other = effective_policy(
        make_project(
            tmp_path / "d", 'no_regression = { metric = "f1", tolerance = 0.0 }', policy="../policy.toml"
        ),
        NO_ENV,
    )
    assert other.gates.no_regression is not None and other.gates.no_regression.metric == "roc_auc"
    assert "replaces mlplat.toml's no_regression on f1" in other.notes["no_regression"]


def test_required_gate_present_via_project_or_floor(tmp_path: Path) -> None:
    write_policy(
        tmp_path / "policy.toml",
        '[gates]\n"size_mb" = "<= 100"\nrequired = ["metrics.roc_auc", "size_mb"]\n',
    )
    project = make_project(tmp_path / "p", '"metrics.roc_auc" = ">= 0.9"', policy="../policy.toml")
    gates = effective_gates(project, NO_ENV)
    assert gates.thresholds["metrics.roc_auc"] == Threshold(op=">=", value=0.9)
    assert gates.thresholds["size_mb"] == Threshold(op="<=", value=100)  # added by the floor


def test_required_gate_missing_is_an_error_naming_project_file_and_key(tmp_path: Path) -> None:
    policy = write_policy(tmp_path / "policy.toml", '[gates]\nrequired = ["metrics.f1", "no_regression"]\n')
    project = make_project(tmp_path / "p", '"metrics.f1" = ">= 0.5"', policy="../policy.toml")
    with pytest.raises(ConfigError) as info:
        effective_gates(project, NO_ENV)
    err = info.value
    assert err.file == str(project.config_path)
    assert err.key == "gates.no_regression"
    assert str(policy.resolve()) in err.expected
    assert err.hint is not None and "no_regression" in err.hint


def test_env_wins_over_config_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_policy(tmp_path / "key.toml", '[gates]\n"metrics.roc_auc" = ">= 0.6"\n')
    write_policy(tmp_path / "env" / "env.toml", '[gates]\n"metrics.roc_auc" = ">= 0.95"\n')
    project = make_project(tmp_path / "p", "", policy="../key.toml")
    assert effective_gates(project, NO_ENV).thresholds["metrics.roc_auc"].value == 0.6

    # A relative MLPLAT_POLICY is relative to the current folder, not to the project.
    monkeypatch.chdir(tmp_path / "env")
    monkeypatch.setenv(POLICY_ENV, "env.toml")
    assert policy_path(project) == (tmp_path / "env" / "env.toml").resolve()
    assert effective_gates(project).thresholds["metrics.roc_auc"].value == 0.95

    monkeypatch.setenv(POLICY_ENV, "")  # empty means unset
    assert effective_gates(project).thresholds["metrics.roc_auc"].value == 0.6


def test_missing_policy_file_names_file_and_source(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", "", policy="nope.toml")
    with pytest.raises(ConfigError) as info:
        effective_gates(project, NO_ENV)
    assert info.value.file == str((tmp_path / "p" / "nope.toml").resolve())
    assert info.value.key == "(file)"
    assert "'policy' key" in str(info.value)

    with pytest.raises(ConfigError) as info:
        effective_gates(project, {POLICY_ENV: str(tmp_path / "missing.toml")})
    assert info.value.file == str(tmp_path / "missing.toml")
    assert POLICY_ENV in str(info.value)


@pytest.mark.parametrize(
    ("body", "key", "expected_part"),
    [
        ('[gates]\n"metrics.roc_auc" = "at least 0.8"\n', "gates.metrics.roc_auc", ">= 0.85"),
        ('[gates]\n"metrics.roc_auc" = 0.8\n', "gates.metrics.roc_auc", "threshold"),
        ('[gates]\n"accuracy" = ">= 0.8"\n', "gates.accuracy", "metrics.<name>"),
        ('[gates]\nrequired = "metrics.roc_auc"\n', "gates.required", "list of gate names"),
        ('[gates]\nrequired = ["roc_auc"]\n', "gates.required", "list of gate names"),
        ("[gates]\nno_regression = { tolerance = 0.1 }\n", "gates.no_regression.metric", "present"),
        ('[gates]\nno_regression = { metric = "a", tol = 0.1 }\n', "gates.no_regression.tol", "no such key"),
        ('[gates]\nno_regression = "roc_auc"\n', "gates.no_regression", "metric ="),
        ('gates = "strict"\n', "gates", "table"),
        ('[limits]\n"size_mb" = "<= 5"\n', "limits", "[gates]"),
        ("description = 3\n", "description", "string"),
        ("[gates\n", "(syntax)", "valid TOML"),
    ],
)
def test_policy_file_errors_name_file_key_and_expectation(
    tmp_path: Path, body: str, key: str, expected_part: str
) -> None:
    path = write_policy(tmp_path / "policy.toml", body)
    with pytest.raises(ConfigError) as info:
        load_policy(path)
    err = info.value
    assert err.file == str(path)
    assert err.key == key
    assert expected_part in err.expected
    assert str(path) in str(err) and key in str(err)


def test_policy_errors_surface_through_the_project(tmp_path: Path) -> None:
    path = write_policy(tmp_path / "policy.toml", '[gates]\n"size_mb" = "tiny"\n')
    project = make_project(tmp_path / "p", "", policy="../policy.toml")
    with pytest.raises(ConfigError) as info:
        effective_gates(project, NO_ENV)
    assert info.value.file == str(path.resolve())
    assert info.value.key == "gates.size_mb"
    assert info.value.exit_code == 2


def test_load_policy_reads_everything(tmp_path: Path) -> None:
    path = write_policy(
        tmp_path / "policy.toml",
        'description = "platform v1"\n[gates]\n"latency.p99_ms" = "< 50"\n'
        'no_regression = { metric = "rmse", tolerance = 0.5, higher_is_better = false }\n'
        'required = ["latency.p99_ms", "latency.p99_ms", "no_regression"]\n',
    )
    policy = load_policy(path)
    assert policy.gates.thresholds == {"latency.p99_ms": Threshold(op="<", value=50)}
    assert policy.gates.no_regression == NoRegression(metric="rmse", tolerance=0.5, higher_is_better=False)
    assert policy.required == ("latency.p99_ms", "no_regression")
