"""``[targets.NAME]``: where ``mlplat push`` may put a graduated bundle, one strict model per kind.

=============  =================================================================================
kind           keys (besides ``kind``, ``stage``, ``requires``, ``gates``)
=============  =================================================================================
local          ``port_base`` (a second local stack: its four ports, like ``[stack] port_base``),
               ``registry`` and ``credentials`` (default: the second stack's own tracker)
swarm          ``registry``, ``image_registry``, ``docker_host``, ``replicas``, ``publish``,
               ``port``, ``resources``, ``gpu``, ``credentials``
gitops-k8s     ``repo``, ``path``, ``kubernetes_version``, ``image_registry``, ``registry``,
               ``replicas``, ``resources``, ``gpu``, ``credentials``, ``branch``, ``namespace``,
               ``kserve``
=============  =================================================================================

``kind`` picks the model (a pydantic discriminated union, ``Target``); an unknown key is a
``ConfigError`` naming the file and ``targets.NAME.KEY``. ``parse_targets`` checks each table on
its own (credentials by reference only: an environment variable or a file outside the project,
never the secret); ``check_targets`` checks them against the rest of the file: ``requires``
names another target without a cycle, a target's gates only tighten ``[gates]`` (through each
gate kind's ``tighten``, ``project/gate_specs.py``), and a local target's ports stay clear of the
project's own stack and of the other local targets.

Imports pydantic, the runtime's errors and ``project.gate_specs`` only.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from mlplat_runtime.errors import ConfigError
from mlplat_tui.project.gate_specs import GateSpec, GatesSection, parse_gates, spec_kind_for

__all__ = [
    "CredentialRef",
    "GitopsK8sTarget",
    "LocalTarget",
    "Resources",
    "SwarmTarget",
    "Target",
    "check_targets",
    "effective_gates",
    "parse_targets",
    "stack_ports",
]

RESERVED_NAMES = ("local",)  # the project's own stack records its deployments as target "local"
STACK_WIDTH = 4  # tracker, metadata, serving, admin
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DOCKER_HOST_RE = re.compile(r"^(unix|tcp|ssh|npipe)://.+$")
_IMAGE_REGISTRY_RE = re.compile(
    r"^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::\d{1,5})?(?:/[a-z0-9._/-]+)?$"
)
_URL_RE = re.compile(r"^https?://[^/\s]+(?:/\S*)?$")
_MEMORY_RE = re.compile(r"^\d+(?:\.\d+)?[kmgKMG]?$")
_K8S_VERSION_RE = re.compile(r"^1\.\d{1,3}$")
_K8S_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_BRANCH_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")
# Keys that would hold a secret: refused with the credentials hint, their value never echoed.
_SECRET_WORDS = ("token", "password", "passwd", "secret", "api_key", "apikey", "access_key", "auth")
CREDENTIALS_EXPECTED = '{ env = "VARIABLE" } or { file = "PATH" } (a reference, never the secret itself)'
CREDENTIALS_HINT = (
    "keep secrets out of mlplat.toml: put the token in an environment variable "
    '(credentials = { env = "MLPLAT_PROD_TOKEN" }) or in a 0600 file outside the project '
    '(credentials = { file = "~/.config/mlplat/prod.token" })'
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CredentialRef(_Strict):
    """Where a target's credentials are read from at push time: one of ``env`` or ``file``."""

    env: str | None = None
    file: str | None = None  # as written; ``path`` is where it resolves

    @field_validator("env")
    @classmethod
    def _env(cls, v: str | None) -> str | None:
        if v is not None and not _ENV_RE.match(v):
            raise ValueError("an environment variable name (letters, digits, '_')")
        return v

    def describe(self) -> str:
        return f"env {self.env}" if self.env is not None else f"file {self.file}"


class Resources(_Strict):
    """Per replica: ``cpus`` (a fraction of cores) and ``memory`` (``512m``, ``2g``, bytes)."""

    cpus: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    memory: str | None = None

    @field_validator("memory")
    @classmethod
    def _memory(cls, v: str | None) -> str | None:
        if v is not None and not _MEMORY_RE.match(v):
            raise ValueError('a size like "512m" or "2g"')
        return v


class _TargetBase(_Strict):
    stage: str
    requires: str | None = None
    gates: GatesSection = Field(default_factory=GatesSection)

    @field_validator("stage")
    @classmethod
    def _stage(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError("a lowercase stage name such as staging or prod")
        return v


def _check_url(v: str | None) -> str | None:
    if v is not None and not _URL_RE.match(v):
        raise ValueError('an http(s) URL such as "http://127.0.0.1:5000"')
    return v


def _check_image_registry(v: str | None) -> str | None:
    if v is not None and not _IMAGE_REGISTRY_RE.match(v):
        raise ValueError('a registry address such as "127.0.0.1:5001" (no scheme)')
    return v


class LocalTarget(_TargetBase):
    """A second local stack acting as a cluster, on its own four ports."""

    kind: Literal["local"]
    port_base: int = Field(ge=1024, le=65000)
    # The model registry pushes register in; unset: the second stack's own tracker.
    registry: str | None = None
    credentials: CredentialRef | None = None  # for ``registry`` (its basic-auth user, or a token)

    @field_validator("registry")
    @classmethod
    def _registry(cls, v: str | None) -> str | None:
        return _check_url(v)


class _ClusterTarget(_TargetBase):
    """What every shared-cluster kind has: registries, replicas, resources, GPU, credentials."""

    registry: str | None = None  # the target's MLflow tracking and model registry
    image_registry: str | None = None  # where bundle images are pushed
    replicas: int = Field(default=1, ge=1, le=1000)
    resources: Resources = Field(default_factory=Resources)
    gpu: int = Field(default=0, ge=0, le=64)
    credentials: CredentialRef | None = None

    @field_validator("registry")
    @classmethod
    def _registry(cls, v: str | None) -> str | None:
        return _check_url(v)

    @field_validator("image_registry")
    @classmethod
    def _image_registry(cls, v: str | None) -> str | None:
        return _check_image_registry(v)


class SwarmTarget(_ClusterTarget):
    """A Docker Swarm service per model."""

    kind: Literal["swarm"]
    registry: str  # required here: pushes register in the target's MLflow
    docker_host: str
    publish: Literal["ingress", "edge"] = "ingress"
    port: int | None = Field(default=None, ge=1, le=65535)  # where the inference endpoint answers

    @field_validator("docker_host")
    @classmethod
    def _docker_host(cls, v: str) -> str:
        if not _DOCKER_HOST_RE.match(v):
            raise ValueError('a Docker address such as "unix:///var/run/docker.sock" or "tcp://host:2376"')
        return v


class GitopsK8sTarget(_ClusterTarget):
    """Kubernetes manifests committed to a git repository for Argo CD or Flux to apply."""

    kind: Literal["gitops-k8s"]
    repo: str  # a path or URL of a git repository
    path: str  # the folder inside the repository
    kubernetes_version: str
    image_registry: str  # required here: the manifests pin an image by digest
    branch: str | None = None  # the branch to commit to (default: the repository's default branch)
    namespace: str | None = None  # metadata.namespace of every manifest (default: left to Argo/Flux)
    kserve: bool = False  # a KServe InferenceService (custom container) instead of Deployment + Service

    @field_validator("repo")
    @classmethod
    def _repo(cls, v: str) -> str:
        if not v.strip():
            raise ValueError('a path or URL of a git repository, e.g. "../gitops"')
        return v

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        parts = Path(v).parts
        if not v.strip() or Path(v).is_absolute() or ".." in parts or "\\" in v:
            raise ValueError('a relative folder inside the repository, e.g. "models/churn"')
        return v

    @field_validator("kubernetes_version")
    @classmethod
    def _version(cls, v: str) -> str:
        if not _K8S_VERSION_RE.match(v):
            raise ValueError('a Kubernetes minor version such as "1.33"')
        return v

    @field_validator("branch")
    @classmethod
    def _branch(cls, v: str | None) -> str | None:
        if v is not None and (not _BRANCH_RE.match(v) or ".." in v or v.endswith((".lock", "/"))):
            raise ValueError('a branch name such as "main" or "deploy/prod"')
        return v

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, v: str | None) -> str | None:
        if v is not None and not _K8S_NAME_RE.match(v):
            raise ValueError('a Kubernetes namespace name (lowercase letters, digits, "-"; at most 63)')
        return v


Target = Annotated[LocalTarget | SwarmTarget | GitopsK8sTarget, Field(discriminator="kind")]
_TARGET = TypeAdapter(Target)
_MODELS: dict[str, type[_TargetBase]] = {
    "local": LocalTarget,
    "swarm": SwarmTarget,
    "gitops-k8s": GitopsK8sTarget,
}


def _keys_of(kind: str) -> str:
    return ", ".join(_MODELS[kind].model_fields)


def _looks_secret(key: str) -> bool:
    low = key.lower()
    return any(word in low for word in _SECRET_WORDS)


def _parse_credentials(file: str, where: str, raw: object, root: Path) -> CredentialRef:
    if not isinstance(raw, dict):  # a string is the secret itself: never echo it
        raise ConfigError(file, where, CREDENTIALS_EXPECTED, hint=CREDENTIALS_HINT)
    for key in raw:
        if key not in ("env", "file"):
            raise ConfigError(file, f"{where}.{key}", CREDENTIALS_EXPECTED, hint=CREDENTIALS_HINT)
    if len(raw) != 1:
        raise ConfigError(file, where, "exactly one of env or file", hint=CREDENTIALS_HINT)
    ((key, value),) = raw.items()
    if not isinstance(value, str) or not value.strip():
        what = "an environment variable name" if key == "env" else "a file path"
        raise ConfigError(file, f"{where}.{key}", what)
    if key == "file":
        path = Path(value).expanduser()
        resolved = (path if path.is_absolute() else root / path).resolve()
        if resolved.is_relative_to(root.resolve()):
            raise ConfigError(
                file,
                f"{where}.file",
                f"a file outside the project folder ({value} is inside {root}: it would be committed "
                "or bundled with the project)",
                hint=CREDENTIALS_HINT,
            )
    try:
        return CredentialRef.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(file, f"{where}.{key}", _msg(exc.errors()[0])) from None


_ADDRESS_KEYS = ("registry", "repo", "docker_host")


def inline_credentials(value: str) -> str | None:
    """What of ``value`` (a URL or address) is a credential written inline, or None: any user
    or password before the host of an http(s) URL, a password anywhere (``user:pw@``). An ssh
    user alone (``ssh://git@host``, ``git@host:org/repo``) is a login name, not a secret."""
    scheme, sep, rest = value.partition("://")
    if sep:
        netloc = rest.split("/", 1)[0]
        if "@" not in netloc:
            return None
        userinfo = netloc.rpartition("@")[0]
        if scheme.lower() in ("http", "https"):
            return "a user or password in the URL"
        return "a password in the address" if ":" in userinfo else None
    if "@" in value:  # scp-like git address: [user[:password]@]host:path
        userinfo = value.split("@", 1)[0]
        if ":" in userinfo and "/" not in userinfo:
            return "a password in the address"
    return None


def _msg(err: Any) -> str:
    return str(err["msg"]).removeprefix("Value error, ")


def _parse_one(file: str, name: str, raw: object, root: Path) -> LocalTarget | SwarmTarget | GitopsK8sTarget:
    where = f"targets.{name}"
    if not _NAME_RE.match(name):
        raise ConfigError(file, where, "a lowercase target name of letters, digits, '-', '_' or '.'")
    if name in RESERVED_NAMES:
        raise ConfigError(
            file, where, f"a name other than {name!r}: the project's own stack is the target {name!r}"
        )
    if not isinstance(raw, dict):
        raise ConfigError(file, where, 'a table such as { kind = "local", stage = "staging", ... }', got=raw)
    kind = raw.get("kind")
    if not isinstance(kind, str) or kind not in _MODELS:
        raise ConfigError(file, f"{where}.kind", f"one of {', '.join(_MODELS)}", got=kind)
    fields = _MODELS[kind].model_fields
    data: dict[str, object] = dict(raw)
    for key in data:
        if key not in fields:
            if _looks_secret(key):  # never echo what may be a secret
                raise ConfigError(
                    file, f"{where}.{key}", f"no such key for a {kind} target", hint=CREDENTIALS_HINT
                )
            raise ConfigError(
                file, f"{where}.{key}", f"no such key for a {kind} target (one of {_keys_of(kind)})"
            )
    for key in _ADDRESS_KEYS:
        value = data.get(key)
        found = inline_credentials(value) if isinstance(value, str) else None
        if found is not None:  # never echo it: the value holds a secret
            raise ConfigError(
                file,
                f"{where}.{key}",
                f"an address without credentials ({found}; mlplat.toml is committed and the address "
                "is printed in progress, receipts and commit messages)",
                hint=CREDENTIALS_HINT,
            )
    data.setdefault("stage", name)
    if "gates" in data:
        try:
            data["gates"] = parse_gates(file, data["gates"])
        except ConfigError as exc:
            raise ConfigError(file, f"{where}.{exc.key}", exc.expected, hint=exc.hint) from None
    if "credentials" in data:
        data["credentials"] = _parse_credentials(file, f"{where}.credentials", data["credentials"], root)
    try:
        return _TARGET.validate_python(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"]]
        if loc and loc[0] == kind:
            loc = loc[1:]  # the union's tag
        key = ".".join([where, *loc])
        expected = "this key to be present" if err["type"] == "missing" else _msg(err)
        got = None if err["type"] == "missing" else err.get("input")
        raise ConfigError(file, key, expected, got=got) from None


def parse_targets(
    file: str, raw: object, root: Path
) -> dict[str, LocalTarget | SwarmTarget | GitopsK8sTarget]:
    """Parse ``[targets]`` (each table on its own); ``root`` is the project folder, which a
    credentials file must stay out of."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(file, "targets", "tables [targets.NAME]", got=raw)
    return {name: _parse_one(file, name, value, root) for name, value in raw.items()}


def stack_ports(port_base: int) -> range:
    """The four ports of a stack starting at ``port_base``."""
    return range(port_base, port_base + STACK_WIDTH)


def _check_requires(file: str, targets: dict[str, Any]) -> None:
    for name, target in targets.items():
        req = target.requires
        if req is None:
            continue
        if req == name:
            raise ConfigError(file, f"targets.{name}.requires", "another target, not itself", got=req)
        if req not in targets:
            others = ", ".join(sorted(n for n in targets if n != name)) or "none defined"
            raise ConfigError(file, f"targets.{name}.requires", f"another target ({others})", got=req)
        chain = [name]
        while req is not None:
            if req in chain:
                cycle = " -> ".join([*chain[chain.index(req) :], req])
                raise ConfigError(file, f"targets.{name}.requires", f"no cycle of requires ({cycle})")
            chain.append(req)
            req = targets[req].requires


def _check_gates(file: str, name: str, own: GatesSection, project: GatesSection) -> None:
    for key, spec in own.specs.items():
        floor = project.specs.get(key)
        kind = spec_kind_for(key)
        if floor is None or kind is None:
            continue  # a gate the project does not have: only adds a check
        _, note = kind.tighten(key, spec, floor)
        if note is not None:
            raise ConfigError(
                file,
                f"targets.{name}.gates.{key}",
                f"a gate at least as strict as the project's [gates] {key} ({_show(floor)}): "
                f"a stage may only tighten, got {_show(spec)}",
            )


def _show(spec: GateSpec) -> str:
    return str(spec)  # ">= 0.85", or the fields of a table gate


def _check_ports(file: str, targets: dict[str, Any], stack_base: int) -> None:
    taken: dict[int, str] = {p: "the project's [stack]" for p in stack_ports(stack_base)}
    for name, target in targets.items():
        if not isinstance(target, LocalTarget):
            continue
        for port in stack_ports(target.port_base):
            if port in taken:
                last = target.port_base + STACK_WIDTH - 1
                raise ConfigError(
                    file,
                    f"targets.{name}.port_base",
                    f"four ports clear of {taken[port]} ports (it uses "
                    f"{target.port_base}-{last}, {port} is taken)",
                    got=target.port_base,
                )
        taken.update({p: f"targets.{name}" for p in stack_ports(target.port_base)})


def check_targets(file: str, targets: dict[str, Any], project_gates: GatesSection, stack_base: int) -> None:
    """The checks across the file: requires, tighten-only gates, local ports."""
    _check_requires(file, targets)
    for name, target in targets.items():
        _check_gates(file, name, target.gates, project_gates)
    _check_ports(file, targets, stack_base)


def effective_gates(project_gates: GatesSection, target: Any) -> GatesSection:
    """The gates a push to ``target`` applies: the project's, each replaced by the target's own
    where it has one (``check_targets`` made sure the target's is at least as strict), plus the
    target's own extra gates."""
    return GatesSection(specs={**project_gates.specs, **target.gates.specs})
