"""The push pieces that need no server: transport rule, outcomes and exit codes, receipts,
rollback's choice, the fleet index, the engine table, verification and plain-HTTP refusals."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mlplat_runtime.errors import NotFoundError, UsageError
from mlplat_runtime.metadata.records import DeploymentRecord
from mlplat_tui.project.config import load_project
from mlplat_tui.push.engine import Deployed, ImageRef, Transition
from mlplat_tui.push.engines import engine_for
from mlplat_tui.push.fleet import fleet_rows, index_path, project_rows, remember
from mlplat_tui.push.local import LocalEngine
from mlplat_tui.push.pipeline import EXIT_CODES, PushOptions, PushOutcome, check_transport, push
from mlplat_tui.push.receipt import Receipt, TransitionOut, previous_of, read_receipt, write_receipt
from mlplat_tui.push.rollback import choose
from tests.mlplat_tui.push.push_helpers import bundle, local_target, write_project


def test_outcomes_have_distinct_exit_codes() -> None:
    assert EXIT_CODES == {
        PushOutcome.COMPLETED: 0,
        PushOutcome.FAILED: 1,
        PushOutcome.REJECTED: 3,
        PushOutcome.ROLLED_BACK: 4,
    }
    assert len(set(EXIT_CODES.values())) == len(PushOutcome)


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("http://127.0.0.1:5000", True),
        ("http://localhost:5000", True),
        ("http://[::1]:5000", True),
        ("https://mlflow.internal:5000", True),
        ("http://mlflow.internal:5000", False),
        ("http://10.0.0.5:5000", False),
    ],
)
def test_plain_http_is_for_loopback_unless_insecure(url: str, ok: bool) -> None:
    if ok:
        check_transport(url, "registry", insecure=False)
    else:
        with pytest.raises(UsageError, match="--insecure"):
            check_transport(url, "registry", insecure=False)
    check_transport(url, "registry", insecure=True)


def test_a_push_to_a_plain_http_remote_registry_fails_before_anything(tmp_path: Path) -> None:
    root = write_project(
        tmp_path / "p", targets=local_target("staging", extra='registry = "http://10.255.0.1:5000"')
    )
    result = push(load_project(root), "staging", bundle(root, "1", auc=0.9, seed=1), metadata=None)
    assert result.outcome is PushOutcome.FAILED and "--insecure" in result.reason
    assert not (root / ".mlplat" / "targets").exists()


def test_a_tampered_bundle_is_rejected_at_step_one(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p", targets=local_target("staging"))
    path = bundle(root, "1", auc=0.9, seed=1)
    (path / "model.onnx").write_bytes((path / "model.onnx").read_bytes() + b"x")
    result = push(load_project(root), "staging", path, metadata=None)
    assert result.outcome is PushOutcome.REJECTED and "does not verify" in result.reason
    assert result.exit_code == 3


def test_dry_run_stops_after_the_gates_and_says_what_would_change(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p", targets=local_target("staging"))
    result = push(
        load_project(root),
        "staging",
        bundle(root, "1", auc=0.9, seed=1),
        metadata=None,
        options=PushOptions(dry_run=True),
    )
    assert result.outcome is PushOutcome.COMPLETED and result.dry_run and not result.rolled_out
    assert any("roll out v1" in c and "replacing nothing" in c for c in result.changes)
    assert not (root / ".mlplat" / "targets").exists()


def test_an_unknown_target_is_a_usage_error(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p")
    with pytest.raises(UsageError, match="no target 'nope'"):
        push(load_project(root), "nope", tmp_path, metadata=None)


def test_receipt_round_trip(tmp_path: Path) -> None:
    at = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    before = Deployed("m", "1", "sha256:a", image=ImageRef("r/m", "sha256:" + "b" * 64), since=at)
    receipt = Receipt(
        action="push",
        target="staging",
        kind="local",
        stage="staging",
        model_name="m",
        version="2",
        bundle_id="sha256:c",
        previous=previous_of(before),
        transitions=[TransitionOut.of(Transition(at, "running", "task 1", "t1"))],
        outcome="completed",
    )
    path = write_receipt(tmp_path / "receipts", receipt)
    back = read_receipt(path)
    assert back == receipt and back.transitions[0].at == at
    assert back.previous == {
        "version": "1",
        "bundle_id": "sha256:a",
        "image_digest": "sha256:" + "b" * 64,
        "since": at.isoformat(),
    }
    assert json.loads(path.read_text())["outcome"] == "completed"
    assert receipt.summary()["previous"] == "1"


def _served(*versions: str) -> list[DeploymentRecord]:
    now = datetime.now(UTC)
    return [
        DeploymentRecord(
            model_name="m", version=v, bundle_id=f"sha256:{v}", target="t", ts=now - timedelta(minutes=i)
        )
        for i, v in enumerate(versions)
    ]


def test_rollback_chooses_any_version_the_target_served() -> None:
    served = _served("3", "2", "1")
    assert choose(served, "sha256:3", None).version == "2"
    assert choose(served, "sha256:3", "v1").version == "1"
    assert choose(served, "sha256:3", "1").version == "1"
    with pytest.raises(NotFoundError, match="never served version 7"):
        choose(served, "sha256:3", "7")
    with pytest.raises(UsageError, match="nothing to roll back to"):
        choose(_served("3"), "sha256:3", None)


def test_the_fleet_index_lists_each_target_and_says_what_it_cannot_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert index_path() == tmp_path / "state" / "mlplat" / "fleet.json"
    assert fleet_rows() == []
    one = write_project(tmp_path / "one", name="one", targets=local_target("staging") + local_target("prod"))
    gone = write_project(tmp_path / "gone", name="gone", targets=local_target("staging"))
    remember(one, "one", "staging")
    remember(one, "one", "staging")
    remember(gone, "gone", "staging")
    (gone / "mlplat.toml").unlink()
    data = json.loads(index_path().read_text())
    assert data["projects"][str(one.resolve())]["targets"] == ["staging"]
    assert (index_path().parent.stat().st_mode & 0o777) == 0o700
    rows = {(r.project, r.target): r for r in fleet_rows()}
    assert rows["one", "staging"].health == "nothing" and rows["one", "prod"].health == "nothing"
    assert rows["gone", "-"].health == "unreadable: gone"
    # one project's rows, for the dashboard's Targets panel, without the index
    assert sorted(r.target for r in project_rows(one, "one")) == ["prod", "staging"]


def test_engine_table(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p", targets=local_target("staging"))
    project = load_project(root)
    engine = engine_for(project, "staging", project.config.targets["staging"], None)
    assert isinstance(engine, LocalEngine) and engine.kind == "local" and not engine.needs_image
    assert engine.root == (root / ".mlplat" / "targets" / "staging").resolve()
    assert engine.endpoint("m") == f"http://127.0.0.1:{project.config.targets['staging'].port_base + 2}"  # type: ignore[union-attr]
    assert engine.current("m") is None
    engine.check_access()  # free ports, nothing started
    assert not engine.root.exists()


def test_an_unsafe_credentials_file_is_a_usage_error_not_a_failed_push(tmp_path: Path) -> None:
    token = tmp_path / "home" / "staging.token"
    token.parent.mkdir()
    token.write_text("pusher:some-password\n")
    token.chmod(0o644)
    extra = f'registry = "http://127.0.0.1:5000"\ncredentials = {{ file = "{token}" }}'
    root = write_project(tmp_path / "p", targets=local_target("staging", extra=extra))
    with pytest.raises(UsageError, match="readable by others") as err:
        push(load_project(root), "staging", bundle(root, "1", auc=0.9, seed=1), metadata=None)
    assert err.value.exit_code == 2
