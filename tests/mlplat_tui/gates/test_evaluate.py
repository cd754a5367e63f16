"""Guardrail gates on real bundles, timed with real ONNX Runtime sessions."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest

from mlplat_runtime.bundle import open_bundle
from mlplat_runtime.bundle.manifest import GateResult, Manifest, Signature, TensorSpec
from mlplat_tui.gates import ChampionUnknown
from mlplat_tui.gates.evaluate import (
    MISSING_METRIC,
    all_passed,
    bundle_size_mb,
    evaluate_gates,
    failure_reasons,
    request_rows,
    validate_bundle,
)
from mlplat_tui.project.config import GatesSection, NoRegression, Threshold, load_project
from mlplat_tui.project.gate_specs import GateSpec
from tests.helpers.models import make_bundle, make_identity_onnx, make_multi_io_onnx

FAST = 10  # latency runs: enough to exercise the measurement, cheap on a shared 2-core machine


def gates(no_regression: NoRegression | None = None, **thresholds: str) -> GatesSection:
    parsed = {}
    for key, text in thresholds.items():
        op, value = text.split()
        parsed[key.replace("__", ".")] = Threshold(op=op, value=float(value))  # type: ignore[arg-type]
    specs: dict[str, GateSpec] = {**parsed, **({"no_regression": no_regression} if no_regression else {})}
    return GatesSection(specs=specs)


def by_name(results: list[GateResult]) -> dict[str, GateResult]:
    return {r.name: r for r in results}


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("gates")
    return make_bundle(tmp, "churn", version="2", metrics={"roc_auc": 0.91, "rmse": 1.5})


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    tmp = tmp_path_factory.mktemp("champion")
    return open_bundle(
        make_bundle(tmp, "churn", version="1", metrics={"roc_auc": 0.93, "rmse": 1.2})
    ).manifest


# --- metrics -----------------------------------------------------------------------------------


def test_metric_gate_passes_and_fails(bundle_dir: Path) -> None:
    bundle = open_bundle(bundle_dir)
    results = by_name(
        evaluate_gates(bundle, gates(metrics__roc_auc=">= 0.85", metrics__rmse="<= 1.0"), latency_runs=FAST)
    )
    ok, bad = results["metrics.roc_auc"], results["metrics.rmse"]
    assert ok.passed and ok.measured == pytest.approx(0.91) and ok.threshold == ">= 0.85"
    assert (ok.op, ok.bound, bad.op, bad.bound) == (">=", 0.85, "<=", 1.0)  # typed, not re-parsed
    assert ok.detail == "0.91 >= 0.85"
    assert not bad.passed and bad.measured == pytest.approx(1.5) and bad.detail == "1.5 > 1"
    assert failure_reasons(list(results.values())) == ["metrics.rmse 1.5 > 1"]


def test_missing_metric_fails(bundle_dir: Path) -> None:
    results = evaluate_gates(open_bundle(bundle_dir), gates(metrics__f1=">= 0.5"), latency_runs=FAST)
    f1 = by_name(results)["metrics.f1"]
    assert not f1.passed and f1.measured is None
    assert f1.detail == MISSING_METRIC == "metric not reported by train.py"
    assert failure_reasons(results) == ["metrics.f1: metric not reported by train.py"]
    assert not all_passed(results)


def test_failure_reason_reads_like_the_docs(tmp_path: Path) -> None:
    bundle = open_bundle(make_bundle(tmp_path, "low", metrics={"roc_auc": 0.71}))
    results = evaluate_gates(bundle, gates(metrics__roc_auc=">= 0.85"), latency_runs=FAST)
    assert failure_reasons(results) == ["metrics.roc_auc 0.71 < 0.85"]


# --- latency -----------------------------------------------------------------------------------


def test_latency_gates_measure_single_row_requests(bundle_dir: Path) -> None:
    bundle = open_bundle(bundle_dir)
    results = by_name(
        evaluate_gates(
            bundle,
            gates(latency__p50_ms="<= 1000", latency__p95_ms="<= 1000", latency__p99_ms="<= 0"),
            latency_runs=20,
        )
    )
    p50, p95, p99 = results["latency.p50_ms"], results["latency.p95_ms"], results["latency.p99_ms"]
    assert p50.passed and p95.passed
    assert isinstance(p50.measured, float) and isinstance(p95.measured, float)
    assert isinstance(p99.measured, float)
    assert 0 < p50.measured <= p95.measured <= p99.measured < 1000
    assert "20 single-row requests on CPUExecutionProvider" in p95.detail
    assert not p99.passed  # no real request takes 0 ms
    assert failure_reasons(list(results.values()))[0].startswith("latency.p99_ms ")
    assert failure_reasons(list(results.values()))[0].endswith(" > 0")


def test_no_latency_gate_means_no_timing(bundle_dir: Path) -> None:
    results = evaluate_gates(open_bundle(bundle_dir), gates(), latency_runs=FAST)
    assert [r.name for r in results] == ["signature"]


def test_samples_are_split_into_one_row_requests(bundle_dir: Path) -> None:
    inputs, _ = open_bundle(bundle_dir).samples()
    rows = request_rows(inputs)
    n = next(iter(inputs.values())).shape[0]
    assert len(rows) == n >= 1
    assert all(v.shape[0] == 1 for row in rows for v in row.values())
    np.testing.assert_array_equal(np.concatenate([r["input"] for r in rows]), inputs["input"])
    # Inputs without a shared batch axis are one request as they are.
    odd: dict[str, np.ndarray] = {"a": np.zeros((2, 3), np.float32), "b": np.zeros((3,), np.int64)}
    assert len(request_rows(odd)) == 1
    # A graph whose first dimension is fixed takes the feed as it is, not row by row.
    fixed = Signature(inputs=(TensorSpec(name="x", datatype="FP32", shape=(3, 4)),), outputs=())
    three = {"x": np.zeros((3, 4), np.float32)}
    assert len(request_rows(three)) == 3
    assert len(request_rows(three, fixed)) == 1


def test_latency_on_a_model_with_a_fixed_first_dimension(tmp_path: Path) -> None:
    model = make_identity_onnx(tmp_path / "src" / "model.onnx", shape=(3, 4))
    bundle = open_bundle(make_bundle(tmp_path, "fixed", model=model))
    result = by_name(evaluate_gates(bundle, gates(latency__p50_ms="<= 1000"), latency_runs=FAST))
    assert result["latency.p50_ms"].passed


def test_latency_on_a_multi_input_model(tmp_path: Path) -> None:
    model = make_multi_io_onnx(tmp_path / "src" / "model.onnx")
    bundle = open_bundle(make_bundle(tmp_path, "multi", model=model))
    result = by_name(evaluate_gates(bundle, gates(latency__p95_ms="<= 1000"), latency_runs=FAST))
    assert result["latency.p95_ms"].passed


# --- size --------------------------------------------------------------------------------------


def test_size_gate_counts_every_bundle_file(bundle_dir: Path) -> None:
    bundle = open_bundle(bundle_dir)
    expected = sum(p.stat().st_size for p in bundle_dir.rglob("*") if p.is_file()) / (1024 * 1024)
    assert bundle_size_mb(bundle.root) == pytest.approx(expected)
    assert expected > 0
    ok = by_name(evaluate_gates(bundle, gates(size_mb="<= 50"), latency_runs=FAST))["size_mb"]
    assert ok.passed and ok.measured == pytest.approx(expected)
    tiny = by_name(evaluate_gates(bundle, gates(size_mb="<= 0.0001"), latency_runs=FAST))["size_mb"]
    assert not tiny.passed and "MiB > 0.0001 MiB" in tiny.detail


# --- signature ---------------------------------------------------------------------------------


def test_signature_passes_when_nothing_serves(bundle_dir: Path) -> None:
    result = by_name(evaluate_gates(open_bundle(bundle_dir), gates(), latency_runs=FAST))["signature"]
    assert result.passed and result.detail == "nothing serving"


def test_signature_compatible_with_the_same_model_and_with_dynamic_dims(bundle_dir: Path) -> None:
    bundle = open_bundle(bundle_dir)
    own = bundle.manifest.signature
    same = by_name(evaluate_gates(bundle, gates(), serving_signature=own, latency_runs=FAST))["signature"]
    assert same.passed and same.measured == "compatible"
    # The serving model fixed the batch where ours is dynamic: every request it took, ours takes.
    fixed = Signature(
        inputs=tuple(s.model_copy(update={"shape": (1, *s.shape[1:])}) for s in own.inputs),
        outputs=own.outputs,
    )
    widened = by_name(evaluate_gates(bundle, gates(), serving_signature=fixed, latency_runs=FAST))
    assert widened["signature"].passed


def test_signature_incompatible_datatype_shape_and_names(bundle_dir: Path) -> None:
    bundle = open_bundle(bundle_dir)
    serving = Signature(
        inputs=(TensorSpec(name="input", datatype="FP64", shape=(-1, 4)),),
        outputs=(
            TensorSpec(name="label", datatype="INT64", shape=(-1, 1)),
            TensorSpec(name="scores", datatype="FP32", shape=(-1, 2)),
        ),
    )
    result = by_name(evaluate_gates(bundle, gates(), serving_signature=serving, latency_runs=FAST))[
        "signature"
    ]
    assert not result.passed
    assert "input 'input' datatype FP32, serving FP64" in result.detail
    assert "output 'label' shape [-1], serving [-1, 1]" in result.detail
    assert "output 'scores' missing (serving has it)" in result.detail
    assert "output 'probabilities' is new (serving lacks it)" in result.detail
    assert result.measured == "4 incompatible"
    assert failure_reasons([result])[0].startswith("signature: ")


# --- no regression -----------------------------------------------------------------------------


def test_no_regression_without_champion_passes(bundle_dir: Path) -> None:
    rule = NoRegression(metric="roc_auc", tolerance=0.01)
    result = by_name(evaluate_gates(open_bundle(bundle_dir), gates(rule), latency_runs=FAST))["no_regression"]
    assert result.passed and result.detail == "no champion yet"


def test_no_regression_against_champion(bundle_dir: Path, champion: Manifest) -> None:
    bundle = open_bundle(bundle_dir)  # roc_auc 0.91, rmse 1.5; champion 0.93, 1.2

    def run(rule: NoRegression) -> GateResult:
        return by_name(evaluate_gates(bundle, gates(rule), champion=champion, latency_runs=FAST))[
            "no_regression"
        ]

    worse = run(NoRegression(metric="roc_auc", tolerance=0.01))
    assert not worse.passed and worse.measured == pytest.approx(0.91)
    assert worse.op == ">=" and worse.bound == pytest.approx(0.92)
    assert worse.threshold == ">= 0.92 (champion v1 0.93 - 0.01)"
    assert failure_reasons([worse]) == ["no_regression: roc_auc 0.91 < 0.92 (champion v1 0.93 - 0.01)"]
    assert run(NoRegression(metric="metrics.roc_auc", tolerance=0.05)).passed

    lower = run(NoRegression(metric="rmse", tolerance=0.1, higher_is_better=False))
    assert not lower.passed and "rmse 1.5 > 1.3" in lower.detail
    assert run(NoRegression(metric="rmse", tolerance=0.5, higher_is_better=False)).passed

    missing_new = run(NoRegression(metric="f1"))
    assert missing_new.passed and "champion v1 has no f1" in missing_new.detail


def test_an_unknown_champion_is_never_a_pass(bundle_dir: Path) -> None:
    """The store could not be asked: no_regression and signature are not evaluated, not passed."""
    rule = NoRegression(metric="roc_auc", tolerance=0.01)
    unknown = ChampionUnknown("the metadata service is not up")
    results = by_name(
        evaluate_gates(open_bundle(bundle_dir), gates(rule), champion=unknown, latency_runs=FAST)
    )
    for name in ("no_regression", "signature"):
        r = results[name]
        assert not r.passed and not r.evaluated
        assert r.detail == "could not be evaluated: the metadata service is not up"
    assert results["no_regression"].measured == pytest.approx(0.91)
    assert not all_passed(list(results.values()))
    assert failure_reasons(list(results.values())) == [
        "signature: could not be evaluated: the metadata service is not up",
        "no_regression: could not be evaluated: the metadata service is not up",
    ]


def test_a_result_not_evaluated_is_not_passed_even_if_it_says_so() -> None:
    odd = GateResult(name="drift", measured=None, threshold="", passed=True, evaluated=False, detail="?")
    assert not all_passed([odd]) and failure_reasons([odd]) == ["drift: ?"]


def test_no_regression_fails_when_new_bundle_lacks_the_metric(tmp_path: Path, champion: Manifest) -> None:
    bundle = open_bundle(make_bundle(tmp_path, "nometric", metrics={"rmse": 1.0}))
    rule = NoRegression(metric="roc_auc")
    result = by_name(evaluate_gates(bundle, gates(rule), champion=champion, latency_runs=FAST))[
        "no_regression"
    ]
    assert not result.passed and MISSING_METRIC in result.detail


# --- validate_bundle with a policy -------------------------------------------------------------


def test_validate_bundle_applies_the_policy_floor(tmp_path: Path, bundle_dir: Path) -> None:
    (tmp_path / "policy.toml").write_text(
        '[gates]\n"metrics.roc_auc" = ">= 0.95"\n"size_mb" = "<= 50"\nrequired = ["metrics.roc_auc"]\n',
        encoding="utf-8",
    )
    root = tmp_path / "proj"
    root.mkdir()
    (root / "mlplat.toml").write_text(
        'policy = "../policy.toml"\n[project]\nname = "churn"\n[model]\nname = "churn"\n'
        '[gates]\n"metrics.roc_auc" = ">= 0.8"\n',
        encoding="utf-8",
    )
    results = validate_bundle(load_project(root), bundle_dir, latency_runs=FAST)
    named = by_name(results)
    auc = named["metrics.roc_auc"]
    assert not auc.passed and auc.threshold == ">= 0.95"
    assert "policy floor >= 0.95 (mlplat.toml asked >= 0.8)" in auc.detail
    assert named["size_mb"].passed and "policy floor (not in mlplat.toml)" in named["size_mb"].detail
    assert named["signature"].passed
    assert auc.policy_floor and named["size_mb"].policy_floor and not named["signature"].policy_floor
    assert failure_reasons(results) == ["metrics.roc_auc 0.91 < 0.95 (policy floor)"]


def test_validate_bundle_with_the_stack_down_does_not_pass_no_regression(
    tmp_path: Path, bundle_dir: Path
) -> None:
    """Bug (issue 9): with the stack down, no_regression said "no champion yet" and passed."""
    root = tmp_path / "proj"
    root.mkdir()
    (root / "mlplat.toml").write_text(
        '[project]\nname = "churn"\n[model]\nname = "churn"\n[gates]\n'
        'no_regression = { metric = "roc_auc", tolerance = 0.05 }\n',
        encoding="utf-8",
    )
    down = ChampionUnknown("the metadata service at http://127.0.0.1:7801 is not up")
    results = by_name(validate_bundle(load_project(root), bundle_dir, champion=down, latency_runs=FAST))
    no_reg = results["no_regression"]
    assert not no_reg.passed and "no champion" not in no_reg.detail
    assert no_reg.detail == f"could not be evaluated: {down.reason}"
    assert not all_passed(list(results.values()))


def test_validate_bundle_all_passing(tmp_path: Path, bundle_dir: Path) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "mlplat.toml").write_text(
        '[project]\nname = "churn"\n[model]\nname = "churn"\n[gates]\n'
        '"metrics.roc_auc" = ">= 0.85"\n"latency.p95_ms" = "<= 1000"\n"size_mb" = "<= 50"\n'
        'no_regression = { metric = "roc_auc", tolerance = 0.05 }\n',
        encoding="utf-8",
    )
    serving = open_bundle(bundle_dir).manifest.signature
    results = validate_bundle(load_project(root), bundle_dir, serving_signature=serving, latency_runs=FAST)
    assert [r.name for r in results] == [
        "metrics.roc_auc",
        "latency.p95_ms",
        "size_mb",
        "signature",
        "no_regression",
    ]
    assert all_passed(results) and failure_reasons(results) == []


def test_validate_bundle_on_an_archive_removes_what_it_extracted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = make_bundle(
        tmp_path, "arch", metrics={"roc_auc": 0.9}, archive=True, out=tmp_path / "a.mlbundle"
    )
    assert archive.is_file()
    extract_parent = tmp_path / "tmp"
    extract_parent.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(extract_parent))
    root = tmp_path / "proj"
    root.mkdir()
    (root / "mlplat.toml").write_text(
        '[project]\nname = "arch"\n[model]\nname = "arch"\n[gates]\n'
        '"metrics.roc_auc" = ">= 0.85"\n"latency.p50_ms" = "<= 1000"\n"size_mb" = "<= 1"\n',
        encoding="utf-8",
    )
    results = validate_bundle(load_project(root), archive, latency_runs=FAST)
    assert all_passed(results) and len(results) == 4
    assert list(extract_parent.iterdir()) == []
