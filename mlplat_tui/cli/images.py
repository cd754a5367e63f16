"""CLI: ``mlplat images build`` — the runtime and tracker images the docker stack runs.

The work is in ``mlplat_tui.docker.images``; this module parses options and prints. When run in a
project folder the tags come from its ``[stack] runtime_image`` / ``tracker_image``, so
``mlplat up --backend docker`` finds what was built. Imports docker inside the command.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mlplat_tui.cli.common import echo_json, project_dir


@click.group()
def images() -> None:
    """Build the Docker images the docker stack (and a production cluster) runs.

    \b
    runtime  serving and metadata (mlplat_runtime and its pinned dependencies)
    tracker  mlflow server
    Examples:
      mlplat images build
      mlplat images build --base-image mlplat-base:bookworm --wheelhouse wheelhouse
    See docs/docker.md for machines without a registry or without access to the package index.
    """


@images.command("build")
@click.option(
    "--target",
    type=click.Choice(["runtime", "tracker", "all"]),
    default="all",
    show_default=True,
    help="Which image to build.",
)
@click.option(
    "--base-image",
    envvar="MLPLAT_BASE_IMAGE",
    default=None,
    metavar="IMAGE",
    help="Base image (default python:3.11-slim; a local one: scripts/make-base-image.sh). "
    "Env: MLPLAT_BASE_IMAGE.",
)
@click.option(
    "--wheelhouse",
    envvar="MLPLAT_WHEELHOUSE",
    default=None,
    metavar="DIR",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Install from these wheels only, pip --no-index (fill it with scripts/build-wheelhouse.sh). "
    "Env: MLPLAT_WHEELHOUSE.",
)
@click.option("--cuda", is_flag=True, help="Add the CUDA and cuDNN libraries to the runtime image (~2 GB).")
@click.option(
    "--context",
    "context",
    default=None,
    metavar="DIR",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The mlplat source tree holding the Dockerfile (default: the one this mlplat runs from).",
)
@click.option(
    "--if-changed", is_flag=True, help="Skip an image whose sources, base and wheels are unchanged."
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the built images as JSON (progress goes to stderr)."
)
@click.pass_context
def build(
    ctx: click.Context,
    target: str,
    base_image: str | None,
    wheelhouse: Path | None,
    cuda: bool,
    context: Path | None,
    if_changed: bool,
    as_json: bool,
) -> None:
    """Build the runtime and/or tracker image, streaming the engine's progress."""
    from mlplat_tui.docker.images import TARGETS, build_images

    tags = _project_tags(ctx)

    def say(line: str) -> None:
        click.echo(line, err=as_json)
        sys.stdout.flush()

    built = build_images(
        targets=TARGETS if target == "all" else (target,),
        tags=tags,
        base_image=base_image,
        wheelhouse=wheelhouse,
        cuda=cuda,
        root=context,
        progress=say,
        only_if_changed=if_changed,
    )
    if as_json:
        echo_json([b.to_json() for b in built])
        return
    click.echo("")
    for b in built:
        note = " (unchanged)" if b.reused else f" in {b.seconds:.1f}s"
        click.echo(
            f"{b.target:<8} {b.tag:<32} {b.image_id.removeprefix('sha256:')[:12]}  "
            f"{b.size_bytes / 1e6:>6.0f} MB{note}"
        )


def _project_tags(ctx: click.Context) -> dict[str, str]:
    """The project's image names when run in a project folder, else the defaults."""
    from mlplat_tui.project.config import CONFIG_NAME, load_project

    folder = project_dir(ctx)
    if not (folder / CONFIG_NAME).is_file():
        return {}
    stack = load_project(folder).config.stack
    return {"runtime": stack.runtime_image, "tracker": stack.tracker_image}
