"""``mlplat push``: the eight steps that take a bundle to a target, and how a push ends.

    1 verify     the bundle's digest and checksums (``verify_bundle``)
    2 gates      the target's effective gates (a stage only tightens), no regression against
                 what the target serves now, and ``requires`` (a successful push to that target
                 first, from the local metadata store); ``--dry-run`` stops here and says what
                 would change
    3 register   the version in the target's MLflow registry (one per bundle digest, races too)
    4 image      for the engines that need one: build, push, pin by digest (``push/image.py``)
    5 rollout    the engine rolls out and detects the outcome within mlplat's deadline
    6 smoke      through the target's own endpoint (``push/smoke.py``)
    7 alias      alias = stage moves to the new version; the receipt is written and attached
    8 rollback   any failure after step 4: back to what served before, the alias stays

Before step 3 nothing on the target changes: the engine and the registry are asked to prove
access first (wrong credentials, a read-only user: ``failed``, nothing created). One push or
rollback per target at a time on this machine (a file lock); the second of two pushes of one
bundle finds its registry version and the bundle serving already, and rolls nothing out.

The outcome (``PushOutcome``) has its own CLI exit code: 0 completed, 3 rejected (verification,
gates or requires: nothing changed), 4 rolled back (what served before serves again), 1 failed
(could not try, or could not roll back cleanly: the reason says what serves). Each step is an
``Event`` (kind ``push``) given to ``emit``, recorded in the local metadata store, and one line to
``progress``; nothing is printed here, so the dashboard can run it in a worker.

Imports deploy, gates, stack and clients through the engines; never the front ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from mlplat_runtime.errors import MlplatError, UsageError
from mlplat_tui.events import Event, EventSink, null_sink
from mlplat_tui.push.engine import (
    Deployed,
    Engine,
    ImageRef,
    Progress,
    RolloutOutcome,
    RolloutRequest,
    RolloutResult,
    Transition,
)
from mlplat_tui.push.receipt import Receipt, TransitionOut, previous_of, write_receipt

if TYPE_CHECKING:
    from mlplat_runtime.bundle import Bundle
    from mlplat_runtime.bundle.manifest import GateResult, Manifest
    from mlplat_tui.clients.protocols import MetadataApi
    from mlplat_tui.project.config import Project
    from mlplat_tui.push.credentials import Credentials
    from mlplat_tui.push.registry import RegistryVersion, TargetRegistry
    from mlplat_tui.push.smoke import SmokeResult

DEFAULT_DEADLINE_S = 180.0
STEPS = ("verify", "gates", "register", "image", "rollout", "smoke", "alias", "rollback")


class PushOutcome(StrEnum):
    COMPLETED = "completed"  # the target serves the new version; alias moved (or it already did)
    REJECTED = "rejected"  # verification, gates or requires said no: nothing changed on the target
    ROLLED_BACK = "rolled_back"  # it was rolled out and rolled back: what served before serves
    FAILED = "failed"  # could not try (access, unreachable) or could not roll back cleanly


EXIT_CODES: dict[PushOutcome, int] = {
    PushOutcome.COMPLETED: 0,
    PushOutcome.FAILED: 1,
    PushOutcome.REJECTED: 3,
    PushOutcome.ROLLED_BACK: 4,
}


def _quiet(_: str) -> None:
    return None


@dataclass(frozen=True)
class PushOptions:
    dry_run: bool = False
    insecure: bool = False  # allow plain HTTP to an address that is not loopback
    deadline_s: float = DEFAULT_DEADLINE_S


@dataclass(frozen=True)
class PushResult:
    outcome: PushOutcome
    reason: str
    target: str
    model_name: str
    version: str
    bundle_id: str
    action: str = "push"
    registry_version: str | None = None
    image: str | None = None
    previous_version: str | None = None
    serving_version: str | None = None  # what serves on the target after this push, when known
    receipt: str | None = None
    dry_run: bool = False
    changes: tuple[str, ...] = ()  # dry run: what a push would change
    rolled_out: bool = False
    gates: tuple[GateResult, ...] = ()
    smoke: dict[str, Any] | None = None

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.outcome]

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome.value,
            "exit_code": self.exit_code,
            "reason": self.reason,
            "action": self.action,
            "target": self.target,
            "model": self.model_name,
            "version": self.version,
            "bundle_id": self.bundle_id,
            "registry_version": self.registry_version,
            "image": self.image,
            "previous_version": self.previous_version,
            "serving_version": self.serving_version,
            "receipt": self.receipt,
            "dry_run": self.dry_run,
            "changes": list(self.changes),
            "rolled_out": self.rolled_out,
            "gates": [g.model_dump(mode="json") for g in self.gates],
            "smoke": self.smoke,
        }


def is_loopback(host: str) -> bool:
    import ipaddress

    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_transport(url: str | None, what: str, insecure: bool) -> None:
    """Plain HTTP is for loopback only, unless ``--insecure``."""
    if url is None:
        return
    parts = urlsplit(url)
    if parts.scheme == "http" and not is_loopback(parts.hostname or "") and not insecure:
        raise UsageError(
            f"the {what} {url} is plain HTTP to another machine: credentials and models would cross "
            "the network in the clear",
            hint="use https, or pass --insecure if this network is trusted",
        )


@contextlib.contextmanager
def target_lock(project: Project, target: str) -> Iterator[None]:
    """One push or rollback per target at a time on this machine (blocks until the other ends)."""
    path = project.paths.push_lock(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@dataclass
class Steps:
    """Emits one event and one progress line per step; records the events (best effort)."""

    target: str
    manifest: Manifest
    metadata: MetadataApi | None
    progress: Progress
    emit: EventSink
    action: str = "push"
    lines: list[str] = field(default_factory=list)

    def __call__(self, step: str, message: str, status: str = "ok", **data: Any) -> None:
        number = STEPS.index(step) + 1
        line = f"[{number}/8 {step}] {message}"
        self.lines.append(line)
        self.progress(line)
        event = Event(
            "push",
            f"{self.action} to {self.target}: {line}",
            bundle_id=self.manifest.bundle_id,
            version=self.manifest.version,
            run_id=self.manifest.lineage.run_id if self.manifest.lineage else None,
            data={"target": self.target, "step": step, "status": status, "action": self.action, **data},
        )
        self.emit(event)
        if self.metadata is not None:
            with contextlib.suppress(MlplatError):
                self.metadata.record_event(event)

    def note(self, message: str) -> None:
        self.progress(f"      {message}")


# -- the target's view -----------------------------------------------------------------------


def registry_uri(target: Any, engine: Engine) -> str | None:
    uri = getattr(target, "registry", None)
    if uri:
        return str(uri)
    return getattr(engine, "tracker_uri", None)


def champion_of(metadata: MetadataApi | None, current: Deployed | None) -> tuple[Any, Path | None]:
    """The manifest serving on the target and its bundle folder (for no_regression, signature
    and the comparison on samples): the engine's copy, else the local store's record."""
    from mlplat_runtime.bundle import open_bundle
    from mlplat_tui.gates.champion import ChampionUnknown

    if current is None:
        return None, None
    paths = [str(current.spec["bundle_path"])] if current.spec.get("bundle_path") else []
    if metadata is not None:
        with contextlib.suppress(MlplatError):
            paths.append(metadata.bundle(current.bundle_id).path)
    for path in paths:
        with contextlib.suppress(MlplatError):
            manifest = open_bundle(Path(path)).manifest
            if manifest.bundle_id == current.bundle_id:
                return manifest, Path(path)
    why = f"the target serves v{current.version} ({current.bundle_id[:19]}); its bundle is not here"
    return ChampionUnknown(why), None


def both_on_samples(bundle: Bundle, champion: Any, champion_path: Path | None) -> dict[str, Any]:
    """Evidence: the new model and the one serving on the target, both run on the new bundle's
    sample inputs: how often they agree, and how far apart their outputs are."""
    import numpy as np

    from mlplat_runtime.bundle import open_bundle
    from mlplat_runtime.bundle.manifest import Manifest
    from mlplat_runtime.providers import make_session

    if not isinstance(champion, Manifest) or champion_path is None:
        return {"compared": False, "why": str(champion) if champion is not None else "nothing serves yet"}
    try:
        inputs, _ = bundle.samples()
        old_bundle = open_bundle(champion_path)
        new_out = make_session(str(bundle.model_path)).run(None, dict(inputs))
        old_out = make_session(str(old_bundle.model_path)).run(None, dict(inputs))
    except Exception as exc:  # a different signature, or a model ORT refuses: the evidence says so
        return {"compared": False, "why": f"could not run both on the samples: {exc}"[:300]}
    rows = int(next(iter(inputs.values())).shape[0]) if inputs else 0
    outputs: dict[str, Any] = {}
    for spec, new, old in zip(bundle.manifest.signature.outputs, new_out, old_out, strict=False):
        a, b = np.asarray(new), np.asarray(old)
        if a.shape != b.shape:
            outputs[spec.name] = {"comparable": False}
        elif a.dtype.kind in "iub":
            outputs[spec.name] = {"agreement": float(np.mean(a == b)) if a.size else 1.0}
        else:
            outputs[spec.name] = {"max_abs_diff": float(np.max(np.abs(a - b))) if a.size else 0.0}
    return {"compared": True, "rows": rows, "champion_version": champion.version, "outputs": outputs}


def run_gates(project: Project, target: Any, bundle_path: Path, champion: Any) -> list[GateResult]:
    """The target's effective gates (``effective_gates``), the platform policy applied."""
    from dataclasses import replace

    from mlplat_runtime.bundle.manifest import Manifest
    from mlplat_tui.gates.evaluate import validate_bundle
    from mlplat_tui.project.targets import effective_gates

    gates = effective_gates(project.config.gates, target)
    staged = replace(project, config=project.config.model_copy(update={"gates": gates}))
    signature = champion.signature if isinstance(champion, Manifest) else None
    return validate_bundle(staged, bundle_path, champion=champion, serving_signature=signature)


def requires_result(
    metadata: MetadataApi | None, model: str, bundle_id: str, required: str | None
) -> GateResult | None:
    from mlplat_runtime.bundle.manifest import GateResult
    from mlplat_tui.push.history import succeeded_on

    if required is None:
        return None
    name, threshold = "requires", f"pushed to {required} first"
    if metadata is None:
        return GateResult(
            name=name,
            measured=None,
            threshold=threshold,
            passed=False,
            evaluated=False,
            detail="the local metadata store is not up: cannot tell whether it was pushed there",
        )
    try:
        found = succeeded_on(metadata, model, bundle_id, required)  # type: ignore[arg-type]
    except MlplatError as exc:
        return GateResult(
            name=name, measured=None, threshold=threshold, passed=False, evaluated=False, detail=str(exc)
        )
    if found is None:
        return GateResult(
            name=name,
            measured="never",
            threshold=threshold,
            passed=False,
            detail=f"this bundle was never pushed to {required} successfully: push it there first",
        )
    return GateResult(
        name=name,
        measured=f"v{found.version} at {found.ts.isoformat(timespec='seconds')}",
        threshold=threshold,
        passed=True,
        detail=f"served on {required} since {found.ts.isoformat(timespec='seconds')}",
    )


def gate_table(gates: tuple[GateResult, ...] | list[GateResult]) -> str:
    return "\n".join(
        f"{'PASS' if g.passed and g.evaluated else 'FAIL'}  {g.name}  {g.measured}  {g.threshold}  {g.detail}"
        for g in gates
    )


def record(
    metadata: MetadataApi | None,
    manifest: Manifest,
    target: str,
    *,
    action: str,
    ok: bool,
    reason: str,
    registry_version: str | None,
    image_digest: str | None,
    receipt: Path | None,
    bundle_path: Path,
    by: str,
    version: str | None = None,
    bundle_id: str | None = None,
) -> None:
    """Best effort: the target's state is the engine's; the store's record is the history."""
    from mlplat_runtime.metadata.records import DeploymentRecord
    from mlplat_tui.deploy.serve import BundleToServe, ensure_bundle_recorded

    if metadata is None:
        return
    run_id = manifest.lineage.run_id if manifest.lineage else None
    with contextlib.suppress(MlplatError):
        ensure_bundle_recorded(
            metadata,
            BundleToServe(manifest.model_name, manifest.version, manifest.bundle_id, bundle_path, run_id),
        )
    with contextlib.suppress(MlplatError):
        metadata.record_deployment(
            DeploymentRecord(
                model_name=manifest.model_name,
                version=version or manifest.version,
                bundle_id=bundle_id or manifest.bundle_id,
                run_id=run_id,
                target=target,
                action="rollback" if action == "rollback" else "deploy",
                status="ok" if ok else "failed",
                reason=reason,
                registry_version=registry_version,
                image_digest=image_digest,
                pushed_by=by,
                receipt_path=str(receipt) if receipt else None,
            )
        )


# -- one push --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Ledger:
    """What the local store records of a push that got as far as its receipt."""

    by: str
    bundle_path: Path
    manifest: Manifest


@dataclass
class Push:
    """The collaborators of one push; ``push()`` builds the real ones, tests may pass theirs."""

    project: Project
    target_name: str
    target: Any
    engine: Engine
    registry: TargetRegistry | None
    metadata: MetadataApi | None
    credentials: Credentials | None = None
    options: PushOptions = field(default_factory=PushOptions)
    progress: Progress = _quiet
    emit: EventSink = null_sink
    # step 4's builder (``push/image.build_and_push`` when None): a seam for engines' tests
    build_image: Callable[..., ImageRef] | None = None
    _reg: RegistryVersion | None = None
    _started: float = 0.0

    def run(self, bundle_path: Path) -> PushResult:
        from mlplat_runtime.bundle import open_bundle, verify_bundle
        from mlplat_tui.push import history
        from mlplat_tui.push.receipt import Receipt

        self._started = time.monotonic()
        bundle_path = Path(bundle_path).resolve()
        problems = verify_bundle(bundle_path)
        if problems:
            return PushResult(
                PushOutcome.REJECTED,
                "the bundle does not verify: " + "; ".join(problems[:5]),
                self.target_name,
                self.project.config.model.name,
                "?",
                "?",
            )
        bundle = open_bundle(bundle_path)
        m = bundle.manifest
        step = Steps(self.target_name, m, self.metadata, self.progress, self.emit)
        base = {
            "target": self.target_name,
            "model_name": m.model_name,
            "version": m.version,
            "bundle_id": m.bundle_id,
        }
        step("verify", f"{m.model_name} v{m.version} {m.bundle_id[:19]}: digest and checksums hold")
        if m.model_name != self.project.config.model.name:
            return self._rejected(
                step,
                base,
                f"the bundle is of model {m.model_name}, the project's is {self.project.config.model.name}",
            )

        # 2. gates, against what the target serves now
        try:
            current = self.engine.current(m.model_name)
        except MlplatError as exc:
            return self._failed_early(
                step, base, "gates", f"target {self.target_name} could not say what serves: {exc.message}"
            )
        champion, champion_path = champion_of(self.metadata, current)
        gates = list(run_gates(self.project, self.target, bundle_path, champion))
        req = requires_result(self.metadata, m.model_name, m.bundle_id, self.target.requires)
        if req is not None:
            gates.append(req)
        evidence = {"both_on_samples": both_on_samples(bundle, champion, champion_path)}
        from mlplat_tui.gates.evaluate import all_passed, failure_reasons

        base_gates: dict[str, Any] = {
            **base,
            "gates": tuple(gates),
            "previous_version": current.version if current else None,
        }
        if not all_passed(gates):
            reasons = failure_reasons(gates)
            return self._rejected(step, base_gates, "gates failed: " + "; ".join(reasons), step_name="gates")
        step("gates", f"{len(gates)} gate(s) passed on {self.target_name} (stage {self.target.stage})")

        endpoint = self.engine.endpoint(m.model_name)
        uri = self.registry.uri if self.registry is not None else None
        try:
            check_transport(uri, "target registry", self.options.insecure)
            check_transport(endpoint, "target endpoint", self.options.insecure)
        except UsageError as exc:
            return self._failed_early(step, base_gates, "gates", f"{exc.message}: {exc.hint}")

        if self.options.dry_run:
            changes = [
                f"register {m.model_name} {m.bundle_id[:19]} in {uri or 'no registry'} (or find its version)"
            ]
            if current is not None and current.bundle_id == m.bundle_id:
                changes = [f"nothing: {self.target_name} serves v{current.version} with this bundle already"]
            else:
                if self.engine.needs_image:
                    changes.append(
                        f"build and push an image to {getattr(self.target, 'image_registry', None)}"
                    )
                try:
                    refused, planned = self._plan(m)
                except MlplatError as exc:  # the manifests cannot even be checked (e.g. no schemas)
                    why = f"the manifests cannot be checked: {exc.message}"
                    return self._failed_early(step, base_gates, "gates", why)
                if refused is not None:
                    return self._rejected(step, base_gates, refused, step_name="gates")
                changes += planned
                was = f"v{current.version}" if current else "nothing"
                changes.append(
                    f"roll out v{m.version} on {self.target_name} ({self.engine.kind}), replacing {was}"
                )
                changes.append(f"move the alias {self.target.stage} to the new registry version")
            return PushResult(
                PushOutcome.COMPLETED,
                "dry run: nothing changed",
                dry_run=True,
                changes=tuple(changes),
                **base_gates,
            )

        # before anything changes: prove access
        try:
            self.engine.check_access()
            ensure_up = getattr(self.engine, "ensure_up", None)
            if ensure_up is not None and getattr(self.target, "registry", None) is None:
                ensure_up(step.note)  # a local target's registry is its own stack's tracker
            if self.registry is not None:
                self.registry.check_access()
        except MlplatError as exc:
            return self._failed_early(
                step, base_gates, "register", f"access refused, nothing changed: {exc.message}"
            )

        by = history.who()
        receipt = Receipt(
            action="push",
            target=self.target_name,
            kind=self.engine.kind,
            stage=self.target.stage,
            model_name=m.model_name,
            version=m.version,
            bundle_id=m.bundle_id,
            run_id=m.lineage.run_id if m.lineage else None,
            lineage=m.lineage.model_dump(mode="json") if m.lineage else {},
            registry=uri or "",
            gates=[g.model_dump(mode="json") for g in gates],
            evidence=evidence,
            pushed_by=by,
        )
        with target_lock(self.project, self.target_name):
            return self._locked(bundle, bundle_path, gates, receipt, step, by)

    # -- steps 3..8, under the target's lock -----------------------------------------------

    def _locked(
        self,
        bundle: Bundle,
        bundle_path: Path,
        gates: list[GateResult],
        receipt: Receipt,
        step: Steps,
        by: str,
    ) -> PushResult:
        from mlplat_tui.push.registry import version_tags

        m = bundle.manifest
        ledger = _Ledger(by, bundle_path, m)
        try:
            current = self.engine.current(m.model_name)  # again: another push may have finished
        except MlplatError as exc:
            return self._failed_early(
                step, self._base(m), "register", f"target {self.target_name}: {exc.message}"
            )
        receipt.previous = previous_of(current)
        base = {
            **self._base(m),
            "gates": tuple(gates),
            "previous_version": current.version if current else None,
        }

        # step 4's local checks first: a push that cannot build its image registers nothing
        build: Callable[..., ImageRef] | None = None
        if self.engine.needs_image and not (
            current is not None and current.bundle_id == m.bundle_id and current.healthy > 0
        ):
            try:
                build = self._builder()
            except MlplatError as exc:
                hint = f" ({exc.hint})" if isinstance(exc, UsageError) and exc.hint else ""
                return self._failed_early(step, base, "image", f"nothing changed: {exc.message}{hint}")

        # 3. register
        reg = None
        if self.registry is not None:
            try:
                reg = self.registry.register(
                    bundle_path, version_tags(m, gates, target=self.target_name, stage=self.target.stage)
                )
            except MlplatError as exc:
                return self._failed_early(step, base, "register", exc.message)
            receipt.registry_version = reg.version
            self._reg = reg
            step(
                "register",
                f"{self.registry.model_name} version {reg.version} in {self.registry.uri}"
                + ("" if reg.created else " (registered before)"),
            )
        else:
            step("register", "no registry for this target: skipped", status="skipped")
        base["registry_version"] = reg.version if reg else None

        if current is not None and current.bundle_id == m.bundle_id and current.healthy > 0:
            step(
                "rollout",
                f"{self.target_name} serves v{current.version} with this bundle already: no rollout",
                status="skipped",
            )
            self._alias(reg, step)
            return self._end(
                receipt, base, PushOutcome.COMPLETED, "already serving: no rollout", None,
                serving=current.version, rolled_out=False,
            )  # fmt: skip

        # 4. image
        image = None
        if build is not None:
            from mlplat_tui.push import image as image_step

            extra: dict[str, Any] = {}
            if image_step.is_builtin(build):  # a stand-in (tests) takes the positional seam only
                extra["timeout_s"] = self._remaining()
            try:
                image = build(
                    bundle_path,
                    m.model_name,
                    m.version,
                    m.bundle_id,
                    str(self.target.image_registry),
                    self.credentials,
                    step.note,
                    **extra,
                )
            except MlplatError as exc:
                why = f"image: {exc.message}" + self._unregister(reg, step)
                if reg is not None and self._reg is None:  # deleted: the receipt names no version
                    receipt.registry_version = base["registry_version"] = None
                return self._end_failed(receipt, step, base, "image", why, ledger, rolled_out=False)
            receipt.image, receipt.image_digest = image.pinned, image.digest
            base["image"] = image.pinned
            step("image", f"{image.pinned}")
        else:
            step(
                "image", f"the {self.engine.kind} engine serves the bundle itself: no image", status="skipped"
            )

        # 5. rollout
        request = RolloutRequest(
            model_name=m.model_name,
            version=m.version,
            bundle_id=m.bundle_id,
            bundle_path=bundle_path,
            image=image,
            previous=current,
            deadline_s=self.options.deadline_s,
            evidence=gate_table(gates),
        )
        from mlplat_tui.push.k8s_validate import ManifestRefused

        try:
            result = self.engine.rollout(request, step.note)
        except ManifestRefused as exc:  # refused before anything was committed
            why = f"the engine refused the rollout, nothing changed: {exc.message}"
            return self._end_failed(receipt, step, base, "rollout", why, ledger, rolled_out=False)
        except MlplatError as exc:
            result = RolloutResult(RolloutOutcome.FAILED, f"the engine could not roll out: {exc.message}")
        except Exception as exc:  # an engine's bug or a client library's error: still roll back
            result = RolloutResult(
                RolloutOutcome.FAILED, f"the engine could not roll out: {type(exc).__name__}: {exc}"[:500]
            )
        receipt.transitions += [TransitionOut.of(t) for t in result.transitions]
        if result.outcome is RolloutOutcome.ROLLED_BACK:
            step("rollout", f"rolled back by the engine: {result.reason}", status="rolled_back")
            return self._end_rolled_back(receipt, base, result.reason, ledger, current)
        if result.outcome is RolloutOutcome.FAILED:
            # the engine may have changed the target before it failed: step 8 puts back what served
            step("rollout", f"failed: {result.reason}", status="failed")
            return self._roll_back(
                receipt, step, base, f"the rollout failed: {result.reason}", ledger, current
            )
        step("rollout", f"{result.outcome.value}: v{m.version} on {self.target_name}")

        # 6. smoke
        from mlplat_tui.push.smoke import skipped, smoke_test

        if result.endpoint is None or result.outcome is RolloutOutcome.COMMITTED:
            smoke: SmokeResult = skipped("no live endpoint: the cluster applies the commit")
        else:
            smoke = smoke_test(result.endpoint, bundle, m.version)
        receipt.smoke = smoke.to_json()
        base["smoke"] = receipt.smoke
        if not smoke.passed:
            step("smoke", f"failed: {smoke.reason}", status="failed")
            return self._roll_back(receipt, step, base, f"smoke test failed: {smoke.reason}", ledger, current)
        step(
            "smoke",
            "skipped: " + smoke.reason
            if smoke.skipped
            else f"{smoke.requests} request(s) answered as the bundle expects",
        )

        # 7. alias, receipt, record
        try:
            self._alias(reg, step)
        except MlplatError as exc:
            return self._roll_back(
                receipt, step, base, f"the alias did not move: {exc.message}", ledger, current
            )
        return self._end(receipt, base, PushOutcome.COMPLETED, "", ledger, serving=m.version, rolled_out=True)

    # -- endings ---------------------------------------------------------------------------

    @staticmethod
    def _base(m: Manifest) -> dict[str, Any]:
        return {"model_name": m.model_name, "version": m.version, "bundle_id": m.bundle_id}

    def _builder(self) -> Callable[..., ImageRef]:
        """Step 4's builder, after its local checks (an image registry named; for the real
        builder: the runtime image on the engine and the registry taking the credentials).
        Raises ``MlplatError`` when one fails: nothing was registered or built yet."""
        from mlplat_tui.push import image as image_step

        registry_address = getattr(self.target, "image_registry", None)
        if not registry_address:
            raise UsageError(
                f"target {self.target_name} has no image_registry: the {self.engine.kind} engine needs one",
                hint=f'add image_registry = "HOST:PORT" to [targets.{self.target_name}]',
            )
        build = self.build_image or image_step.build_and_push
        if image_step.is_builtin(build):
            insecure = self.options.insecure
            image_step.check_build(
                str(registry_address),
                self.credentials,
                transport=lambda url: check_transport(url, "image registry", insecure),
            )
        return build

    def _remaining(self) -> float:
        """What is left of the push's deadline (``--deadline``, from the start of the push), at
        least 30 s so that a slow gate step does not leave the image step no time at all."""
        return max(30.0, self.options.deadline_s - (time.monotonic() - self._started))

    def _unregister(self, reg: RegistryVersion | None, step: Steps) -> str:
        """A version this push created, taken back when the push ends before any rollout."""
        if reg is None or not reg.created or self.registry is None:
            return ""
        try:
            self.registry.delete(reg)
        except MlplatError as exc:
            return f"; registry version {reg.version} could not be deleted: {exc.message}"
        self._reg = None
        step.note(f"registry version {reg.version} deleted: nothing was rolled out")
        return f"; registry version {reg.version} deleted"

    def _plan(self, m: Manifest) -> tuple[str | None, list[str]]:
        """``--dry-run``: an engine that renders what it would apply (``plan``) renders and
        checks it now, with a placeholder image (the real digest is known after step 4).
        Returns (why the manifests are refused, or None; the changes they make). Raises
        ``MlplatError`` when they cannot be checked at all."""
        plan = getattr(self.engine, "plan", None)
        if plan is None:
            return None, []
        from mlplat_tui.push.k8s_validate import ManifestRefused

        registry = str(getattr(self.target, "image_registry", None) or "registry.invalid")
        placeholder = ImageRef(f"{registry}/mlplat/{m.model_name.lower()}", "sha256:" + "0" * 64, "dry-run")
        request = RolloutRequest(
            model_name=m.model_name,
            version=m.version,
            bundle_id=m.bundle_id,
            bundle_path=Path("."),
            image=placeholder,
            previous=None,
            deadline_s=self.options.deadline_s,
        )
        try:
            files = plan(request)
        except ManifestRefused as exc:
            return f"the manifests would be refused: {exc.message}", []
        return None, [f"render {len(files)} manifest(s), valid offline: {', '.join(sorted(files))}"]

    def _alias(self, reg: Any, step: Steps) -> None:
        if self.registry is None or reg is None:
            step("alias", "no registry: no alias", status="skipped")
            return
        if self.registry.alias(self.target.stage) != reg.version:
            self.registry.set_alias(self.target.stage, reg.version)
            step("alias", f"{self.target.stage} -> version {reg.version}")
        else:
            step("alias", f"{self.target.stage} points at version {reg.version} already")

    def _rejected(
        self, step: Steps, base: dict[str, Any], reason: str, step_name: str = "verify"
    ) -> PushResult:
        step(step_name, f"rejected: {reason}", status="rejected")
        fields = {"target": self.target_name, **base}
        return PushResult(PushOutcome.REJECTED, reason, **fields)

    def _failed_early(self, step: Steps, base: dict[str, Any], step_name: str, reason: str) -> PushResult:
        step(step_name, f"failed: {reason}", status="failed")
        fields = {"target": self.target_name, **base}
        return PushResult(PushOutcome.FAILED, reason, **fields)

    def _write(self, receipt: Receipt, outcome: PushOutcome, reason: str) -> Path:
        receipt.outcome, receipt.reason = outcome.value, reason
        receipt.finished_at = datetime.now(UTC)
        path = write_receipt(self.project.paths.receipts(self.target_name), receipt)
        if self.registry is not None and self._reg is not None:
            with contextlib.suppress(MlplatError):  # the local receipt is the record; this is a copy
                self.registry.attach_receipt(self._reg, path, receipt.summary())
        return path

    def _end(
        self,
        receipt: Receipt,
        base: dict[str, Any],
        outcome: PushOutcome,
        reason: str,
        ledger: _Ledger | None,
        *,
        serving: str | None,
        rolled_out: bool,
    ) -> PushResult:
        """Where every push that got its receipt ends: the receipt written, the push recorded in
        the local store (``ledger``; None records nothing), its path said, the result."""
        path = self._write(receipt, outcome, reason)
        if ledger is not None:
            ok = outcome is PushOutcome.COMPLETED
            record(
                self.metadata,
                ledger.manifest,
                self.target_name,
                action="push",
                ok=ok,
                reason="" if ok else reason,
                registry_version=receipt.registry_version,
                image_digest=receipt.image_digest,
                receipt=path,
                bundle_path=ledger.bundle_path,
                by=ledger.by,
            )
        self.progress(f"receipt: {path}")
        return PushResult(
            outcome,
            reason,
            serving_version=serving,
            receipt=str(path),
            rolled_out=rolled_out,
            target=self.target_name,
            **base,
        )

    def _end_failed(
        self,
        receipt: Receipt,
        step: Steps,
        base: dict[str, Any],
        step_name: str,
        reason: str,
        ledger: _Ledger,
        *,
        rolled_out: bool,
    ) -> PushResult:
        step(step_name, f"failed: {reason}", status="failed")
        return self._end(
            receipt, base, PushOutcome.FAILED, reason, ledger, serving=None, rolled_out=rolled_out
        )

    def _end_rolled_back(
        self, receipt: Receipt, base: dict[str, Any], reason: str, ledger: _Ledger, previous: Deployed | None
    ) -> PushResult:
        serving = previous.version if previous else None
        return self._end(
            receipt, base, PushOutcome.ROLLED_BACK, reason, ledger, serving=serving, rolled_out=True
        )

    def _roll_back(
        self,
        receipt: Receipt,
        step: Steps,
        base: dict[str, Any],
        reason: str,
        ledger: _Ledger,
        previous: Deployed | None,
    ) -> PushResult:
        """Step 8: back to ``previous``; the alias stays where it was."""
        m, bundle_path = ledger.manifest, ledger.bundle_path
        if previous is None:
            remove = getattr(self.engine, "remove", None)
            if remove is None:
                why = (
                    f"{reason}; nothing served before, and the {self.engine.kind} engine cannot take a "
                    f"version down: check what {self.target_name} serves"
                )
                return self._end_failed(receipt, step, base, "rollback", why, ledger, rolled_out=True)
            try:
                taken = remove(m.model_name)
            except Exception as exc:
                text = exc.message if isinstance(exc, MlplatError) else f"{type(exc).__name__}: {exc}"
                why = f"{reason}; taking it down failed: {text}"
                return self._end_failed(receipt, step, base, "rollback", why, ledger, rolled_out=True)
            if isinstance(taken, Transition):
                receipt.transitions.append(TransitionOut.of(taken))
            step(
                "rollback", f"nothing served before: v{m.version} taken down ({reason})", status="rolled_back"
            )
            return self._end_rolled_back(receipt, base, reason, ledger, None)
        back = RolloutRequest(
            model_name=m.model_name,
            version=previous.version,
            bundle_id=previous.bundle_id,
            bundle_path=Path(str(previous.spec.get("bundle_path") or bundle_path)),
            image=previous.image,
            previous=previous,
            deadline_s=self.options.deadline_s,
            reason=reason,
        )
        try:
            result = self.engine.rollback(back, step.note)
        except MlplatError as exc:
            result = RolloutResult(RolloutOutcome.FAILED, exc.message)
        except Exception as exc:
            result = RolloutResult(RolloutOutcome.FAILED, f"{type(exc).__name__}: {exc}"[:500])
        receipt.transitions += [TransitionOut.of(t) for t in result.transitions]
        if result.outcome not in (RolloutOutcome.COMPLETED, RolloutOutcome.COMMITTED):
            why = f"{reason}; the rollback to v{previous.version} did not complete: {result.reason}"
            return self._end_failed(receipt, step, base, "rollback", why, ledger, rolled_out=True)
        step("rollback", f"v{previous.version} serves again ({reason})", status="rolled_back")
        return self._end_rolled_back(receipt, base, reason, ledger, previous)


def build_push(
    project: Project,
    target_name: str,
    *,
    metadata: MetadataApi | None,
    options: PushOptions | None = None,
    progress: Progress = _quiet,
    emit: EventSink = null_sink,
    build_image: Callable[..., ImageRef] | None = None,
) -> Push:
    """The real collaborators for a push to ``[targets.NAME]``: credentials, engine, registry."""
    from mlplat_tui.push.credentials import resolve_credentials
    from mlplat_tui.push.engines import engine_for
    from mlplat_tui.push.registry import TargetRegistry

    target = project.config.targets.get(target_name)
    if target is None:
        names = ", ".join(project.config.targets) or "none defined"
        raise UsageError(f"no target {target_name!r} in {project.config_path}", hint=f"targets: {names}")
    credentials = resolve_credentials(target.credentials, project.root)
    engine = engine_for(project, target_name, target, credentials)
    uri = registry_uri(target, engine)
    registry = TargetRegistry(uri, project.config.model.name, credentials) if uri else None
    return Push(
        project,
        target_name,
        target,
        engine,
        registry,
        metadata,
        credentials,
        options or PushOptions(),
        progress,
        emit,
        build_image,
    )


def push(
    project: Project,
    target_name: str,
    bundle_path: Path,
    *,
    metadata: MetadataApi | None,
    options: PushOptions | None = None,
    progress: Progress = _quiet,
    emit: EventSink = null_sink,
    build_image: Callable[..., ImageRef] | None = None,
) -> PushResult:
    """Push ``bundle_path`` to ``[targets.NAME]``; never raises for what happened on the target
    (that is the outcome); raises ``MlplatError`` for a wrong request (no such target)."""
    try:
        runner = build_push(
            project,
            target_name,
            metadata=metadata,
            options=options,
            progress=progress,
            emit=emit,
            build_image=build_image,
        )
    except UsageError:
        raise  # a wrong request (no such target, an unsafe credentials file, ...): exit 2
    except MlplatError as exc:
        model = project.config.model.name
        return PushResult(PushOutcome.FAILED, f"nothing changed: {exc.message}", target_name, model, "?", "?")
    return runner.run(bundle_path)
