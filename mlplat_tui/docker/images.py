"""Build the runtime and tracker images from the repository's ``Dockerfile`` (``mlplat images build``).

Why not ``docker build``: the build goes through the docker SDK so progress streams to the
CLI (and the dashboard) line by line, the images get labels that say exactly what they hold,
and the build context is assembled here:

- the files ``.dockerignore`` allows (an allow-list: Dockerfile, ``dockerfiles/``, the data plane's
  source and pins), and
- with ``wheelhouse``, that folder's wheels as ``wheelhouse/``: the Dockerfile then installs
  with ``pip --no-index`` (air-gapped machines, or a build where pip cannot reach the index).
  Without it a ``wheelhouse/`` in the repository is left out, so what is used is explicit.

Labels on each image: ``io.mlplat.version`` (the mlplat version), ``io.mlplat.lock`` (sha256
of the pinned requirements the image installs, see ``lock_digest``; ``/opt/mlplat/lock.txt``
in the image is the ``pip freeze`` the build checked against them) and ``io.mlplat.source``
(sha256 of the build context and settings, so an unchanged image need not be rebuilt).

Imports docker inside functions; never imports textual.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from mlplat_runtime.errors import MlplatError, ServiceError, UsageError

if TYPE_CHECKING:
    import docker

Progress = Callable[[str], None]  # as in stack.base: this layer does not import the stack

TARGETS: tuple[str, ...] = ("runtime", "tracker")
REQUIREMENTS = {"runtime": "runtime/requirements.txt", "tracker": "dockerfiles/requirements-tracker.txt"}
CUDA_REQUIREMENTS = "dockerfiles/requirements-cuda.txt"
DEFAULT_TAGS = {"runtime": "mlplat-runtime:latest", "tracker": "mlplat-tracker:latest"}
LABEL_VERSION = "io.mlplat.version"
LABEL_LOCK = "io.mlplat.lock"
LABEL_SOURCE = "io.mlplat.source"
WHEELHOUSE_IN_CONTEXT = "wheelhouse"
BUILD_TIMEOUT_S = 3600  # one pip step can be silent for minutes; the default 60 s would cut it


@dataclass(frozen=True)
class BuiltImage:
    target: str
    tag: str
    image_id: str
    size_bytes: int
    seconds: float
    lock: str
    source: str
    reused: bool = False  # only_if_changed found it current and built nothing

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _quiet(_: str) -> None:
    return None


def source_root() -> Path:
    """The folder holding the ``Dockerfile``: the mlplat source tree this package runs from."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "Dockerfile").is_file():
        raise UsageError(
            f"no Dockerfile beside the mlplat package ({root}): building images needs the source tree",
            hint="run `mlplat images build --context <checkout>` from a clone of the mlplat repository",
        )
    return root


def canonical_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(text: str) -> dict[str, str]:
    """``name -> version`` of each ``name[extras]==version`` line (same rule as the build's check)."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*==\s*([^\s;]+)", line)
        if m:
            out[canonical_name(m.group(1))] = m.group(3)
    return out


def lock_digest(requirements_text: str) -> str:
    """sha256 of the sorted ``name==version`` pins: equal for a requirements file and for the
    ``pip freeze`` of an image built from it, whatever the spelling, order or comments."""
    body = "".join(f"{n}=={v}\n" for n, v in sorted(pins(requirements_text).items()))
    return hashlib.sha256(body.encode()).hexdigest()


def _ignore_patterns(root: Path) -> list[str]:
    path = root / ".dockerignore"
    if not path.is_file():
        return []
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def context_files(root: Path) -> list[str]:
    """Relative paths (files only, sorted) of the build context, ``.dockerignore`` applied the way
    the docker CLI applies it; the repository's own ``wheelhouse/`` is never part of it."""
    from docker.utils.build import exclude_paths

    included = exclude_paths(str(root), _ignore_patterns(root), dockerfile="Dockerfile")
    out = []
    for rel in included:
        rel = rel.replace("\\", "/")
        if rel == WHEELHOUSE_IN_CONTEXT or rel.startswith(WHEELHOUSE_IN_CONTEXT + "/"):
            continue
        if (root / rel).is_file():
            out.append(rel)
    return sorted(out)


def source_digest(root: Path, files: Iterable[str], settings: dict[str, str]) -> str:
    h = hashlib.sha256()
    for key in sorted(settings):
        h.update(f"{key}={settings[key]}\0".encode())
    for rel in files:
        h.update(rel.encode() + b"\0")
        h.update(hashlib.sha256((root / rel).read_bytes()).digest())
    return h.hexdigest()


def _wheels(wheelhouse: Path) -> list[Path]:
    wheels = sorted(wheelhouse.glob("*.whl"))
    if not wheels:
        raise UsageError(
            f"the wheelhouse {wheelhouse} holds no wheels",
            hint="fill it first: scripts/build-wheelhouse.sh " + str(wheelhouse),
        )
    return wheels


def write_context(root: Path, files: Iterable[str], wheels: Iterable[Path], out: IO[bytes]) -> None:
    """An uncompressed tar of the context (wheels are compressed already; gzip would only cost CPU)."""

    def clean(info: tarfile.TarInfo) -> tarfile.TarInfo:
        # Owner and mtime do not reach the image (COPY resets owner) but would change nothing
        # either: fixing them keeps the context byte-identical for identical sources.
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        return info

    with tarfile.open(fileobj=out, mode="w") as tar:
        for rel in files:
            tar.add(root / rel, arcname=rel, recursive=False, filter=clean)
        for wheel in wheels:
            tar.add(wheel, arcname=f"{WHEELHOUSE_IN_CONTEXT}/{wheel.name}", recursive=False, filter=clean)
    out.seek(0)


def _hint_for(error: str) -> str:
    low = error.lower()
    if (
        "pull access denied" in low
        or "manifest unknown" in low
        or "repository does not exist" in low
        or ("not found" in low and "from" in low)
        or "no such host" in low
    ):
        return (
            "the base image cannot be pulled here; make a local one with scripts/make-base-image.sh, "
            "then pass --base-image mlplat-base:bookworm"
        )
    if (
        "ssl" in low
        or "certificate" in low
        or "could not find a version" in low
        or "no matching distribution" in low
    ):
        return (
            "pip inside the build cannot install from the index; fill a wheelhouse on the host with "
            "scripts/build-wheelhouse.sh, then pass --wheelhouse wheelhouse"
        )
    return "the lines above show the failing step; fix it and run `mlplat images build` again"


def _stream(chunks: Iterator[dict[str, Any]], target: str, say: Progress) -> str | None:
    """Relay the engine's build output line by line; the image id, or raise on a build error."""
    image_id: str | None = None
    tail: list[str] = []
    for chunk in chunks:
        if "error" in chunk or "errorDetail" in chunk:
            detail = chunk.get("errorDetail") or {}
            message = str(chunk.get("error") or detail.get("message") or "unknown error").strip()
            last = "\n".join(tail[-8:])
            raise MlplatError(
                f"building the {target} image failed: {message}" + (f"\n{last}" if last else ""),
                hint=_hint_for(message + "\n" + "\n".join(tail)),
            )
        aux = chunk.get("aux")
        if isinstance(aux, dict) and aux.get("ID"):
            image_id = str(aux["ID"])
        text = chunk.get("stream") or chunk.get("status") or ""
        for line in str(text).splitlines():
            line = line.rstrip()
            if line:
                tail.append(line)
                del tail[:-50]
                say(f"[{target}] {line}")
    return image_id


def _current(client: docker.DockerClient, tag: str, source: str) -> Any | None:
    import docker

    try:
        image = client.images.get(tag)
    except docker.errors.ImageNotFound:
        return None
    return image if (image.labels or {}).get(LABEL_SOURCE) == source else None


def build_images(
    *,
    targets: Iterable[str] = TARGETS,
    tags: dict[str, str] | None = None,
    base_image: str | None = None,
    wheelhouse: Path | None = None,
    cuda: bool = False,
    root: Path | None = None,
    client: docker.DockerClient | None = None,
    progress: Progress | None = None,
    only_if_changed: bool = False,
) -> list[BuiltImage]:
    """Build each target (``runtime``, ``tracker``) and tag it; progress gets every build line.

    ``only_if_changed``: keep an image whose ``io.mlplat.source`` label matches what would be
    built (same context, base image, wheels and flags) instead of sending the context again.
    """
    from importlib.metadata import PackageNotFoundError, version

    from mlplat_tui.docker.engine import connect

    say = progress or _quiet
    root = Path(root).resolve() if root else source_root()
    if not (root / "Dockerfile").is_file():
        raise UsageError(f"no Dockerfile in {root}", hint="point --context at an mlplat checkout")
    wanted = list(dict.fromkeys(targets))
    unknown = [t for t in wanted if t not in TARGETS]
    if unknown:
        raise UsageError(f"unknown image target {', '.join(unknown)}", hint=f"one of {', '.join(TARGETS)}")
    tags = {**DEFAULT_TAGS, **(tags or {})}
    wheels = _wheels(Path(wheelhouse)) if wheelhouse else []
    try:
        mlplat_version = version("mlplat")
    except PackageNotFoundError:
        mlplat_version = "dev"
    client = client or connect()
    files = context_files(root)
    settings = {
        "base_image": base_image or "",
        "cuda": "1" if cuda else "0",
        "version": mlplat_version,
        "wheels": ",".join(w.name for w in wheels),
    }
    results: list[BuiltImage] = []
    with tempfile.TemporaryFile() as context:
        written = False
        locks = {t: lock_digest((root / REQUIREMENTS[t]).read_text(encoding="utf-8")) for t in TARGETS}
        for target in wanted:
            lock = locks[target]
            # The tracker's stages never read the data plane's files (see the Dockerfile).
            mine = [f for f in files if target == "runtime" or not f.startswith("runtime/")]
            source = source_digest(root, mine, {**settings, "target": target})
            kept = _current(client, tags[target], source) if only_if_changed else None
            if kept is not None:
                say(f"[{target}] {tags[target]} is current ({kept.short_id}); not rebuilt")
                size = int(kept.attrs.get("Size", 0))
                results.append(
                    BuiltImage(target, tags[target], kept.id, size, 0.0, lock, source, reused=True)
                )
                continue
            if not written:
                extra = f", {len(wheels)} wheels from {wheelhouse}" if wheels else ""
                say(f"sending the build context ({len(files)} files{extra})")
                write_context(root, files, wheels, context)
                written = True
            context.seek(0)
            # Both locks every time: the other target's stages then match their cache.
            buildargs = {
                "MLPLAT_VERSION": mlplat_version,
                "MLPLAT_RUNTIME_LOCK": locks["runtime"],
                "MLPLAT_TRACKER_LOCK": locks["tracker"],
                "RUNTIME_CUDA": str(int(cuda)),
            }
            if base_image:
                buildargs["BASE_IMAGE"] = base_image
            say(
                f"[{target}] building {tags[target]}"
                + (f" on {base_image}" if base_image else "")
                + (" from the wheelhouse (pip --no-index)" if wheels else "")
            )
            results.append(_build_one(client, context, target, tags[target], buildargs, lock, source, say))
    return results


def _build_one(
    client: docker.DockerClient,
    context: IO[bytes],
    target: str,
    tag: str,
    buildargs: dict[str, str],
    lock: str,
    source: str,
    say: Progress,
) -> BuiltImage:
    import docker
    import requests

    begun = time.monotonic()
    previous = _image_id(client, tag)
    try:
        chunks = client.api.build(
            fileobj=context, custom_context=True, tag=tag, target=target, buildargs=buildargs,
            labels={LABEL_SOURCE: source}, decode=True, rm=True, forcerm=True, pull=False,
            timeout=BUILD_TIMEOUT_S,
        )  # fmt: skip
        _stream(chunks, target, say)
    except docker.errors.APIError as exc:
        raise MlplatError(
            f"the engine refused to build the {target} image: {exc.explanation or exc}",
            hint=_hint_for(str(exc)),
        ) from None
    except requests.exceptions.RequestException as exc:
        raise ServiceError(
            f"lost the Docker engine while building the {target} image: {exc}",
            hint="check the engine (`docker info`), then build again",
        ) from None
    image = client.images.get(tag)
    if previous and previous != image.id:
        # The image this tag named before: drop it when no other tag names it and no container
        # uses it (the engine refuses then). Only its own layers go; the dependency stages'
        # layers stay as the build cache.
        with contextlib.suppress(docker.errors.APIError):
            if not client.images.get(previous).tags:
                client.images.remove(previous)
    seconds = time.monotonic() - begun
    size = int(image.attrs.get("Size", 0))
    say(f"[{target}] built {tag} ({image.short_id}, {size / 1e6:.0f} MB) in {seconds:.1f}s")
    return BuiltImage(target, tag, image.id, size, round(seconds, 1), lock, source)


def _image_id(client: docker.DockerClient, tag: str) -> str | None:
    import docker

    try:
        return str(client.images.get(tag).id)
    except docker.errors.ImageNotFound:
        return None
