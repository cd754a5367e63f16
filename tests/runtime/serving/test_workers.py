"""``--workers 2`` against real processes: a killed worker is restarted on the active version,
``/metrics`` on any worker answers the sum of all of them, and SIGTERM drains (readiness false
first, an in-flight request finishes, exit 0) with one process and with workers. The swaps
under load with two workers are in ``test_hot_swap.py``."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from mlplat_runtime.serving.metrics import ServingMetrics, merge_snapshots
from tests.runtime.serving.conftest import build_version, make_slow_logreg_onnx, rehash, sample, scrape

pytestmark = pytest.mark.integration

BODY = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [0.1, 0.2, 0.3, 0.4]}]}


def slowish_bundle(root: Path, version: str, iterations: int = 300_000) -> Path:
    """Version ``version`` of model m (the logistic regression of seed 0) whose every call spins
    first: about a second a call here, so a request stays in flight while the test acts."""
    out = build_version(root, version)
    make_slow_logreg_onnx(out / "model.onnx", iterations=iterations)
    rehash(out)
    return out


def worker_pids(supervisor: int) -> list[int]:
    """The supervisor's worker processes, in start order."""
    import psutil

    kids = []
    for c in psutil.Process(supervisor).children():
        try:
            if "serving.workers" in " ".join(c.cmdline()):
                kids.append((c.create_time(), c.pid))
        except psutil.Error:  # a worker that just died (a zombie until it is reaped)
            continue
    return [pid for _, pid in sorted(kids)]


def fresh_client() -> httpx.Client:
    """A new connection per request: the kernel spreads them over the workers."""
    return httpx.Client(timeout=10, limits=httpx.Limits(max_keepalive_connections=0))


def metrics(s: Any) -> str:
    return httpx.get(f"{s.url}/metrics", timeout=10).text


def wait_for(what: str, check: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_killed_worker_is_restarted_on_the_active_version(tmp_path: Path, serving_factory: Any) -> None:
    s = serving_factory(build_version(tmp_path, "1", seed=1), "--workers", "2")
    assert s.load(build_version(tmp_path, "2", seed=2)).status_code == 200
    before = worker_pids(s.pid)
    assert len(before) == 2
    os.kill(before[0], signal.SIGKILL)
    after = wait_for("a new worker", lambda: (p := worker_pids(s.pid)) and len(p) == 2 and p != before and p)
    assert before[1] in after and before[0] not in after
    wait_for(
        "the restart in the metrics",
        lambda: (
            sample(metrics(s), "mlplat_serving_worker_restarts_total") == 1
            and sample(metrics(s), "mlplat_serving_workers") == 2
        ),
    )
    with fresh_client() as http:
        versions = {
            http.post(f"{s.url}/v2/models/m/infer", json=BODY).json()["model_version"] for _ in range(60)
        }
    assert versions == {"2"}
    # the restarted worker (slot 0) answered some of them, on v2
    wait_for(
        "slot 0 answering", lambda: sample(metrics(s), "mlplat_serving_worker_requests_total", worker="0")
    )
    (entry,) = s.index()
    assert entry["version"] == "2"


def test_metrics_on_any_worker_are_the_sum_over_workers(tmp_path: Path, serving_factory: Any) -> None:
    s = serving_factory(build_version(tmp_path, "1", seed=1), "--workers", "2")
    n = 200
    with fresh_client() as http:
        for _ in range(n):
            assert http.post(f"{s.url}/v2/models/m/infer", json=BODY).status_code == 200
    key = {"model": "m", "version": "1", "endpoint": "infer", "code": "200"}

    def summed() -> bool:
        # the others' part of a worker's answer is up to one collection period old, and the two
        # workers get theirs in turn: wait until scrapes on either worker (new connections) agree
        for _ in range(6):
            text = metrics(s)
            if not (
                sample(text, "mlplat_requests_total", **key) == n
                and sample(text, "mlplat_request_duration_seconds_count", model="m", endpoint="infer") == n
            ):
                return False
        return True

    wait_for("the sum of both workers", summed)
    # every scrape (each on a new connection, so on either worker) answers the same sum
    for _ in range(10):
        text = metrics(s)
        assert sample(text, "mlplat_requests_total", **key) == n
        per_worker = {
            dict(labels)["worker"]: v
            for (name, labels), v in scrape(text).items()
            if name == "mlplat_serving_worker_requests_total"
        }
        assert set(per_worker) == {"0", "1"} and all(v > 0 for v in per_worker.values()), per_worker
        assert sample(text, "mlplat_model_active_info", model="m", version="1",
                      bundle_id=s.index()[0]["bundle_id"], provider="CPUExecutionProvider") == 1  # fmt: skip
        assert sample(text, "mlplat_model_loads_total", model="m", result="ok") is None  # start-up load


def test_snapshots_merge_counters_and_buckets() -> None:
    a, b = ServingMetrics(), ServingMetrics()
    a.observe_request("m", "1", "infer", 200, 0.0002)
    b.observe_request("m", "1", "infer", 200, 0.003)
    b.observe_request("m", "1", "infer", 400, 0.003)
    b.own_models = False
    b.set_active("m", "1", "sha", "CPU")  # a worker's own model series are not in its snapshot
    merged = ServingMetrics.from_snapshot(merge_snapshots(a.snapshot(), b.snapshot()))
    assert merged.requests == {("m", "1", "infer", 200): 2, ("m", "1", "infer", 400): 1}
    hist = merged.request_seconds[("m", "infer")]
    assert sum(hist.counts) == 3 and np.isclose(hist.total, 0.0062)
    assert merged.active == {}
    b.peers = a.snapshot()
    text = b.render().decode()
    assert sample(text, "mlplat_requests_total", model="m", version="1", endpoint="infer", code="200") == 2


def _drain(s: Any, tmp_path: Path) -> None:
    """An in-flight slow request, SIGTERM: readiness false, the request answers 200, exit 0."""
    result: dict[str, Any] = {}

    def slow_request() -> None:
        r = httpx.post(f"{s.url}/v2/models/m/infer", json=BODY, timeout=60)
        result["status"], result["version"] = r.status_code, r.json().get("model_version")

    t = threading.Thread(target=slow_request)
    t.start()
    time.sleep(0.5)  # the request is in ONNX Runtime now (its call takes seconds)
    s.proc.send_signal(signal.SIGTERM)
    seen = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            seen.append(httpx.get(f"{s.url}/v2/health/ready", timeout=2).status_code)
        except httpx.HTTPError:
            break  # the port closed
        if 503 in seen:
            break
        time.sleep(0.05)
    assert 503 in seen, seen
    assert httpx.get(f"{s.url}/v2/health/live", timeout=2).status_code == 200  # still serving
    t.join(60)
    assert result == {"status": 200, "version": "3"}
    assert s.proc.wait(timeout=30) == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{s.url}/v2/health/live", timeout=2)


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_drains_readiness_first_in_flight_requests_finish(
    tmp_path: Path, serving_factory: Any, workers: str
) -> None:
    s = serving_factory(slowish_bundle(tmp_path, "3"), "--workers", workers, "--drain-delay-s", "2",
                        "--grace-s", "60")  # fmt: skip
    _drain(s, tmp_path)


def test_workers_setting_parses_strictly_and_reaches_the_serving_command() -> None:
    from mlplat_runtime.errors import ConfigError
    from mlplat_runtime.serving.__main__ import parse_args
    from mlplat_tui.project.config import parse_config
    from mlplat_tui.stack.services import SPECS, Placement, Service, command

    head = '[project]\nname = "p"\n[model]\nname = "m"\n'
    assert parse_config(head).serving.workers == 1
    assert parse_config(head + "[serving]\nworkers = 3\n").serving.workers == 3
    assert parse_config(head + '[serving]\nworkers = "auto"\n').serving.workers == "auto"
    for bad in ("workers = 0", "workers = true", 'workers = "many"', "threads = 2"):
        with pytest.raises(ConfigError):
            parse_config(head + f"[serving]\n{bad}\n")
    at = Placement(python=("python",), host="127.0.0.1", admin_host="127.0.0.1",
                   ports={"serving": 1, "admin": 2}, data={}, admin_token_file="t")  # fmt: skip
    assert "--workers" not in command(SPECS[Service.SERVING], at)
    args = command(SPECS[Service.SERVING], Placement(**{**at.__dict__, "serving_workers": "auto"}))
    assert args[args.index("--workers") + 1] == "auto"
    assert parse_args(["--workers", "3"]).workers == 3
    assert parse_args(["--workers", "auto"]).workers >= 1
    with pytest.raises(SystemExit):
        parse_args(["--workers", "0"])


def test_grpc_with_two_workers_serves_and_swaps(tmp_path: Path, serving_factory: Any) -> None:
    import tritonclient.grpc as triton

    s = serving_factory(build_version(tmp_path, "1", seed=1), "--workers", "2", "--grpc-port", "0")
    assert s.grpc is not None
    assert s.load(build_version(tmp_path, "2", seed=2)).status_code == 200
    for _ in range(8):  # a new channel each time: the kernel spreads them over both workers
        client = triton.InferenceServerClient(s.grpc)
        assert client.is_server_ready()
        inp = triton.InferInput("input", [1, 4], "FP32")
        inp.set_data_from_numpy(np.ones((1, 4), np.float32))
        assert client.infer("m", [inp]).get_response().model_version == "2"
        client.close()
