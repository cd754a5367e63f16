"""Reference v2 and the drift scores: undrifted windows score ~0, shifted ones do not; the schema holds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from mlplat_runtime.errors import BundleError, ConfigError
from mlplat_runtime.monitoring import drift
from mlplat_runtime.monitoring.reference import Reference, compute_reference, parse_reference


def _training(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.column_stack(
        [rng.normal(size=n), rng.integers(0, 2, n), rng.integers(0, 2, n), rng.exponential(size=n)]
    ).astype(np.float32)


def test_fixed_bins_score_undrifted_flags_near_zero_and_a_shift_high() -> None:
    rng = np.random.default_rng(3)
    ref = compute_reference(_training(rng, 20_000), feature_names=["num", "flag_a", "flag_b", "exp"])
    assert [f.kind for f in ref.features.values()] == ["numeric", "categorical", "categorical", "numeric"]
    live = _training(rng, 20_000)
    for i, feature in enumerate(ref.features.values()):
        counts = drift.bin_counts(live[:, i], feature)
        assert drift.psi(feature.counts, counts) < 0.01, feature.name  # deciles alone scored ~3 here
        assert drift.js(feature.counts, counts) < 0.05
    num = ref.features["num"]
    shifted = drift.bin_counts(live[:, 0] + 1.0, num)
    assert drift.psi(num.counts, shifted) > 0.25
    assert drift.ks_from_counts(num.counts, shifted) > 0.15


def test_slots_underflow_overflow_missing_and_other() -> None:
    ref = compute_reference(
        {"x": np.array([[1.0, 0.0], [2.0, 1.0], [3.0, 1.0], [4.0, 2.0]] * 10, dtype=np.float32)},
        kinds={"x0": "numeric", "x1": "categorical"},
    )
    num, cat = ref.features["x0"], ref.features["x1"]
    assert num.kind == "numeric" and num.edges[0] == 1.0 and num.edges[-1] == 4.0
    counts = drift.bin_counts(np.array([0.5, 4.0, 9.0, np.nan]), num)
    assert (
        counts[0] == 1 and counts[-2] == 1 and counts[-1] == 1 and counts[-3] == 1
    )  # under, last, over, NaN
    assert cat.categories == [1.0, 0.0, 2.0]  # most frequent first
    assert list(drift.bin_counts(np.array([1.0, 7.0, np.nan]), cat)) == [1, 0, 0, 1, 1]  # 7 -> other
    strings = compute_reference({"city": np.array(["a", "b", "a", None] * 5, dtype=object)})
    city = strings.features["city"]
    assert city.kind == "categorical" and city.missing_rate == 0.25
    assert list(drift.bin_counts(np.array(["a", "zz", None], dtype=object), city)) == [1, 0, 1, 1]


def test_floors_shrink_with_the_window_and_scores_take_many_windows_at_once() -> None:
    ref = compute_reference(np.random.default_rng(0).normal(size=(5000, 1)))
    floors = ref.features["x0"].floors
    assert floors["1000"].psi > floors["10000"].psi > floors["100000"].psi > 0
    assert ref.features["x0"].floor(12_000) == floors["10000"]
    windows = np.array([ref.features["x0"].counts, ref.features["x0"].counts[::-1]])
    scores = drift.psi(ref.features["x0"].counts, windows)
    assert scores.shape == (2,) and scores[0] == 0.0 and scores[1] > 0.5


def test_outputs_class_mix_probability_histogram_and_uncertain_share() -> None:
    proba = np.array([[0.9, 0.1], [0.52, 0.48], [0.2, 0.8], [0.46, 0.54]], dtype=np.float32)
    ref = compute_reference(
        np.zeros((4, 1)),
        outputs={"label": np.array([0, 0, 1, 1]), "probabilities": proba, "logits": proba * 7},
    )
    assert set(ref.outputs) == {"label", "probabilities"}  # logits are not described
    p = ref.outputs["probabilities"]
    assert p.class_counts == [2, 2] and p.uncertain_share == 0.5 and sum(p.probability_counts) == 4


def test_json_round_trip_and_schema_refusals(tmp_path: Path) -> None:
    ref = compute_reference(np.random.default_rng(0).normal(size=(100, 2)))
    data = json.loads(ref.model_dump_json())
    assert parse_reference(data) == ref
    assert parse_reference({"features": {"f0": {"mean": 0.1}}}) is None  # v1: kept, not parsed
    data["features"]["x0"]["counts"] = data["features"]["x0"]["counts"][:-1]
    with pytest.raises(ValidationError, match="slots"):
        Reference.model_validate(data)
    with pytest.raises(ValueError, match="version"):
        parse_reference({"version": 3})
    (tmp_path / "mlplat.toml").write_text('[monitor.features]\nx0 = "ordinal"\n')
    with pytest.raises(ConfigError, match=r"monitor\.features\.x0"):
        compute_reference(np.zeros((3, 2)), project_dir=tmp_path)
    (tmp_path / "mlplat.toml").write_text('[monitor.features]\nx1 = "categorical"\n')
    assert compute_reference(np.ones((3, 2)) * 0.5, project_dir=tmp_path).features["x1"].kind == "categorical"


def test_build_bundle_validates_a_v2_reference_and_keeps_v1(tmp_path: Path) -> None:
    from mlplat_runtime.bundle import build_bundle, open_bundle
    from tests.helpers.models import make_logreg_onnx

    model = make_logreg_onnx(tmp_path / "m.onnx")
    ref = compute_reference({"input": np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)})
    out = build_bundle(model, "m", tmp_path / "b", reference=json.loads(ref.model_dump_json()))
    assert parse_reference(open_bundle(out).reference() or {}) == ref
    build_bundle(
        model, "m", tmp_path / "b1", reference={"features": {"f0": {"mean": 0.1}}}
    )  # v1 still builds
    wrong = json.loads(ref.model_dump_json())
    for f in wrong["features"].values():
        f["input"] = "pixels"
    with pytest.raises(BundleError, match="pixels"):
        build_bundle(model, "m", tmp_path / "b2", reference=wrong)
    bad = json.loads(ref.model_dump_json())
    bad["features"]["x0"]["count"] = -1
    with pytest.raises(BundleError, match="v2 schema"):
        build_bundle(model, "m", tmp_path / "b3", reference=bad)
