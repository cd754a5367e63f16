"""Start the real metadata service (``python -m mlplat_runtime.metadata``) for a test.

It listens on a free port chosen by the OS (``--port 0``); the URL is read from the start-up
line, so there is no race between picking a port and binding it. The service is stopped with
SIGTERM (a graceful shutdown that checkpoints the DuckDB file), killed if it does not exit.
"""

from __future__ import annotations

import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

_URL = re.compile(r"http://[\w.\-:\[\]]+")


@dataclass
class RunningMetadata:
    url: str
    process: subprocess.Popen[str]
    db: Path
    log: Path

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, wait; returns the exit code (kills and returns -9 if it hangs)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
                return -9
        if self.process.stdout is not None:
            self.process.stdout.close()
        return int(self.process.returncode)


def start_metadata(
    db: Path, *, startup_timeout: float = 30.0, port: int = 0, extra: tuple[str, ...] = ()
) -> RunningMetadata:
    """Start the service on ``db``; raises AssertionError (with its log) if it does not start."""
    log = db.with_name(db.name + ".service.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as err:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlplat_runtime.metadata",
                "--db",
                str(db),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    assert process.stdout is not None
    deadline = time.monotonic() + startup_timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.1)
        if ready:
            line = process.stdout.readline()
            match = _URL.search(line)
            if match:
                return RunningMetadata(url=match.group(0), process=process, db=db, log=log)
            if not line:  # EOF: it exited
                break
        elif process.poll() is not None:
            break
    process.kill()
    process.wait(5)
    raise AssertionError(f"metadata service did not start on {db}:\n{log.read_text(errors='replace')}")


@contextmanager
def metadata_service(db: Path, *, startup_timeout: float = 30.0) -> Iterator[RunningMetadata]:
    service = start_metadata(db, startup_timeout=startup_timeout)
    try:
        yield service
    finally:
        service.stop()
