"""The shadow gate kind: config, policy floors and every verdict, on figures handed in
(the replay itself is tested against captured traffic in tests/mlplat_tui/monitoring)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlplat_runtime.bundle import open_bundle
from mlplat_runtime.bundle.manifest import GateResult, Manifest
from mlplat_runtime.errors import ConfigError
from mlplat_tui.gates.champion import ChampionUnknown
from mlplat_tui.gates.evaluate import evaluate_gates, failure_reasons
from mlplat_tui.gates.kinds import Champion, ShadowFigures, kind_for
from mlplat_tui.gates.policy import effective_policy
from mlplat_tui.project.config import load_project, parse_config
from mlplat_tui.project.gate_specs import Flag, GatesSection, Threshold, parse_gates
from tests.helpers.models import make_bundle

TRAFFIC = ShadowFigures(
    rows=5000,
    about="5,000 captured rows of champion v1 (last 24h)",
    agreement=0.9,
    mean_abs_diff=0.02,
    p99_abs_diff=0.3,
    new_errors=0.0,
    p50_latency_ratio=1.0,
    p99_latency_ratio=2.0,
)
NONE = ShadowFigures(rows=0, about="no captured traffic of champion v1 (last 24h)")


@pytest.fixture(scope="module")
def bundle_and_champion(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest]:
    tmp = tmp_path_factory.mktemp("shadow")
    champion = open_bundle(make_bundle(tmp, name="m", version="1", out=tmp / "one")).manifest
    return make_bundle(tmp, name="m", version="2", out=tmp / "two"), champion


def run(
    bundle_and_champion: tuple[Path, Manifest],
    gates: dict[str, object],
    figures: ShadowFigures | None,
    champion: Champion | str = "champion",
) -> dict[str, GateResult]:
    path, manifest = bundle_and_champion
    asked: list[int] = []

    def source() -> ShadowFigures:
        asked.append(1)
        assert figures is not None
        return figures

    results = evaluate_gates(
        open_bundle(path),
        parse_gates("mlplat.toml", gates),
        champion=manifest if champion == "champion" else champion,  # type: ignore[arg-type]
        shadow=source if figures is not None else None,
    )
    assert len(asked) <= 1
    return {r.name: r for r in results if r.name.startswith("shadow.")}


def test_dotted_keys_and_require_traffic_parse_into_the_shadow_kind() -> None:
    config = parse_config(
        '[project]\nname = "p"\n[model]\nname = "m"\n[gates]\n'
        'shadow.agreement = ">= 0.95"\n"shadow.p99_latency_ratio" = "<= 1.5"\n'
        '"shadow.require_traffic" = true\n'
    )
    specs = config.gates.specs
    assert specs["shadow.agreement"] == Threshold(op=">=", value=0.95)
    assert specs["shadow.p99_latency_ratio"] == Threshold(op="<=", value=1.5)
    assert specs["shadow.require_traffic"] == Flag(value=True)
    assert kind_for("shadow.new_errors") is not None and kind_for("shadow.agreement").name == "shadow"  # type: ignore[union-attr]
    with pytest.raises(ConfigError) as info:
        parse_gates("mlplat.toml", {"shadow.require_traffic": "yes"})
    assert info.value.key == "gates.shadow.require_traffic"
    with pytest.raises(ConfigError):
        parse_gates("mlplat.toml", {"shadow.agreemnt": ">= 0.9"})


def test_a_policy_floor_tightens_agreement_and_can_require_traffic(tmp_path: Path) -> None:
    (tmp_path / "policy.toml").write_text(
        '[gates]\n"shadow.agreement" = ">= 0.99"\n"shadow.require_traffic" = true\n'
    )
    root = tmp_path / "p"
    root.mkdir()
    (root / "mlplat.toml").write_text(
        'policy = "../policy.toml"\n[project]\nname = "p"\n[model]\nname = "m"\n[gates]\n'
        '"shadow.agreement" = ">= 0.9"\n"shadow.require_traffic" = false\n'
    )
    eff = effective_policy(load_project(root), {})
    assert eff.gates.specs["shadow.agreement"] == Threshold(op=">=", value=0.99)
    assert eff.gates.specs["shadow.require_traffic"] == Flag(value=True)
    assert "policy floor" in eff.notes["shadow.require_traffic"]


def test_figures_against_thresholds_pass_and_fail_with_reasons(
    bundle_and_champion: tuple[Path, Manifest],
) -> None:
    got = run(
        bundle_and_champion,
        {"shadow.agreement": ">= 0.95", "shadow.p99_latency_ratio": "<= 2.5", "shadow.new_errors": "<= 0"},
        TRAFFIC,
    )
    assert not got["shadow.agreement"].passed and got["shadow.agreement"].measured == 0.9
    assert "5,000 captured rows of champion v1" in got["shadow.agreement"].detail
    assert got["shadow.p99_latency_ratio"].passed and got["shadow.new_errors"].passed
    assert failure_reasons(list(got.values())) == ["shadow.agreement 0.9 < 0.95"]


def test_no_traffic_passes_with_a_warning_unless_traffic_is_required(
    bundle_and_champion: tuple[Path, Manifest],
) -> None:
    lenient = run(bundle_and_champion, {"shadow.agreement": ">= 0.95"}, NONE)["shadow.agreement"]
    assert lenient.passed and lenient.evaluated and lenient.measured is None
    assert (
        lenient.detail.startswith("no captured traffic of champion v1 (last 24h); not compared")
        and "warning" in lenient.detail
    )
    strict = run(bundle_and_champion, {"shadow.agreement": ">= 0.95", "shadow.require_traffic": True}, NONE)
    assert not strict["shadow.agreement"].passed
    assert failure_reasons(list(strict.values())) == [
        "shadow.agreement: no captured traffic of champion v1 (last 24h) (shadow.require_traffic)"
    ]
    alone = run(bundle_and_champion, {"shadow.require_traffic": True}, TRAFFIC)
    assert list(alone) == ["shadow.require_traffic"] and alone["shadow.require_traffic"].passed


def test_no_champion_passes_and_an_unknown_one_or_no_replay_is_not_evaluated(
    bundle_and_champion: tuple[Path, Manifest],
) -> None:
    gates = {"shadow.agreement": ">= 0.95"}
    first = run(bundle_and_champion, gates, TRAFFIC, champion=None)["shadow.agreement"]
    assert first.passed and first.detail == "no champion to compare with"
    unknown = run(bundle_and_champion, gates, TRAFFIC, champion=ChampionUnknown("store down"))[
        "shadow.agreement"
    ]
    assert not unknown.passed and not unknown.evaluated and "store down" in unknown.detail
    unrun = run(bundle_and_champion, gates, None)["shadow.agreement"]
    assert not unrun.passed and not unrun.evaluated and "no replay" in unrun.detail
    failed = ShadowFigures(rows=0, about="", failed="replay failed: the candidate does not load")
    broken = run(bundle_and_champion, gates, failed)["shadow.agreement"]
    assert not broken.evaluated and "does not load" in broken.detail


def test_a_figure_the_model_cannot_give_fails_saying_so(bundle_and_champion: tuple[Path, Manifest]) -> None:
    labels_only = ShadowFigures(rows=10, about="10 captured rows", agreement=1.0)
    got = run(bundle_and_champion, {"shadow.mean_abs_diff": "<= 0.1"}, labels_only)["shadow.mean_abs_diff"]
    assert not got.passed and got.detail.startswith("not measured")


def test_no_shadow_key_never_asks_for_a_replay(bundle_and_champion: tuple[Path, Manifest]) -> None:
    path, manifest = bundle_and_champion

    def boom() -> ShadowFigures:
        raise AssertionError("replayed without a shadow gate")

    results = evaluate_gates(open_bundle(path), GatesSection(), champion=manifest, shadow=boom)
    assert [r.name for r in results] == ["signature"]
