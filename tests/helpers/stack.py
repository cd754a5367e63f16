"""Real local stacks for tests: a project copied into tmp, on free loopback ports.

Nothing here fakes a service: ``started_stack`` runs the real ``mlflow server``, metadata
service and serving runtime as processes and always stops them.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

from mlplat_tui.project.config import load_project
from mlplat_tui.stack.local import LocalBackend
from tests.helpers.ports import free_port_base

__all__ = ["copy_sample", "free_port_base", "relax_latency_gate", "set_port_base", "started_stack"]

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "sample_projects"


def set_port_base(project_dir: Path, base: int) -> None:
    toml = project_dir / "mlplat.toml"
    text = toml.read_text()
    if "[stack]" in text:
        text = text.replace("[stack]", f"[stack]\nport_base = {base}", 1)
    else:
        text += f"\n[stack]\nport_base = {base}\n"
    toml.write_text(text)


def copy_sample(name: str, dest: Path, port_base: int | None = None) -> Path:
    target = dest / name
    shutil.copytree(SAMPLES / name, target, ignore=shutil.ignore_patterns(".mlplat", "__pycache__", "out"))
    set_port_base(target, port_base or free_port_base())
    return target


def relax_latency_gate(project_dir: Path, bound_ms: int = 250) -> None:
    """For tests about something else than the latency guardrail: on 2 loaded CI cores a tiny
    model's p95 passed the samples' 5 ms now and then, and a save retrained into a rejection."""
    toml = project_dir / "mlplat.toml"
    text = toml.read_text()
    assert '"latency.p95_ms" = "<= 5"' in text
    toml.write_text(text.replace('"latency.p95_ms" = "<= 5"', f'"latency.p95_ms" = "<= {bound_ms}"'))


@contextlib.contextmanager
def started_stack(project_dir: Path) -> Iterator[LocalBackend]:
    backend = LocalBackend(load_project(project_dir))
    try:
        backend.up()
        yield backend
    finally:
        backend.down()
