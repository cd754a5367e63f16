"""Step 4 of a push to a container target: the bundle baked into an image, pushed, pinned by digest.

One image serves Swarm, Kubernetes and KServe alike: the runtime image (``mlplat images
build``) with the verified bundle folder copied in and a command that serves it at start
(``dockerfiles/bundle.Dockerfile``). It is pushed to the target's image registry as
``<registry>/mlplat/<model>:<version>-<bundle id 12>`` and every engine deploys it by the
digest the registry answered (``RepoDigests``), never by the tag.

- The same bundle gives the same tag: when the registry already holds it, nothing is built
  or pushed and its digest is returned (a second push of one bundle costs one registry call).
- Credentials go to the engine's registry calls only (``auth_config``): nothing is written to
  a Docker config file. They are checked before the build: wrong credentials leave the
  registry and the engine's images as they were.
- The build context is a tar of the Dockerfile and the bundle's files, owners and times fixed,
  so the engine's cache gives the same image for the same bundle.

Raises ``TargetError`` when the image registry refuses or cannot be reached, ``MlplatError``
when the build fails. Imports docker inside functions; never imports textual.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mlplat_runtime.errors import MlplatError, TargetError, UsageError
from mlplat_tui.push.engine import ImageRef, Progress

if TYPE_CHECKING:
    import docker

__all__ = [
    "DOCKERFILE",
    "auth_config",
    "build_and_push",
    "check_build",
    "check_login",
    "image_repository",
    "image_tag",
    "is_builtin",
]

DOCKERFILE = Path(__file__).resolve().parents[2] / "dockerfiles" / "bundle.Dockerfile"
RUNTIME_IMAGE_ENV = "MLPLAT_PUSH_RUNTIME_IMAGE"
DEFAULT_RUNTIME_IMAGE = "mlplat-runtime:latest"
PUSH_TIMEOUT_S = 900  # when the caller gives no deadline of its own


class Secret(Protocol):
    """What ``push.credentials.Credentials`` holds (``username`` may be None: a token alone)."""

    @property
    def username(self) -> str | None: ...

    @property
    def secret(self) -> str: ...


def _slug(text: str, keep: str) -> str:
    return re.sub(rf"[^{keep}]+", "-", text).strip("-.")


def image_repository(image_registry: str, model_name: str) -> str:
    """``127.0.0.1:5001/mlplat/churn-classifier``: registries take lowercase paths only."""
    name = _slug(model_name.lower(), "a-z0-9._-") or "model"
    return f"{image_registry.rstrip('/')}/mlplat/{name}"


def image_tag(version: str, bundle_id: str) -> str:
    """``3-0123456789ab``: the version for people, the bundle id so that a tag is one bundle."""
    hex_id = bundle_id.rpartition(":")[2]
    tag = f"{_slug(version, 'A-Za-z0-9_.-') or 'v'}-{hex_id[:12]}"
    return tag[:128]


def auth_config(credentials: Secret | None) -> dict[str, str] | None:
    """The engine's ``X-Registry-Auth`` for one call; a token alone goes as the password of
    user ``mlplat`` (the registry's htpasswd names the user)."""
    if credentials is None:
        return None
    return {"username": credentials.username or "mlplat", "password": credentials.secret}


def _registry_of(repository: str) -> str:
    return repository.split("/", 1)[0]


def _refused(exc: Exception) -> bool:
    text = str(getattr(exc, "explanation", None) or exc).lower()
    return any(
        w in text
        for w in ("unauthorized", "authentication required", "no basic auth", "denied", "401", "403")
    )


def _not_there(exc: Exception) -> bool:
    text = str(getattr(exc, "explanation", None) or exc).lower()
    return any(w in text for w in ("manifest unknown", "not found", "name unknown", "no such"))


def check_login(client: docker.DockerClient, registry: str, credentials: Secret | None) -> None:
    """The registry accepts these credentials (the engine asks it: ``POST /auth``). ``registry``
    is the address without a scheme (``host:port``, a path after it is dropped): the engine
    chooses the transport as ``docker login`` does (TLS, plain HTTP only for loopback or a
    registry its daemon lists as insecure), mlplat never asks for plain HTTP itself."""
    import docker
    import requests

    auth = auth_config(credentials)
    if auth is None:
        return
    address = registry.split("/", 1)[0]
    try:
        client.api.login(username=auth["username"], password=auth["password"], registry=address, reauth=True)
    except docker.errors.APIError as exc:
        raise TargetError(
            f"the image registry {address} refused the credentials: {exc.explanation or exc}",
            hint="check the target's credentials reference (the env variable or file it names)",
        ) from None
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise TargetError(f"lost the Docker engine asking the image registry {address}: {exc}") from None


def registry_url(client: docker.DockerClient, registry: str) -> str:
    """``http://host:port`` when this Docker engine would speak plain HTTP to ``registry``
    (listed in its insecure registries, by name or CIDR; loopback is by default), else
    ``https://host:port``: what ``check_transport`` judges, as for the other addresses."""
    import ipaddress

    address = registry.split("/", 1)[0]
    host = address.rsplit(":", 1)[0] if address.count(":") == 1 else address
    config = (client.info() or {}).get("RegistryConfig") or {}
    index = (config.get("IndexConfigs") or {}).get(address) or {}
    plain = index.get("Secure") is False
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        ip = None
    if ip is not None:
        for cidr in config.get("InsecureRegistryCIDRs") or []:
            with contextlib.suppress(ValueError):
                plain = plain or ip in ipaddress.ip_network(str(cidr), strict=False)
    return f"{'http' if plain else 'https'}://{address}"


def check_build(
    image_registry: str,
    credentials: Secret | None,
    *,
    transport: Callable[[str], None] | None = None,
    client: docker.DockerClient | None = None,
    runtime_image: str | None = None,
) -> None:
    """Step 4's checks that change nothing: the Docker engine answers, ``transport`` accepts the
    URL it would reach the image registry by (``registry_url``; the pipeline's
    ``check_transport``: plain HTTP only to loopback unless ``--insecure``), before any
    credentials go there; it has the runtime image; and the registry takes the credentials.
    The pipeline runs them before it registers."""
    import docker
    import requests

    from mlplat_tui.docker.engine import connect

    try:
        client = client or connect()
        url = registry_url(client, image_registry)
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise TargetError(f"no Docker engine to build the bundle image on: {exc}") from None
    if transport is not None:
        transport(url)
    _runtime_image(client, runtime_image)
    check_login(client, _registry_of(image_repository(image_registry, "m")), credentials)


def registry_digest(client: docker.DockerClient, ref: str, credentials: Secret | None) -> str | None:
    """The digest the registry holds for ``repository:tag``, None when it holds no such tag.

    Raises ``TargetError`` when the registry refuses (credentials) or cannot be reached."""
    import docker
    import requests

    try:
        data = client.api.inspect_distribution(ref, auth_config=auth_config(credentials))
    except docker.errors.APIError as exc:
        if _refused(exc):
            raise TargetError(
                f"the image registry refused access to {ref}: {exc.explanation or exc}",
                hint="give the target credentials the registry accepts (credentials = { env = ... })",
            ) from None
        if _not_there(exc):
            return None
        raise TargetError(
            f"the image registry for {ref} cannot be asked: {exc.explanation or exc}",
            hint="check that the registry answers (curl http://<image_registry>/v2/)",
        ) from None
    except requests.exceptions.RequestException as exc:
        raise TargetError(f"lost the Docker engine asking the registry about {ref}: {exc}") from None
    digest = (data.get("Descriptor") or {}).get("digest")
    return str(digest) if digest else None


def _context(bundle: Path, dockerfile: Path) -> io.BytesIO:
    def clean(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if not (info.isfile() or info.isdir()):
            return None  # a bundle holds files and folders only; never follow a link out of it
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        return info

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        tar.add(dockerfile, arcname="Dockerfile", filter=clean)
        for path in sorted(bundle.rglob("*")):
            tar.add(
                path, arcname=f"bundle/{path.relative_to(bundle).as_posix()}", recursive=False, filter=clean
            )
    out.seek(0)
    return out


def _runtime_image(client: docker.DockerClient, runtime_image: str | None) -> str:
    import docker

    image = runtime_image or os.environ.get(RUNTIME_IMAGE_ENV) or DEFAULT_RUNTIME_IMAGE
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        raise UsageError(
            f"the runtime image {image} is not on this Docker engine: the bundle image is built on it",
            hint="build it with `mlplat images build` (or set "
            f"{RUNTIME_IMAGE_ENV} to a runtime image the engine has)",
        ) from None
    return image


def _stream(chunks: Any, what: str, say: Progress, deadline: float | None = None) -> None:
    for chunk in chunks:
        if deadline is not None and time.monotonic() > deadline:
            raise _PushFailed(f"the push's deadline passed during the {what}")
        if "error" in chunk or "errorDetail" in chunk:
            detail = chunk.get("errorDetail") or {}
            message = str(chunk.get("error") or detail.get("message") or "unknown error").strip()
            raise _PushFailed(message)
        text = chunk.get("stream") or chunk.get("status") or ""
        progress = chunk.get("id")
        for line in str(text).splitlines():
            if line.strip():
                say(f"[image] {what}: {progress + ' ' if progress else ''}{line.strip()}")


class _PushFailed(Exception):
    pass


def build_and_push(
    bundle_path: Path,
    model_name: str,
    version: str,
    bundle_id: str,
    image_registry: str,
    credentials: Secret | None,
    progress: Progress,
    *,
    client: docker.DockerClient | None = None,
    runtime_image: str | None = None,
    timeout_s: float | None = None,
) -> ImageRef:
    """Build (unless the registry has it), push and pin the bundle's image; see the module doc.
    ``timeout_s`` bounds the build and the push together (the push's remaining deadline)."""
    import docker
    import requests

    from mlplat_tui.docker.engine import connect

    bundle = Path(bundle_path)
    if not (bundle / "manifest.json").is_file():
        raise UsageError(f"{bundle}: not a bundle folder (no manifest.json)", hint="push a verified bundle")
    client = client or connect()
    repository = image_repository(image_registry, model_name)
    tag = image_tag(version, bundle_id)
    ref = f"{repository}:{tag}"
    registry = _registry_of(repository)
    deadline = time.monotonic() + (timeout_s if timeout_s is not None else PUSH_TIMEOUT_S)
    check_login(client, registry, credentials)
    have = registry_digest(client, ref, credentials)
    if have is not None:
        progress(f"[image] {ref} is in the registry already ({have[:19]}); not rebuilt")
        return ImageRef(repository=repository, digest=have, tag=tag)

    base = _runtime_image(client, runtime_image)
    progress(f"[image] building {ref} on {base}")
    labels = {
        "io.mlplat.model": model_name,
        "io.mlplat.model_version": version,
        "io.mlplat.bundle": bundle_id,
    }
    try:
        chunks = client.api.build(
            fileobj=_context(bundle, DOCKERFILE), custom_context=True, tag=ref, decode=True, rm=True,
            forcerm=True, pull=False, labels=labels, timeout=max(1, int(deadline - time.monotonic())),
            buildargs={"RUNTIME_IMAGE": base, "MLPLAT_MODEL": model_name,
                       "MLPLAT_MODEL_VERSION": version, "MLPLAT_BUNDLE_ID": bundle_id},
        )  # fmt: skip
        _stream(chunks, "build", progress, deadline)
    except (_PushFailed, docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        _drop_local(client, ref)
        raise MlplatError(
            f"building the image {ref} failed: {getattr(exc, 'explanation', None) or exc}",
            hint="the lines above show the failing step (a deadline: give the push more with --deadline)",
        ) from None

    progress(f"[image] pushing {ref}")
    try:
        pushed = client.api.push(
            repository, tag=tag, auth_config=auth_config(credentials), stream=True, decode=True
        )
        _stream(pushed, "push", progress, deadline)
    except (_PushFailed, docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        _drop_local(client, ref)
        text = str(getattr(exc, "explanation", None) or exc)
        hint = (
            "give the target credentials the registry accepts"
            if _refused(exc)
            else "check that the registry answers and has room"
        )
        raise TargetError(f"the image registry refused the push of {ref}: {text}", hint=hint) from None
    digest = _pushed_digest(client, ref, repository)
    progress(f"[image] pinned {repository}@{digest}")
    return ImageRef(repository=repository, digest=digest, tag=tag)


def _pushed_digest(client: docker.DockerClient, ref: str, repository: str) -> str:
    attrs = client.images.get(ref).attrs
    for entry in attrs.get("RepoDigests") or []:
        repo, _, digest = str(entry).partition("@")
        if repo == repository and digest.startswith("sha256:"):
            return digest
    raise TargetError(
        f"the registry answered no digest for {ref} (RepoDigests: {json.dumps(attrs.get('RepoDigests'))})",
        hint="push again; the registry may have dropped the upload",
    )


def _drop_local(client: docker.DockerClient, ref: str) -> None:
    """A push that failed leaves no tagged image of ours behind on the engine."""
    import contextlib

    import docker

    with contextlib.suppress(docker.errors.APIError):
        client.images.remove(ref)


def is_builtin(build: object) -> bool:
    """Whether ``build`` is this module's ``build_and_push`` (not a stand-in put in its place):
    only the real one gets its local checks run first and the push's deadline."""
    return build is _BUILD_AND_PUSH


_BUILD_AND_PUSH = build_and_push
