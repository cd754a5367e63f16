"""Typed client of the serving runtime: the inference API (read side) and the admin API.

Kept apart from the runtime so the control plane talks to serving only over HTTP, exactly as
it would to a container or a cluster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from mlplat_runtime.errors import AuthError, MlplatError, ModelLoadError, NotFoundError, ServiceError
from mlplat_tui.clients.protocols import LoadedVersion, ModelState

__all__ = ["LoadedVersion", "ModelState", "ServingAdmin", "model_metadata"]


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
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
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
        return resp.json()

    def health(self) -> bool:
        """True when the admin port answers HTTP at all (a refused token is still an answer:
        the load then says why). Never raises."""
        try:
            return self._http.post("/v2/repository/index", json={}, timeout=2.0).status_code < 500
        except httpx.HTTPError:
            return False

    def load(self, name: str, bundle_path: str) -> LoadedVersion:
        data = self._post(
            f"/v2/repository/models/{name}/load", f"load of {name}", {"parameters": {"bundle": bundle_path}}
        )
        return LoadedVersion(
            name=data["name"],
            version=str(data["version"]),
            bundle_id=data.get("bundle_id", ""),
            provider=data.get("provider", ""),
            swap_ms=data.get("swap_ms"),
        )

    def index(self) -> list[ModelState]:
        rows = self._post("/v2/repository/index", "repository index")
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

    def close(self) -> None:
        self._http.close()


def model_metadata(base_url: str, name: str, *, timeout: float = 2.0) -> dict[str, Any] | None:
    """``GET /v2/models/{name}``; None when the model is not loaded."""
    try:
        resp = httpx.get(f"{base_url}/v2/models/{name}", timeout=timeout, trust_env=False)
    except httpx.TransportError:
        return None
    return resp.json() if resp.status_code == 200 else None
