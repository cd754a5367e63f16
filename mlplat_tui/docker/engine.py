"""Talking to a Docker engine, for the docker backend and ``mlplat images build``: connecting with
an error that says which engine and why, reading usage from the engine's stats, copying files
into a container owned by the image's user, and hints for what the engine refuses.

Kept apart from ``stack/docker.py`` so the backend reads as the stack's lifecycle only.
Imports docker inside functions; never imports textual.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from mlplat_runtime.errors import StackError

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container

RUNTIME_UID = 10001  # the images' `mlplat` user (Dockerfile)
BUNDLES_DIR = "/bundles"
NO_ENGINE_HINT = (
    "start the Docker engine (`sudo systemctl start docker`, or scripts/ensure-docker.sh), "
    'or use the local backend: `mlplat up --backend local` ([stack] backend = "local")'
)


def connect() -> docker.DockerClient:
    """A client for the engine ``DOCKER_HOST`` names (else the local socket), checked with a ping.

    Raises ``StackError`` saying which engine and why: none answers, or it refused us.
    """
    import docker

    where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        text = str(exc)
        if "Permission denied" in text or "PermissionError" in text:
            raise StackError(
                f"the Docker engine at {where} refused the connection: permission denied",
                hint="add your user to the `docker` group (`sudo usermod -aG docker $USER`, then log in "
                "again), or use the local backend: `mlplat up --backend local`",
            ) from None
        raise StackError(
            f"no Docker engine answers at {where} ({_reason(text)})", hint=NO_ENGINE_HINT
        ) from None
    return client


@contextlib.contextmanager
def engine_errors(what: str) -> Iterator[None]:
    """An engine that fails in the middle of an operation, as a StackError saying during what."""
    import docker
    import requests

    try:
        yield
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise StackError(
            f"{what}: the Docker engine failed: {explain(exc)}",
            hint="check the engine (`docker info`), then try again",
        ) from None


def _reason(text: str) -> str:
    for needle in (
        "No such file or directory",
        "Connection refused",
        "timed out",
        "Name or service not known",
    ):
        if needle in text:
            return needle.lower()
    return text.splitlines()[0][:200] if text else "unknown error"


def engine_has_gpu_support(info: dict[str, Any]) -> bool:
    """The engine can hand NVIDIA GPUs to containers (nvidia runtime or the toolkit's hook)."""
    if "nvidia" in (info.get("Runtimes") or {}):
        return True
    return shutil.which("nvidia-container-runtime-hook") is not None


def explain(exc: Exception) -> str:
    return str(getattr(exc, "explanation", None) or exc)


def start_hint(exc: Exception) -> str:
    text = explain(exc).lower()
    if "port is already allocated" in text or "address already in use" in text:
        return "another program holds the port: stop it, or set [stack] port_base in mlplat.toml"
    if "device driver" in text or "nvidia" in text or "gpu" in text:
        return (
            "this engine cannot hand GPUs to containers: install the NVIDIA Container Toolkit, "
            'or set [stack] gpu = "off" in mlplat.toml'
        )
    return "see the message above; `mlplat up` again once fixed"


def epoch(stamp: str | None) -> float | None:
    """Docker's ``StartedAt`` (RFC 3339 with nanoseconds) as epoch seconds; None when unset."""
    if not stamp or stamp.startswith("0001-"):
        return None
    try:
        when = datetime.fromisoformat(stamp)  # 3.11+: "Z" and nanoseconds (cut to microseconds)
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def usage(container: Container, cpu: bool = True) -> tuple[float | None, int | None]:
    """CPU % (of one core, summed over cores like `docker stats`) and memory less page cache."""
    try:
        # one_shot: the engine answers at once, without the second sample CPU % needs.
        s = container.stats(stream=False, one_shot=not cpu)
    except Exception:
        return None, None
    return (_cpu_percent(s) if cpu else None), _memory(s)


def _cpu_percent(s: dict[str, Any]) -> float | None:
    try:
        now, before = s["cpu_stats"], s["precpu_stats"]
        cpu_delta = now["cpu_usage"]["total_usage"] - before["cpu_usage"]["total_usage"]
        sys_delta = now.get("system_cpu_usage", 0) - before.get("system_cpu_usage", 0)
        ncpu = now.get("online_cpus") or len(now["cpu_usage"].get("percpu_usage") or []) or 1
    except (KeyError, TypeError):
        return None
    return round(cpu_delta / sys_delta * ncpu * 100.0, 1) if sys_delta > 0 and cpu_delta >= 0 else 0.0


def _memory(s: dict[str, Any]) -> int | None:
    try:
        m = s["memory_stats"]
        st = m.get("stats") or {}
        return int(m["usage"]) - int(st.get("inactive_file", st.get("total_inactive_file", 0)))
    except (KeyError, TypeError, ValueError):
        return None


def _owned(info: tarfile.TarInfo, mode: int | None = None) -> tarfile.TarInfo:
    info.uid = info.gid = RUNTIME_UID
    info.uname = info.gname = ""
    if mode is not None:
        info.mode = mode
    return info


def tar_bytes(name: str, data: bytes, mode: int = 0o644) -> bytes:
    """A one-file tar owned by the image's user (e.g. the admin token, mode 0600)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = _owned(tarfile.TarInfo(name), mode)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def stage_bundle(container: Container, src: Path) -> str:
    """Copy a bundle (folder or ``.mlbundle``) into ``/bundles`` of a running container, once.

    Folders land at ``/bundles/<bundle id hex>``; archives at ``/bundles/<name>-<sha12>.mlbundle``.
    A folder whose manifest changed since (gates written in) is copied again. The copy goes to a
    side folder first and is renamed into place, so a reader never sees half a bundle.
    """
    if src.is_dir():
        manifest = (src / "manifest.json").read_bytes()
        # "sha256:<hex>": the hex names the folder (no colon in paths).
        name = str(json.loads(manifest).get("bundle_id") or "").rpartition(":")[2]
        digest, check = hashlib.sha256(manifest).hexdigest(), f"{name}/manifest.json"
    else:
        with open(src, "rb") as fh:
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
        name = f"{src.name.removesuffix('.mlbundle')}-{digest[:12]}.mlbundle"
        check = name
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}", name):
        raise StackError(
            f"{src}: not a bundle (no usable bundle id)", hint="build it with `mlplat bundle build`"
        )
    target = f"{BUNDLES_DIR}/{name}"
    res = container.exec_run(["sha256sum", f"{BUNDLES_DIR}/{check}"], user=str(RUNTIME_UID))
    if res.exit_code == 0 and bytes(res.output).split(b" ")[0].decode() == digest:
        return target
    incoming = f".incoming-{secrets.token_hex(6)}"
    with tempfile.TemporaryFile() as out:
        _write_tree(out, src, f"{incoming}/{name}")
        container.put_archive(BUNDLES_DIR, out)
    script = (
        f'set -e; cd {BUNDLES_DIR}; rm -rf "{name}.old"; '
        f'if [ -e "{name}" ]; then mv "{name}" "{name}.old"; fi; '
        f'mv "{incoming}/{name}" "{name}"; rm -rf "{incoming}" "{name}.old"'
    )
    res = container.exec_run(["sh", "-c", script], user=str(RUNTIME_UID))
    if res.exit_code != 0:
        raise StackError(
            f"could not stage {src} in the serving container: "
            f"{bytes(res.output).decode(errors='replace').strip()}",
            hint="check the bundles volume (`mlplat logs serving`)",
        )
    return target


def _write_tree(out: IO[bytes], src: Path, arcname: str) -> None:
    """Tar ``src`` (only regular files and folders: bundles hold nothing else) as ``arcname``."""
    with tarfile.open(fileobj=out, mode="w") as tar:
        parts = arcname.split("/")
        for i in range(1, len(parts)):
            info = _owned(tarfile.TarInfo("/".join(parts[:i])), 0o755)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        tar.add(src, arcname=arcname, filter=lambda i: _owned(i) if (i.isfile() or i.isdir()) else None)
    out.seek(0)
