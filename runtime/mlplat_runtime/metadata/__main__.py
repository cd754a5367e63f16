"""``python -m mlplat_runtime.metadata --db PATH --host H --port P [--token-file F] [--project NAME
--project-root DIR]``: run the metadata service.

Opens (and migrates) the DuckDB file, binds the port itself so a busy port fails at once with a
clear message, prints one start-up line (with the real port: ``--port 0`` picks a free one),
then serves with uvicorn. ``--project``/``--project-root`` say which project the store belongs to
(``GET /identity``: clients refuse a service of another project). SIGTERM and SIGINT shut down
gracefully: running queries are interrupted, in-flight requests get ``GRACE_S``, the store is
checkpointed and closed, and the process exits 0; a shutdown that still hangs ends the process
after ``HARD_STOP_S``.

Who may call it (``guard.py``): ``--token-file`` (or ``$MLPLAT_METADATA_TOKEN_FILE``) makes every
write need ``Authorization: Bearer <token>``; the file is created (0600) when missing and checked
like the serving admin token. ``--allowed-host`` / ``--allowed-origin`` widen the Host and Origin
checks (repeatable).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from mlplat_runtime.errors import MlplatError, ServiceError
from mlplat_runtime.identity import StackIdentity, add_identity_arguments, identity_from_args

TOKEN_ENV = "MLPLAT_METADATA_TOKEN_FILE"
GRACE_S = 5
HARD_STOP_S = 15.0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mlplat_runtime.metadata", description=__doc__)
    parser.add_argument("--db", required=True, type=Path, help="the DuckDB file (created when missing)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7801, help="0 picks a free port")
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    parser.add_argument(
        "--token-file",
        type=Path,
        default=os.environ.get(TOKEN_ENV) or None,
        help=f"writes need this bearer token; created 0600 when missing (default ${TOKEN_ENV}; none: open)",
    )
    parser.add_argument("--allowed-host", action="append", default=[], help="another Host name to answer")
    parser.add_argument("--allowed-origin", action="append", default=[], help="a web origin to answer")
    parser.add_argument("--memory-limit", default=None, help="DuckDB memory limit (default 1GB)")
    parser.add_argument(
        "--monitor-dir",
        type=Path,
        default=None,
        help="the prediction log folder to monitor (closed segments only; none: no monitoring)",
    )
    parser.add_argument(
        "--monitor-window", default=None, help="drift window, e.g. 15m (default [monitor] window)"
    )
    parser.add_argument(
        "--monitor-bucket", default=None, help="profile bucket, e.g. 60s (default [monitor] bucket)"
    )
    parser.add_argument("--monitor-interval", type=float, default=None, help="seconds between log scans")
    parser.add_argument(
        "--monitor-min-rows", type=int, default=None, help="rows a window needs (default 1000)"
    )
    add_identity_arguments(parser)
    args = parser.parse_args(argv)
    args.identity = identity_from_args(args, "metadata", parser)
    return args


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


def _hard_stop_later() -> None:
    """After a signal: if the graceful shutdown is still not done in HARD_STOP_S, end the process
    (a DuckDB call that ignores its interrupt must not leave a service that needs SIGKILL)."""

    def watch() -> None:
        time.sleep(HARD_STOP_S)
        print("error: graceful shutdown took too long; exiting", file=sys.stderr, flush=True)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="mlplat-hard-stop").start()


def serve(
    db: Path,
    host: str,
    port: int,
    log_level: str = "warning",
    identity: StackIdentity | None = None,
    *,
    token_file: Path | None = None,
    allowed_hosts: list[str] | None = None,
    allowed_origins: list[str] | None = None,
    memory_limit: str | None = None,
    monitor_dir: Path | None = None,
    monitor_options: dict[str, Any] | None = None,
) -> None:
    import uvicorn

    from mlplat_runtime.metadata.guard import RequestGuard
    from mlplat_runtime.metadata.service import create_app
    from mlplat_runtime.metadata.store import SQL_MEMORY_LIMIT, MetadataStore
    from mlplat_runtime.tokens import ensure_token_file

    token = ensure_token_file(token_file) if token_file is not None else None
    guard = RequestGuard(
        token=token,
        listen_host=host,
        allowed_hosts=allowed_hosts or (),
        allowed_origins=allowed_origins or (),
    )

    store = MetadataStore(db, memory_limit=memory_limit or SQL_MEMORY_LIMIT)
    store.interrupt_open_runs()  # their cycles lost this service: say so instead of "running"
    monitor = None
    if monitor_dir is not None:
        from mlplat_runtime.metadata.monitor import Monitor, SegmentReader, config_from_toml

        root = Path(identity.project_root) if identity is not None else None
        monitor = Monitor(
            store, SegmentReader(monitor_dir), config_from_toml(root, **(monitor_options or {}))
        )
        monitor.start()

    def shutdown() -> None:
        if monitor is not None:
            monitor.stop()
        store.close()

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            # Queries run in worker threads uvicorn cannot cancel: interrupt them, so the
            # graceful shutdown is not held up by a runaway one.
            if not self.should_exit:
                _hard_stop_later()
            store.interrupt_queries()
            super().handle_exit(sig, frame)

    try:
        sock = _listen(host, port)
        bound_port = sock.getsockname()[1]
        app = create_app(store, on_shutdown=shutdown, identity=identity, guard=guard, monitor=monitor)
        config = uvicorn.Config(
            app, log_level=log_level, access_log=False, lifespan="on", timeout_graceful_shutdown=GRACE_S
        )
        server = Server(config)
        signal.signal(signal.SIGTERM, _exit_on_signal)
        signal.signal(signal.SIGINT, _exit_on_signal)
        print(
            f"mlplat metadata service on http://{host}:{bound_port}"
            f" (db {db}, schema v{store.schema_version}, pid {os.getpid()},"
            f" writes {'need the token in ' + str(token_file) if token else 'open'}"
            f"{', monitoring ' + str(monitor_dir) if monitor is not None else ''})",
            flush=True,
        )
        server.run(sockets=[sock])
    finally:
        if monitor is not None:
            monitor.stop()
        store.close()


def _monitor_options(args: argparse.Namespace) -> dict[str, Any]:
    from mlplat_runtime.metadata.monitor import parse_duration

    return {
        "window_s": parse_duration(args.monitor_window) if args.monitor_window else None,
        "bucket_s": parse_duration(args.monitor_bucket) if args.monitor_bucket else None,
        "interval_s": args.monitor_interval,
        "min_rows": args.monitor_min_rows,
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        serve(
            args.db,
            args.host,
            args.port,
            args.log_level,
            args.identity,
            token_file=args.token_file,
            allowed_hosts=args.allowed_host,
            allowed_origins=args.allowed_origin,
            memory_limit=args.memory_limit,
            monitor_dir=args.monitor_dir,
            monitor_options=_monitor_options(args),
        )
    except MlplatError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
