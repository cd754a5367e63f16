"""The ``local`` engine: a second local stack on this machine, acting as a cluster.

The target's stack is a project folder of its own, ``.mlplat/targets/NAME/`` (``StateLayout.
target_stack``), with its own ``.mlplat/`` inside (pidfiles, logs, tokens, metadata store,
tracker) and the target's ``port_base``; it is the local backend's stack, started on demand by
the first rollout and left running (``mlplat --project .mlplat/targets/NAME down`` stops it).
It serves the bundle **itself**: a rollout copies the verified bundle into the target's own
``bundles/`` and loads that copy through the target's serving admin (``deploy.serve_bundle`` on a
``deploy.LocalTarget``: checked in a child process, warmed up, swapped atomically; a refused load
leaves the old version serving, which the engine reports as rolled back). What it served, and
since when, is the target's own record, ``deployed.json`` in that folder: a stack started
again restores the last version from it, and ``rollback`` loads an earlier copy.

Imports the stack, deploy and client layers; never the pipeline or the front ends.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from mlplat_runtime.errors import MlplatError, TargetError
from mlplat_tui.push.engine import (
    Deployed,
    Progress,
    RolloutOutcome,
    RolloutRequest,
    RolloutResult,
    Transition,
)

if TYPE_CHECKING:
    from mlplat_tui.clients.protocols import ServingAdminApi
    from mlplat_tui.project.config import Project
    from mlplat_tui.project.targets import LocalTarget
    from mlplat_tui.push.credentials import Credentials
    from mlplat_tui.stack.local import LocalBackend

STATE_FILE = "deployed.json"


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class _Served:
    version: str
    bundle_id: str
    path: str
    since: str


def target_project(project: Project, name: str, target: LocalTarget) -> Project:
    """The second stack as a project of its own: the target's folder and ports, the same model."""
    from mlplat_tui.project.config import Project as ProjectCls

    config = project.config.model_copy(
        update={
            "stack": project.config.stack.model_copy(
                update={"port_base": target.port_base, "backend": "local"}
            ),
            "targets": {},
        }
    )
    return ProjectCls(root=project.paths.target_stack(name).resolve(), config=config)


class LocalEngine:
    """``[targets.NAME] kind = "local"``."""

    kind = "local"
    needs_image = False

    def __init__(
        self, project: Project, name: str, target: LocalTarget, credentials: Credentials | None = None
    ) -> None:
        from mlplat_tui.stack.local import LocalBackend

        self.project = project
        self.name = name
        self.target = target
        self.credentials = credentials
        self.stack_project = target_project(project, name, target)
        self.backend: LocalBackend = LocalBackend(self.stack_project)

    # -- where things are -------------------------------------------------------------------
    @property
    def root(self) -> Path:
        return self.stack_project.root

    @property
    def tracker_uri(self) -> str:
        """The registry a push to this target uses when ``registry`` is not set."""
        return self.backend.ports.url("tracker")

    def endpoint(self, model_name: str) -> str | None:
        return self.backend.ports.url("serving")

    # -- its own record ---------------------------------------------------------------------
    def _history(self) -> dict[str, list[dict[str, Any]]]:
        try:
            raw = json.loads((self.root / STATE_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return raw if isinstance(raw, dict) else {}

    def _remember(self, model: str, served: _Served) -> None:
        history = self._history()
        history.setdefault(model, []).append(served.__dict__)
        self._write_history(history)

    def _write_history(self, history: dict[str, list[dict[str, Any]]]) -> None:
        """Whole or not at all: a temporary file moved over the old one."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".deployed.")
        with os.fdopen(fd, "w") as fh:
            json.dump(history, fh, indent=2)
        os.replace(tmp, self.root / STATE_FILE)

    def _last(self, model: str) -> _Served | None:
        entries = self._history().get(model) or []
        return _Served(**entries[-1]) if entries else None

    # -- the stack --------------------------------------------------------------------------
    def _up(self) -> bool:
        status = self.backend.status()
        return status.up

    def check_access(self) -> None:
        """The stack is ours when up; its ports are free when it is down. Changes nothing."""
        from mlplat_tui.clients.identity import fetch_identity, is_ours
        from mlplat_tui.stack.base import SERVICES, port_in_use

        ports = self.backend.ports
        holder = fetch_identity(ports.url("metadata"))
        if holder is not None:
            if not is_ours(holder, self.stack_project):
                raise TargetError(
                    f"target {self.name}: port {ports.metadata} answers for project {holder.project} "
                    f"({holder.project_root}), not for this target's stack {self.root}",
                    hint=f"set [targets.{self.name}] port_base to the start of a free range of 4 ports",
                )
            return
        if self._up():
            return
        busy = [
            p
            for p in (ports.tracker, ports.metadata, ports.serving, ports.admin)
            if port_in_use(ports.host, p)
        ]
        if busy and not any(self.backend.read_pid(s) for s in SERVICES):
            raise TargetError(
                f"target {self.name}: port(s) {', '.join(map(str, busy))} are in use by another program",
                hint=f"set [targets.{self.name}] port_base to the start of a free range of 4 ports",
            )

    def ensure_up(self, progress: Progress) -> list[Transition]:
        """Start the second stack when it is not up, and serve again what it served last."""
        if self._up():
            return []
        self.root.mkdir(parents=True, exist_ok=True)
        progress(
            f"starting the {self.name} stack on ports {self.backend.ports.tracker}-{self.backend.ports.admin}"
        )
        try:
            self.backend.up(progress)
        except MlplatError as exc:
            raise TargetError(
                f"target {self.name}: its stack did not start: {exc.message}", hint=exc.hint
            ) from None
        out = [Transition(_now(), "stack_up", f"{self.name} stack started", subject="stack")]
        model = self.project.config.model.name
        last = self._last(model)
        if last is not None and Path(last.path).is_dir():
            admin = self._admin()
            try:
                admin.load(model, self.backend.serving_bundle_path(Path(last.path)))
                out.append(Transition(_now(), "restored", f"v{last.version} serves again", subject=model))
            except MlplatError as exc:
                out.append(Transition(_now(), "restore_failed", exc.message, subject=model))
            finally:
                admin.close()
        return out

    def _admin(self, timeout: float = 60.0) -> ServingAdminApi:
        from mlplat_tui.clients.serving import ServingAdmin

        return ServingAdmin.from_token_file(
            self.backend.ports.url("admin"), self.stack_project.paths.admin_token, timeout=timeout
        )

    # -- what serves ------------------------------------------------------------------------
    def _active(self, model: str) -> tuple[str | None, str | None]:
        """(version, bundle_id) serving reports as ready now, (None, None) when none/down."""
        if not self.stack_project.paths.admin_token.exists():
            return None, None
        try:
            admin = self._admin()
        except MlplatError:
            return None, None
        try:
            for state in admin.index():
                if state.name == model and state.state.upper() == "READY":
                    return state.version, state.bundle_id
        except MlplatError:
            return None, None
        finally:
            admin.close()
        return None, None

    def current(self, model_name: str) -> Deployed | None:
        last = self._last(model_name)
        if last is None:
            return None
        version, bundle_id = self._active(model_name)
        healthy = 1 if version == last.version and (bundle_id in (None, "", last.bundle_id)) else 0
        return Deployed(
            model_name=model_name,
            version=last.version,
            bundle_id=last.bundle_id,
            replicas=1,
            healthy=healthy,
            since=datetime.fromisoformat(last.since),
            spec={"bundle_path": last.path},
        )

    # -- changes ----------------------------------------------------------------------------
    def _copy(self, request: RolloutRequest) -> Path:
        """The target's own copy of the bundle (made once per version and digest)."""
        from mlplat_runtime.bundle import open_bundle

        dest = self.stack_project.paths.bundle(request.model_name, request.version)
        if dest.is_dir():
            try:
                if open_bundle(dest).manifest.bundle_id == request.bundle_id:
                    return dest
            except MlplatError:
                pass
            dest = dest.with_name(f"{dest.name}-{request.bundle_id.removeprefix('sha256:')[:12]}")
            if dest.is_dir():
                return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
        try:
            shutil.copytree(request.bundle_path, tmp, dirs_exist_ok=True)
            os.replace(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return dest

    def _serve(self, request: RolloutRequest, progress: Progress, action: str) -> RolloutResult:
        from mlplat_tui.deploy.serve import BundleToServe, LocalTarget, serve_bundle

        transitions = self.ensure_up(progress)
        path = request.bundle_path
        if not path.resolve().is_relative_to(self.root):
            path = self._copy(request)
        transitions.append(
            Transition(_now(), "loading", f"v{request.version} loading", subject=request.model_name)
        )
        progress(f"{self.name}: loading v{request.version}")
        admin = self._admin(timeout=request.deadline_s)  # mlplat's deadline bounds the load
        started = time.monotonic()
        try:
            result = serve_bundle(
                LocalTarget(admin, self.backend.serving_bundle_path, name=self.name),
                BundleToServe(request.model_name, request.version, request.bundle_id, path),
                metadata=None,
                action="rollback" if action == "rollback" else "deploy",
                record=False,
                serving_before=request.previous.version if request.previous else None,
            )
        finally:
            admin.close()
        took = time.monotonic() - started
        if result.served:
            served = _Served(request.version, request.bundle_id, str(path), _now().isoformat())
            self._remember(request.model_name, served)
            transitions.append(
                Transition(
                    _now(),
                    "serving",
                    f"v{result.serving_version} ready after {took:.2f}s",
                    subject=request.model_name,
                )
            )
            return RolloutResult(
                RolloutOutcome.COMPLETED,
                "",
                tuple(transitions),
                deployed=self.current(request.model_name),
                endpoint=self.endpoint(request.model_name),
            )
        transitions.append(Transition(_now(), "refused", result.reason, subject=request.model_name))
        before = request.previous
        if before is None:
            return RolloutResult(
                RolloutOutcome.FAILED, f"{result.reason}; nothing served before", tuple(transitions)
            )
        return RolloutResult(
            RolloutOutcome.ROLLED_BACK,
            f"{result.reason}; v{before.version} still serves",
            tuple(transitions),
            deployed=self.current(request.model_name),
            endpoint=self.endpoint(request.model_name),
        )

    def rollout(self, request: RolloutRequest, progress: Progress) -> RolloutResult:
        return self._serve(request, progress, "deploy")

    def rollback(self, request: RolloutRequest, progress: Progress) -> RolloutResult:
        return self._serve(request, progress, "rollback")

    def remove(self, model_name: str) -> Transition:
        """Serve nothing (a first push that failed its smoke test: there is nothing to go back to)."""
        from mlplat_runtime.tokens import read_token_file

        token = read_token_file(self.stack_project.paths.admin_token)
        resp = httpx.post(
            f"{self.backend.ports.url('admin')}/v2/repository/models/{model_name}/unload",
            headers={"Authorization": f"Bearer {token}"},
            json={},
            timeout=30.0,
            trust_env=False,
        )
        if resp.status_code >= 400:
            raise TargetError(f"target {self.name}: unloading {model_name} failed ({resp.status_code})")
        history = self._history()
        entries = history.get(model_name) or []
        if entries:
            entries.pop()  # only what this push put there; what served before keeps its record
        if not entries:
            history.pop(model_name, None)
        self._write_history(history)
        return Transition(_now(), "unloaded", f"{model_name} taken down", subject=model_name)
