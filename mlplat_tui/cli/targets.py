"""CLI: ``mlplat targets`` — the ``[targets.NAME]`` of mlplat.toml and what each serves.

What a target serves is the local metadata store's answer: the current successful deployment
of the project's model recorded with that target. When the store cannot be asked (the stack is
down) every target says so instead of the command failing; a stack of another project on the
ports is refused, as every read command does (``clients.factory.connect_metadata``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from mlplat_tui.cli.common import echo_json, print_table, project_dir

if TYPE_CHECKING:
    from mlplat_runtime.metadata.records import DeploymentRecord
    from mlplat_tui.clients.protocols import MetadataApi
    from mlplat_tui.project.config import Project
    from mlplat_tui.project.targets import Target

UNREACHABLE = "the metadata store is not reachable"


def address_of(project: Project, target: Target) -> dict[str, Any]:
    """Where a target answers: a local target's four ports, a swarm's engine and port, a
    gitops target's repository and folder."""
    from mlplat_tui.project.targets import LocalTarget, SwarmTarget

    if isinstance(target, LocalTarget):
        b = target.port_base
        return {
            "host": project.config.stack.host,
            "tracker": b,
            "metadata": b + 1,
            "serving": b + 2,
            "admin": b + 3,
        }
    if isinstance(target, SwarmTarget):
        return {"docker_host": target.docker_host, "port": target.port}
    return {"repo": target.repo, "path": target.path}


def _address_text(kind: str, address: dict[str, Any]) -> str:
    if kind == "local":
        return f"{address['host']}:{address['tracker']}-{address['admin']}"
    if kind == "swarm":
        port = address["port"]
        return f"{address['docker_host']} port {port}" if port is not None else address["docker_host"]
    return f"{address['repo']} {address['path']}"


def _serves(
    client: MetadataApi | None, model: str, name: str, why: str
) -> tuple[DeploymentRecord | None, str | None]:
    """(what serves, None) when the store answered; (None, "unknown: why") when it did not."""
    from mlplat_runtime.errors import MlplatError

    if client is None:
        return None, f"unknown: {why}"
    try:
        return client.current_deployment(model, target=name), None
    except MlplatError as exc:
        return None, f"unknown: {exc}"


def _serves_text(record: DeploymentRecord | None, unknown: str | None) -> str:
    if unknown is not None:
        return unknown
    if record is None:
        return "nothing yet"
    since = str(record.ts)[:19].replace("T", " ")
    return f"v{record.version} {record.bundle_id[:19]} since {since}"


def live_state(project: Project, name: str, target: Target) -> dict[str, Any] | None:
    """What a ``local`` target's own stack serves now (a file and a loopback call: cheap); None for
    the cluster kinds, whose engines ``mlplat fleet`` and ``mlplat status --target`` ask."""
    from mlplat_runtime.errors import MlplatError
    from mlplat_tui.project.targets import LocalTarget

    if not isinstance(target, LocalTarget):
        return None
    from mlplat_tui.push.local import LocalEngine

    try:
        current = LocalEngine(project, name, target).current(project.config.model.name)
    except MlplatError as exc:
        return {"health": f"unreachable: {exc.message}"}
    if current is None:
        return {"health": "nothing"}
    health = "healthy" if current.healthy >= current.replicas else "down"
    return {
        "version": current.version,
        "replicas": current.replicas,
        "healthy": current.healthy,
        "health": health,
    }


def _live_text(live: dict[str, Any] | None) -> str:
    if live is None:
        return "-"
    if "version" not in live:
        return str(live["health"])
    return f"v{live['version']} {live['healthy']}/{live['replicas']} {live['health']}"


def target_rows(
    project: Project, client: MetadataApi | None, why: str = UNREACHABLE
) -> list[tuple[dict[str, Any], str]]:
    """One object per target, in file order (``mlplat targets --json``), each with the text of
    its SERVES cell."""
    targets = project.config.targets
    model = project.config.model.name
    rows = []
    for name, target in targets.items():
        record, unknown = _serves(client, model, name, why)
        row = {
            "name": name,
            "kind": target.kind,
            "stage": target.stage,
            "address": address_of(project, target),
            "requires": target.requires,
            "required_by": [n for n, t in targets.items() if t.requires == name],
            "gates": {k: str(s) for k, s in target.gates.specs.items()},
            "config": target.model_dump(mode="json", exclude={"gates"}),  # credentials: the reference only
            "model": model,
            "serves": None if record is None else record.model_dump(mode="json"),
            "serves_known": unknown is None,
            "unknown_reason": None if unknown is None else unknown.removeprefix("unknown: "),
            "live": live_state(project, name, target),
        }
        rows.append((row, _serves_text(record, unknown)))
    return rows


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output: a list of objects.")
@click.pass_context
def targets(ctx: click.Context, as_json: bool) -> None:
    """List the [targets.NAME] of mlplat.toml and what each serves.

    \b
    KIND         local | swarm | gitops-k8s
    ADDRESS      local: its four ports; swarm: docker_host and port; gitops-k8s: repo and path
    REQUIRES     the target a bundle must have been pushed to first
    REQUIRED BY  the targets that require this one
    SERVES       the version the local metadata store records as serving there now
                 ("unknown: ..." when the store cannot be asked, e.g. the stack is down)
    LIVE         local targets: what their own stack serves now (version, replicas ready);
                 the cluster kinds: see `mlplat fleet` or `mlplat status --target NAME`

    \b
    Example:
      mlplat targets
      mlplat targets --json | jq '.[] | {name, stage, version: .serves.version}'
    """
    from mlplat_tui.clients.factory import connect_metadata
    from mlplat_tui.project.config import load_project
    from mlplat_tui.stack.base import Ports, Service

    project = load_project(project_dir(ctx))
    client = None
    if project.config.targets:
        client = connect_metadata(project, Ports.from_project(project).url(Service.METADATA))
    try:
        rows = target_rows(project, client)
    finally:
        if client is not None:
            client.close()
    if as_json:
        echo_json([row for row, _ in rows])
        return
    if not rows:
        click.echo("no targets: add a [targets.NAME] table to mlplat.toml (see docs/config.md)")
        return
    table = [
        (
            r["name"],
            r["kind"],
            r["stage"],
            _address_text(r["kind"], r["address"]),
            r["requires"] or "-",
            ", ".join(r["required_by"]) or "-",
            serves,
            _live_text(r["live"]),
        )
        for r, serves in rows
    ]
    headers = ("TARGET", "KIND", "STAGE", "ADDRESS", "REQUIRES", "REQUIRED BY", "SERVES", "LIVE")
    print_table(headers, table, title=f"targets of {project.name} (model {project.config.model.name})")
