"""``build_bundle``: turn a model file (and what training reported) into a bundle v1.

Steps: copy the model (and its external data, which must sit beside it) into a staging
folder next to the target; read the signature from the graph; take the user's sample inputs
or make some up; record the expected outputs by running them in ONNX Runtime on the CPU;
write ``reference.json``; checksum every file; write ``manifest.json``; rename the staging
folder into place (or pack it into a ``.mlbundle``). A failed build leaves nothing behind.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mlplat_runtime.bundle.hashing import bundle_id, file_digest, short_id
from mlplat_runtime.bundle.manifest import (
    MANIFEST_NAME,
    MODEL_NAME,
    NAME_PATTERN,
    REFERENCE_NAME,
    SAMPLES_NAME,
    BatchingSpec,
    Lineage,
    Manifest,
    ServingSpec,
    Signature,
    batch_dimension_problems,
)
from mlplat_runtime.errors import BundleError, UsageError

log = logging.getLogger(__name__)

# Names travel in URLs (/v2/models/{name}), folder names and registry entries.
NAME_RE = re.compile(NAME_PATTERN)


def _check_name(kind: str, value: str) -> None:
    if not NAME_RE.match(value):
        raise UsageError(
            f"{kind} {value!r} is not allowed",
            hint="use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit "
            "(e.g. 'churn-classifier')",
        )


def write_failed(what: str, exc: OSError) -> BundleError:
    """The error for a write that failed under the bundle folder (full disk, file-size limit,
    permissions); the caller has already removed what it had half written."""
    return BundleError(
        f"writing {what} failed: {exc.strerror or exc}; nothing was left behind",
        hint="check the free disk space (df -h), the file-size limit (ulimit -f) and the "
        "write permission of the output folder, then try again",
    )


def batching_spec(
    raw: BatchingSpec | Mapping[str, Any] | None, where: str = "batching"
) -> BatchingSpec | None:
    """A batching block checked against its schema (``where`` names it in the error)."""
    if raw is None or isinstance(raw, BatchingSpec):
        return raw
    try:
        return BatchingSpec.model_validate(dict(raw))
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise UsageError(
            f"{where}{'.' + key if key else ''}: {first['msg']}",
            hint="e.g. max_batch_size = 32, max_queue_delay_us = 0, preferred_batch_sizes = [8, 16]",
        ) from None


def _check_batching(spec: BatchingSpec, signature: Any) -> None:
    problems = batch_dimension_problems(signature.inputs, signature.outputs)
    if problems:
        raise BundleError(
            "dynamic batching was asked for, but the model cannot batch: " + "; ".join(problems),
            hint="remove [serving.batching] from mlplat.toml, or export the model with a dynamic first"
            " dimension (e.g. dynamic_axes={'input': {0: 'batch'}} in torch.onnx.export)",
        )


def _copy_model(model: Path, stage: Path) -> list[str]:
    """Copy the model and each external-data file it names; returns the external files' paths."""
    from mlplat_runtime.bundle.graph import external_locations, load_proto
    from mlplat_runtime.bundle.safety import check_inside, normalize_member, path_problem

    proto = load_proto(model)
    shutil.copyfile(model, stage / MODEL_NAME)
    copied: list[str] = []
    for tensor, location in external_locations(proto):
        problem = path_problem(location)
        if problem:
            raise BundleError(
                f"tensor '{tensor}' of '{model.name}' keeps its data at '{location}': {problem}",
                hint="save external data beside the model: onnx.save(m, path, save_as_external_data=True, "
                "location='weights.bin')",
            )
        rel = normalize_member(location)
        source = model.parent / rel
        if rel in copied:
            continue
        if not source.is_file() or source.is_symlink():
            raise BundleError(
                f"tensor '{tensor}' of '{model.name}' keeps its data at '{location}', "
                f"which is not a regular file beside the model",
                hint="keep the external-data file next to model.onnx, as onnx.save wrote it",
            )
        target = check_inside(stage, rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        copied.append(rel)
    return copied


def _content_files(stage: Path) -> dict[str, str]:
    rels = sorted(p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.is_file())
    return {rel: file_digest(stage / rel) for rel in rels if rel != MANIFEST_NAME}


def _check_reference(reference: dict[str, Any], signature: Signature) -> None:
    """A v2 reference must match its schema and the model's inputs; a v1 one is kept as it is.

    v1 files (mean, std and quantiles, no ``version``) cannot be converted: drift needs the
    training counts in fixed bins, which only the training data can give. They are still
    accepted, so projects that have not moved to ``compute_reference`` keep building; the
    monitor reports "no reference" for their features.
    """
    from mlplat_runtime.monitoring.reference import parse_reference

    try:
        parsed = parse_reference(reference)
    except (ValidationError, ValueError) as exc:
        raise BundleError(
            f"reference.json does not match the reference v2 schema: {exc}",
            hint="write it with mlplat_runtime.monitoring.compute_reference(...).model_dump_json()",
        ) from exc
    if parsed is None:
        log.warning(
            "reference.json is a v1 reference (no 'version'): kept as it is, but drift monitoring "
            "needs v2; write it with mlplat_runtime.monitoring.compute_reference"
        )
        return
    inputs = {spec.name: spec for spec in signature.inputs}
    for feature in parsed.features.values():
        spec = inputs.get(feature.input)
        if spec is None:
            raise BundleError(
                f"reference feature '{feature.name}' names input '{feature.input}', which the model "
                f"does not have (inputs: {', '.join(inputs)})",
                hint="compute the reference from the arrays the model takes, keyed by input name",
            )
        width = spec.shape[1] if len(spec.shape) == 2 else None
        if feature.column is not None and (width is None or (width >= 0 and feature.column >= width)):
            raise BundleError(
                f"reference feature '{feature.name}' is column {feature.column} of input "
                f"'{feature.input}', whose shape is {list(spec.shape)}",
                hint="the columns of a 2-D input are its features; recompute the reference",
            )


def _write_bundle(
    stage: Path,
    model: Path,
    name: str,
    *,
    samples: Path | None,
    metrics: dict[str, Any] | None,
    params: dict[str, Any] | None,
    lineage: Lineage | None,
    reference: dict[str, Any] | None,
    version: str | None,
    batching: BatchingSpec | None = None,
) -> Manifest:
    from mlplat_runtime.bundle.graph import read_signature
    from mlplat_runtime.bundle.samples import conform_inputs, generate_inputs, read_user_inputs, write_samples
    from mlplat_runtime.bundle.session import cpu_session, run

    _copy_model(model, stage)
    signature = read_signature(stage / MODEL_NAME)
    if batching is not None:
        _check_batching(batching, signature)
    if samples is not None:
        inputs = conform_inputs(read_user_inputs(Path(samples)), signature)
    else:
        inputs = generate_inputs(signature)
    outputs = run(cpu_session(stage / MODEL_NAME), inputs)
    write_samples(stage / SAMPLES_NAME, inputs, outputs)
    if reference is not None:
        _check_reference(reference, signature)
        try:
            text = json.dumps(reference, indent=2, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise BundleError(
                f"the reference statistics are not plain JSON: {exc}",
                hint="use numbers, strings, lists and dicts only (no NaN, no numpy types)",
            ) from exc
        (stage / REFERENCE_NAME).write_text(text + "\n", encoding="utf-8")

    for key, value in (metrics or {}).items():
        # JSON has no NaN: pydantic would write null and the manifest would no longer parse.
        if isinstance(value, float) and not math.isfinite(value):
            raise BundleError(
                f"metric '{key}' is {value}; a bundle records finite numbers only",
                hint="leave the metric out of metrics.json when it cannot be computed",
            )
    files = _content_files(stage)
    bid = bundle_id(files)
    try:
        manifest = Manifest(
            model_name=name,
            version=version or short_id(bid),
            bundle_id=bid,
            created_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            signature=signature,
            metrics=dict(metrics or {}),
            params={str(k): str(v) for k, v in (params or {}).items()},
            lineage=lineage or Lineage(),
            files=files,
            serving=ServingSpec(batching=batching) if batching is not None else None,
        )
    except ValidationError as exc:
        raise BundleError(
            f"the bundle's metadata is not valid: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}",
            hint="metrics must be numbers (e.g. {'roc_auc': 0.91})",
        ) from exc
    (stage / MANIFEST_NAME).write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return manifest


def build_bundle(
    model: Path,
    name: str,
    out: Path,
    *,
    samples: Path | None = None,
    metrics: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    lineage: Lineage | None = None,
    reference: dict[str, Any] | None = None,
    version: str | None = None,
    archive: bool = False,
    batching: BatchingSpec | Mapping[str, Any] | None = None,
) -> Path:
    """Build a bundle v1 from ``model`` at ``out`` and return its path.

    ``out`` is a folder that must not exist (or be empty); with ``archive=True`` it is the
    ``.mlbundle`` file to write (the suffix is added when missing). ``samples`` is an ``.npz``
    of inputs (keys = input names, or ``input:<name>``); without it, 8 rows are generated
    from the signature. ``version`` defaults to the first 12 hex digits of the bundle id.
    ``batching`` (``[serving.batching]`` of mlplat.toml) is recorded as ``serving.batching``;
    refused (BundleError) for a model whose first dimension is not a batch dimension.
    """
    model = Path(model)
    out = Path(out)
    _check_name("model name", name)
    spec = batching_spec(batching)
    if version is not None:
        _check_name("version", version)
    if not model.is_file():
        raise BundleError(f"model file '{model}' does not exist", hint="pass the path of a .onnx file")
    if archive and not out.name.endswith(".mlbundle"):
        out = out.with_name(out.name + ".mlbundle")
    if out.is_symlink() or (out.exists() and (archive or not out.is_dir() or any(out.iterdir()))):
        raise BundleError(f"'{out}' already exists", hint="pick another output path, or delete it first")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    except OSError as exc:
        raise write_failed(f"the bundle '{out}'", exc) from exc
    try:
        stage = work / "bundle"
        try:
            stage.mkdir()
            _write_bundle(
                stage,
                model,
                name,
                samples=samples,
                metrics=metrics,
                params=params,
                lineage=lineage,
                reference=reference,
                version=version,
                batching=spec,
            )
        except OSError as exc:  # a full disk, most often: the staging folder goes below
            raise write_failed(f"the bundle '{out}'", exc) from exc
        if archive:
            from mlplat_runtime.bundle.archive import pack_archive

            return pack_archive(stage, out)
        try:
            os.replace(stage, out)  # onto a missing or empty folder: atomic on POSIX
        except OSError as exc:
            raise BundleError(
                f"cannot move the bundle into '{out}': {exc.strerror}",
                hint="pick another output path, or delete it first",
            ) from exc
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)
