"""Hot swaps under load against the real server: no request fails, broken bundles are refused
with their reason, and a model that kills the check process does not take the server down."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.runtime.serving.conftest import (
    build_version,
    check_processes,
    corrupt_onnx_bundle,
    kill_when_busy,
    logreg_expected,
    slow_bundle,
    tampered_bundle,
    wrong_signature_bundle,
)

pytestmark = pytest.mark.integration

CLIENTS = 8
X = np.random.default_rng(11).normal(size=(2, 4)).astype(np.float32)
BODY = {"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": X.tolist()}]}
# version -> expected (label, probabilities); version k is the logistic regression of seed k
EXPECTED = {str(k): logreg_expected(X, seed=k) for k in range(1, 8)}


class Load:
    """CLIENTS threads posting inference requests on keep-alive connections until stopped."""

    def __init__(self, url: str) -> None:
        self.url = f"{url}/v2/models/m/infer"
        self.stop = threading.Event()
        self.failures: list[str] = []
        self.versions: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(CLIENTS)]

    def _run(self) -> None:
        seen: Counter[str] = Counter()
        bad: list[str] = []
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set():
                try:
                    r = client.post(self.url, json=BODY)
                except httpx.HTTPError as exc:
                    bad.append(f"{type(exc).__name__}: {exc}")
                    continue
                if r.status_code != 200:
                    bad.append(f"{r.status_code}: {r.text}")
                    continue
                doc = r.json()
                version = doc["model_version"]
                label, probs = (o["data"] for o in doc["outputs"])
                want_label, want_probs = EXPECTED[version]
                if label != want_label.tolist() or not np.allclose(probs, want_probs.reshape(-1), atol=1e-5):
                    bad.append(f"v{version} answered with another version's outputs")
                seen[version] += 1
        with self.lock:
            self.versions.update(seen)
            self.failures.extend(bad)

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)


def test_swaps_under_load_lose_no_request(tmp_path: Path, serving_factory: Any) -> None:
    good = {v: build_version(tmp_path, v, seed=int(v)) for v in ("1", "2", "3", "4", "5", "6")}
    broken = {
        "corrupt ONNX": (corrupt_onnx_bundle(tmp_path, "90"), "not a readable ONNX model"),
        "wrong signature": (wrong_signature_bundle(tmp_path, "91"), "signature does not match its model"),
        "tampered checksum": (tampered_bundle(tmp_path, "92"), "checksum differs from the manifest"),
    }
    plan: list[tuple[str, Path, str | None]] = [
        ("2", good["2"], None),
        ("corrupt ONNX", *broken["corrupt ONNX"]),
        ("3", good["3"], None),
        ("wrong signature", *broken["wrong signature"]),
        ("4", good["4"], None),
        ("tampered checksum", *broken["tampered checksum"]),
        ("5", good["5"], None),
        ("6", good["6"], None),
    ]
    s = serving_factory(good["1"])
    swap_ms: list[float] = []
    with Load(s.url) as load:
        time.sleep(0.3)
        for what, path, reason in plan:
            r = s.load(path)
            if reason is None:
                assert r.status_code == 200, f"{what}: {r.text}"
                assert r.json()["version"] == what
                swap_ms.append(r.json()["swap_ms"])
            else:
                assert 400 <= r.status_code < 500, f"{what} was not refused: {r.text}"
                assert reason in r.json()["error"], r.text
                (entry,) = s.index()
                assert entry["state"] == "READY" and reason in entry["reason"]
            time.sleep(0.15)
        time.sleep(0.3)
    assert load.failures == []
    assert sum(load.versions.values()) > 100, load.versions
    assert {"1", "6"} <= set(load.versions)  # requests were answered before and after the swaps
    (entry,) = s.index()
    assert (entry["version"], entry["state"]) == ("6", "READY")
    assert httpx.get(f"{s.url}/v2/models/m").json()["versions"] == ["6"]
    assert max(swap_ms) < 5000  # the timing target is checked by bench/serving.py, not here


def test_a_model_that_crashes_the_checker_does_not_take_the_server_down(
    tmp_path: Path, serving_factory: Any
) -> None:
    # We cannot portably craft a model that segfaults ONNX Runtime, so the crash is real but
    # external: the check process is SIGKILLed while it runs a model that keeps it busy. The
    # server sees exactly what a segfault looks like: its check process died mid-check.
    s = serving_factory(build_version(tmp_path, "1", seed=1))
    assert s.load(build_version(tmp_path, "2", seed=2)).status_code == 200  # warm check process
    (checker,) = check_processes(s.pid)
    slow = slow_bundle(tmp_path, "3")
    with Load(s.url) as load:
        killer = threading.Thread(target=kill_when_busy, args=(checker.pid,))
        killer.start()
        r = s.load(slow)
        killer.join()
    assert r.status_code == 400, r.text
    assert "crashed ONNX Runtime in the check process (killed by SIGKILL)" in r.json()["error"]
    assert load.failures == [] and load.versions["2"] > 0
    assert s.proc.poll() is None
    (entry,) = s.index()
    assert entry["version"] == "2" and "crashed ONNX Runtime" in entry["reason"]
    # a new check process is already there, and the next load goes through it
    (new_checker,) = check_processes(s.pid)
    assert new_checker.pid != checker.pid
    assert s.load(build_version(tmp_path, "4", seed=4)).status_code == 200


# -- two workers ------------------------------------------------------------------------------


class ManyConnections:
    """Clients that take a new connection for every other request (so one client's requests
    reach both workers), each checking that the versions it sees never go back."""

    def __init__(self, url: str, clients: int = 6) -> None:
        self.url = f"{url}/v2/models/m/infer"
        self.stop = threading.Event()
        self.failures: list[str] = []
        self.went_back: list[str] = []
        self.versions: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        seen: Counter[str] = Counter()
        bad: list[str] = []
        back: list[str] = []
        newest = 0
        kept = httpx.Client(timeout=10)
        fresh = httpx.Client(timeout=10, limits=httpx.Limits(max_keepalive_connections=0))
        n = 0
        with kept, fresh:
            while not self.stop.is_set():
                n += 1
                try:
                    r = (fresh if n % 2 else kept).post(self.url, json=BODY)
                except httpx.HTTPError as exc:
                    bad.append(f"{type(exc).__name__}: {exc}")
                    continue
                if r.status_code != 200:
                    bad.append(f"{r.status_code}: {r.text}")
                    continue
                doc = r.json()
                version = doc["model_version"]
                label, probs = (o["data"] for o in doc["outputs"])
                want_label, want_probs = EXPECTED[version]
                if label != want_label.tolist() or not np.allclose(probs, want_probs.reshape(-1), atol=1e-5):
                    bad.append(f"v{version} answered with another version's outputs")
                if int(version) < newest:
                    back.append(f"v{version} after v{newest}")
                newest = max(newest, int(version))
                seen[version] += 1
        with self.lock:
            self.versions.update(seen)
            self.failures.extend(bad)
            self.went_back.extend(back)

    def __enter__(self) -> ManyConnections:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)


def worker_requests(s: Any) -> dict[str, float]:
    """Requests answered per worker, from the aggregated ``/metrics`` (any worker answers)."""
    from tests.runtime.serving.conftest import scrape

    text = httpx.get(f"{s.url}/metrics").text
    return {
        dict(labels)["worker"]: v
        for (name, labels), v in scrape(text).items()
        if name == "mlplat_serving_worker_requests_total"
    }


def test_swaps_under_load_with_two_workers_lose_no_request_and_never_go_back(
    tmp_path: Path, serving_factory: Any
) -> None:
    good = {v: build_version(tmp_path, v, seed=int(v)) for v in ("1", "2", "3", "4", "5", "6", "7")}
    broken = [
        (corrupt_onnx_bundle(tmp_path, "90"), "not a readable ONNX model"),
        (wrong_signature_bundle(tmp_path, "91"), "signature does not match its model"),
        (tampered_bundle(tmp_path, "92"), "checksum differs from the manifest"),
    ]
    s = serving_factory(good["1"], "--workers", "2")
    with ManyConnections(s.url) as load:
        time.sleep(0.3)
        for k in range(2, 8):
            r = s.load(good[str(k)])
            assert r.status_code == 200, r.text
            assert r.json()["version"] == str(k)
            if k - 2 < len(broken):  # a refused bundle between two swaps: nobody leaves v{k}
                path, reason = broken[k - 2]
                r = s.load(path)
                assert 400 <= r.status_code < 500, r.text
                assert reason in r.json()["error"], r.text
                (entry,) = s.index()
                assert (entry["version"], entry["state"]) == (str(k), "READY")
                assert reason in entry["reason"]
            time.sleep(0.1)
        time.sleep(0.3)
    assert load.failures == []
    assert load.went_back == []
    assert {"1", "7"} <= set(load.versions) and sum(load.versions.values()) > 100, load.versions
    (entry,) = s.index()
    assert (entry["version"], entry["state"]) == ("7", "READY")
    # both workers answered (the kernel spreads new connections over them)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        per_worker = worker_requests(s)
        if len(per_worker) == 2 and all(v > 10 for v in per_worker.values()):
            break
        time.sleep(0.2)
    assert len(per_worker) == 2 and all(v > 10 for v in per_worker.values()), per_worker


def test_a_worker_that_dies_while_preparing_rolls_the_swap_back(tmp_path: Path, serving_factory: Any) -> None:
    from tests.helpers.load import InferenceLoad, infer_body
    from tests.runtime.serving.test_workers import slowish_bundle, worker_pids

    s = serving_factory(build_version(tmp_path, "1", seed=1), "--workers", "2")
    slow = slowish_bundle(tmp_path, "3")  # its warm-up keeps each worker busy for seconds
    before = worker_pids(s.pid)
    with InferenceLoad(f"{s.url}/v2/models/m/infer", infer_body(X), clients=2, pause_s=0.02) as load:
        killer = threading.Thread(target=kill_when_busy, args=(before[1],))
        killer.start()
        r = s.load(slow)
        killer.join()
    assert r.status_code == 503, r.text
    assert "worker 1" in r.json()["error"] and "exited" in r.json()["error"]
    (entry,) = s.index()
    assert (entry["version"], entry["state"]) == ("1", "READY") and "exited" in entry["reason"]
    # every answer, before, during and after, came from v1; only the killed worker's
    # connections broke (a SIGKILL takes them down), no request was refused
    assert {v for _, status, v in load.outcomes if status == 200} == {"1"}
    assert all(status in (0, 200) for _, status, _ in load.outcomes), load.failures
    # the other worker dropped what it had prepared; the killed one comes back on v1
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (len(worker_pids(s.pid)) < 2 or worker_pids(s.pid) == before):
        time.sleep(0.2)
    fresh = httpx.Client(timeout=10, limits=httpx.Limits(max_keepalive_connections=0))
    with fresh:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(worker_requests(s)) < 2:
            time.sleep(0.2)
        versions = {
            fresh.post(f"{s.url}/v2/models/m/infer", json=BODY).json()["model_version"] for _ in range(40)
        }
    assert versions == {"1"}
    assert s.load(build_version(tmp_path, "4", seed=4)).status_code == 200
