"""The registry of gate kinds: one new kind reaches config, policy, evaluation and explanation."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from mlplat_runtime.bundle import open_bundle
from mlplat_runtime.bundle.manifest import GateResult
from mlplat_runtime.errors import ConfigError
from mlplat_tui.gates import kinds
from mlplat_tui.gates.evaluate import failure_reasons, validate_bundle
from mlplat_tui.gates.kinds import KINDS, GateContext, ThresholdKind, kind_for
from mlplat_tui.project import gate_specs
from mlplat_tui.project.config import load_project, parse_config
from mlplat_tui.project.gate_specs import SPEC_KINDS, GateSpec, Threshold, ThresholdSpec
from tests.helpers.models import make_bundle


class DriftSpec(ThresholdSpec):
    """What monitoring would add: a drift score against a bound."""

    name = "drift"
    spelled = "drift.psi"

    def claims(self, key: str) -> bool:
        return key == "drift.psi"


class DriftKind(ThresholdKind, DriftSpec):
    def evaluate(self, ctx: GateContext, specs: Mapping[str, GateSpec]) -> list[GateResult]:
        spec = specs["drift.psi"]
        assert isinstance(spec, Threshold)
        return [self.compare("drift.psi", ctx.bundle.manifest.metrics.get("psi"), spec)]


def test_every_config_kind_has_its_evaluating_half() -> None:
    assert [k.name for k in SPEC_KINDS] == [k.name for k in KINDS]
    assert all(isinstance(k, type(s)) for k, s in zip(KINDS, SPEC_KINDS, strict=True))
    assert kind_for("metrics.f1") is KINDS[0] and kind_for("signature") is KINDS[3]
    assert kind_for("accuracy") is None


def test_signature_is_not_a_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config('[project]\nname = "p"\n[model]\nname = "m"\n[gates]\nsignature = "on"\n')
    assert info.value.key == "gates.signature" and "always runs" in info.value.expected


def test_one_new_kind_reaches_config_policy_evaluation_and_explanation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gate_specs, "SPEC_KINDS", (*SPEC_KINDS, DriftSpec()))
    monkeypatch.setattr(kinds, "KINDS", (*KINDS, DriftKind()))
    (tmp_path / "policy.toml").write_text('[gates]\n"drift.psi" = "<= 0.2"\nrequired = ["drift.psi"]\n')
    root = tmp_path / "proj"
    root.mkdir()
    (root / "mlplat.toml").write_text(
        'policy = "../policy.toml"\n[project]\nname = "p"\n[model]\nname = "m"\n'
        '[gates]\n"drift.psi" = "<= 0.5"\n'  # looser than the floor: the floor wins
    )
    project = load_project(root)
    assert project.config.gates.specs["drift.psi"] == Threshold(op="<=", value=0.5)
    bundle = make_bundle(tmp_path, "m", metrics={"psi": 0.3})
    results = {r.name: r for r in validate_bundle(project, bundle)}
    drift = results["drift.psi"]
    assert not drift.passed and (drift.op, drift.bound, drift.policy_floor) == ("<=", 0.2, True)
    assert "policy floor <= 0.2 (mlplat.toml asked <= 0.5)" in drift.detail
    assert failure_reasons(list(results.values())) == ["drift.psi 0.3 > 0.2 (policy floor)"]
    assert open_bundle(bundle).manifest.metrics["psi"] == pytest.approx(0.3)
