"""A tiny real HTTP server that answers fixed JSON per path: stands in for a program the
project does not ship (another project's stack, an MLflow server, something else on a port).

``StubServer({"/health": (200, {"status": "ok"})})`` listens on a free loopback port; ``url``
is where; ``paths`` the paths it was asked, in order. Any other path answers 404.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

Route = tuple[int, Any]  # status, JSON body (bytes: sent as they are)


class StubServer:
    def __init__(self, routes: Mapping[str, Route]) -> None:
        self.routes = dict(routes)
        self.paths: list[str] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                path = urlsplit(self.path).path
                stub.paths.append(path)
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                status, body = stub.routes.get(path, (404, {"error": f"no route {path}"}))
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> StubServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
