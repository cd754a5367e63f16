"""The dev loop's state machine with no stack: real watcher, warm worker and pipeline.

Without a stack the pipeline still trains, bundles and gates (it deploys nothing), so these
tests exercise debouncing, cancelling, no-op saves, config reloads and stopping in seconds.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from mlplat_tui.devloop.loop import ContentIndex, DevLoop
from mlplat_tui.project.config import load_project
from tests.helpers.metadata import start_metadata
from tests.helpers.models import make_logreg_onnx
from tests.helpers.stack import free_port_base, set_port_base
from tests.mlplat_tui.devloop.conftest import EventLog, edit

TRAIN = """
import json, os, shutil, time
from pathlib import Path

SCORE = 0.9
SLEEP = 0.0

time.sleep(SLEEP)
out = Path(os.environ["MLPLAT_OUTPUT_DIR"])
shutil.copy(Path(__file__).parent / "assets" / "model.onnx", out / "model.onnx")
(out / "metrics.json").write_text(json.dumps({"score": SCORE}))
print("pid", os.getpid(), "score", SCORE, flush=True)
"""

TOML = """
[project]
name = "tiny"

[train]
command = "python train.py"
watch = ["*.py", "data/**"]

[model]
name = "tiny"

[gates]
"metrics.score" = ">= 0.5"
"""


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    root = tmp_path / "tiny"
    (root / "assets").mkdir(parents=True)
    (root / "data").mkdir()
    make_logreg_onnx(root / "assets" / "model.onnx")
    (root / "train.py").write_text(TRAIN)
    (root / "mlplat.toml").write_text(TOML)
    return root


@pytest.fixture
def running(tiny: Path, event_log: EventLog) -> Iterator[DevLoop]:
    loop = DevLoop(load_project(tiny), backend=None, emit=event_log, debounce_s=0.1)
    loop.start()
    event_log.wait("watching", timeout=60)
    yield loop
    loop.stop()
    assert loop.state == "stopped"


def _outcomes(log: EventLog, after: int) -> list[str]:
    return [e.data["outcome"] for e in log.events[after:] if e.kind == "cycle"]


def test_start_cycle_then_a_burst_of_saves_is_one_cycle(
    tiny: Path, running: DevLoop, event_log: EventLog
) -> None:
    first = event_log.wait("cycle")
    assert first.data["trigger"] == "start" and first.data["outcome"] == "passed"
    assert first.data["runner"] == "warm"
    mark = event_log.mark
    for score in ("0.81", "0.82", "0.83"):
        edit(tiny / "train.py", r"^SCORE = .*$", f"SCORE = {score}")
        (tiny / "data" / "d.csv").write_text(score)
        time.sleep(0.02)
    cycle = event_log.wait("cycle", mark)
    assert cycle.data["outcome"] == "passed", cycle.message
    assert cycle.data["files"] == ["data/d.csv", "train.py"]
    time.sleep(0.5)
    assert event_log.kinds(mark).count("change") == 1
    assert running.results[-1].metrics["score"] == pytest.approx(0.83)
    assert "save_to_result_s" in cycle.data and cycle.data["train_s"] > 0


def test_saves_that_change_nothing_do_not_retrain(tiny: Path, running: DevLoop, event_log: EventLog) -> None:
    event_log.wait("cycle")
    mark = event_log.mark
    text = (tiny / "train.py").read_text()
    (tiny / "train.py").write_text(text)  # same bytes
    (tiny / "train.py").touch()
    (tiny / "notes.md").write_text("not watched")
    time.sleep(1.0)
    assert "change" not in event_log.kinds(mark)
    edit(tiny / "train.py", r"^SCORE = .*$", "SCORE = 0.7")
    assert event_log.wait("change", mark).data["files"] == ["train.py"]


def test_a_newer_save_cancels_the_running_training(tiny: Path, running: DevLoop, event_log: EventLog) -> None:
    event_log.wait("cycle")
    mark = event_log.mark
    edit(tiny / "train.py", r"^SLEEP = .*$", "SLEEP = 60.0")
    event_log.wait("training", mark)
    time.sleep(0.5)
    started = time.monotonic()
    edit(tiny / "train.py", r"^SLEEP = .*$", "SLEEP = 0.0")
    event_log.wait("cancelled", mark)
    assert time.monotonic() - started < 10
    done = event_log.wait_nth("cycle", 2, mark)
    assert done.data["outcome"] == "passed", done.message
    assert _outcomes(event_log, mark) == ["cancelled", "passed"]


def test_mlplat_toml_edits_reload_and_a_broken_one_is_reported(
    tiny: Path, running: DevLoop, event_log: EventLog
) -> None:
    event_log.wait("cycle")
    mark = event_log.mark
    edit(tiny / "mlplat.toml", r'^"metrics.score" = .*$', '"metrics.score" = ">= 0.95"')
    cycle = event_log.wait("cycle", mark)
    assert cycle.data["outcome"] == "rejected", cycle.message
    assert "metrics.score" in cycle.message

    mark = event_log.mark
    edit(tiny / "mlplat.toml", r"^\[model\]$", "[model\nbroken")
    failed = event_log.wait("failed", mark)
    assert "mlplat.toml" in failed.message and "mlplat.toml" in (failed.error or "")
    cycle = event_log.wait("cycle", mark)  # still runs, with the settings that were valid
    assert cycle.data["outcome"] == "rejected"


def test_stop_during_training_ends_the_run_and_the_worker(tiny: Path, event_log: EventLog) -> None:
    edit(tiny / "train.py", r"^SLEEP = .*$", "SLEEP = 60.0")
    loop = DevLoop(load_project(tiny), backend=None, emit=event_log, debounce_s=0.1)
    loop.start()
    event_log.wait("training", timeout=60)
    worker_pid, child_pid = _worker_and_child(loop)
    started = time.monotonic()
    loop.stop()
    assert time.monotonic() - started < 15
    assert loop.state == "stopped" and loop.error is None
    assert not _alive(child_pid) and not _alive(worker_pid)
    assert event_log.wait("cycle").message == "cancelled: the dev loop is stopping"


def test_the_stopped_event_is_recorded_in_the_metadata_store(tiny: Path, event_log: EventLog) -> None:
    """Only the metadata service is up (a real one, on the project's port): the loop's last
    event, ``stopped``, reaches the store as well as the host, after the cycle's own events."""
    from mlplat_tui.clients.metadata import MetadataClient
    from mlplat_tui.stack.base import Ports, Service
    from mlplat_tui.stack.local import LocalBackend

    set_port_base(tiny, free_port_base())
    project = load_project(tiny)
    ports = Ports.from_project(project)
    service = start_metadata(project.state_dir / "stack" / "metadata.duckdb", port=ports.metadata)
    try:
        loop = DevLoop(project, backend=LocalBackend(project), emit=event_log, start_stack=False, warm=False)
        result = loop.run_once()
        assert result is not None and result.run_id, event_log.kinds()
        assert event_log.events[-1].kind == "stopped" and loop.error is None
        with MetadataClient(ports.url(Service.METADATA)) as meta:
            recorded = meta.latest_events(limit=50)
            assert meta.run(result.run_id).model_name == "tiny"  # the cycle reached the store too
        assert [e.kind for e in recorded][-1] == "stopped", [e.kind for e in recorded]
        assert recorded[-1].message == "dev loop stopped"
        assert "cycle" in [e.kind for e in recorded]
    finally:
        service.stop()


def _worker_and_child(loop: DevLoop) -> tuple[int, int]:
    """The warm worker's pid and the pid of the training run it forked."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        info = loop.runner.worker_info  # type: ignore[attr-defined]
        if info:
            children = psutil.Process(int(info["pid"])).children()
            if children:
                return int(info["pid"]), children[0].pid
        time.sleep(0.05)
    raise AssertionError("the warm worker never forked a training run")


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_content_index(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("x = 1\n")
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * (2 * 1024 * 1024))
    index = ContentIndex(tmp_path)
    index.prime(["a.py", "big.bin"])
    (tmp_path / "a.py").write_text("x = 1\n")
    assert index.changed(("a.py",)) == ()
    (tmp_path / "a.py").write_text("x = 2\n")
    assert index.changed(("a.py",)) == ("a.py",)
    assert index.changed(("a.py",)) == ()  # remembered
    big.write_bytes(b"\0" * (2 * 1024 * 1024))
    assert index.changed(("big.bin",)) == ("big.bin",)  # too big to read at start: first save counts
    big.write_bytes(b"\0" * (2 * 1024 * 1024))
    assert index.changed(("big.bin",)) == ()  # read since: same bytes
    (tmp_path / "a.py").unlink()
    assert index.changed(("a.py", "new.py")) == ("a.py", "new.py")
