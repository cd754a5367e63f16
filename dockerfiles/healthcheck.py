"""The images' HEALTHCHECK: exit 0 when the service in this container answers its health check.

One runtime image runs both serving and metadata, so the service comes from ``MLPLAT_SERVICE``
(``serving`` | ``metadata`` | ``tracker``) and the port from ``MLPLAT_PORT`` (default: the
port the image's command uses). Serving is checked on readiness (``/v2/health/ready``: true
only once every loaded model is warm), the others on ``/health``.

Standard library only, started with ``python -I``: it runs every few seconds in every
container, so it must start fast and must not depend on anything the image installs.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

CHECKS = {
    "serving": (7802, "/v2/health/ready"),
    "metadata": (7801, "/health"),
    "tracker": (7800, "/health"),
}


def main() -> int:
    service = os.environ.get("MLPLAT_SERVICE", "serving")
    if service not in CHECKS:
        print(f"MLPLAT_SERVICE={service!r}: expected one of {', '.join(CHECKS)}", file=sys.stderr)
        return 1
    default_port, path = CHECKS[service]
    port = int(os.environ.get("MLPLAT_PORT") or default_port)
    url = f"http://127.0.0.1:{port}{path}"
    # No proxies: an engine configured with HTTP_PROXY passes it into every container.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2.5) as response:
            ok = response.status == 200
    except (urllib.error.URLError, OSError) as exc:
        print(f"{service}: {url}: {exc}", file=sys.stderr)
        return 1
    print(f"{service}: {url}: {'ok' if ok else 'not ready'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
