"""Every outcome of a training cycle, fast: the real pipeline, training command, bundle and gates,
with the stack's clients replaced by the fakes of ``tests/fakes`` (no server is started).

Each service can be switched off between cycles, which is how the bugs of a service that went
away were found: with MLflow down the store never heard of the deployed bundle, and with the
store down the gates passed as if nothing served.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlplat_runtime.errors import AuthError, MlplatError, NotFoundError, ServiceError
from mlplat_tui.cycle.pipeline import CycleOutcome, CycleResult, Pipeline
from mlplat_tui.events import Event
from mlplat_tui.project.config import load_project
from tests.fakes import FakeConnector, FakeMetadata, FakeServingAdmin, FakeTracker
from tests.helpers.models import make_logreg_onnx

TRAIN = """
import json, os, shutil
from pathlib import Path

here = Path(__file__).parent
score = float((here / "score.txt").read_text())
if score < 0:
    raise SystemExit("bad column: tenure")
out = Path(os.environ["MLPLAT_OUTPUT_DIR"])
shutil.copy(here / "assets" / "model.onnx", out / "model.onnx")
(out / "metrics.json").write_text(json.dumps({"score": score}))
print("score", score, "run", os.environ.get("MLFLOW_RUN_ID", "-"), flush=True)
"""

TOML = """
[project]
name = "tiny"

[train]
command = "python train.py"

[model]
name = "tiny"

[gates]
"metrics.score" = ">= 0.5"
no_regression = { metric = "score", tolerance = 0.05 }
"""


class Tiny:
    """A project whose training copies a fixed model and reports the score in score.txt."""

    def __init__(self, root: Path, db: Path) -> None:
        self.root = root
        self.tracker = FakeTracker()
        self.metadata = FakeMetadata(db)
        self.admin = FakeServingAdmin()
        self.source = FakeConnector(self.tracker, self.metadata, self.admin)
        self.pipe = Pipeline(load_project(root), None, clients=self.source)
        self.events: list[Event] = []

    def cycle(self, score: float = 0.9, **kw: object) -> CycleResult:
        (self.root / "score.txt").write_text(str(score))
        self.events.clear()
        return self.pipe.run_cycle(emit=self.events.append, **kw)  # type: ignore[arg-type]

    def messages(self, kind: str) -> list[str]:
        return [e.message for e in self.events if e.kind == kind]

    def run(self, run_id: str | None):  # type: ignore[no-untyped-def]
        assert run_id is not None
        return self.metadata.store.run(run_id)


@pytest.fixture
def tiny(tmp_path: Path) -> Iterator[Tiny]:
    root = tmp_path / "tiny"
    (root / "assets").mkdir(parents=True)
    make_logreg_onnx(root / "assets" / "model.onnx")
    (root / "train.py").write_text(TRAIN)
    (root / "mlplat.toml").write_text(TOML)
    (root / ".mlplat" / "stack").mkdir(parents=True)  # this project's stack has run (the fakes)
    project = Tiny(root, tmp_path / "metadata.duckdb")
    yield project
    project.pipe.close()
    project.metadata.shutdown()


def test_deployed_is_served_recorded_and_tracked(tiny: Tiny) -> None:
    result = tiny.cycle()
    assert result.outcome is CycleOutcome.DEPLOYED, result.reason
    assert result.deployed and result.error is None and result.tracked and result.recorded
    assert tiny.admin.served_version("tiny") == result.serving_version == "1"

    store = tiny.metadata.store
    run = store.run(result.run_id or "")
    assert (run.status, run.bundle_id, run.deployed) == ("deployed", result.bundle_id, True)
    assert store.bundle(result.bundle_id or "").version == "1"
    assert [g.name for g in store.gates(result.bundle_id or "")]
    current = store.current_deployment("tiny", "local")
    assert current is not None and (current.run_id, current.action) == (result.run_id, "deploy")

    mlflow_run = tiny.tracker.runs[result.run_id or ""]
    assert mlflow_run.status == "FINISHED" and mlflow_run.tags["mlplat.bundle_id"] == result.bundle_id
    assert "bundle/manifest.json" in mlflow_run.artifacts
    assert result.to_json()["outcome"] == "deployed"


def test_passed_but_not_deployed_when_serving_is_down_says_only_that(tiny: Tiny) -> None:
    tiny.admin.up = False
    result = tiny.cycle()
    assert result.outcome is CycleOutcome.PASSED and result.passed and result.error is None
    assert "serving is not up" in result.reason
    notes = " ".join(tiny.messages("stack"))
    assert "serving is not up" in notes and "without tracking" not in notes
    assert tiny.run(result.run_id).status == "finished"

    tiny.admin.up = True
    skipped = tiny.cycle(deploy=False)
    assert skipped.outcome is CycleOutcome.PASSED and "--no-deploy" in skipped.reason
    assert tiny.admin.loads == []


def test_a_gate_miss_is_rejected_and_the_champion_keeps_serving(tiny: Tiny) -> None:
    assert tiny.cycle(0.9).deployed
    missed = tiny.cycle(0.3)
    assert missed.outcome is CycleOutcome.REJECTED and not missed.passed
    assert missed.error and "metrics.score" in missed.error and "still serving v1" in missed.error
    assert tiny.messages("rejected") and tiny.admin.served_version("tiny") == "1"
    assert tiny.run(missed.run_id).status == "rejected"


def test_failed_training_is_failed_with_its_output(tiny: Tiny) -> None:
    result = tiny.cycle(-1)
    assert result.outcome is CycleOutcome.FAILED
    assert result.error and "exit code 1" in result.error
    failed = next(e for e in tiny.events if e.kind == "failed")
    assert "bad column: tenure" in failed.data["output_tail"]
    assert tiny.run(result.run_id).status == "failed"
    assert tiny.tracker.runs[result.run_id or ""].status == "FAILED"


def test_cancelled_before_training_ends(tiny: Tiny) -> None:
    cancel = threading.Event()
    cancel.set()
    result = tiny.cycle(cancel=cancel)
    assert result.outcome is CycleOutcome.CANCELLED and result.cancelled and result.error is None
    assert tiny.run(result.run_id).status == "cancelled"
    assert tiny.tracker.runs[result.run_id or ""].status == "KILLED"
    assert tiny.admin.loads == []


def test_mlflow_down_still_records_run_bundle_gates_and_deployment(tiny: Tiny) -> None:
    """Bug: with MLflow down, a deployment was recorded whose bundle the store never heard of;
    the next cycle's champion lookup then failed and the gates passed as if nothing served."""
    assert tiny.cycle(0.9).deployed
    tiny.tracker.up = False
    untracked = tiny.cycle(0.9)
    assert untracked.outcome is CycleOutcome.DEPLOYED, untracked.reason
    assert not untracked.tracked and untracked.recorded and untracked.serving_version == "2"
    notes = " ".join(tiny.messages("stack"))
    assert "tracker is not up" in notes and "without tracking or serving" not in notes
    assert "refused" not in notes

    store = tiny.metadata.store
    assert store.run(untracked.run_id or "").status == "deployed"
    assert store.bundle(untracked.bundle_id or "").version == "2"
    current = store.current_deployment("tiny", "local")
    assert current is not None and current.bundle_id == untracked.bundle_id

    # The next cycle finds the champion (v2, score 0.9): a regression is caught.
    regressed = tiny.cycle(0.6)
    gate = next(g for g in regressed.gates if g.name == "no_regression")
    assert not gate.passed and regressed.outcome is CycleOutcome.REJECTED
    assert "still serving v2" in (regressed.error or "")


def test_metadata_down_cannot_look_the_champion_up_so_nothing_deploys(tiny: Tiny) -> None:
    """Bug: with the store down, no_regression said "no champion yet" and the cycle passed."""
    assert tiny.cycle(0.9).deployed
    tiny.metadata.up = False
    result = tiny.cycle(0.6)
    assert result.outcome is CycleOutcome.REJECTED and not result.recorded
    gate = next(g for g in result.gates if g.name == "no_regression")
    assert not gate.passed and "metadata store is not up" in gate.detail
    assert tiny.admin.served_version("tiny") == "1" and len(tiny.admin.loads) == 1
    assert any("metadata store is not up" in m for m in tiny.messages("stack"))


def test_serving_that_refuses_is_rejected_recorded_and_the_old_version_serves(tiny: Tiny) -> None:
    assert tiny.cycle(0.9).deployed
    tiny.admin.refuse = "sample outputs differ from the bundle's expected outputs"
    result = tiny.cycle(0.9)
    assert result.outcome is CycleOutcome.REJECTED and result.passed
    assert result.error and "sample outputs differ" in result.error and "still serving v1" in result.error
    assert tiny.admin.served_version("tiny") == "1"
    store = tiny.metadata.store
    last = store.deployments("tiny", 1, "local")[0]
    assert (last.status, last.version) == ("failed", "2") and "sample outputs" in last.reason
    current = store.current_deployment("tiny", "local")
    assert current is not None and current.version == "1"
    assert store.run(result.run_id or "").status == "rejected"


def test_nothing_up_trains_bundles_and_gates_untracked(tiny: Tiny) -> None:
    tiny.tracker.up = tiny.metadata.up = tiny.admin.up = False
    result = tiny.cycle(0.9)
    assert result.outcome is CycleOutcome.REJECTED  # the stack ran before: the champion is unknown
    assert not result.tracked and not result.recorded
    assert tiny.events[0].kind == "stack" and "mlplat up" in tiny.events[0].message


def test_a_project_whose_stack_never_ran_has_no_champion(tmp_path: Path) -> None:
    root = tmp_path / "fresh"
    (root / "assets").mkdir(parents=True)
    make_logreg_onnx(root / "assets" / "model.onnx")
    (root / "train.py").write_text(TRAIN)
    (root / "mlplat.toml").write_text(TOML)
    (root / "score.txt").write_text("0.9")
    result = Pipeline(load_project(root), None).run_cycle()
    assert result.outcome is CycleOutcome.PASSED, result.reason
    gate = next(g for g in result.gates if g.name == "no_regression")
    assert gate.passed


@pytest.mark.parametrize(
    "error",
    [ServiceError("cannot reach the metadata service (it stopped)"), AuthError("the token does not match")],
    ids=["died", "401"],
)
def test_metadata_failing_after_connect_does_not_fail_a_trained_cycle(tiny: Tiny, error: MlplatError) -> None:
    """Bug: ``next_version`` was outside the best-effort recording: a store that died between
    connect and bundling (or answered 401) turned a cycle whose training succeeded into FAILED."""
    assert tiny.cycle(0.9).deployed
    tiny.metadata.fail = {"next_version": error}
    result = tiny.cycle(0.9)
    assert result.outcome is not CycleOutcome.FAILED, result.reason
    assert result.bundle_path is not None and result.version == "2"  # the local count
    # The store counts as absent for the rest of the cycle: the champion is unknown, so the
    # gates that compare with it are not passed and nothing is deployed.
    assert result.outcome is CycleOutcome.REJECTED
    gate = next(g for g in result.gates if g.name == "no_regression")
    assert not gate.passed and error.message in gate.detail
    assert tiny.admin.served_version("tiny") == "1" and len(tiny.admin.loads) == 1
    assert any(error.message in m for m in tiny.messages("stack"))
    assert tiny.metadata.store.deployments("tiny", 10, "local")[0].version == "1"


def test_a_store_that_refuses_every_write_is_not_recorded_and_says_so_once(tiny: Tiny) -> None:
    """Bug: ``recorded`` was "a metadata client exists" while every write was swallowed: a store
    answering 401 to each write gave a result that said "recorded"."""
    refused = AuthError("this write needs the metadata token")
    tiny.metadata.fail = dict.fromkeys(FakeMetadata.WRITES, refused)
    result = tiny.cycle(0.9)
    assert result.outcome is CycleOutcome.DEPLOYED, result.reason  # bookkeeping never changes it
    assert not result.recorded and result.tracked
    with pytest.raises(NotFoundError):
        tiny.run(result.run_id)
    said = [m for m in tiny.messages("stack") if "refused" in m]
    assert len(said) == 1 and refused.message in said[0]

    tiny.metadata.fail = {}
    again = tiny.cycle(0.9)
    assert again.recorded and not [m for m in tiny.messages("stack") if "refused" in m]
    assert tiny.run(again.run_id).status == "deployed"


def test_a_champion_whose_bundle_is_gone_is_unknown_and_named(tiny: Tiny) -> None:
    """The pipeline's own champion lookup repeated ``gates.champion.lookup_champion`` with
    vaguer messages; the one lookup names the champion that could not be opened."""
    first = tiny.cycle(0.9)
    assert first.deployed and first.bundle_path is not None
    shutil.rmtree(first.bundle_path)
    result = tiny.cycle(0.9)
    gate = next(g for g in result.gates if g.name == "no_regression")
    assert not gate.passed and "the champion tiny v1 could not be opened" in gate.detail
    assert result.outcome is CycleOutcome.REJECTED and tiny.admin.served_version("tiny") == "1"
