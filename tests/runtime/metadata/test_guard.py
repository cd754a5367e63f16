"""Who may call the metadata service, and what one query may cost it: a real service process,
spoken to as a web page, a DNS-rebinding page, a client without the token and a runaway query
would."""

from __future__ import annotations

import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from mlplat_runtime.metadata.guard import RequestGuard, host_name
from mlplat_runtime.metadata.store import MetadataStore

pytestmark = pytest.mark.integration

JSON = {"content-type": "application/json"}
RUNAWAY = "SELECT count(*) FROM range(100000000000) a"  # minutes of work, little memory


class Service:
    def __init__(self, db: Path, *extra: str) -> None:
        self.log = db.with_name("service.log")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlplat_runtime.metadata", "--db", str(db), "--port", "0", *extra],
            stdout=subprocess.PIPE, stderr=self.log.open("ab"), text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if ready:
                line = self.proc.stdout.readline()
                found = re.search(r"http://127\.0\.0\.1:(\d+)", line)
                if found:
                    self.port = int(found.group(1))
                    self.url = found.group(0)
                    self.line = line
                    return
                if not line:
                    break
        self.proc.kill()
        raise AssertionError(self.log.read_text())

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                return -9
        return self.proc.returncode


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    svc = Service(tmp_path / "metadata.duckdb", "--token-file", str(tmp_path / "stack" / "metadata.token"))
    yield svc
    assert svc.stop() == 0, svc.log.read_text()


def token_of(tmp_path: Path) -> str:
    return (tmp_path / "stack" / "metadata.token").read_text().strip()


def run_count(svc: Service) -> int:
    return len(httpx.get(f"{svc.url}/runs", timeout=10).json()["runs"])


def test_writes_need_the_token_reads_do_not(service: Service, tmp_path: Path) -> None:
    assert "writes need the token in" in service.line
    run = {"run_id": "r1", "model_name": "m"}
    r = httpx.post(f"{service.url}/runs", json=run, timeout=10)
    assert r.status_code == 401 and r.json()["type"] == "AuthError"
    r = httpx.post(f"{service.url}/runs", json=run, headers={"Authorization": "Bearer wrong"}, timeout=10)
    assert r.status_code == 401
    assert run_count(service) == 0
    ok = httpx.post(
        f"{service.url}/runs", json=run, headers={"Authorization": f"Bearer {token_of(tmp_path)}"}
    )
    assert ok.status_code == 200
    assert run_count(service) == 1  # GET needs no token


def test_what_a_web_page_can_send_is_refused_and_changes_nothing(service: Service, tmp_path: Path) -> None:
    auth = {"Authorization": f"Bearer {token_of(tmp_path)}"}
    body = b'{"run_id": "evil", "model_name": "m"}'
    attempts = [
        ({"content-type": "text/plain"}, 415),  # a "simple" cross-site POST: no preflight
        ({"content-type": "application/x-www-form-urlencoded"}, 415),
        ({}, 415),
        ({**JSON, "origin": "http://evil.example"}, 403),
        ({**JSON, "origin": "null"}, 403),
        ({**JSON, "sec-fetch-site": "cross-site"}, 403),
        ({**JSON, "host": f"evil.example:{service.port}"}, 403),  # DNS rebinding
    ]
    for headers, status in attempts:
        r = httpx.post(f"{service.url}/runs", content=body, headers={**auth, **headers}, timeout=10)
        assert r.status_code == status, (headers, r.text)
    rebound = httpx.get(f"{service.url}/runs", headers={"host": "evil.example"}, timeout=10)
    assert rebound.status_code == 403 and "evil.example" in rebound.json()["error"]
    for host in ("localhost", "127.0.0.1", "[::1]"):
        assert (
            httpx.get(f"{service.url}/health", headers={"host": f"{host}:{service.port}"}).status_code == 200
        )
    assert run_count(service) == 0


def test_the_guard_parses_hosts_and_can_be_widened() -> None:
    assert host_name("[::1]:7801") == "::1" and host_name("LocalHost:80") == "localhost"
    assert host_name("example.com") == "example.com"
    guard = RequestGuard(allowed_hosts=["metadata"], allowed_origins=["http://dash.local/"])
    guard.check("GET", [(b"host", b"metadata:7801"), (b"origin", b"http://dash.local")])
    guard.check("POST", [(b"host", b"localhost"), (b"content-type", b"application/json; charset=utf-8")])


def test_a_query_that_would_eat_memory_fails_inside_its_limit(service: Service, tmp_path: Path) -> None:
    auth = {"Authorization": f"Bearer {token_of(tmp_path)}"}
    proc = psutil.Process(service.proc.pid)
    peak = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, proc.memory_info().rss)
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        r = httpx.post(
            f"{service.url}/sql",
            json={"query": "SELECT list(range) FROM range(200000000)"},
            headers=auth,
            timeout=60,
        )
    finally:
        stop.set()
        watcher.join()
    assert r.status_code == 400 and "needs more memory" in r.json()["error"], r.text
    assert peak < 1600 * 1024 * 1024, f"peak RSS {peak >> 20} MiB"
    assert httpx.post(f"{service.url}/sql", json={"query": "SELECT 42"}, headers=auth).json()["rows"] == [
        [42]
    ]


def test_a_query_whose_client_went_away_is_interrupted(service: Service, tmp_path: Path) -> None:
    token = token_of(tmp_path).encode()
    for _ in range(2):  # both query slots taken by queries nobody waits for any more
        sock = socket.create_connection(("127.0.0.1", service.port))
        body = b'{"query": "%s"}' % RUNAWAY.encode()
        sock.sendall(
            b"POST /sql HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s" % (token, len(body), body)
        )
        time.sleep(0.3)
        sock.close()
    time.sleep(0.5)
    t0 = time.monotonic()
    r = httpx.post(
        f"{service.url}/sql",
        json={"query": "SELECT 1"},
        headers={"Authorization": f"Bearer {token.decode()}"},
    )
    assert r.status_code == 200 and time.monotonic() - t0 < 3, r.text  # a slot was free again


def test_sigterm_stops_the_service_while_a_query_runs(tmp_path: Path) -> None:
    svc = Service(tmp_path / "m.duckdb")
    worker = threading.Thread(
        target=lambda: httpx.post(f"{svc.url}/sql", json={"query": RUNAWAY}, timeout=60), daemon=True
    )
    worker.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    assert svc.stop() == 0
    assert time.monotonic() - t0 < 8


def test_big_answers_and_cells_are_cut_and_the_answer_says_so(tmp_path: Path) -> None:
    from mlplat_runtime.metadata.sqlcaps import SqlCaps

    caps = SqlCaps(rows=100, total_bytes=10_000, cell_bytes=1000)
    with MetadataStore(tmp_path / "m.duckdb", sql_caps=caps) as store:
        big = store.sql("SELECT range AS i, repeat('x', 2000) AS s, [1, 2] AS l FROM range(3)")
        assert big.columns == ["i", "s", "l"]
        assert big.rows[0][0] == 0 and big.rows[0][1] == "<2000 bytes: over the 1000-byte cell cap>"
        assert big.rows[0][2] == [1, 2] and not big.truncated
        assert big.note == "3 value(s) over 1000 bytes replaced by their size"
        wide = store.sql("SELECT repeat('y', 900) AS s FROM range(50)")
        assert wide.truncated and len(wide.rows) == 11 and "reached 10000 bytes" in (wide.note or "")
        many = store.sql("SELECT range FROM range(1000)")
        assert many.truncated and len(many.rows) == 100 and many.note == "stopped at 100 rows"
        dupes = store.sql("SELECT 1 AS a, 2 AS a")
        assert dupes.columns == ["a", "a"] and dupes.rows == [[1, 2]]
