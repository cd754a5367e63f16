"""CLI: ``mlplat bundle build|verify|inspect`` — bundles by hand, outside a project.

Bring-your-own models: any ``.onnx`` file becomes a verified bundle v1 that ``mlplat serve``
and the stack load. The work is done by ``mlplat_runtime.bundle``; this module parses
arguments and prints. Imports the runtime inside the commands so ``mlplat --help`` stays fast.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from mlplat_tui.cli.common import echo_json

EXISTING_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.group()
def bundle() -> None:
    """Build, verify and inspect model bundles (bundle v1: a folder or a .mlbundle archive).

    \b
    A bundle holds model.onnx, samples.npz (example inputs with the outputs they gave),
    optional reference.json, and manifest.json (signature, metrics, lineage, gates and the
    sha256 of every file). Examples:
      mlplat bundle build model.onnx --name churn
      mlplat bundle build model.onnx --name churn -o churn.mlbundle
      mlplat bundle verify churn-1a2b3c4d5e6f
      mlplat bundle inspect churn.mlbundle --json
    """


def _read_metrics(path: Path) -> dict[str, float]:
    from mlplat_runtime.errors import UsageError

    hint = 'write a flat JSON object of numbers, e.g. {"roc_auc": 0.91, "rmse": 1.2}'
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"--metrics {path}: not readable JSON ({exc})", hint=hint) from exc
    if not isinstance(raw, dict):
        raise UsageError(f"--metrics {path}: expected a JSON object", hint=hint)
    metrics: dict[str, float] = {}
    for key, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise UsageError(f"--metrics {path}: '{key}' is {value!r}, expected a finite number", hint=hint)
        metrics[str(key)] = float(value)
    return metrics


@bundle.command("build")
@click.argument("model", type=EXISTING_FILE)
@click.option("--name", required=True, help="Model name, as served at /v2/models/NAME.")
@click.option(
    "--samples",
    type=EXISTING_FILE,
    help="Example inputs (.npz; keys = input names or 'input:<name>'). Default: 8 generated rows.",
)
@click.option("--metrics", type=EXISTING_FILE, help="Metrics to record (.json object of numbers).")
@click.option(
    "--version", "version", help="Version label. Default: the first 12 hex digits of the bundle id."
)
@click.option(
    "-o",
    "--out",
    type=click.Path(path_type=Path),
    help="Output folder, or a .mlbundle file. Default: ./NAME-VERSION (.mlbundle with --archive).",
)
@click.option("--archive", is_flag=True, help="Write a single .mlbundle archive instead of a folder.")
def build(
    model: Path,
    name: str,
    samples: Path | None,
    metrics: Path | None,
    version: str | None,
    out: Path | None,
    archive: bool,
) -> None:
    """Build a bundle from MODEL (an .onnx file).

    The signature is read from the graph; the expected outputs of the samples are recorded by
    running them in ONNX Runtime; every file is checksummed into manifest.json.

    \b
    Examples:
      mlplat bundle build model.onnx --name churn
      mlplat bundle build model.onnx --name churn --version 3 --metrics metrics.json
      mlplat bundle build model.onnx --name churn --samples inputs.npz -o churn.mlbundle
    \b
    Make an inputs file from Python:
      numpy.savez("inputs.npz", input=X_test[:8].astype("float32"))
    """
    from mlplat_runtime.bundle import build_bundle, open_bundle, pack_archive
    from mlplat_runtime.errors import BundleError

    metric_values = _read_metrics(metrics) if metrics else None
    archive = archive or (out is not None and out.name.endswith(".mlbundle"))
    kwargs: dict[str, Any] = {"samples": samples, "metrics": metric_values, "version": version}
    if out is not None:
        path = build_bundle(model, name, out, archive=archive, **kwargs)
    else:
        # The default name needs the version, which (without --version) is known only once built.
        with tempfile.TemporaryDirectory(prefix=".mlplat-build-", dir=".") as tmp:
            built = build_bundle(model, name, Path(tmp) / "bundle", **kwargs)
            built_version = open_bundle(built).manifest.version
            path = Path(f"{name}-{built_version}{'.mlbundle' if archive else ''}")
            if path.exists():
                raise BundleError(f"'{path}' already exists", hint="pass -o PATH, or delete it first")
            if archive:
                pack_archive(built, path)
            else:
                os.replace(built, path)
    _print_built(path)


def _print_built(path: Path) -> None:
    from mlplat_runtime.bundle import open_bundle

    with tempfile.TemporaryDirectory(prefix="mlplat-inspect-") as tmp:
        manifest = open_bundle(path, extract_to=Path(tmp)).manifest
    click.secho(f"built {path}", fg="green")
    click.echo(f"  name       {manifest.model_name}")
    click.echo(f"  version    {manifest.version}")
    click.echo(f"  bundle id  {manifest.bundle_id}")
    for spec in manifest.signature.inputs:
        click.echo(f"  input      {spec.name} {spec.datatype} {list(spec.shape)}")
    for spec in manifest.signature.outputs:
        click.echo(f"  output     {spec.name} {spec.datatype} {list(spec.shape)}")


@bundle.command("verify")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.pass_context
def verify(ctx: click.Context, path: Path) -> None:
    """Check a bundle folder or .mlbundle archive, and list every problem found.

    \b
    Checks: safe paths and file types, size caps, manifest schema, no unlisted or missing
    files, every checksum and the bundle id, ONNX external data inside the bundle, the model
    loads in ONNX Runtime, the samples match the signature and still give the recorded outputs.
    \b
    Examples:
      mlplat bundle verify churn-3
      mlplat bundle verify churn.mlbundle && echo safe to ship
    \b
    Exit code: 0 when there is no problem, 1 otherwise.
    """
    from mlplat_runtime.bundle import verify_bundle

    problems = verify_bundle(path)
    if not problems:
        click.secho(f"ok: {path}: safe, intact, loads, and reproduces its samples", fg="green")
        return
    click.secho(f"{path}: {len(problems)} problem{'s' if len(problems) != 1 else ''}", fg="red", err=True)
    for problem in problems:
        click.echo(f"  - {problem}", err=True)
    ctx.exit(1)


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"


def _rows(rows: Sequence[Sequence[str]], indent: str = "  ") -> None:
    if not rows:
        click.echo(f"{indent}(none)")
        return
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo(indent + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


@bundle.command("inspect")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the manifest and file sizes as JSON.")
def inspect(path: Path, as_json: bool) -> None:
    """Show what a bundle holds: name, version, id, signature, metrics, lineage, gates, files.

    The bundle is opened (checksums and schema checked) but the model is not run; use
    `mlplat bundle verify` for the full check.

    \b
    Examples:
      mlplat bundle inspect churn-3
      mlplat bundle inspect churn.mlbundle --json | jq .signature
    """
    from mlplat_runtime.bundle import open_bundle

    with tempfile.TemporaryDirectory(prefix="mlplat-inspect-") as tmp:
        opened = open_bundle(path, extract_to=Path(tmp))
        sizes = {rel: (opened.root / rel).stat().st_size for rel in opened.manifest.files}
    m = opened.manifest
    if as_json:
        echo_json({"path": str(path), "manifest": m.model_dump(mode="json"), "file_sizes": sizes})
        return
    click.secho(f"{m.model_name}  version {m.version}", bold=True)
    _rows([("bundle id", m.bundle_id), ("created", m.created_at), ("path", str(path))])
    click.echo("signature")
    _rows(
        [("input", s.name, s.datatype, str(list(s.shape))) for s in m.signature.inputs]
        + [("output", s.name, s.datatype, str(list(s.shape))) for s in m.signature.outputs]
    )
    click.echo("metrics")
    _rows([(k, f"{v:.6g}") for k, v in sorted(m.metrics.items())])
    if m.params:
        click.echo("params")
        _rows([(k, v) for k, v in sorted(m.params.items())])
    click.echo("lineage")
    lineage = m.lineage.model_dump()
    data_hashes = lineage.pop("data_hashes")
    _rows(
        [(k, str(v)) for k, v in lineage.items() if v is not None]
        + [(f"data {rel}", digest) for rel, digest in sorted(data_hashes.items())]
    )
    click.echo("gates")
    _rows([("pass" if g.passed else "FAIL", g.name, str(g.measured), g.threshold, g.detail) for g in m.gates])
    click.echo("files")
    _rows([(rel, _size(sizes[rel]), digest[:19] + "…") for rel, digest in sorted(m.files.items())])
