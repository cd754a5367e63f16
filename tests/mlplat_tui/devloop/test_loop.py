"""The dev loop end to end, against a real local stack and the real churn sample.

Saving a change serves a new version; a crashing train.py and a gate miss keep the previous
version serving and say why; a save during training cancels it; and under load no request fails
across ten hot swaps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from mlplat_runtime.bundle import open_bundle
from mlplat_tui.clients.metadata import MetadataClient
from mlplat_tui.devloop.loop import DevLoop
from mlplat_tui.project.config import load_project
from mlplat_tui.stack.base import Service
from mlplat_tui.stack.local import LocalBackend
from tests.helpers.load import InferenceLoad, infer_body
from tests.mlplat_tui.devloop.conftest import EventLog, edit

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]


def _serving_version(backend: LocalBackend, model: str) -> str:
    meta = httpx.get(f"{backend.ports.url(Service.SERVING)}/v2/models/{model}", timeout=10).json()
    return str(meta["versions"][-1])


def test_save_swaps_crash_and_gate_miss_keep_serving_and_save_cancels(
    churn: Path, churn_stack: LocalBackend, event_log: EventLog
) -> None:
    project = load_project(churn)
    model = project.config.model.name
    train_py = churn / "train.py"
    loop = DevLoop(project, backend=churn_stack, emit=event_log, debounce_s=0.1)
    loop.start()
    try:
        first = event_log.wait("cycle")
        assert first.data["outcome"] == "deployed", first.message
        assert first.data["trigger"] == "start"
        assert _serving_version(churn_stack, model) == "1"
        event_log.wait("watching")

        # 1. a burst of 5 saves within 200 ms -> one cycle, a new version serving, timed from
        #    the first save
        mark = event_log.mark
        saved = time.monotonic()
        for c in ("0.9", "0.8", "0.7", "0.6", "0.5"):
            edit(train_py, r"^C = .*$", f"C = {c}")
            time.sleep(0.03)
        assert time.monotonic() - saved < 0.2
        cycle = event_log.wait("cycle", mark)
        assert cycle.data["outcome"] == "deployed", cycle.message
        assert cycle.data["files"] == ["train.py"]
        assert event_log.kinds(mark)[:7] == [
            "change",
            "training",
            "trained",
            "bundled",
            "gated",
            "swapped",
            "cycle",
        ]
        assert 0 < cycle.data["save_to_serving_s"] < time.monotonic() - saved
        assert cycle.data["overhead_s"] == pytest.approx(
            cycle.data["save_to_serving_s"] - cycle.data["train_s"], abs=1e-3
        )
        assert _serving_version(churn_stack, model) == "2"
        assert open_bundle(_bundle_path(loop)).manifest.params["C"] == "0.5"
        time.sleep(0.5)
        assert event_log.kinds(mark).count("change") == 1
        assert event_log.kinds(mark).count("training") == 1

        # 2. a syntax error: the run fails with the traceback, v2 keeps serving
        mark = event_log.mark
        edit(train_py, r"^def load\(path", "def load(path,,")
        cycle = event_log.wait("cycle", mark)
        assert cycle.data["outcome"] == "failed"
        failed = event_log.wait("failed", mark)
        assert "SyntaxError" in (failed.error or "")
        assert _serving_version(churn_stack, model) == "2"

        # 3. a gate miss: rejected with the reason, still serving v2
        mark = event_log.mark
        edit(train_py, r"^def load\(path,,", "def load(path")
        edit(train_py, r"^LABEL_NOISE = .*$", "LABEL_NOISE = 0.45")
        cycle = event_log.wait("cycle", mark)
        assert cycle.data["outcome"] == "rejected", cycle.message
        rejected = event_log.wait("rejected", mark)
        assert rejected.message.startswith("rejected: ")
        assert "roc_auc" in rejected.message and "still serving v2" in rejected.message
        assert _serving_version(churn_stack, model) == "2"

        # 4. a save during training cancels it; the newer change is what serves next
        mark = event_log.mark
        edit(train_py, r"^LABEL_NOISE = .*$", "LABEL_NOISE = 0.0\ntime.sleep(60)")
        event_log.wait("training", mark)
        cancelled_at = time.monotonic()
        edit(train_py, r"^time.sleep\(60\)$", "C = 0.25")
        event_log.wait("cancelled", mark)
        assert time.monotonic() - cancelled_at < 20  # not the 60 s the run would have slept
        assert event_log.wait("cycle", mark).data["outcome"] == "cancelled"
        deployed = event_log.wait_nth("cycle", 2, mark)
        assert deployed.data["outcome"] == "deployed", deployed.message
        assert _serving_version(churn_stack, model) == deployed.version
        assert open_bundle(_bundle_path(loop)).manifest.params["C"] == "0.25"
    finally:
        loop.stop()
    assert loop.state == "stopped" and loop.error is None

    # The loop's own events are in the metadata store once; the pipeline's are not doubled.
    meta = MetadataClient(churn_stack.ports.url(Service.METADATA))
    stored = meta.events(limit=1000)
    kinds = [e.kind for e in stored]
    assert {"change", "cycle", "watching"} <= set(kinds)
    assert "output" not in kinds
    assert kinds.count("swapped") == sum(1 for e in event_log.events if e.kind == "swapped")
    assert kinds.count("cycle") == sum(1 for e in event_log.events if e.kind == "cycle")
    cycles = [
        e for e in stored if e.kind == "cycle" and e.payload.get("data", {}).get("outcome") == "deployed"
    ]
    assert cycles and all("save_to_serving_s" in e.payload["data"] for e in cycles)


def _cli(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlplat_tui", "--project", str(project), "dev", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'runtime'}"},
    )


@pytest.mark.slow
def test_cli_once_then_ten_swaps_under_load_fail_no_request(
    churn: Path, churn_stack: LocalBackend, event_log: EventLog
) -> None:
    project = load_project(churn)
    model = project.config.model.name
    # `mlplat dev --once --headless`: JSON lines, exit 0 once the new version serves
    done = _cli(churn, "--once", "--headless")
    assert done.returncode == 0, done.stderr + done.stdout
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    kinds = [e["kind"] for e in lines]
    # the loop's last event says it stopped (no error: it was not a death)
    assert kinds[0] == "stack" and "swapped" in kinds and kinds[-2:] == ["cycle", "stopped"]
    assert "error" not in lines[-1]
    assert "output" not in kinds  # only with --verbose
    assert lines[-2]["data"]["outcome"] == "deployed"
    assert _serving_version(churn_stack, model) == "1"

    bundle = open_bundle(Path(next(iter(churn.glob(".mlplat/bundles/*-v1")))))
    url = f"{churn_stack.ports.url(Service.SERVING)}/v2/models/{model}/infer"
    loop = DevLoop(project, backend=churn_stack, emit=event_log, debounce_s=0.1)
    loop.start()
    try:
        with InferenceLoad(url, infer_body(bundle.samples()[0]["input"]), clients=2) as load:
            event_log.wait("cycle")  # the loop's own start cycle (v2)
            train_py = churn / "train.py"
            for i in range(10):
                mark = event_log.mark
                edit(train_py, r"^C = .*$", f"C = {0.5 + 0.05 * i:.2f}")
                cycle = event_log.wait("cycle", mark)
                assert cycle.data["outcome"] == "deployed", cycle.message
    finally:
        loop.stop()
    assert _serving_version(churn_stack, model) == "12"
    failures = load.failures
    assert not failures, f"{len(failures)} of {len(load.outcomes)} requests failed: {failures[:5]}"
    versions = {v for _, _, v in load.outcomes}
    assert len(load.outcomes) > 100 and len(versions) >= 5, (len(load.outcomes), versions)
    assert load.versions_never_go_back()


def _bundle_path(loop: DevLoop) -> Path:
    path = loop.results[-1].bundle_path
    assert path is not None
    return path
