"""``mlplat.toml``: the project file, parsed into typed, frozen models.

Every error names the file, the key and what was expected (``ConfigError``). ``[gates]`` is
parsed through the config half of the gate kinds (``project/gate_specs.py``), so a new kind is
a new key here without an edit to this module. ``[targets.NAME]`` is parsed and checked by
``project/targets.py`` (one strict model per kind). Gate floors from a platform policy file are
applied in ``gates/policy.py``; this module only parses.
"""

from __future__ import annotations

import re
import tomllib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator

from mlplat_runtime.bundle.manifest import BatchingSpec
from mlplat_runtime.errors import ConfigError
from mlplat_tui.project.gate_specs import GatesSection, NoRegression, Threshold, parse_gates, parse_threshold
from mlplat_tui.project.paths import StateLayout
from mlplat_tui.project.targets import Target, check_targets, parse_targets

__all__ = [
    "CONFIG_NAME",
    "GatesSection",
    "MonitorSection",
    "NoRegression",
    "Project",
    "ProjectConfig",
    "Threshold",
    "load_project",
    "parse_config",
    "parse_threshold",
]

CONFIG_NAME = "mlplat.toml"
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


class ServingSection(_Section):
    """``[serving]``: how local serving runs (``docs/serving.md``)."""

    # serving processes sharing the ports: a count, or "auto" (one per core on CPU, at most 8;
    # one with CUDA); 1 is one process, no supervisor
    workers: Annotated[StrictInt, Field(ge=1, le=64)] | Literal["auto"] = 1
    batching: BatchingSpec | None = None  # dynamic batching recorded in each bundle built


class MonitorSection(_Section):
    """``[monitor]``: the prediction log serving writes, and the features' kinds for the reference.

    ``features`` is read by ``mlplat_runtime.monitoring.compute_reference`` (from train.py) as
    well; the log keys become serving's ``--log-*`` flags (``serving_log_flags``).
    """

    log: bool = True  # serving logs predictions (off: no --log-dir)
    budget: int = Field(default=1000, ge=0)  # rows per second per model logged in full
    segment_seconds: float = Field(default=10.0, gt=0, le=3600, allow_inf_nan=False)
    retention_hours: float = Field(default=168.0, gt=0, allow_inf_nan=False)
    retention_mb: int = Field(default=1024, ge=1)
    exclude: tuple[str, ...] = ()  # feature or output names never logged (personal data)
    features: dict[str, Literal["numeric", "categorical"]] = Field(default_factory=dict)
    # The monitor's triggers and windows (read by the metadata service from this file, with
    # tomllib, as ``mlplat_runtime.metadata.monitor.config_from_toml``; parsed here so a typo is
    # an error that names the key). Each trigger is raised to the calibrated floor, never lowered.
    psi: float = Field(default=0.1, gt=0, allow_inf_nan=False)  # numeric and categorical drift
    ks: float = Field(default=0.1, gt=0, le=1, allow_inf_nan=False)  # numeric drift
    js: float = Field(default=0.1, gt=0, le=1, allow_inf_nan=False)  # categorical drift
    psi_severe: float = Field(default=0.25, gt=0, allow_inf_nan=False)
    min_rows: int = Field(default=1000, ge=1)  # a window with fewer rows: "not enough data"
    open_after: int = Field(default=3, ge=1)  # windows in a row over the trigger to open an alert
    resolve_after: int = Field(default=3, ge=1)  # windows in a row under it to resolve one
    window: str = Field(default="15m", pattern=r"^\d+(\.\d+)?[smhd]?$")  # drift window: 90s, 15m, 1h
    bucket: str = Field(default="60s", pattern=r"^\d+(\.\d+)?[smhd]?$")  # profile bucket ("per minute")

    def serving_log_flags(self) -> tuple[str, ...] | None:
        """The flags after ``--log-dir DIR`` (None when the log is off)."""
        if not self.log:
            return None
        flags = [
            "--log-budget", str(self.budget),
            "--log-segment-seconds", repr(self.segment_seconds),
            "--log-retention-hours", repr(self.retention_hours),
            "--log-retention-mb", str(self.retention_mb),
        ]  # fmt: skip
        if self.exclude:
            flags += ["--log-exclude", ",".join(self.exclude)]
        return tuple(flags)


class ProjectConfig(_Section):
    project: ProjectSection
    train: TrainSection = Field(default_factory=TrainSection)
    data: DataSection = Field(default_factory=DataSection)
    model: ModelSection
    gates: GatesSection = Field(default_factory=GatesSection)
    stack: StackSection = Field(default_factory=StackSection)
    serving: ServingSection = Field(default_factory=ServingSection)
    monitor: MonitorSection = Field(default_factory=MonitorSection)
    targets: dict[str, Target] = Field(default_factory=dict)  # parsed by project/targets.py
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


def parse_config(text: str, file: str = CONFIG_NAME) -> ProjectConfig:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, "(syntax)", f"valid TOML ({exc})") from None
    except RecursionError:
        raise ConfigError(file, "(syntax)", "TOML nested a few levels deep, not thousands") from None
    raw = dict(raw)
    raw["gates"] = parse_gates(file, raw.get("gates"))
    raw["targets"] = parse_targets(file, raw.get("targets"), Path(file).resolve().parent)
    try:
        config = ProjectConfig.model_validate(raw)
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
    check_targets(file, config.targets, config.gates, config.stack.port_base)
    return config


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
