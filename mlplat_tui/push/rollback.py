"""``mlplat rollback --target NAME [--to VERSION]``: serve an earlier version on a push target.

Any version the target served successfully (the local metadata store's push history), not only
the previous one: without ``--to`` it is the newest one with another bundle than the one serving
now. The same steps as a push where they apply: the bundle verifies, access is proven before
anything changes, the engine rolls back the way it rolls out, the smoke test runs through the
target's endpoint, the alias = stage moves to that bundle's registry version, and a receipt and a
``rollback`` deployment record are written. The outcome and exit codes are the push's.

Imports the pipeline's pieces; never the front ends.
"""

from __future__ import annotations

import contextlib
import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlplat_runtime.errors import MlplatError, NotFoundError, UsageError
from mlplat_tui.events import EventSink, null_sink
from mlplat_tui.push.engine import ImageRef, Progress, RolloutOutcome, RolloutRequest, RolloutResult
from mlplat_tui.push.pipeline import (
    DEFAULT_DEADLINE_S,
    PushOptions,
    PushOutcome,
    PushResult,
    Steps,
    build_push,
    record,
    target_lock,
)
from mlplat_tui.push.receipt import Receipt, TransitionOut, previous_of, write_receipt

if TYPE_CHECKING:
    from mlplat_runtime.metadata.records import DeploymentRecord
    from mlplat_tui.clients.protocols import MetadataApi
    from mlplat_tui.project.config import Project
    from mlplat_tui.push.engine import Deployed


def _quiet(_: str) -> None:
    return None


def choose(served: list[DeploymentRecord], current_bundle: str | None, to: str | None) -> DeploymentRecord:
    """The deployment ``--to`` names (a version, ``3`` or ``v3``), or the newest other bundle."""
    if to is None:
        for record in served:
            if record.bundle_id != current_bundle:
                return record
        raise UsageError(
            "nothing to roll back to: the target served no other bundle",
            hint="see `mlplat status --target NAME` and the receipts",
        )
    version = to[1:] if to[:1] in ("v", "V") and to[1:].isdigit() else to
    for record in served:
        if record.version == version:
            return record
    known = ", ".join(sorted({f"v{r.version}" for r in served})) or "none"
    raise NotFoundError(f"the target never served version {to}", hint=f"it served: {known}")


def rollback_target(
    project: Project,
    target_name: str,
    to: str | None,
    *,
    metadata: MetadataApi | None,
    options: PushOptions | None = None,
    progress: Progress = _quiet,
    emit: EventSink = null_sink,
) -> PushResult:
    from mlplat_runtime.bundle import open_bundle, verify_bundle
    from mlplat_tui.push import history
    from mlplat_tui.push.smoke import skipped, smoke_test

    if metadata is None:
        raise UsageError(
            "the local metadata store is not up: it holds what the target served",
            hint="start the stack with `mlplat up`",
        )
    options = options or PushOptions(deadline_s=DEFAULT_DEADLINE_S)
    runner = build_push(
        project, target_name, metadata=metadata, options=options, progress=progress, emit=emit
    )
    engine, registry = runner.engine, runner.registry
    model = project.config.model.name
    served = history.served(metadata, model, target_name)  # type: ignore[arg-type]
    current = engine.current(model)
    chosen = choose(served, current.bundle_id if current else None, to)
    try:
        path = Path(metadata.bundle(chosen.bundle_id).path)
    except NotFoundError:
        raise NotFoundError(
            f"v{chosen.version} ({chosen.bundle_id[:19]}) is not in the local store"
        ) from None
    problems = verify_bundle(path) if path.exists() else [f"{path} is gone"]
    base: dict[str, Any] = {
        "target": target_name,
        "model_name": model,
        "version": chosen.version,
        "bundle_id": chosen.bundle_id,
    }
    if problems:
        return PushResult(
            PushOutcome.FAILED,
            "its bundle does not verify: " + "; ".join(problems[:3]),
            action="rollback",
            **base,
        )
    bundle = open_bundle(path)
    m = bundle.manifest
    step = Steps(target_name, m, metadata, progress, emit, action="rollback")
    step("verify", f"v{m.version} {m.bundle_id[:19]} verifies")
    try:
        engine.check_access()
        if registry is not None:
            registry.check_access()
    except MlplatError as exc:
        step("rollback", f"failed: access refused, nothing changed: {exc.message}", status="failed")
        return PushResult(
            PushOutcome.FAILED, f"access refused, nothing changed: {exc.message}", action="rollback", **base
        )
    by = history.who()
    reason = f"mlplat rollback to v{m.version} by {by}"
    receipt = Receipt(
        action="rollback",
        target=target_name,
        kind=engine.kind,
        stage=runner.target.stage,
        model_name=m.model_name,
        version=m.version,
        bundle_id=m.bundle_id,
        run_id=m.lineage.run_id if m.lineage else None,
        registry=registry.uri if registry else "",
        image_digest=chosen.image_digest,
        pushed_by=by,
        previous=previous_of(current),
    )
    with target_lock(project, target_name):
        request = RolloutRequest(
            model_name=m.model_name,
            version=m.version,
            bundle_id=m.bundle_id,
            bundle_path=path,
            image=None,
            previous=engine.current(model),
            deadline_s=options.deadline_s,
            reason=reason,
        )
        if engine.needs_image:
            image = _image_of(chosen)
            if image is None:
                why = f"v{m.version}'s image is not known here (no receipt with its image): cannot roll back"
                step("rollback", why, status="failed")
                return PushResult(PushOutcome.FAILED, why, action="rollback", **base)
            request = dataclasses.replace(request, image=image)
        try:
            result = engine.rollback(request, step.note)
        except MlplatError as exc:
            result = RolloutResult(RolloutOutcome.FAILED, exc.message)
        receipt.transitions += [TransitionOut.of(t) for t in result.transitions]
        outcome, why = PushOutcome.COMPLETED, ""
        serving = current.version if current else None  # what serves when this ends
        if result.outcome not in (RolloutOutcome.COMPLETED, RolloutOutcome.COMMITTED):
            outcome, why = PushOutcome.FAILED, f"the engine did not roll back: {result.reason}"
            step("rollback", why, status="failed")
        else:
            step("rollback", f"v{m.version} serves on {target_name} ({result.outcome.value})")
            smoke = (
                smoke_test(result.endpoint, bundle, m.version)
                if result.endpoint and result.outcome is RolloutOutcome.COMPLETED
                else skipped("no live endpoint")
            )
            receipt.smoke = smoke.to_json()
            if not smoke.passed:
                outcome, why = PushOutcome.FAILED, f"smoke test failed after the rollback: {smoke.reason}"
                step("smoke", why, status="failed")
                serving, why = _restore(engine, current, request, m.version, why, step, receipt, options)
            else:
                step(
                    "smoke",
                    "skipped: " + smoke.reason
                    if smoke.skipped
                    else f"{smoke.requests} request(s) as expected",
                )
        reg = None
        if outcome is PushOutcome.COMPLETED and registry is not None:
            with contextlib.suppress(MlplatError):
                reg = registry.find(m.bundle_id)
            if reg is not None:
                try:
                    registry.set_alias(runner.target.stage, reg.version)
                    receipt.registry_version = reg.version
                    step("alias", f"{runner.target.stage} -> version {reg.version}")
                except MlplatError as exc:
                    step("alias", f"the alias did not move: {exc.message}", status="failed")
        receipt.outcome, receipt.reason = outcome.value, why
        receipt.finished_at = datetime.now(UTC)
        receipt_path = write_receipt(project.paths.receipts(target_name), receipt)
        if registry is not None and reg is not None:
            with contextlib.suppress(MlplatError):
                registry.attach_receipt(reg, receipt_path, receipt.summary())
        record(
            metadata,
            m,
            target_name,
            action="rollback",
            ok=outcome is PushOutcome.COMPLETED,
            reason=why or reason,
            registry_version=receipt.registry_version,
            image_digest=chosen.image_digest,
            receipt=receipt_path,
            bundle_path=path,
            by=by,
        )
    return PushResult(
        outcome,
        why,
        action="rollback",
        registry_version=receipt.registry_version,
        previous_version=current.version if current else None,
        serving_version=m.version if outcome is PushOutcome.COMPLETED else serving,
        receipt=str(receipt_path),
        rolled_out=True,
        smoke=receipt.smoke,
        **base,
    )


def _restore(
    engine: Any,
    current: Deployed | None,
    request: RolloutRequest,
    chosen_version: str,
    why: str,
    step: Steps,
    receipt: Receipt,
    options: PushOptions,
) -> tuple[str | None, str]:
    """The chosen version failed its smoke test after the engine served it: put back what
    served before this rollback (as a push's step 8 does). Returns (what serves now, reason)."""
    if current is None:
        return chosen_version, f"{why}; nothing served before, v{chosen_version} still serves"
    back = RolloutRequest(
        model_name=request.model_name,
        version=current.version,
        bundle_id=current.bundle_id,
        bundle_path=Path(str(current.spec.get("bundle_path") or request.bundle_path)),
        image=current.image,
        previous=current,
        deadline_s=options.deadline_s,
        reason=why,
    )
    try:
        result = engine.rollback(back, step.note)
    except MlplatError as exc:
        result = RolloutResult(RolloutOutcome.FAILED, exc.message)
    receipt.transitions += [TransitionOut.of(t) for t in result.transitions]
    if result.outcome in (RolloutOutcome.COMPLETED, RolloutOutcome.COMMITTED):
        step("rollback", f"v{current.version} serves again ({why})", status="rolled_back")
        return current.version, f"{why}; v{current.version} serves again"
    step("rollback", f"v{current.version} could not be put back: {result.reason}", status="failed")
    return (
        chosen_version,
        f"{why}; putting v{current.version} back failed ({result.reason}): v{chosen_version} serves",
    )


def _image_of(chosen: DeploymentRecord) -> ImageRef | None:
    """The pinned image a deployment rolled out, from its receipt (``repository@digest``)."""
    from mlplat_tui.push.receipt import read_receipt

    if not chosen.receipt_path:
        return None
    try:
        pinned = read_receipt(Path(chosen.receipt_path)).image
    except (OSError, ValueError):
        return None
    if not pinned or "@" not in pinned:
        return None
    repository, digest = pinned.split("@", 1)
    return ImageRef(repository, digest)
