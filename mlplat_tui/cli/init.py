"""``mlplat init``: create a new project from a template that trains at once.

Templates are package data under ``mlplat_tui/templates/`` (read through ``importlib.resources``
so they work from an installed wheel): ``_common/`` holds what every template shares (example
data, README, ignore file) and ``<template>/`` adds or overrides files (``train.py``,
``mlplat.toml``). ``{{project_name}}``, ``{{model_name}}`` and ``{{template_description}}`` are
filled in text files; ``gitignore`` is written as ``.gitignore`` (dotfiles do not survive
packaging globs).

Imports only click, the stdlib and the config module: no heavy libraries.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import click

from mlplat_runtime.errors import UsageError
from mlplat_tui.cli.common import echo_json

# template -> what it trains (shown by --help and written into the README)
TEMPLATES: dict[str, str] = {
    "sklearn": "a scikit-learn classifier (StandardScaler + LogisticRegression)",
    "torch": "a small PyTorch network (standardisation and class ids inside the exported graph)",
}
COMMON = "_common"
_RENAMES = {"gitignore": ".gitignore"}
_SKIP = {"__pycache__", "out", ".mlplat", ".DS_Store"}
_FILLED_SUFFIXES = {".toml", ".md"}
_MAX_NAME = 63


@dataclass(frozen=True)
class CreatedProject:
    root: Path
    name: str
    model_name: str
    template: str
    files: tuple[str, ...]  # relative posix paths written, sorted


def sanitize_name(raw: str) -> str:
    """A project name that fits the config's rule (``[a-z0-9][a-z0-9_.-]{0,62}``), from any text."""
    name = re.sub(r"[^a-z0-9_.-]+", "-", raw.strip().lower())
    name = re.sub(r"^[^a-z0-9]+", "", name)[:_MAX_NAME]
    return name.rstrip("-_.")


def _check_name(name: str) -> str:
    from pydantic import ValidationError

    from mlplat_tui.project.config import ProjectSection

    try:
        ProjectSection(name=name)
    except ValidationError:
        raise UsageError(
            f"invalid project name {name!r}: expected a lowercase name of letters, digits, "
            "'-', '_' or '.' that starts with a letter or digit (max 63)",
            hint=f"try --name {sanitize_name(name) or 'my-project'}",
        ) from None
    return name


def _template_files(template: str) -> dict[str, Traversable]:
    """Relative path -> resource; the template's own files override the common ones."""
    base = resources.files("mlplat_tui") / "templates"
    files: dict[str, Traversable] = {}

    def walk(node: Traversable, prefix: str) -> None:
        for child in sorted(node.iterdir(), key=lambda c: c.name):
            if child.name in _SKIP or child.name.endswith(".pyc"):
                continue
            rel = f"{prefix}{_RENAMES.get(child.name, child.name)}"
            if child.is_dir():
                walk(child, f"{rel}/")
            else:
                files[rel] = child

    for part in (COMMON, template):
        node = base / part
        if not node.is_dir():
            raise UsageError(
                f"template files missing from the installed package: {part}",
                hint="reinstall mlplat",
            )
        walk(node, "")
    return files


def create_project(
    dest: Path, template: str, *, name: str | None = None, force: bool = False
) -> CreatedProject:
    """Copy ``template`` into ``dest`` with the project name filled in.

    Refuses a non-empty ``dest`` unless ``force`` (then same-named files are overwritten and
    others are left alone). The result is parsed with ``load_project`` before returning.
    """
    if template not in TEMPLATES:
        raise UsageError(f"unknown template {template!r}", hint=f"choose one of: {', '.join(TEMPLATES)}")
    dest = dest.resolve()
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"{dest} exists and is not a folder", hint="choose a new folder name")
    if dest.is_dir() and any(dest.iterdir()) and not force:
        raise UsageError(
            f"{dest} is not empty",
            hint="choose a new or empty folder, or pass --force to write the template's files "
            "into it (files with the same names are overwritten)",
        )
    if name is None:
        name = sanitize_name(dest.name)
        if not name:
            raise UsageError(
                f"cannot make a project name from the folder name {dest.name!r}",
                hint="pass --name NAME",
            )
    project_name = _check_name(name)
    model_name = f"{project_name}-model"
    fills = {
        "{{project_name}}": project_name,
        "{{model_name}}": model_name,
        "{{template_description}}": TEMPLATES[template],
    }

    files = _template_files(template)
    for rel, res in files.items():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.suffix in _FILLED_SUFFIXES:
            text = res.read_text(encoding="utf-8")
            for key, value in fills.items():
                text = text.replace(key, value)
            target.write_text(text, encoding="utf-8")
        else:
            target.write_bytes(res.read_bytes())

    from mlplat_tui.project.config import load_project

    load_project(dest)  # a template that does not parse is our bug: fail here, not at `mlplat up`
    return CreatedProject(
        root=dest,
        name=project_name,
        model_name=model_name,
        template=template,
        files=tuple(sorted(files)),
    )


def next_steps(dest_arg: str, root: Path) -> list[str]:
    steps = [] if root == Path.cwd().resolve() else [f"cd {shlex.quote(dest_arg)}"]
    return [*steps, "mlplat up", "mlplat train"]


@click.command("init")
@click.argument("directory", default=".", type=click.Path(file_okay=False))
@click.option(
    "--template",
    "-t",
    type=click.Choice(list(TEMPLATES)),
    default="sklearn",
    show_default=True,
    help="sklearn: " + TEMPLATES["sklearn"] + "; torch: " + TEMPLATES["torch"] + ".",
)
@click.option("--name", default=None, help="Project name (default: the folder name, made valid).")
@click.option("--force", is_flag=True, help="Write into a non-empty folder, overwriting same-named files.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def init(directory: str, template: str, name: str | None, force: bool, as_json: bool) -> None:
    """Create a new project in DIRECTORY (default: here) that trains at once."""
    created = create_project(Path(directory), template, name=name, force=force)
    steps = next_steps(directory, created.root)
    if as_json:
        echo_json(
            {
                "path": str(created.root),
                "project": created.name,
                "model": created.model_name,
                "template": created.template,
                "files": list(created.files),
                "next": steps,
            }
        )
        return
    click.echo(f"Created project '{created.name}' ({created.template} template) in {created.root}")
    click.echo("\nNext steps:")
    for step in steps:
        click.echo(f"  {step}")
    click.echo("\n(`python train.py` trains once on its own, without the stack.)")
