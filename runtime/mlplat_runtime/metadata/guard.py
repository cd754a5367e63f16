"""Who may call the metadata service: the checks every request passes before it is routed.

The service listens on loopback, but loopback is reachable from every web page the user
opens: a page can POST to ``http://127.0.0.1:7801`` with ``Content-Type: text/plain`` (a
"simple" request, sent without a CORS preflight), and a DNS-rebinding page can even read the
answers, its own host name resolving to 127.0.0.1. So, in this order:

1. **Host** must name this service: a loopback name (``localhost``, ``127.0.0.1``, ``::1``),
   the address it listens on, or one given with ``--allowed-host``. A rebinding page sends
   its own name and gets 403 (as MLflow does since its DNS-rebinding CVEs).
2. **Origin** and ``Sec-Fetch-Site`` are only sent by browsers: a cross-site request (or any
   request with an ``Origin`` not in ``--allowed-origin``) gets 403.
3. **Content-Type**: a request with a body (POST, PATCH) must be ``application/json``: 415
   otherwise. A browser cannot send that cross-site without a preflight, which gets no CORS
   approval here.
4. **Token**: when the service has one (``--token-file``), every POST and PATCH needs
   ``Authorization: Bearer <token>`` (401 otherwise; constant-time comparison), like the
   serving admin port. Reads (GET) stay open to the loopback user and the dashboard.

Standard library and the error tree only.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Sequence

from mlplat_runtime.errors import AuthError, RequestError

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
_WRITES = frozenset({"POST", "PATCH", "PUT", "DELETE"})
_ANY_ADDRESS = frozenset({"0.0.0.0", "::", ""})


class ForbiddenError(RequestError):
    """A request from somewhere the service does not answer (a foreign Host, a web page)."""

    http_status = 403


class UnsupportedMediaError(RequestError):
    """A body that is not JSON."""

    http_status = 415


def host_name(value: str) -> str:
    """``Host`` header value -> the lower-cased name without the port (``[::1]:80`` -> ``::1``)."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    if value.count(":") == 1:
        return value.split(":", 1)[0]
    return value


class RequestGuard:
    """The four checks above; ``check`` raises the error to answer with, or returns None."""

    def __init__(
        self,
        *,
        token: str | None = None,
        listen_host: str = "127.0.0.1",
        allowed_hosts: Iterable[str] = (),
        allowed_origins: Iterable[str] = (),
    ) -> None:
        hosts = set(LOOPBACK_HOSTS) | {host_name(h) for h in allowed_hosts}
        if listen_host not in _ANY_ADDRESS:
            hosts.add(host_name(listen_host))
        self.allowed_hosts = frozenset(hosts)
        self.allowed_origins = frozenset(o.rstrip("/").lower() for o in allowed_origins)
        self._expected = f"Bearer {token}".encode() if token else None

    @property
    def requires_token(self) -> bool:
        return self._expected is not None

    def check(self, method: str, headers: Sequence[tuple[bytes, bytes]]) -> None:
        found: dict[bytes, bytes] = {}
        for key, value in headers:
            found.setdefault(key.lower(), value)
        host = found.get(b"host")
        if host is not None:
            name = host_name(host.decode("latin-1"))
            if name not in self.allowed_hosts:
                raise ForbiddenError(
                    f"Host {name!r} is not this metadata service",
                    hint="call it as http://127.0.0.1:<port>; for another name start it with --allowed-host",
                )
        origin = found.get(b"origin")
        if origin is not None and origin.decode("latin-1").rstrip("/").lower() not in self.allowed_origins:
            raise ForbiddenError(
                "requests from web pages (an Origin header) are refused",
                hint="use the mlplat CLI or dashboard; allow an origin with --allowed-origin",
            )
        site = found.get(b"sec-fetch-site")
        if origin is None and site is not None and site.lower() in (b"cross-site", b"same-site"):
            raise ForbiddenError("cross-site requests from web pages are refused")
        if method not in _WRITES:
            return
        media = found.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
        if media != b"application/json":
            raise UnsupportedMediaError(
                f"{method} needs Content-Type: application/json, got {media.decode('latin-1') or 'none'}"
            )
        if self._expected is not None and not hmac.compare_digest(
            found.get(b"authorization", b""), self._expected
        ):
            raise AuthError(
                "missing or wrong metadata token",
                hint="send 'Authorization: Bearer <token>' with the token of the stack's token file",
            )
