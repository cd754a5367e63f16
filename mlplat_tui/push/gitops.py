"""The ``gitops-k8s`` engine: a push is a commit of validated Kubernetes manifests.

Argo CD or Flux applies what the repository holds, so this engine never talks to a cluster.
A rollout renders the manifests (``k8s_manifests``), refuses them offline when a schema or a
lint says no (``k8s_validate``: nothing is committed then), writes them under the target's
``path`` in a fresh clone, commits with the graduation evidence (``RolloutRequest.evidence``:
the gate table and the receipt summary) in the message, and pushes. One commit per push; the
same bundle again renders the same bytes, so nothing changes and nothing is committed (said
so, as the transition ``unchanged``). A push that loses a race (someone pushed first) starts
again from a fresh clone of their commit.

Rollback serves an earlier version again with a commit that says why: ``git revert`` of the
commit that introduced the current version when that brings the wanted version back, else the
wanted version's manifests restored from the commit that last held them, else (never in this
repository) rendered again from the request. ``current`` reads the manifests at the branch's
head; ``since`` is the date of the last commit that changed them.

The folder under ``path`` belongs to one model: mlplat replaces the files it wrote there (their
first line says so) and leaves any other file (a ``kustomization.yaml``) alone. Git runs as a
subprocess with prompts off, a timeout, and only the file, git, ssh and http(s) transports; a
token reaches git through its environment (``GIT_CONFIG_*``), never its arguments.

Imports PyYAML, the push seam, ``push.k8s_manifests``, ``push.k8s_validate``, the project's
config and target models and the runtime's errors.
"""

from __future__ import annotations

import base64
import getpass
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mlplat_runtime.errors import TargetError
from mlplat_tui.project.targets import GitopsK8sTarget
from mlplat_tui.push import k8s_manifests as km
from mlplat_tui.push.engine import (
    Deployed,
    ImageRef,
    Progress,
    RolloutOutcome,
    RolloutRequest,
    RolloutResult,
    Transition,
)
from mlplat_tui.push.k8s_validate import check

if TYPE_CHECKING:
    from mlplat_tui.project.config import Project
    from mlplat_tui.push.credentials import Credentials

KIND = "gitops-k8s"
PUSH_TRIES = 3  # a lost race starts again from the winner's commit, this many times in all
DEFAULT_BRANCH = "main"  # for a repository with no commit yet and no branch configured
FALLBACK_AUTHOR = ("mlplat", "mlplat@localhost")
_URL_RE = re.compile(r"^(?:[a-z][a-z0-9+.-]*://|[\w.-]+@[\w.-]+:)", re.IGNORECASE)
_HEADER = km.files([{"kind": "x"}])["x.yaml"].splitlines()[0]  # first line of what mlplat writes
_TRAILER_RE = re.compile(r"^(Mlplat-[A-Za-z-]+|Pushed-by): (.*)$", re.MULTILINE)


@dataclass(frozen=True)
class _Checkout:
    dir: Path
    branch: str
    has_remote_branch: bool


@dataclass(frozen=True)
class _Held:
    """The manifests a folder holds, as read back from YAML."""

    model_name: str
    version: str
    bundle_id: str
    image: ImageRef | None
    replicas: int


class GitopsEngine:
    """One ``gitops-k8s`` target: manifests committed to ``repo`` under ``path``."""

    def __init__(
        self,
        project: Project,
        name: str,
        target: GitopsK8sTarget,
        credentials: Credentials | None = None,
        *,
        git: str = "git",
        timeout_s: float = 60.0,
    ) -> None:
        self._project = project
        self._name = name
        self._target = target
        self._credentials = credentials
        self._git_bin = git
        self._timeout_s = timeout_s
        self._is_url = bool(_URL_RE.match(target.repo))
        self._repo = target.repo if self._is_url else str((project.root / target.repo).resolve())
        self._ident: tuple[str, str] | None = None
        self._deadline: float | None = None  # monotonic; set for the length of a rollout/rollback

    # -- the Engine protocol -----------------------------------------------------------------
    @property
    def kind(self) -> str:
        return KIND

    @property
    def needs_image(self) -> bool:
        return True

    @property
    def repository(self) -> str:
        """Where commits go: the URL, or the local path resolved against the project folder."""
        return self._repo

    def endpoint(self, model_name: str) -> str | None:
        return None  # the cluster applies the commit; there is no endpoint mlplat can reach here

    def check_access(self) -> None:
        self._check_local_path()
        self._git(["ls-remote", "--heads", "--", self._repo], cwd=None, what="reach the repository")

    def current(self, model_name: str) -> Deployed | None:
        with self._clone() as co:
            return self._deployed(co, model_name)

    def plan(self, request: RolloutRequest) -> dict[str, str]:
        """The files a rollout of ``request`` would commit, rendered and checked (a
        ``ManifestRefused`` names every finding); touches no repository: for ``--dry-run``."""
        if request.image is None:
            raise TargetError(
                f"target {self._name} ({KIND}) needs the image the push built, pinned by digest; "
                "none was given"
            )
        spec = km.ManifestSpec.for_target(
            self._target, request.model_name, request.version, request.bundle_id, request.image
        )
        docs = km.render(spec)
        check(docs, self._target.kubernetes_version)
        return km.files(docs)

    def rollout(self, request: RolloutRequest, progress: Progress) -> RolloutResult:
        files = self.plan(request)
        progress(
            f"{len(files)} manifest(s) valid against the Kubernetes {self._target.kubernetes_version} "
            "API schemas (strict) and mlplat's lints"
        )
        self._deadline = time.monotonic() + request.deadline_s
        try:
            return self._rollout(request, files, progress)
        finally:
            self._deadline = None

    def _rollout(self, request: RolloutRequest, files: dict[str, str], progress: Progress) -> RolloutResult:
        transitions = [self._tr("validated", f"{', '.join(files)} for v{request.version}")]
        for attempt in range(1, PUSH_TRIES + 1):
            with self._clone() as co:
                held = self._held(co)
                self._check_owner(held, request.model_name)
                self._write(co, files)
                if not self._staged(co):
                    return self._unchanged(co, request, transitions, progress)
                message = self._rollout_message(request, held)
                sha = self._commit(co, message)
                progress(f"committed {sha[:12]} to {self._target.path} on {co.branch}")
                if self._push(co):
                    transitions += [
                        self._tr("committed", f"v{request.version} at {self._target.path}", sha),
                        self._tr("pushed", f"{self._repo} {co.branch}", sha),
                    ]
                    progress(f"pushed {sha[:12]} to {self._repo} ({co.branch}); Argo CD / Flux applies it")
                    return self._result(co, request.model_name, transitions)
            progress(
                f"the push lost a race (attempt {attempt}/{PUSH_TRIES}); trying again on the newer commit"
            )
        raise TargetError(
            f"could not push to {self._repo} ({PUSH_TRIES} tries, each overtaken by another push); "
            "nothing of this push is in the repository",
            hint="try again; if it keeps happening, something else commits to that branch in a loop",
        )

    def rollback(self, request: RolloutRequest, progress: Progress) -> RolloutResult:
        self._deadline = time.monotonic() + request.deadline_s
        try:
            return self._rollback(request, progress)
        finally:
            self._deadline = None

    def _rollback(self, request: RolloutRequest, progress: Progress) -> RolloutResult:
        why = request.reason.strip() or "no reason given"
        for attempt in range(1, PUSH_TRIES + 1):
            with self._clone() as co:
                held = self._held(co)
                if held is not None:
                    self._check_owner(held, request.model_name)
                if held is not None and held.bundle_id == request.bundle_id:
                    return self._unchanged(co, request, [], progress)
                how, reverted = self._restore(co, request, held)
                docs = [yaml.safe_load(t) for t in self._managed_texts(co).values()]
                check([d for d in docs if isinstance(d, dict)], self._target.kubernetes_version)
                if not self._staged(co):
                    return self._unchanged(co, request, [], progress)
                sha = self._commit(co, self._rollback_message(request, held, why, how, reverted))
                progress(f"committed rollback {sha[:12]} ({how}) to {self._target.path} on {co.branch}")
                if self._push(co):
                    progress(f"pushed {sha[:12]} to {self._repo} ({co.branch}); Argo CD / Flux applies it")
                    transitions = [
                        self._tr("reverted" if reverted else "restored", f"v{request.version}: {why}", sha),
                        self._tr("pushed", f"{self._repo} {co.branch}", sha),
                    ]
                    return self._result(co, request.model_name, transitions)
            progress(
                f"the push lost a race (attempt {attempt}/{PUSH_TRIES}); trying again on the newer commit"
            )
        raise TargetError(
            f"could not push the rollback to {self._repo} "
            f"({PUSH_TRIES} tries, each overtaken by another push)",
            hint="try `mlplat rollback` again",
        )

    # -- git ---------------------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        env.update(
            GIT_TERMINAL_PROMPT="0",
            GIT_ALLOW_PROTOCOL="file:git:ssh:http:https",
            GIT_SSH_COMMAND=os.environ.get("GIT_SSH_COMMAND", "ssh -o BatchMode=yes"),
            LC_ALL="C",
        )
        name, email = self._identity()
        env.update(
            GIT_AUTHOR_NAME=name, GIT_AUTHOR_EMAIL=email, GIT_COMMITTER_NAME=name, GIT_COMMITTER_EMAIL=email
        )
        creds = self._credentials
        if creds is not None and self._target.repo.lower().startswith(("http://", "https://")):
            if creds.username:
                token = base64.b64encode(f"{creds.username}:{creds.secret}".encode()).decode()
                header = f"Authorization: Basic {token}"
            else:
                header = f"Authorization: Bearer {creds.secret}"
            env.update(GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0="http.extraHeader", GIT_CONFIG_VALUE_0=header)
        return env

    def _identity(self) -> tuple[str, str]:
        """The user's git identity when configured, else a fixed mlplat author (the user's login
        goes into the ``Pushed-by`` trailer either way)."""
        if self._ident is None:
            self._ident = self._read_identity()
        return self._ident

    def _read_identity(self) -> tuple[str, str]:
        found = []
        for key in ("user.name", "user.email"):
            try:
                out = subprocess.run(
                    [self._git_bin, "config", "--get", key],
                    cwd=self._project.root,
                    capture_output=True,
                    text=True,
                    timeout=self._timeout_s,
                    env={k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
                )
            except (OSError, subprocess.TimeoutExpired):
                return FALLBACK_AUTHOR
            found.append(out.stdout.strip() if out.returncode == 0 else "")
        return (found[0], found[1]) if all(found) else FALLBACK_AUTHOR

    def _scrub(self, text: str) -> str:
        secret = self._credentials.secret if self._credentials is not None else ""
        return text.replace(secret, "***") if secret else text

    def _timeout(self, what: str) -> float:
        if self._deadline is None:
            return self._timeout_s
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TargetError(
                f"target {self._name}: the push's deadline passed before git could {what}; "
                "nothing of this push is in the repository",
                hint="raise the push's deadline, or check why the repository answers slowly",
            )
        return min(self._timeout_s, left)

    def _git(
        self, args: list[str], cwd: Path | None, what: str, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        timeout = self._timeout(what)
        try:
            out = subprocess.run(
                [self._git_bin, *args],
                cwd=cwd,
                input=stdin,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=self._env(),
                stdin=subprocess.DEVNULL if stdin is None else None,  # input= needs stdin unset
            )
        except FileNotFoundError:
            raise TargetError(
                f"target {self._name}: git is not installed ({self._git_bin!r} not found)",
                hint="install git (apt-get install git)",
            ) from None
        except subprocess.TimeoutExpired:
            raise TargetError(
                f"target {self._name}: git could not {what} within {timeout:.0f} s ({self._repo}); "
                "nothing of this push is in the repository",
                hint="check the network and the repository's address",
            ) from None
        if check and out.returncode != 0:
            detail = self._scrub((out.stderr or out.stdout).strip()).splitlines()
            raise TargetError(
                f"target {self._name}: git could not {what} ({self._repo}): {' / '.join(detail[-3:])}",
                hint=f"check [targets.{self._name}] repo in mlplat.toml and your access to it",
            )
        return out

    def _check_local_path(self) -> None:
        if self._is_url:
            return
        path = Path(self._repo)
        if not path.is_dir():
            raise TargetError(
                f"target {self._name}: the gitops repository {self._target.repo} ({path}) does not exist",
                hint=f"create it (git init --bare {path}) or fix [targets.{self._name}] repo in mlplat.toml",
            )

    @contextmanager
    def _clone(self) -> Iterator[_Checkout]:
        self._check_local_path()
        tmp = Path(tempfile.mkdtemp(prefix="mlplat-gitops-"))
        try:
            work = tmp / "repo"
            self._git(
                ["clone", "--quiet", "--no-checkout", "--", self._repo, str(work)],
                cwd=tmp,
                what="clone the repository",
            )
            branch = self._target.branch or self._default_branch(work)
            remote = self._git(
                ["rev-parse", "--verify", "--quiet", f"refs/remotes/origin/{branch}"],
                cwd=work,
                what="read the branch",
                check=False,
            )
            if remote.returncode == 0:
                self._git(
                    ["checkout", "--quiet", "-B", branch, f"origin/{branch}"], work, "check out the branch"
                )
            else:  # an empty repository, or a branch this target starts
                self._git(["checkout", "--quiet", "--orphan", branch], work, "start the branch")
            yield _Checkout(work, branch, remote.returncode == 0)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _default_branch(self, work: Path) -> str:
        head = self._git(
            ["symbolic-ref", "--quiet", "--short", "refs/remotes/origin/HEAD"],
            cwd=work,
            what="read the default branch",
            check=False,
        )
        return head.stdout.strip().removeprefix("origin/") if head.returncode == 0 else DEFAULT_BRANCH

    def _staged(self, co: _Checkout) -> bool:
        self._git(["add", "--all", "--", self._target.path], co.dir, "stage the manifests")
        diff = self._git(
            ["diff", "--cached", "--quiet", "--", self._target.path], co.dir, "compare", check=False
        )
        return diff.returncode != 0

    def _commit(self, co: _Checkout, message: str) -> str:
        self._git(
            ["commit", "--quiet", "--no-verify", "--file=-", "--", self._target.path],
            co.dir,
            "commit",
            stdin=message,
        )
        return self._git(["rev-parse", "HEAD"], co.dir, "read the commit").stdout.strip()

    def _push(self, co: _Checkout) -> bool:
        """True once pushed; False when someone else pushed first (fetch and try again)."""
        out = self._git(
            ["push", "--porcelain", "origin", f"HEAD:refs/heads/{co.branch}"], co.dir, "push", check=False
        )
        if out.returncode == 0:
            return True
        text = out.stdout + out.stderr
        if "[rejected]" in text or "fetch first" in text or "non-fast-forward" in text:
            return False
        detail = self._scrub(out.stderr.strip()).splitlines()
        raise TargetError(
            f"target {self._name}: git could not push to {self._repo}: {' / '.join(detail[-3:])}; "
            "nothing of this push is in the repository",
            hint="a local repository must be bare (git init --bare); "
            "a remote one must accept your credentials",
        )

    # -- the folder ------------------------------------------------------------------------
    def _folder(self, co: _Checkout) -> Path:
        """``path`` inside the clone; refused when a part of it is a link (it could lead out)."""
        here = co.dir
        for part in Path(self._target.path).parts:
            here = here / part
            if here.is_symlink():
                raise TargetError(
                    f"target {self._name}: {self._target.path} in {self._repo} passes through a "
                    f"symbolic link ({here.relative_to(co.dir)}); mlplat writes only to plain folders",
                    hint="point [targets.NAME] path at a real folder of the repository",
                )
        return here

    def _managed_texts(self, co: _Checkout) -> dict[str, str]:
        folder = self._folder(co)
        out: dict[str, str] = {}
        if folder.is_dir():
            for f in sorted(folder.iterdir()):
                if f.is_file() and not f.is_symlink() and f.suffix == ".yaml":
                    text = f.read_text(encoding="utf-8", errors="replace")
                    if text.startswith(_HEADER):
                        out[f.name] = text
        return out

    def _write(self, co: _Checkout, files: dict[str, str]) -> None:
        folder = self._folder(co)
        if folder.exists() and not folder.is_dir():
            raise TargetError(
                f"target {self._name}: {self._target.path} in {self._repo} is a file, not a folder"
            )
        folder.mkdir(parents=True, exist_ok=True)
        for stale in set(self._managed_texts(co)) - set(files):
            (folder / stale).unlink()
        for name, text in files.items():
            dest = folder / name
            if dest.is_symlink():
                dest.unlink()
            dest.write_text(text, encoding="utf-8")

    def _held(self, co: _Checkout) -> _Held | None:
        return _parse_held(self._managed_texts(co).values())

    def _check_owner(self, held: _Held | None, model_name: str) -> None:
        if held is not None and held.model_name != model_name:
            raise TargetError(
                f"target {self._name}: {self._target.path} in {self._repo} holds model {held.model_name}, "
                f"not {model_name}; nothing was committed",
                hint="give each model its own folder: a path per model in its project's [targets.NAME]",
            )

    # -- history ---------------------------------------------------------------------------
    def _history(self, co: _Checkout) -> Iterator[tuple[str, _Held | None]]:
        """Newest first: each commit that touched ``path`` and the manifests it left there (read
        lazily: a rollback reads back only as far as the version it wants)."""
        if not co.has_remote_branch:
            return
        log = self._git(["log", "--format=%H", "--", self._target.path], co.dir, "read the history")
        for sha in log.stdout.split():
            yield sha, self._held_at(co, sha)

    def _held_at(self, co: _Checkout, rev: str) -> _Held | None:
        return _parse_held(self._texts_at(co, rev).values())

    def _texts_at(self, co: _Checkout, rev: str) -> dict[str, str]:
        tree = self._git(
            ["ls-tree", "--name-only", f"{rev}:{self._target.path}"], co.dir, "list", check=False
        )
        if tree.returncode != 0:
            return {}
        texts: dict[str, str] = {}
        for name in tree.stdout.split():
            if name.endswith(".yaml"):
                blob = self._git(["show", f"{rev}:{self._target.path}/{name}"], co.dir, "read a manifest")
                if blob.stdout.startswith(_HEADER):
                    texts[name] = blob.stdout
        return texts

    def _restore(self, co: _Checkout, request: RolloutRequest, held: _Held | None) -> tuple[str, str | None]:
        """Put ``request``'s version back in the folder; (how, the commit reverted or None)."""
        history = _Lazy(self._history(co))
        if held is not None and history.get(0) is not None:
            intro = 0  # the oldest of the newest commits that all hold the current bundle
            while _bundle(history.get(intro + 1)) == held.bundle_id:
                intro += 1
            sha = history[intro][0]
            before = history.get(intro + 1)
            if before is not None and _bundle(before) == request.bundle_id:
                out = self._git(["revert", "--no-commit", sha], co.dir, "revert", check=False)
                now = self._held(co) if out.returncode == 0 else None
                if now is not None and now.bundle_id == request.bundle_id:
                    return f"reverts {sha[:12]}", sha
                # a conflict, or later edits left a mix: restore the wanted manifests instead
                self._git(["reset", "--quiet", "--hard", "HEAD"], co.dir, "undo the revert")
        for sha, state in history:
            if state is not None and state.bundle_id == request.bundle_id:
                self._write(co, self._texts_at(co, sha))
                return f"restores the manifests of {sha[:12]}", None
        if request.image is None:
            raise TargetError(
                f"target {self._name}: v{request.version} (bundle {km.short_bundle(request.bundle_id)}) "
                f"was never committed to {self._target.path}, and the rollback carries no image to render it",
                hint="roll back to a version this target served (mlplat status --target NAME)",
            )
        spec = km.ManifestSpec.for_target(
            self._target, request.model_name, request.version, request.bundle_id, request.image
        )
        self._write(co, km.files(km.render(spec)))
        return "renders its manifests again", None

    # -- messages and results --------------------------------------------------------------
    def _trailers(self, request: RolloutRequest, extra: dict[str, str]) -> str:
        lines = {
            "Mlplat-Model": request.model_name,
            "Mlplat-Version": request.version,
            "Mlplat-Bundle": request.bundle_id,
            "Mlplat-Target": self._name,
            **extra,
            "Pushed-by": _user(),
        }
        return "\n".join(f"{k}: {v}" for k, v in lines.items())

    def _rollout_message(self, request: RolloutRequest, held: _Held | None) -> str:
        image = request.image.pinned if request.image is not None else "-"
        was = f"v{held.version} (bundle {km.short_bundle(held.bundle_id)})" if held else "nothing"
        evidence = request.evidence.strip() or "(no evidence given)"
        extra = {"Mlplat-Image": image}
        if held is not None:
            extra["Mlplat-Previous"] = held.version
        return (
            f"mlplat push: {request.model_name} v{request.version} to {self._name} ({self._target.stage})\n\n"
            f"bundle:   {request.bundle_id}\nimage:    {image}\nprevious: {was}\n"
            f"path:     {self._target.path} (Kubernetes {self._target.kubernetes_version})\n\n"
            f"{evidence}\n\n{self._trailers(request, extra)}\n"
        )

    def _rollback_message(
        self, request: RolloutRequest, held: _Held | None, why: str, how: str, reverted: str | None
    ) -> str:
        was = f"v{held.version}" if held else "nothing"
        body = f"This reverts commit {reverted}." if reverted else f"This {how}."
        extra = {"Mlplat-Rollback-From": held.version if held else "-"}
        if reverted:
            extra["Mlplat-Reverts"] = reverted
        evidence = f"\n\n{request.evidence.strip()}" if request.evidence.strip() else ""
        return (
            f"mlplat rollback: {request.model_name} to v{request.version} on {self._name} (was {was})\n\n"
            f"Why: {why}\n\n{body}{evidence}\n\n{self._trailers(request, extra)}\n"
        )

    def _tr(self, state: str, message: str, subject: str = "") -> Transition:
        return Transition(at=datetime.now(UTC), state=state, message=message, subject=subject)

    def _unchanged(
        self, co: _Checkout, request: RolloutRequest, transitions: list[Transition], progress: Progress
    ) -> RolloutResult:
        head = self._git(
            ["rev-parse", "--verify", "--quiet", "HEAD"], co.dir, "read", check=False
        ).stdout.strip()
        msg = (
            f"nothing changed: {self._target.path} on {co.branch} already holds v{request.version} "
            f"(bundle {km.short_bundle(request.bundle_id)}); no commit"
        )
        progress(msg)
        return self._result(co, request.model_name, [*transitions, self._tr("unchanged", msg, head)])

    def _result(self, co: _Checkout, model_name: str, transitions: list[Transition]) -> RolloutResult:
        return RolloutResult(
            outcome=RolloutOutcome.COMMITTED,
            reason="",
            transitions=tuple(transitions),
            deployed=self._deployed(co, model_name),
            endpoint=None,
        )

    def _deployed(self, co: _Checkout, model_name: str) -> Deployed | None:
        held = self._held(co)
        if held is None or held.model_name != model_name:
            return None
        last = self._git(
            ["log", "-1", "--format=%H %cI", "--", self._target.path], co.dir, "read", check=False
        ).stdout.split()
        since = datetime.fromisoformat(last[1]) if len(last) == 2 else None
        spec: dict[str, object] = {
            "repo": self._repo,
            "branch": co.branch,
            "path": self._target.path,
            "commit": last[0] if last else "",
            "files": sorted(self._managed_texts(co)),
        }
        return Deployed(
            model_name=held.model_name,
            version=held.version,
            bundle_id=held.bundle_id,
            image=held.image,
            replicas=held.replicas,
            healthy=0,  # the cluster's business: Argo CD / Flux report it, not the repository
            since=since,
            spec=spec,
        )


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _bundle(entry: tuple[str, _Held | None] | None) -> str | None:
    return entry[1].bundle_id if entry is not None and entry[1] is not None else None


class _Lazy:
    """A list read from an iterator only as far as asked."""

    def __init__(self, it: Iterator[tuple[str, _Held | None]]) -> None:
        self._it = it
        self._seen: list[tuple[str, _Held | None]] = []

    def get(self, i: int) -> tuple[str, _Held | None] | None:
        while len(self._seen) <= i:
            nxt = next(self._it, None)
            if nxt is None:
                return None
            self._seen.append(nxt)
        return self._seen[i]

    def __getitem__(self, i: int) -> tuple[str, _Held | None]:
        got = self.get(i)
        if got is None:
            raise IndexError(i)
        return got

    def __iter__(self) -> Iterator[tuple[str, _Held | None]]:
        i = 0
        while (got := self.get(i)) is not None:
            yield got
            i += 1


def _parse_held(texts: Any) -> _Held | None:
    """What the Deployment (or InferenceService) mlplat wrote says it serves."""
    for text in texts:
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError:
            continue
        if not isinstance(doc, dict) or doc.get("kind") not in ("Deployment", "InferenceService"):
            continue
        ann = (doc.get("metadata") or {}).get("annotations") or {}
        name = ann.get("mlplat.io/model-name")
        if not name:
            continue
        spec = doc.get("spec") or {}
        replicas = spec.get("replicas") or (spec.get("predictor") or {}).get("minReplicas") or 1
        pinned = str(ann.get(km.ANNOTATION_IMAGE, ""))
        repo, _, digest = pinned.partition("@")
        return _Held(
            model_name=str(name),
            version=str(ann.get("mlplat.io/model-version", "")),
            bundle_id=str(ann.get(km.ANNOTATION_BUNDLE, "")),
            image=ImageRef(repository=repo, digest=digest) if digest else None,
            replicas=int(replicas),
        )
    return None


def trailers(message: str) -> dict[str, str]:
    """The ``Mlplat-*`` and ``Pushed-by`` trailers of a commit message mlplat wrote."""
    return {m.group(1): m.group(2).strip() for m in _TRAILER_RE.finditer(message)}
