"""``mlplat.toml``: the project file, parsed into typed, frozen models.

Every error names the file, the key and what was expected (``ConfigError``). Gate floors from a
platform policy file are applied in ``policy.py``; this module only parses.
"""

from __future__ import annotations

import re
import tomllib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mlplat_runtime.errors import ConfigError
from mlplat_tui.project.paths import StateLayout

CONFIG_NAME = "mlplat.toml"
_GATE_RE = re.compile(r"^\s*(>=|<=|>|<|==)\s*([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*$")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProjectSection(_Section):
    name: str

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError("a lowercase name of letters, digits, '-', '_' or '.' (max 63)")
        return v


class TrainSection(_Section):
    command: str = "python train.py"
    watch: tuple[str, ...] = ("*.py", "data/**")
    ignore: tuple[str, ...] = (".mlplat/**", "**/__pycache__/**")
    timeout_s: float = Field(default=3600.0, gt=0, allow_inf_nan=False)  # seconds; finite, > 0
    warm_worker: bool = True
    preload: tuple[str, ...] = ()  # modules the warm worker imports up front (e.g. "sklearn")

    @field_validator("command")
    @classmethod
    def _command(cls, v: str) -> str:
        import shlex

        try:
            words = shlex.split(v)
        except ValueError as exc:
            raise ValueError(f"a command line with balanced quotes ({exc})") from None
        if not words:
            raise ValueError('a command, e.g. "python train.py"')
        return v


class DataSection(_Section):
    paths: tuple[str, ...] = ()


class ModelSection(_Section):
    name: str


class Threshold(_Section):
    """A parsed gate threshold such as ``>= 0.85``."""

    op: Literal[">=", "<=", ">", "<", "=="]
    value: float

    def holds(self, measured: float) -> bool:
        return {
            ">=": measured >= self.value,
            "<=": measured <= self.value,
            ">": measured > self.value,
            "<": measured < self.value,
            "==": measured == self.value,
        }[self.op]

    def __str__(self) -> str:
        return f"{self.op} {self.value:g}"


class NoRegression(_Section):
    metric: str
    tolerance: float = 0.0
    higher_is_better: bool = True


class GatesSection(_Section):
    """``"metrics.X" | "latency.p50_ms" | "latency.p95_ms" | "size_mb"`` -> threshold."""

    thresholds: dict[str, Threshold] = Field(default_factory=dict)
    no_regression: NoRegression | None = None


class StackSection(_Section):
    backend: Literal["local", "docker"] = "local"
    host: str = "127.0.0.1"

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        if v.strip() in ("0.0.0.0", "::", "[::]", ""):
            warnings.warn(
                f"[stack] host = {v!r} publishes the stack on every network interface: anyone who can"
                " reach this machine can call it (see docs/security.md); use 127.0.0.1 unless you mean it",
                UserWarning,
                stacklevel=2,
            )
        return v

    port_base: int = Field(default=7800, ge=1024, le=65000)
    gpu: Literal["auto", "off", "on"] = "auto"
    runtime_image: str = "mlplat-runtime:latest"
    tracker_image: str = "mlplat-tracker:latest"


class TargetSection(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    kind: Literal["swarm", "gitops-k8s", "local"]
    registry: str | None = None
    docker_host: str | None = None
    replicas: int = 1


class ProjectConfig(_Section):
    project: ProjectSection
    train: TrainSection = Field(default_factory=TrainSection)
    data: DataSection = Field(default_factory=DataSection)
    model: ModelSection
    gates: GatesSection = Field(default_factory=GatesSection)
    stack: StackSection = Field(default_factory=StackSection)
    targets: dict[str, TargetSection] = Field(default_factory=dict)
    policy: str | None = None  # path to a platform policy file (or MLPLAT_POLICY)


@dataclass(frozen=True)
class Project:
    root: Path
    config: ProjectConfig

    @property
    def name(self) -> str:
        return self.config.project.name

    @property
    def state_dir(self) -> Path:
        return self.paths.root

    @property
    def paths(self) -> StateLayout:
        """Every path under ``.mlplat/`` (``project/paths.py``)."""
        return StateLayout.of(self.root)

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_NAME


def parse_threshold(file: str, key: str, raw: object) -> Threshold:
    if isinstance(raw, str):
        m = _GATE_RE.match(raw)
        if m:
            return Threshold(op=m.group(1), value=float(m.group(2)))  # type: ignore[arg-type]
    raise ConfigError(file, f"gates.{key}", 'a threshold like ">= 0.85" or "<= 5"', got=raw)


def _gates_from_toml(file: str, raw: object) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(file, "gates", "a table of gate = threshold", got=raw)
    thresholds: dict[str, Threshold] = {}
    out: dict[str, Any] = {"thresholds": thresholds}
    items: list[tuple[str, object]] = []
    for key, value in raw.items():
        # Unquoted `metrics.roc_auc = ">= 0.85"` is a nested table in TOML: read it as the dotted key.
        if key != "no_regression" and isinstance(value, dict):
            items.extend((f"{key}.{sub}", v) for sub, v in value.items())
        else:
            items.append((key, value))
    for key, value in items:
        if key == "no_regression":
            out["no_regression"] = value
            continue
        if not (
            (key.startswith("metrics.") and len(key) > len("metrics."))
            or key in ("latency.p50_ms", "latency.p95_ms", "latency.p99_ms", "size_mb")
        ):
            raise ConfigError(
                file,
                f"gates.{key}",
                "one of metrics.<name>, latency.p50_ms, latency.p95_ms, latency.p99_ms, size_mb, "
                "no_regression",
            )
        thresholds[key] = parse_threshold(file, key, value)
    return out


def parse_config(text: str, file: str = CONFIG_NAME) -> ProjectConfig:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, "(syntax)", f"valid TOML ({exc})") from None
    except RecursionError:
        raise ConfigError(file, "(syntax)", "TOML nested a few levels deep, not thousands") from None
    raw = dict(raw)
    raw["gates"] = _gates_from_toml(file, raw.get("gates"))
    try:
        return ProjectConfig.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"] if p != "thresholds") or "(root)"
        expected = err["msg"]
        if err["type"] == "missing":
            expected = "this key to be present"
        elif err["type"] == "extra_forbidden":
            expected = "no such key (check the spelling; see docs/config.md)"
        raise ConfigError(
            file, key, expected, got=err.get("input") if err["type"] != "missing" else None
        ) from None


def load_project(root: Path | str = ".") -> Project:
    """Find ``mlplat.toml`` in ``root`` and parse it."""
    root_path = Path(root).resolve()
    path = root_path / CONFIG_NAME
    if not path.is_file():
        raise ConfigError(
            str(path),
            "(file)",
            "an mlplat.toml in the project folder",
            hint="run mlplat in a project folder, pass --project DIR, or create one with "
            "`mlplat init DIR --template sklearn`",
        ) from None
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), "(file)", f"UTF-8 text (byte {exc.start} is not)") from None
    return Project(root=root_path, config=parse_config(text, str(path)))
