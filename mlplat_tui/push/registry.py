"""The target's MLflow model registry, as a push uses it.

One **model version per bundle**: the bundle folder is the version's artifact (logged to a run of
the ``mlplat-push`` experiment), lineage and gate evidence are its tags, and the tag
``mlplat.bundle_id`` holds the bundle digest. The same bundle pushed again finds its version by
that tag; two pushes that race both create one, then both look again and keep the **lowest**
version holding the digest: the other deletes its own (and its run). The alias ``= stage`` is
set only after a push succeeded (``set_alias``); the receipt is attached to the version as an
artifact of its run and summarised in the tag ``mlplat.receipt``.

``check_access`` proves, before anything changes, that the credentials are accepted (HTTP 401
otherwise) and that they may write this model's versions: a write MLflow's auth layer checks
before its handler (``set-tag`` with an empty key) answers 403 for a read-only user and 400 from
the handler for a writer, so nothing is written either way. A model not created yet is checked at
its first create.

MLflow's own prints go to stderr (``mlplat push --json`` owns stdout). Credentials reach
MLflow's client through ``MLFLOW_TRACKING_USERNAME``/``PASSWORD`` (or ``TOKEN``)
set only around each call, under one lock: they are process-wide. mlflow is imported inside the
functions (``mlplat --help`` stays fast).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from mlplat_runtime.errors import TargetError
from mlplat_tui.push.credentials import Credentials

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from mlplat_runtime.bundle.manifest import GateResult, Manifest

EXPERIMENT = "mlplat-push"
DIGEST_TAG = "mlplat.bundle_id"
RECEIPT_TAG = "mlplat.receipt"
TAG_VALUE_MAX = 4900  # MLflow caps a model version tag value at 5000 characters
_ENV_LOCK = threading.RLock()
_AUTH_ENV = (
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT",
)


@dataclass(frozen=True)
class RegistryVersion:
    model_name: str
    version: str
    run_id: str | None
    created: bool  # this push created it (False: the bundle was registered before)
    tags: Mapping[str, str]


def _cut(value: str) -> str:
    return value if len(value) <= TAG_VALUE_MAX else value[: TAG_VALUE_MAX - 1] + "…"


def version_tags(manifest: Manifest, gates: list[GateResult], *, target: str, stage: str) -> dict[str, str]:
    """The tags a pushed version carries: digest, lineage, gate evidence."""
    lineage = manifest.lineage
    tags: dict[str, str] = {
        DIGEST_TAG: manifest.bundle_id,
        "mlplat.bundle_version": manifest.version,
        "mlplat.target": target,
        "mlplat.stage": stage,
        "mlplat.gates_passed": str(all(g.passed and g.evaluated for g in gates)).lower(),
    }
    if lineage is not None:
        for key in ("run_id", "tracker_uri", "git_commit", "dirty_hash"):
            value = getattr(lineage, key, None)
            if value:
                tags[f"mlplat.lineage.{key}"] = str(value)
        hashes = getattr(lineage, "data_hashes", None)
        if hashes:
            tags["mlplat.lineage.data_hashes"] = _cut(json.dumps(hashes, sort_keys=True))
    for gate in gates:
        state = "passed" if gate.passed and gate.evaluated else "failed"
        tags[f"mlplat.gate.{gate.name}"] = _cut(f"{state}: {gate.measured} {gate.threshold}")
    return tags


class TargetRegistry:
    """The target's MLflow model registry at ``uri`` for one model."""

    def __init__(self, uri: str, model_name: str, credentials: Credentials | None, *, timeout: float = 10.0):
        self.uri = uri.rstrip("/")
        self.model_name = model_name
        self.credentials = credentials
        self.timeout = timeout

    # -- auth -------------------------------------------------------------------------------
    def _http_auth(self) -> dict[str, Any]:
        c = self.credentials
        if c is None:
            return {}
        if c.basic is not None:
            return {"auth": c.basic}
        return {"headers": {"Authorization": f"Bearer {c.secret}"}}

    @contextlib.contextmanager
    def _env(self) -> Iterator[None]:
        with _ENV_LOCK:
            saved = {k: os.environ.get(k) for k in _AUTH_ENV}
            for k in _AUTH_ENV:
                os.environ.pop(k, None)
            c = self.credentials
            if c is not None and c.username is not None:
                os.environ["MLFLOW_TRACKING_USERNAME"] = c.username
                os.environ["MLFLOW_TRACKING_PASSWORD"] = c.secret
            elif c is not None:
                os.environ["MLFLOW_TRACKING_TOKEN"] = c.secret
            # MLflow writes "View run ... at" to stdout: `mlplat push --json` owns stdout
            os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
            try:
                with contextlib.redirect_stdout(sys.stderr):
                    yield
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v

    def _who(self) -> str:
        c = self.credentials
        if c is None:
            return "without credentials"
        return f"as {c.username}" if c.username else f"with the token from {c.source}"

    def check_access(self) -> None:
        """Raise ``TargetError`` unless these credentials may read and write this model's
        versions; changes nothing."""
        api = f"{self.uri}/api/2.0/mlflow/registered-models"
        try:
            with httpx.Client(timeout=self.timeout, trust_env=False, **self._http_auth()) as http:
                got = http.get(f"{api}/get", params={"name": self.model_name})
                if got.status_code == 200:
                    probe = http.post(
                        f"{api}/set-tag", json={"name": self.model_name, "key": "", "value": ""}
                    )
                else:
                    probe = None
        except httpx.HTTPError as exc:
            raise TargetError(
                f"the target registry {self.uri} is not reachable: {exc}",
                hint="check [targets.NAME] registry and that the MLflow server is up",
            ) from None
        if got.status_code == 401:
            raise TargetError(
                f"the target registry {self.uri} refused the credentials ({self._who()}): not authenticated",
                hint="check the user and password the target's credentials reference holds",
            )
        if got.status_code == 403:
            raise TargetError(
                f"the target registry {self.uri} refused to show model {self.model_name} {self._who()}",
                hint="ask the registry's admin for EDIT on the registered model",
            )
        if got.status_code == 404:
            return  # not registered yet: the first push creates it (any authenticated user may)
        if got.status_code != 200:
            raise TargetError(
                f"the target registry {self.uri} answered {got.status_code} for model {self.model_name}",
                hint="is it an MLflow tracking server?",
            )
        assert probe is not None
        if probe.status_code in (401, 403):
            raise TargetError(
                f"the target registry {self.uri} allows {self._who()} to read {self.model_name} but not "
                "to write it (a read-only user): nothing was pushed",
                hint="ask the registry's admin for EDIT (or MANAGE) on the registered model",
            )
        if probe.status_code >= 500:
            raise TargetError(f"the target registry {self.uri} failed the write check ({probe.status_code})")

    # -- versions ---------------------------------------------------------------------------
    def _client(self) -> MlflowClient:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def _refused(self, what: str, exc: Exception) -> TargetError:
        text = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        return TargetError(f"the target registry {self.uri} refused {what}: {text}")

    def _versions_with(self, client: MlflowClient, bundle_id: str) -> list[Any]:
        name = self.model_name.replace("'", "\\'")
        found = client.search_model_versions(f"name = '{name}'", max_results=10_000)
        return sorted(
            (v for v in found if (v.tags or {}).get(DIGEST_TAG) == bundle_id), key=lambda v: int(v.version)
        )

    def find(self, bundle_id: str) -> RegistryVersion | None:
        """The version that holds ``bundle_id``, if the bundle was registered before."""
        with self._env():
            client = self._client()
            try:
                found = self._versions_with(client, bundle_id)
            except Exception as exc:
                if "RESOURCE_DOES_NOT_EXIST" in str(exc):
                    return None
                raise self._refused(f"the search for {self.model_name}", exc) from None
        if not found:
            return None
        v = found[0]
        return RegistryVersion(self.model_name, str(v.version), v.run_id, False, dict(v.tags or {}))

    def register(self, bundle_path: Path, tags: Mapping[str, str]) -> RegistryVersion:
        """The version holding this bundle: found, or created with ``tags`` (which must name the
        digest in ``mlplat.bundle_id``)."""
        bundle_id = tags[DIGEST_TAG]
        existing = self.find(bundle_id)
        if existing is not None:
            return existing
        with self._env():
            client = self._client()
            try:
                created = self._create(client, bundle_path, tags)
                winners = self._versions_with(client, bundle_id)
            except TargetError:
                raise
            except Exception as exc:
                raise self._refused(f"a new version of {self.model_name}", exc) from None
            lowest = winners[0] if winners else created
            if str(lowest.version) != str(created.version):  # a racing push registered it first
                with contextlib.suppress(Exception):
                    client.delete_model_version(self.model_name, str(created.version))
                    if created.run_id:
                        client.delete_run(created.run_id)
                return RegistryVersion(
                    self.model_name, str(lowest.version), lowest.run_id, False, dict(lowest.tags or {})
                )
        return RegistryVersion(self.model_name, str(created.version), created.run_id, True, dict(tags))

    def _create(self, client: MlflowClient, bundle_path: Path, tags: Mapping[str, str]) -> Any:
        from mlflow.exceptions import MlflowException

        experiment = client.get_experiment_by_name(EXPERIMENT)
        experiment_id = (
            experiment.experiment_id if experiment is not None else self._experiment(client, MlflowException)
        )
        run = client.create_run(
            experiment_id,
            tags={"mlplat.model": self.model_name, DIGEST_TAG: tags[DIGEST_TAG]},
            run_name=f"push {self.model_name} v{tags.get('mlplat.bundle_version', '?')}",
        )
        run_id = run.info.run_id
        try:
            client.log_artifacts(run_id, str(bundle_path), "bundle")
            client.set_terminated(run_id)
            try:
                client.create_registered_model(self.model_name)
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            return client.create_model_version(
                self.model_name,
                source=f"{run.info.artifact_uri}/bundle",
                run_id=run_id,
                tags=dict(tags),
                description=f"bundle {tags[DIGEST_TAG]} pushed by mlplat",
            )
        except Exception as exc:  # no run (and its uploaded bundle) left behind without a version
            with contextlib.suppress(Exception):
                client.delete_run(run_id)
            raise self._refused(f"a new version of {self.model_name} (its run was deleted)", exc) from None

    def delete(self, version: RegistryVersion) -> None:
        """Take back a version this push created (and its run), when the push ended before any
        rollout: a failed push leaves the registry as it was. Best effort is not enough here, so
        a refusal raises ``TargetError``."""
        with self._env():
            client = self._client()
            try:
                client.delete_model_version(self.model_name, version.version)
                if version.run_id:
                    client.delete_run(version.run_id)
            except Exception as exc:
                raise self._refused(f"deleting v{version.version} of {self.model_name}", exc) from None

    @staticmethod
    def _experiment(client: MlflowClient, error: type[Exception]) -> str:
        try:
            return str(client.create_experiment(EXPERIMENT))
        except error:  # a racing push created it
            found = client.get_experiment_by_name(EXPERIMENT)
            if found is None:
                raise
            return str(found.experiment_id)

    # -- alias and receipt -----------------------------------------------------------------
    def alias(self, stage: str) -> str | None:
        """The version the alias ``stage`` points at now, or None."""
        with self._env():
            client = self._client()
            try:
                return str(client.get_model_version_by_alias(self.model_name, stage).version)
            except Exception as exc:
                if "RESOURCE_DOES_NOT_EXIST" in str(exc) or "not found" in str(exc).lower():
                    return None
                raise self._refused(f"the alias {stage} of {self.model_name}", exc) from None

    def set_alias(self, stage: str, version: str) -> None:
        with self._env():
            try:
                self._client().set_registered_model_alias(self.model_name, stage, version)
            except Exception as exc:
                raise self._refused(f"moving the alias {stage} to v{version}", exc) from None

    def version_tags(self, version: str) -> dict[str, str]:
        with self._env():
            try:
                return dict(self._client().get_model_version(self.model_name, version).tags or {})
            except Exception as exc:
                raise self._refused(f"reading v{version} of {self.model_name}", exc) from None

    def attach_receipt(self, version: RegistryVersion, receipt: Path, summary: Mapping[str, Any]) -> None:
        """The receipt as an artifact of the version's run (``receipts/``) and a summary tag."""
        with self._env():
            client = self._client()
            try:
                if version.run_id:
                    client.log_artifact(version.run_id, str(receipt), "receipts")
                client.set_model_version_tag(
                    self.model_name, version.version, RECEIPT_TAG, _cut(json.dumps(summary, sort_keys=True))
                )
            except Exception as exc:
                raise self._refused(f"attaching the receipt to v{version.version}", exc) from None
