"""MLflow tracking: one MLflow run per training run, created before the command starts so that
plain ``mlflow.log_metric`` calls in ``train.py`` land in it (via ``MLFLOW_RUN_ID``).

mlflow is imported inside the functions: it costs about 1.5 s and ``mlplat --help`` must not
pay for it.

A failure says which it was: MLflow's own refusal (a ``RestException``, an HTTP 4xx, another
``MlflowException`` of the server's answer) is "refused"; a tracker that cannot be reached
(MLflow wraps the connection error in an ``MlflowException`` too, so the cause decides) is
"unreachable"; anything else "failed".
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlplat_runtime.errors import ServiceError

# MLflow's limits: param values 6000 chars, tag values 8000.
_MAX_PARAM = 6000


def tracker_answers(uri: str, *, timeout: float = 2.0) -> bool:
    """True when an MLflow server answers ``GET /health`` at ``uri``; never raises.

    Asked before every cycle: MLflow's own client retries a refused connection for minutes, so
    a tracker that went away must be noticed here, not inside ``create_run``.
    """
    import httpx

    try:
        return httpx.get(f"{uri.rstrip('/')}/health", timeout=timeout, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def _unreachable(exc: BaseException) -> bool:
    """True when ``exc`` is (or was raised while handling) a connection error or time-out."""
    import requests

    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, requests.ConnectionError | requests.Timeout | ConnectionError | TimeoutError):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def _tracker_error(uri: str, what: str, exc: Exception) -> ServiceError:
    """The one error of a tracker call: refused, unreachable or failed (module docstring)."""
    from mlflow.exceptions import MlflowException

    hint = "check `mlplat status` and `mlplat logs tracker`"
    if _unreachable(exc):
        return ServiceError(f"MLflow tracker at {uri} is unreachable, could not {what}: {exc}", hint=hint)
    if isinstance(exc, MlflowException):
        return ServiceError(f"MLflow tracker at {uri} refused to {what}: {exc}", hint=hint)
    return ServiceError(f"MLflow tracker at {uri}: could not {what}: {type(exc).__name__}: {exc}", hint=hint)


class Tracker:
    """The real ``TrackerApi``: MLflow's client on the stack's tracker."""

    def __init__(self, uri: str, experiment: str) -> None:
        # mlplat prints the run's link itself; MLflow would write it to stdout (breaking --json).
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        try:
            exp = self.client.get_experiment_by_name(experiment)
            self.experiment_id = exp.experiment_id if exp else self.client.create_experiment(experiment)
        except Exception as exc:  # mlflow raises MlflowException / requests errors
            raise ServiceError(
                f"MLflow tracker at {uri} refused: {exc}",
                hint="check `mlplat status` and `mlplat logs tracker`",
            ) from None

    def health(self) -> bool:
        return tracker_answers(self.uri)

    def start_run(self, run_name: str, tags: Mapping[str, str]) -> str:
        try:
            run = self.client.create_run(self.experiment_id, run_name=run_name, tags=dict(tags))
        except Exception as exc:  # mlflow raises MlflowException / requests errors
            raise _tracker_error(self.uri, "create the run", exc) from None
        return str(run.info.run_id)

    def _refused(self, what: str, exc: Exception) -> ServiceError:
        # MLflow raises MlflowException, RestException, requests errors...: one class for callers.
        return _tracker_error(self.uri, what, exc)

    def log(
        self, run_id: str, *, params: Mapping[str, Any], metrics: Mapping[str, float], tags: Mapping[str, str]
    ) -> None:
        import time

        from mlflow.entities import Metric, Param, RunTag

        try:
            # Params the training script logged itself must not be re-logged with other values.
            existing = self.client.get_run(run_id).data.params
            p = [Param(k, str(v)[:_MAX_PARAM]) for k, v in params.items() if k not in existing]
            ts = int(time.time() * 1000)
            m = [Metric(k, float(v), ts, 0) for k, v in metrics.items()]
            t = [RunTag(k, str(v)) for k, v in tags.items()]
            for i in range(0, max(len(p), len(m), len(t)), 100):
                self.client.log_batch(
                    run_id, metrics=m[i : i + 100], params=p[i : i + 100], tags=t[i : i + 100]
                )
        except Exception as exc:
            raise self._refused(f"log to run {run_id}", exc) from None

    def log_bundle(self, run_id: str, bundle_dir: Path) -> None:
        try:
            self.client.log_artifacts(run_id, str(bundle_dir), artifact_path="bundle")
        except Exception as exc:
            raise self._refused(f"store the bundle of run {run_id}", exc) from None

    def finish(self, run_id: str, status: str) -> None:
        """status: FINISHED | FAILED | KILLED"""
        try:
            self.client.set_terminated(run_id, status=status)
        except Exception as exc:
            raise self._refused(f"end run {run_id}", exc) from None

    def run_url(self, run_id: str) -> str:
        return f"{self.uri}/#/experiments/{self.experiment_id}/runs/{run_id}"

    def close(self) -> None:
        """MLflow's client holds no connection of its own to close."""
