"""CLI: ``mlplat replay CANDIDATE [--since 24h | --rows N] [--json]``.

Runs the champion's captured traffic (the prediction log's closed segments) through the
candidate and the champion and compares them row by row (``mlplat_tui.monitoring.replay``).
The results are evaluated against the shadow gates of ``[gates]`` (with the platform policy)
and stored as gate results on the candidate: in its manifest (a bundle folder) and in the
metadata store when it is up, replacing the shadow results recorded before.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mlplat_tui.cli.common import echo_json, print_table, project_dir

if TYPE_CHECKING:
    from mlplat_runtime.bundle.manifest import GateResult
    from mlplat_tui.monitoring.replay import ReplayReport

EXIT_PASSED = 0
EXIT_FAILED = 1  # a shadow gate did not pass

_FIGURES = (
    ("shadow.agreement", "agreement", "{:.4f}"),
    ("shadow.mean_abs_diff", "mean |Δ probability|", "{:.4g}"),
    ("shadow.p99_abs_diff", "p99 |Δ probability|", "{:.4g}"),
    ("shadow.new_errors", "new errors", "{:.0f}"),
    ("shadow.p50_latency_ratio", "one-row latency p50 ratio", "×{:.2f}"),
    ("shadow.p99_latency_ratio", "one-row latency p99 ratio", "×{:.2f}"),
)


@click.command()
@click.argument("candidate")
@click.option(
    "--since", default=None, metavar="SPAN", help="Replay rows captured in the last SPAN (24h, 90m, 7d)."
)
@click.option("--rows", type=click.IntRange(min=1), default=None, help="Replay the newest N captured rows.")
@click.option(
    "--champion",
    "champion_path",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Compare with this bundle instead of the version serving now.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: the comparison and the gates.")
@click.pass_context
def replay(
    ctx: click.Context,
    candidate: str,
    since: str | None,
    rows: int | None,
    champion_path: Path | None,
    as_json: bool,
) -> None:
    """Replay captured live traffic through CANDIDATE and compare it with the champion.

    CANDIDATE is a bundle folder or .mlbundle, a run id (or a unique prefix) or a version (3 or
    v3). The champion is the version serving on the local stack now (or --champion); only the
    rows it answered are replayed: by default those of the last 24h, at most 200,000 (the
    newest). Reported: label agreement, mean and p99 absolute difference of the probabilities,
    new errors, the one-row latency p50/p99 ratio and agreement by segment (per label, per
    category of each categorical feature).

    \b
    Gate on it in mlplat.toml (mlplat train and dev refuse a candidate that misses them):
      [gates]
      "shadow.agreement" = ">= 0.95"
      "shadow.p99_latency_ratio" = "<= 1.5"
      "shadow.require_traffic" = true     # no captured traffic fails instead of passing

    Exit code: 0 when every shadow gate passed, 1 when one did not, 2 for a usage error.
    """
    from mlplat_runtime.bundle import open_bundle
    from mlplat_runtime.errors import ServiceError, UsageError
    from mlplat_tui.clients.factory import connect_metadata
    from mlplat_tui.gates.champion import ChampionUnknown, lookup_champion
    from mlplat_tui.gates.evaluate import all_passed
    from mlplat_tui.monitoring import replay as rp
    from mlplat_tui.project.config import load_project
    from mlplat_tui.stack.base import Service, get_backend

    if since is not None and rows is not None:
        raise UsageError("give --since or --rows, not both")
    project = load_project(project_dir(ctx))
    window = (
        rp.Window(since=None, rows=rows)
        if rows is not None
        else rp.Window(since=rp.parse_since(since or "24h"), rows=rp.MAX_ROWS)
    )
    metadata = connect_metadata(project, get_backend(project).ports.url(Service.METADATA))
    try:
        bundle_path = _candidate_path(project, metadata, candidate)
        if champion_path is None:
            if metadata is None:
                raise ServiceError(
                    "the metadata service is not up, so what serves cannot be looked up",
                    hint="start the stack with `mlplat up`, or name the champion with --champion BUNDLE",
                )
            champ = lookup_champion(metadata, project.config.model.name, target="local")
            if isinstance(champ, ChampionUnknown):
                raise ServiceError(champ.reason, hint="name the champion with --champion BUNDLE")
            if champ is None:
                raise UsageError(
                    f"nothing serves {project.config.model.name} on the local stack: no champion to compare",
                    hint="serve a version first (`mlplat train`), or name one with --champion BUNDLE",
                )
            champion_path = rp.champion_path(project, champ.bundle_id, metadata)
            if champion_path is None:
                raise UsageError(
                    f"the bundle of champion v{champ.version} is not on disk", hint="--champion BUNDLE"
                )
        report = rp.replay(bundle_path, champion_path, rp.log_root(project), window)
        champion = open_bundle(champion_path).manifest
        gates = _shadow_gates(project, bundle_path, champion, report)
        stored = _store(bundle_path, metadata, gates)
    finally:
        if metadata is not None:
            metadata.close()
    passed = all_passed([g for g in gates if g.threshold != INFORMATIONAL])
    if as_json:
        echo_json(
            {**report.to_json(), "gates": [g.model_dump() for g in gates], "stored": stored, "passed": passed}
        )
    else:
        _print(report, gates, stored)
    sys.exit(EXIT_PASSED if passed else EXIT_FAILED)


INFORMATIONAL = "(not required by [gates])"


def _candidate_path(project: Any, metadata: Any, candidate: str) -> Path:
    from mlplat_runtime.errors import ServiceError
    from mlplat_tui.deploy.runs import rollback_run

    path = Path(candidate)
    if path.exists():
        return path
    if metadata is None:
        raise ServiceError(
            f"{candidate!r} is not a bundle on disk, and no metadata service is up to look it up as a run",
            hint="give a bundle folder, or start the stack with `mlplat up`",
        )
    run_id = rollback_run(metadata, project.config.model.name, candidate)
    bundle = metadata.run_detail(run_id).bundle
    if bundle is None or not Path(bundle.path).exists():
        from mlplat_runtime.errors import NotFoundError

        raise NotFoundError(f"run {run_id} has no bundle on disk", hint="train again to rebuild it")
    return Path(bundle.path)


def _shadow_gates(project: Any, bundle_path: Path, champion: Any, report: ReplayReport) -> list[GateResult]:
    """The configured shadow gates on the report's figures, plus the figures no gate asks for."""
    from mlplat_runtime.bundle import open_bundle
    from mlplat_runtime.bundle.manifest import GateResult
    from mlplat_tui.gates.evaluate import evaluate_gates
    from mlplat_tui.gates.policy import effective_policy
    from mlplat_tui.project.gate_specs import GatesSection, spec_kind_for

    effective = effective_policy(project)
    specs = {
        k: s for k, s in effective.gates.specs.items() if (kind := spec_kind_for(k)) and kind.name == "shadow"
    }
    results: list[GateResult] = []
    if specs:
        all_results = evaluate_gates(
            open_bundle(bundle_path),
            GatesSection(specs=specs),
            champion=champion,
            serving_signature=champion.signature,
            notes=effective.notes,
            shadow=report.figures,
        )
        results = [r for r in all_results if r.name.startswith("shadow.")]
    figures = report.figures()
    named = {r.name for r in results}
    for key, _, _ in _FIGURES:
        value = figures.value(key)
        if key not in named and value is not None:
            results.append(
                GateResult(
                    name=key, measured=value, threshold=INFORMATIONAL, passed=True, detail=figures.about
                )
            )
    return results


def _store(bundle_path: Path, metadata: Any, gates: list[GateResult]) -> list[str]:
    """Replace the shadow results on the candidate: its manifest and the store's record."""
    import contextlib

    from mlplat_runtime.bundle import open_bundle, with_gates
    from mlplat_runtime.errors import MlplatError

    where: list[str] = []
    bundle = open_bundle(bundle_path)
    merged = [g for g in bundle.manifest.gates if not g.name.startswith("shadow.")] + gates
    if bundle_path.is_dir():
        with_gates(bundle_path, merged)
        where.append("manifest")
    if metadata is not None:
        with contextlib.suppress(MlplatError):  # a bundle the store never saw: the manifest has it
            metadata.bundle(bundle.manifest.bundle_id)
            metadata.record_gates(bundle.manifest.bundle_id, bundle.manifest.lineage.run_id, merged)
            where.append("metadata store")
    return where


def _print(report: ReplayReport, gates: list[GateResult], stored: list[str]) -> None:
    click.echo(
        f"replay of {report.model} v{report.candidate_version} against champion v{report.champion_version}: "
        f"{report.about}, {report.seconds:.2f}s"
    )
    by = {g.name: g for g in gates}
    rows = []
    for key, label, fmt in _FIGURES:
        value = report.figures().value(key)
        gate = by.get(key)
        verdict = (
            "" if gate is None or gate.threshold == INFORMATIONAL else ("pass" if gate.passed else "FAIL")
        )
        rows.append(
            (
                label,
                "-" if value is None else fmt.format(value),
                "" if verdict == "" or gate is None else gate.threshold,
                verdict,
            )
        )
    print_table(["", "measured", "gate", ""], rows)
    for g in gates:
        if g.measured is None:  # no traffic, no champion, not evaluated: the gate says why
            click.echo(f"{g.name}: {'pass' if g.passed else 'FAIL'} - {g.detail}")
    if report.latency_ms:
        c, n = report.latency_ms["champion"], report.latency_ms["candidate"]
        click.echo(
            f"one-row latency: champion p50 {c['p50']:.3f} ms p99 {c['p99']:.3f} ms, "
            f"candidate p50 {n['p50']:.3f} ms p99 {n['p99']:.3f} ms"
        )
    if report.segments:
        print_table(
            ["segment", "value", "rows", "agreement"],
            [(s.feature, s.value, f"{s.rows:,}", f"{s.agreement:.4f}") for s in report.segments[:10]],
            title="agreement by segment (worst first)",
        )
    click.echo(
        f"stored on the candidate: {', '.join(stored) if stored else 'nowhere (an archive, and no store up)'}"
    )
