"""The admin API (own port, loopback by default, bearer token): the OIP model-repository
extension over ``Repository``.

    POST /v2/repository/index
         -> [{"name","version","state","reason","bundle_id","provider"}]
    POST /v2/repository/models/{name}/load         body {"parameters": {"bundle": "<path>"}}
         (optional parameters: "allow_signature_change": true; "dynamic_batching":
          {"max_batch_size": 32, "max_queue_delay_us": 0, "preferred_batch_sizes": [], "instances": 1}
          or false)
         -> 200 {"name","version","bundle_id","provider","swap_ms"} once the new version serves,
            else 4xx {"error": reason} and the old version keeps serving
    POST /v2/repository/models/{name}/unload

The token file is read, or created with mode 0600 when missing (``mlplat_runtime.tokens``:
no symlinks followed, owner checked, a long token required); the comparison is constant time.
A load runs in a worker thread so the event loop keeps answering inference requests while the
new version is checked and warmed up. Unexpected errors become 500s in ``http``.

The routes act on a ``ModelControl``: ``LocalControl`` over this process's ``Repository``, or,
with ``--workers N``, the supervisor's ``workers.WorkerPool``, which swaps every worker in two
phases (each prepares off to the side, then all switch together).

Must not import textual, mlflow, docker or mlplat_tui.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, Literal, Protocol

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from mlplat_runtime.errors import AuthError, MlplatError, NotFoundError, RequestError, UsageError
from mlplat_runtime.serving.app import error_response, method_not_allowed
from mlplat_runtime.serving.batching import BatchingConfig
from mlplat_runtime.serving.http import Request, Response
from mlplat_runtime.serving.repository import IndexEntry, LoadResult, Repository
from mlplat_runtime.tokens import ensure_token_file

log = logging.getLogger("mlplat.serving")

_PREFIX = "/v2/repository/models/"


def default_token_path() -> Path:
    """``$XDG_STATE_HOME/mlplat/admin.token``, else ``~/.local/state/mlplat/admin.token``."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "mlplat" / "admin.token"


def ensure_admin_token(path: Path | None = None) -> tuple[str, Path]:
    """Read the admin token, or create it (0600, in a 0700 folder) when the file is missing.

    The file is checked as ``mlplat_runtime.tokens`` says: no symlink, owned by this user, a
    long token.
    """
    path = Path(path) if path is not None else default_token_path()
    return ensure_token_file(path), path


class LoadParameters(BaseModel):
    model_config = ConfigDict(extra="allow")  # Triton clients may send their own keys

    bundle: str
    allow_signature_change: bool = False
    # {"max_batch_size", "max_queue_delay_us", "preferred_batch_sizes", "instances"}, or false
    # for none; absent: the server's --max-batch-size default
    dynamic_batching: dict[str, Any] | Literal[False] | None = None

    def batching(self) -> BatchingConfig | bool | None:
        if self.dynamic_batching is None or self.dynamic_batching is False:
            return self.dynamic_batching
        return BatchingConfig.parse(self.dynamic_batching)


class LoadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    parameters: LoadParameters


def parse_load_request(body: bytes) -> LoadParameters:
    try:
        return LoadRequest.model_validate_json(body or b"{}").parameters
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise RequestError(
            f"bad load request: {where}: {first['msg']}",
            hint='send {"parameters": {"bundle": "/path/to/bundle-or.mlbundle"}}',
        ) from None


class ModelControl(Protocol):
    """What the admin routes change: the models one process serves, or all workers'."""

    async def index(self) -> list[IndexEntry]: ...

    async def load(
        self, bundle: str, *, name: str, allow_signature_change: bool, batching: BatchingConfig | bool | None
    ) -> LoadResult: ...

    async def unload(self, name: str) -> None: ...


class LocalControl:
    """``ModelControl`` over this process's repository; loads run in a worker thread."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo

    async def index(self) -> list[IndexEntry]:
        return self.repo.index()

    async def load(
        self, bundle: str, *, name: str, allow_signature_change: bool, batching: BatchingConfig | bool | None
    ) -> LoadResult:
        return await asyncio.to_thread(
            self.repo.load,
            bundle,
            name=name,
            allow_signature_change=allow_signature_change,
            batching=batching,
        )

    async def unload(self, name: str) -> None:
        await asyncio.to_thread(self.repo.unload, name)


class AdminHandler:
    """The admin port's handler: ``handler(request) -> Response | Awaitable[Response]``."""

    def __init__(self, repo: Repository | ModelControl, token: str) -> None:
        if not token:
            raise UsageError("the admin token is empty")
        self.control: ModelControl = LocalControl(repo) if isinstance(repo, Repository) else repo
        self._expected = f"Bearer {token}".encode()

    def __call__(self, req: Request) -> Response | Awaitable[Response]:
        try:
            if not hmac.compare_digest(req.header(b"authorization") or b"", self._expected):
                raise AuthError("missing or wrong admin token", hint="send 'Authorization: Bearer <token>'")
            path, method = req.path, req.method
            if path == "/v2/repository/index":
                if method != "POST":
                    raise method_not_allowed(method, path, "POST")
                return self._index()
            if path.startswith(_PREFIX):
                name, _, action = path[len(_PREFIX) :].partition("/")
                if name and action in ("load", "unload"):
                    if method != "POST":
                        raise method_not_allowed(method, path, "POST")
                    return self._change(name, action, req.body)
            raise NotFoundError(f"no admin route for {path}")
        except MlplatError as exc:
            return self._error(exc)

    async def _index(self) -> Response:
        return Response(200, orjson.dumps([e.to_json() for e in await self.control.index()]))

    async def _change(self, name: str, action: str, body: bytes) -> Response:
        # Loads run off the event loop: it keeps answering inference requests while the new
        # version is checked and warmed up.
        try:
            if action == "unload":
                await self.control.unload(name)
                return Response(200, orjson.dumps({"name": name, "state": "UNAVAILABLE"}))
            params = parse_load_request(body)
            result = await self.control.load(
                params.bundle,
                name=name,
                allow_signature_change=params.allow_signature_change,
                batching=params.batching(),
            )
            return Response(200, orjson.dumps(result.to_json()))
        except MlplatError as exc:
            return self._error(exc)

    @staticmethod
    def _error(exc: MlplatError) -> Response:
        resp = error_response(exc)
        if isinstance(exc, AuthError):
            return resp._replace(
                headers=(*resp.headers, (b"www-authenticate", b'Bearer realm="mlplat-admin"'))
            )
        return resp
