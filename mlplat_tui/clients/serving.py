"""Typed client of the serving runtime: the inference API (read side) and the admin API.

Kept apart from the runtime so the control plane talks to serving only over HTTP, exactly as
it would to a container or a cluster. An answer that is not mlplat serving's (another program
on the port: not JSON, or JSON of another shape) is a ``ServiceError`` saying so, never a
``ValueError``/``KeyError`` escaping to the deploy use case.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from mlplat_runtime.errors import AuthError, MlplatError, ModelLoadError, NotFoundError, ServiceError
from mlplat_tui.clients.protocols import LoadedVersion, ModelState

__all__ = ["LoadedVersion", "ModelState", "ServingAdmin", "model_metadata"]


_NOT_OURS_HINT = "is another program listening on this port? see `mlplat status`"


def _not_ours(what: str, resp: httpx.Response, why: str) -> ServiceError:
    return ServiceError(
        f"{what}: the answer from {resp.request.url} is not mlplat serving's ({why}): {resp.text[:200]!r}",
        hint=_NOT_OURS_HINT,
    )


def _json(resp: httpx.Response, what: str) -> Any:
    try:
        return resp.json()
    except ValueError:
        raise _not_ours(what, resp, f"HTTP {resp.status_code}, not JSON") from None


def _raise_for(resp: httpx.Response, what: str) -> None:
    if resp.status_code < 400:
        return
    try:
        message = resp.json().get("error", resp.text)
    except ValueError:
        message = resp.text
    cls: type[MlplatError] = {401: AuthError, 403: AuthError, 404: NotFoundError}.get(
        resp.status_code, ModelLoadError
    )
    if resp.status_code >= 500:
        cls = ServiceError
    raise cls(f"{what}: {message}")


class ServingAdmin:
    """The admin port: load/unload/index, bearer token required (a ``ServingAdminApi``)."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url,
            timeout=timeout,
            transport=transport,
            headers={"Authorization": f"Bearer {token}"},
            trust_env=False,  # loopback services: never through a proxy from the environment
        )

    @classmethod
    def from_token_file(cls, base_url: str, token_file: Path, **kw: Any) -> ServingAdmin:
        """With the token in ``token_file``, read by the hardened reader (no symlink, ours, not
        empty); ``UsageError`` when the file cannot be trusted."""
        from mlplat_runtime.tokens import read_token_file

        try:
            token = read_token_file(Path(token_file))
        except OSError as exc:  # missing (the stack is not up) or unreadable
            raise ServiceError(
                f"cannot read the serving admin token at {token_file}: {exc.strerror}",
                hint="start the stack with `mlplat up`",
            ) from None
        return cls(base_url, token, **kw)

    def _post(self, path: str, what: str, body: dict[str, Any] | None = None) -> Any:
        try:
            resp = self._http.post(path, json=body or {})
        except httpx.TransportError as exc:
            raise ServiceError(
                f"{what}: serving admin API unreachable ({exc})", hint="is the stack up? `mlplat status`"
            ) from None
        _raise_for(resp, what)
        return _json(resp, what)

    def health(self) -> bool:
        """True when the admin port answers HTTP at all (a refused token is still an answer:
        the load then says why). Never raises."""
        try:
            return self._http.post("/v2/repository/index", json={}, timeout=2.0).status_code < 500
        except httpx.HTTPError:
            return False

    def load(self, name: str, bundle_path: str) -> LoadedVersion:
        what = f"load of {name}"
        data = self._post(f"/v2/repository/models/{name}/load", what, {"parameters": {"bundle": bundle_path}})
        try:
            return LoadedVersion(
                name=str(data["name"]),
                version=str(data["version"]),
                bundle_id=str(data.get("bundle_id", "")),
                provider=str(data.get("provider", "")),
                swap_ms=data.get("swap_ms"),
            )
        except (KeyError, TypeError, AttributeError):
            raise ServiceError(
                f"{what}: the answer is not mlplat serving's (no model name and version): "
                f"{str(data)[:200]!r}",
                hint=_NOT_OURS_HINT,
            ) from None

    def index(self) -> list[ModelState]:
        rows = self._post("/v2/repository/index", "repository index")
        try:
            return [
                ModelState(
                    name=r.get("name", ""),
                    version=r.get("version"),
                    state=r.get("state", ""),
                    reason=r.get("reason", ""),
                    bundle_id=r.get("bundle_id"),
                    provider=r.get("provider"),
                )
                for r in rows
            ]
        except (TypeError, AttributeError):
            raise ServiceError(
                "repository index: the answer is not mlplat serving's (not a list of models): "
                f"{str(rows)[:200]!r}",
                hint=_NOT_OURS_HINT,
            ) from None

    def close(self) -> None:
        self._http.close()


def model_metadata(base_url: str, name: str, *, timeout: float = 2.0) -> dict[str, Any] | None:
    """``GET /v2/models/{name}``; None when the model is not loaded (or serving is not up).

    Raises ``ServiceError`` when the 200 answer is not a model's metadata (another program)."""
    try:
        resp = httpx.get(f"{base_url}/v2/models/{name}", timeout=timeout, trust_env=False)
    except httpx.TransportError:
        return None
    if resp.status_code != 200:
        return None
    what = f"metadata of model {name}"
    data = _json(resp, what)
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise _not_ours(what, resp, "not a model's metadata")
    return data
