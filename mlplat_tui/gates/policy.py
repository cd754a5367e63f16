"""Platform policy: gate floors a project may tighten but never loosen.

A platform team ships one TOML file for every project::

    description = "ML platform guardrails v2"     # optional, shown nowhere but the file

    [gates]
    "metrics.roc_auc" = ">= 0.80"                  # same syntax as mlplat.toml [gates]
    "latency.p95_ms" = "<= 20"
    "size_mb" = "<= 200"
    no_regression = { metric = "roc_auc", tolerance = 0.02 }
    required = ["metrics.roc_auc", "no_regression"]  # gates every project must have

Where it is found: the environment variable ``MLPLAT_POLICY`` (relative to the current
folder) wins over the project's top-level ``policy = "..."`` key (relative to the project
folder). With neither, there is no policy and the project's gates apply as written.

How the two are merged (``effective_policy``):

- A gate in the policy and not in the project is added with the policy's threshold.
- A gate in both: the project's threshold is kept when it is at least as strict as the floor
  (``>= 0.9`` over a floor of ``>= 0.8``). When it is looser, or points the other way, **the
  floor wins** and the merge records a note, so ``mlplat validate`` shows "policy floor ..." in
  that gate's detail. We chose "floor wins" over refusing the project: a platform team that
  raises a floor must not break every project's ``mlplat dev`` until each one edits its
  file; the gate result says plainly which threshold was applied and why.
- ``no_regression``: the project may lower the tolerance on the policy's metric; a larger
  tolerance, another metric or another direction is replaced by the policy's, with a note.
- ``required`` gates that neither the project nor the policy gives a threshold for are a
  ``ConfigError`` naming the project file: a floor cannot be invented for them.

Every error in the policy file names that file, the key and what was expected.
Which keys exist, how each is parsed and how a floor tightens it come from the gate kinds
(``gates/kinds.py``); this module finds, reads and merges only: it never measures anything.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mlplat_runtime.errors import ConfigError
from mlplat_tui.gates.kinds import kind_for
from mlplat_tui.project.config import Project
from mlplat_tui.project.gate_specs import (
    FLOOR_NOTE,
    GatesSection,
    at_least_as_strict,
    expected_keys,
    parse_gates,
)

__all__ = [
    "FLOOR_NOTE",
    "POLICY_ENV",
    "at_least_as_strict",
    "effective_gates",
    "effective_policy",
    "load_policy",
]

POLICY_ENV = "MLPLAT_POLICY"


@dataclass(frozen=True)
class Policy:
    """A parsed policy file."""

    path: Path
    gates: GatesSection
    required: tuple[str, ...] = ()


@dataclass(frozen=True)
class EffectivePolicy:
    """The gates a project is held to, and why any of them differ from ``mlplat.toml``.

    ``notes`` maps a gate name (``"metrics.roc_auc"``, ``"no_regression"``) to a short text
    starting with "policy floor"; ``gates.evaluate_gates`` appends it to that gate's detail.
    """

    gates: GatesSection
    notes: Mapping[str, str] = field(default_factory=dict)
    policy: Policy | None = None


def load_policy(path: Path | str) -> Policy:
    """Read and check one policy file. Raises ``ConfigError`` naming the file and the key."""
    p = Path(path)
    file = str(p)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(file, "(file)", "a platform policy file at this path") from None
    except OSError as exc:
        raise ConfigError(file, "(file)", f"a readable platform policy file ({exc.strerror})") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, "(syntax)", f"valid TOML ({exc})") from None

    for key, value in raw.items():
        if key == "description":
            if not isinstance(value, str):
                raise ConfigError(file, key, "a string", got=value)
        elif key != "gates":
            raise ConfigError(file, key, "only a [gates] table (and an optional description)")
    table = raw.get("gates", {})
    if not isinstance(table, dict):
        raise ConfigError(file, "gates", "a table of gate = threshold", got=table)

    required = _parse_required(file, table["required"]) if "required" in table else ()
    try:
        gates = parse_gates(file, {k: v for k, v in table.items() if k != "required"})
    except ConfigError as exc:
        if exc.expected.startswith("one of "):  # an unknown key: say that `required` exists too
            raise ConfigError(file, exc.key, f"{exc.expected.removesuffix('.')} or required") from None
        raise
    return Policy(p, gates, required)


def _is_gate_key(key: str) -> bool:
    kind = kind_for(key)
    return kind is not None and kind.configurable


def _parse_required(file: str, value: object) -> tuple[str, ...]:
    expected = f'a list of gate names like ["metrics.roc_auc"] (one of {expected_keys()})'
    if not isinstance(value, list):
        raise ConfigError(file, "gates.required", expected, got=value)
    for item in value:
        if not isinstance(item, str) or not _is_gate_key(item):
            raise ConfigError(file, "gates.required", expected, got=item)
    return tuple(dict.fromkeys(value))  # de-duplicated, order kept


def policy_path(project: Project, env: Mapping[str, str] | None = None) -> Path | None:
    """Where this project's policy file is, or None: ``MLPLAT_POLICY`` wins over ``policy =``."""
    environ = os.environ if env is None else env
    from_env = environ.get(POLICY_ENV, "").strip()
    if from_env:
        return Path(from_env).expanduser().resolve()
    if project.config.policy:
        return (project.root / Path(project.config.policy).expanduser()).resolve()
    return None


def merge_gates(project_gates: GatesSection, policy: Policy | None) -> EffectivePolicy:
    """Apply ``policy``'s floors to ``project_gates``; each gate's kind says how it tightens."""
    if policy is None:
        return EffectivePolicy(project_gates)
    notes: dict[str, str] = {}
    merged = dict(project_gates.specs)
    for key, floor in policy.gates.specs.items():
        kind = kind_for(key)
        assert kind is not None  # parse_gates only keeps keys a kind claims
        own = merged.get(key)
        if own is None:
            merged[key] = floor
            notes[key] = f"{FLOOR_NOTE} (not in mlplat.toml)"
            continue
        merged[key], note = kind.tighten(key, own, floor)
        if note is not None:
            notes[key] = note
    return EffectivePolicy(GatesSection(specs=merged), notes, policy)


def effective_policy(project: Project, env: Mapping[str, str] | None = None) -> EffectivePolicy:
    """The project's gates with the platform policy applied, plus the notes saying where."""
    path = policy_path(project, env)
    policy = None
    if path is not None:
        try:
            policy = load_policy(path)
        except ConfigError as exc:
            if exc.key == "(file)":
                environ = os.environ if env is None else env
                source = (
                    f"the {POLICY_ENV} environment variable"
                    if environ.get(POLICY_ENV, "").strip()
                    else f"the 'policy' key in {project.config_path}"
                )
                exc.hint = f"the path comes from {source}; fix it or unset it"
            raise
    result = merge_gates(project.config.gates, policy)
    if policy is not None:
        for key in policy.required:
            if key not in result.gates.specs:
                err = ConfigError(
                    str(project.config_path),
                    f"gates.{key}",
                    f"a gate here: the platform policy {policy.path} requires it",
                )
                err.hint = f"add {key} to [gates] in mlplat.toml"
                raise err
    return result


def effective_gates(project: Project, env: Mapping[str, str] | None = None) -> GatesSection:
    """The gates this project is held to: ``mlplat.toml`` with the policy's floors applied."""
    return effective_policy(project, env).gates
