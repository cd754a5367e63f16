"""``python -m mlplat_runtime.metadata --db PATH --host H --port P``: run the metadata service.

Opens (and migrates) the DuckDB file, binds the port itself so a busy port fails at once with a
clear message, prints one start-up line (with the real port: ``--port 0`` picks a free one),
then serves with uvicorn. SIGTERM and SIGINT shut down gracefully: the store is checkpointed and
closed, and the process exits 0.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from pathlib import Path

from mlplat_runtime.errors import MlplatError, ServiceError


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mlplat_runtime.metadata", description=__doc__)
    parser.add_argument("--db", required=True, type=Path, help="the DuckDB file (created when missing)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7801, help="0 picks a free port")
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    return parser.parse_args(argv)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServiceError(
            f"metadata service cannot listen on {host}:{port}: {exc.strerror}",
            hint="another process uses the port: stop it, or set [stack] port_base in mlplat.toml",
        ) from None
    # Listening before the start-up line is printed: a client that reads the line and connects
    # at once waits in the backlog instead of being refused.
    sock.listen(128)
    return sock


def _exit_on_signal(signum: int, frame: object) -> None:
    # uvicorn shuts down gracefully first, then re-raises the signal to the previous handler:
    # this one, so the process ends with status 0 and `finally` blocks run.
    raise SystemExit(0)


def serve(db: Path, host: str, port: int, log_level: str = "warning") -> None:
    import uvicorn

    from mlplat_runtime.metadata.service import create_app
    from mlplat_runtime.metadata.store import MetadataStore

    store = MetadataStore(db)
    try:
        sock = _listen(host, port)
        bound_port = sock.getsockname()[1]
        app = create_app(store, on_shutdown=store.close)
        config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="on")
        server = uvicorn.Server(config)
        signal.signal(signal.SIGTERM, _exit_on_signal)
        signal.signal(signal.SIGINT, _exit_on_signal)
        print(
            f"mlplat metadata service on http://{host}:{bound_port}"
            f" (db {db}, schema v{store.schema_version}, pid {os.getpid()})",
            flush=True,
        )
        server.run(sockets=[sock])
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        serve(args.db, args.host, args.port, args.log_level)
    except MlplatError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
