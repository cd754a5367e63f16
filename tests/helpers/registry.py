"""A real image registry for push tests: Debian's ``docker-registry`` on 127.0.0.1, a free port.

The package's own config listens on every interface; ``started_registry`` writes its own
(loopback, a storage folder under the test's tmp, deletes enabled) and, with ``users``, an
htpasswd file (bcrypt, the only scheme the registry takes, written by ``htpasswd -B`` from
apache2-utils). The Docker engine treats 127.0.0.0/8 as an insecure registry, so plain HTTP
works without touching the engine's configuration. The process is always stopped.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.helpers.ports import free_port

REGISTRY_BIN = "/usr/bin/docker-registry"


@dataclass(frozen=True)
class RunningRegistry:
    address: str  # "127.0.0.1:PORT", what a target's image_registry names
    root: Path  # its storage folder
    users: dict[str, str]

    def _auth(self) -> tuple[str, str] | None:
        if not self.users:
            return None
        user, password = next(iter(self.users.items()))
        return (user, password)

    def repositories(self) -> list[str]:
        r = httpx.get(f"http://{self.address}/v2/_catalog", auth=self._auth(), timeout=10)
        r.raise_for_status()
        return list(r.json().get("repositories") or [])

    def tags(self, repository: str) -> list[str]:
        name = repository.split("/", 1)[1] if repository.startswith(self.address) else repository
        r = httpx.get(f"http://{self.address}/v2/{name}/tags/list", auth=self._auth(), timeout=10)
        if r.status_code == 404:
            return []
        r.raise_for_status()
        return list(r.json().get("tags") or [])


def _htpasswd(path: Path, users: dict[str, str]) -> None:
    lines = []
    for user, password in users.items():
        out = subprocess.run(
            ["htpasswd", "-nbB", user, password], capture_output=True, text=True, check=True, timeout=30
        )
        lines.append(out.stdout.strip())
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)


@contextlib.contextmanager
def started_registry(tmp: Path, users: dict[str, str] | None = None) -> Iterator[RunningRegistry]:
    """A registry on 127.0.0.1 with its storage in ``tmp``; with ``users``, basic auth required."""
    if not Path(REGISTRY_BIN).is_file() or (users and shutil.which("htpasswd") is None):
        raise RuntimeError(
            "docker-registry (and apache2-utils for htpasswd) are not installed: "
            "scripts/install-system-deps.sh"
        )
    users = dict(users or {})
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    auth = ""
    if users:
        _htpasswd(tmp / "htpasswd", users)
        auth = f"auth:\n  htpasswd:\n    realm: mlplat-tests\n    path: {tmp / 'htpasswd'}\n"
    config = tmp / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {tmp / 'data'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
        f"{auth}"
    )
    log = open(tmp / "registry.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {(tmp / 'registry.log').read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=2).status_code in (200, 401):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("docker-registry did not answer within 30 s")
            time.sleep(0.1)
        yield RunningRegistry(address=f"127.0.0.1:{port}", root=tmp / "data", users=users)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
