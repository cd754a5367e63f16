"""Fault injection: kill -9 of the metadata service in the middle of write bursts, a full disk
under its DuckDB file, kill -9 of a bundle build, a full disk under the bundle folder (a build,
an archive, a gate stamp). Whatever was acknowledged survives; nothing is left half-written;
every restart opens cleanly."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from mlplat_runtime.bundle import build_bundle, verify_bundle
from mlplat_runtime.metadata.store import MetadataStore
from tests.helpers.models import make_logreg_onnx
from tests.runtime.metadata.test_guard import Service

pytestmark = pytest.mark.integration

CYCLES = 3


def burst(url: str, prefix: str, acked: list[str], stop: threading.Event) -> None:
    """Write runs one after another; an id is acknowledged once its 200 has arrived."""
    with httpx.Client(base_url=url, timeout=5) as http:
        i = 0
        while not stop.is_set():
            run_id = f"{prefix}-{i}"
            try:
                r = http.post("/runs", json={"run_id": run_id, "model_name": "m", "params": {"i": str(i)}})
            except httpx.HTTPError:
                return
            if r.status_code == 200:
                acked.append(run_id)
            i += 1


def test_kill_9_during_write_bursts_loses_nothing_acknowledged(tmp_path: Path) -> None:
    db = tmp_path / "metadata.duckdb"
    acked: list[str] = []
    for cycle in range(CYCLES):
        svc = Service(db)
        stop = threading.Event()
        writers = [
            threading.Thread(target=burst, args=(svc.url, f"c{cycle}w{w}", acked, stop)) for w in range(2)
        ]
        for t in writers:
            t.start()
        time.sleep(0.6 + 0.2 * cycle)
        svc.proc.send_signal(signal.SIGKILL)
        svc.proc.wait(10)
        stop.set()
        for t in writers:
            t.join(10)
    assert len(acked) > 50
    with MetadataStore(db) as store:  # opens cleanly: the WAL of the last kill is replayed
        found = {r[0]: r[1] for r in store.sql("SELECT run_id, params->>'i' FROM runs").rows}
        assert store.count_runs() >= len(acked)
    missing = [a for a in acked if a not in found]
    assert missing == []
    assert all(found[a] == a.rsplit("-", 1)[1] for a in acked)  # whole records, not torn ones


def _limit_file_size(limit: int) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_full_disk_under_the_metadata_file_refuses_writes_and_keeps_what_was_acknowledged(
    tmp_path: Path,
) -> None:
    db = tmp_path / "metadata.duckdb"
    MetadataStore(db).close()  # the schema, written with room to spare
    size = db.stat().st_size
    log = tmp_path / "full.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlplat_runtime.metadata", "--db", str(db), "--port", "0"],
        stdout=subprocess.PIPE, stderr=log.open("wb"), text=True,
        preexec_fn=lambda: _limit_file_size(size + 256 * 1024),
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    url = line.split(" on ", 1)[1].split()[0]
    acked, refused = [], 0
    blob = "x" * 4000
    with httpx.Client(base_url=url, timeout=10) as http:
        for i in range(400):  # ~1.6 MB of runs into 256 KiB of room
            r = http.post("/runs", json={"run_id": f"r{i}", "model_name": "m", "params": {"p": blob}})
            if r.status_code == 200:
                acked.append(f"r{i}")
            else:
                refused += 1
                assert r.status_code >= 400 and "error" in r.json()
        assert http.get("/health").status_code == 200  # still answering
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)  # stops on its own, full disk or not
    assert acked and refused
    with MetadataStore(db) as store:  # room again: opens, and every acknowledged run is there
        found = {row[0] for row in store.sql("SELECT run_id FROM runs").rows}
    assert set(acked) <= found


BUILD = """
import sys
from pathlib import Path
from tests.helpers.models import make_bundle
root = Path(sys.argv[1])
print("go", flush=True)
make_bundle(root, name="m", version="1", out=root / "out", n_features=512)
"""


@pytest.mark.parametrize("after_s", [0.05, 0.3, 0.8])
def test_kill_9_of_a_bundle_build_leaves_no_half_bundle(tmp_path: Path, after_s: float) -> None:
    root = Path(__file__).resolve().parents[3]
    proc = subprocess.Popen(
        [sys.executable, "-c", BUILD, str(tmp_path)], cwd=root, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "go"
    time.sleep(after_s)
    proc.kill()
    proc.wait(10)
    out = tmp_path / "out"
    if out.exists():  # finished before the kill: then it is whole
        assert verify_bundle(out) == []
        assert json.loads((out / "manifest.json").read_text())["model_name"] == "m"


MLPLAT = Path(sys.executable).parent / "mlplat"
ROOT = Path(__file__).resolve().parents[3]
N_FEATURES = 65536  # model.onnx ~260 KB, samples.npz ~2.1 MB, the .mlbundle ~2.2 MB


def _digests(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _full_disk_env() -> dict[str, str]:
    # No .pyc writes in the child: they would be the first files to hit the limit.
    return {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(ROOT)}


@pytest.mark.parametrize("where", ["model copy", "samples", "archive"])
def test_a_full_disk_under_the_bundle_folder_fails_the_build_cleanly(tmp_path: Path, where: str) -> None:
    """The disk fills (RLIMIT_FSIZE in the child: a write past it fails, half done) at three
    points of ``mlplat bundle build``: the build says so with a hint, leaves no half bundle
    and no temp folder, and the bundle already in the folder is untouched and verifies."""
    model = make_logreg_onnx(tmp_path / "src" / "model.onnx", n_features=N_FEATURES)
    bundles = tmp_path / "bundles"
    old = build_bundle(model, "m", bundles / "m-1", version="1")  # written with room to spare
    sizes = {p.name: p.stat().st_size for p in old.iterdir()}
    before = _digests(old)
    if where == "model copy":
        limit = sizes["model.onnx"] // 2
    elif where == "samples":
        limit = (sizes["model.onnx"] + sizes["samples.npz"]) // 2
    else:  # every file of the bundle fits; the packed archive does not
        probe = build_bundle(model, "m", tmp_path / "probe.mlbundle", version="2", archive=True)
        assert probe.stat().st_size > max(sizes.values())
        limit = (max(sizes.values()) + probe.stat().st_size) // 2
    out = bundles / ("m-2.mlbundle" if where == "archive" else "m-2")
    proc = subprocess.run(
        [MLPLAT, "bundle", "build", model, "--name", "m", "--version", "2", "-o", out],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=_full_disk_env(),
        preexec_fn=lambda: _limit_file_size(limit),
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "writing the bundle" in proc.stderr and "disk space" in proc.stderr and "hint:" in proc.stderr
    assert sorted(p.name for p in bundles.iterdir()) == ["m-1"]  # no half bundle, no temp beside it
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    assert _digests(old) == before
    assert verify_bundle(old) == []


GATES = """
import sys
from pathlib import Path
from mlplat_runtime.bundle import GateResult, with_gates
from mlplat_runtime.errors import MlplatError
gate = GateResult(name="metrics.roc_auc", measured=0.91, threshold=">= 0.85", passed=True, detail="x" * 400)
try:
    with_gates(Path(sys.argv[1]), [gate])
except MlplatError as exc:
    print(exc, file=sys.stderr)
    sys.exit(1)
"""


def test_a_full_disk_while_stamping_gates_keeps_the_old_manifest_whole(tmp_path: Path) -> None:
    model = make_logreg_onnx(tmp_path / "src" / "model.onnx")
    bundle = build_bundle(model, "m", tmp_path / "bundles" / "m-1", version="1")
    manifest = (bundle / "manifest.json").read_bytes()
    limit = len(manifest) // 2  # the new manifest (with a gate) is larger still
    proc = subprocess.run(
        [sys.executable, "-c", GATES, str(bundle)],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=_full_disk_env(),
        preexec_fn=lambda: _limit_file_size(limit),
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "writing the new manifest" in proc.stderr and "old one is kept" in proc.stderr
    assert "disk space" in proc.stderr
    assert (bundle / "manifest.json").read_bytes() == manifest  # the old one, whole
    assert verify_bundle(bundle) == []
    assert sorted(p.name for p in bundle.parent.iterdir()) == ["m-1"]  # no temp manifest left
    assert sorted(p.name for p in bundle.iterdir()) == ["manifest.json", "model.onnx", "samples.npz"]


def test_a_run_cut_off_by_a_dead_metadata_service_is_interrupted_not_running_forever(
    tmp_path: Path,
) -> None:
    """Bug: a cycle whose metadata service died could never record how the run ended, and the
    run said "running" forever. The next start of the service marks it "interrupted", with why."""
    db = tmp_path / "metadata.duckdb"
    svc = Service(db)
    with httpx.Client(base_url=svc.url, timeout=5) as http:
        assert http.post("/runs", json={"run_id": "cut-off", "model_name": "m"}).status_code == 200
        done = {"run_id": "done", "model_name": "m", "status": "deployed"}
        assert http.post("/runs", json=done).status_code == 200
    svc.proc.send_signal(signal.SIGKILL)  # mid-cycle: the cycle's final update never arrives
    svc.proc.wait(10)
    again = Service(db)
    try:
        with httpx.Client(base_url=again.url, timeout=5) as http:
            cut = http.get("/runs/cut-off").json()["run"]
            assert cut["status"] == "interrupted"
            assert "metadata service stopped" in cut["error"] and cut["finished_at"]
            assert http.get("/runs/done").json()["run"]["status"] == "deployed"  # an ended run is left alone
            # The cycle that owned it, if still alive, records its real outcome over the mark.
            r = http.patch("/runs/cut-off", json={"status": "rejected", "error": "gate"})
            assert r.status_code == 200 and http.get("/runs/cut-off").json()["run"]["status"] == "rejected"
    finally:
        assert again.stop() == 0
