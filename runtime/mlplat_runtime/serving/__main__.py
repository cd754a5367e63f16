"""``python -m mlplat_runtime.serving [BUNDLE] --host H --port P --admin-port A --admin-token-file F
[--max-connections N] [--memory-budget-mb M] [--workers N|auto] [--drain-delay-s S] [--grace-s S]
[--project NAME --project-root DIR]
[--max-batch-size N [--max-queue-delay-us US] [--preferred-batch-sizes 8,16] [--batch-instances K]]
[--log-dir DIR [--log-budget N] [--log-retention-hours H] [--log-retention-mb MB] [--log-exclude a,b]]``

The entry point the stack backends (local processes, the docker image) run. With no BUNDLE
it starts empty and waits for admin loads. ``--workers N`` (N > 1) starts a supervisor that
runs N serving processes on the same ports (``serving/workers.py``). ``--project`` and
``--project-root`` say which project it serves (``GET /identity``, see
``mlplat_runtime.identity``). argparse, not click: the runtime image ships without the control
plane's dependencies.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mlplat_runtime.errors import MlplatError, UsageError
from mlplat_runtime.identity import add_identity_arguments, identity_from_args
from mlplat_runtime.monitoring.args import add_log_arguments, log_from_args
from mlplat_runtime.serving.batching import BatchingConfig
from mlplat_runtime.serving.server import (
    DEFAULT_ADMIN_PORT,
    DEFAULT_DRAIN_DELAY_S,
    DEFAULT_GRACE_S,
    DEFAULT_HOST,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MEMORY_BUDGET_MB,
    DEFAULT_PORT,
    ServerConfig,
    run_server,
)


def parse_args(argv: list[str] | None = None) -> ServerConfig:
    p = argparse.ArgumentParser(
        prog="python -m mlplat_runtime.serving",
        description="Serve an mlplat bundle over the Open Inference Protocol v2 (REST).",
    )
    p.add_argument(
        "bundle", nargs="?", type=Path, help="bundle directory or .mlbundle (default: start empty)"
    )
    p.add_argument("--host", default=DEFAULT_HOST, help=f"inference API address (default {DEFAULT_HOST})")
    p.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"inference API port (default {DEFAULT_PORT}; 0 = any)"
    )
    p.add_argument(
        "--admin-host",
        default=DEFAULT_HOST,
        help=f"admin API address (default {DEFAULT_HOST}; 0.0.0.0 only inside a container)",
    )
    p.add_argument(
        "--admin-port",
        type=int,
        default=DEFAULT_ADMIN_PORT,
        help=f"admin API port (default {DEFAULT_ADMIN_PORT}; 0 = any)",
    )
    p.add_argument(
        "--admin-token-file",
        type=Path,
        default=None,
        help="admin bearer token; created (0600) when missing (default $XDG_STATE_HOME/mlplat/admin.token)",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=DEFAULT_MAX_CONNECTIONS,
        help=f"open connections on the inference port (default {DEFAULT_MAX_CONNECTIONS}; kept below"
        " the descriptor limit)",
    )
    p.add_argument(
        "--memory-budget-mb",
        type=int,
        default=DEFAULT_MEMORY_BUDGET_MB,
        help=f"what clients and models may make serving hold (default {DEFAULT_MEMORY_BUDGET_MB}):"
        " an eighth for request bodies in flight, a quarter for one warm-up",
    )
    p.add_argument(
        "--grpc-port",
        type=int,
        default=None,
        help="also serve OIP v2 gRPC on this port, on --host (default: off; 0 = any; needs the grpc extra)",
    )
    p.add_argument(
        "--admin-grpc-port",
        type=int,
        default=None,
        help="also serve the gRPC repository extension (load, unload, index; the admin token as"
        " 'authorization: Bearer' metadata) on this port, on --admin-host (default: off; 0 = any)",
    )
    p.add_argument(
        "--workers",
        default="1",
        help="serving processes sharing the ports, each with its own copy of the models (default 1:"
        " this process alone); 'auto': one per core on CPU (at most 8), one with CUDA",
    )
    p.add_argument(
        "--drain-delay-s",
        type=float,
        default=DEFAULT_DRAIN_DELAY_S,
        help=f"on SIGTERM, how long readiness is false before the port stops accepting (default"
        f" {DEFAULT_DRAIN_DELAY_S:g}; set it to your load balancer's probe period)",
    )
    p.add_argument(
        "--grace-s",
        type=float,
        default=DEFAULT_GRACE_S,
        help="after the port closes, how long in-flight requests may take to finish"
        f" (default {DEFAULT_GRACE_S:g})",
    )
    add_batching_arguments(p)
    add_log_arguments(p)
    add_identity_arguments(p)
    a = p.parse_args(argv)
    if a.max_connections < 2 or a.memory_budget_mb < 64:
        p.error("--max-connections must be at least 2 and --memory-budget-mb at least 64")
    if not (0 <= a.drain_delay_s <= 600 and 0 <= a.grace_s <= 600):
        p.error("--drain-delay-s and --grace-s must be 0..600 seconds")
    try:
        workers = parse_workers(a.workers)
    except MlplatError as exc:
        p.error(exc.message)
    try:
        batching = batching_from_args(a)
        log = log_from_args(a)
    except MlplatError as exc:
        p.error(exc.message)
    return ServerConfig(
        bundle=a.bundle,
        host=a.host,
        port=a.port,
        admin_host=a.admin_host,
        admin_port=a.admin_port,
        admin_token_file=a.admin_token_file,
        max_connections=a.max_connections,
        memory_budget_mb=a.memory_budget_mb,
        identity=identity_from_args(a, "serving", p),
        batching=batching,
        grpc_port=a.grpc_port,
        admin_grpc_port=a.admin_grpc_port,
        workers=workers,
        drain_delay_s=a.drain_delay_s,
        grace_s=a.grace_s,
        log=log,
    )


def parse_workers(value: str | int) -> int:
    """``--workers``: a count (1..64) or ``auto`` (``workers.auto_workers``)."""
    from mlplat_runtime.serving.workers import MAX_WORKERS, auto_workers

    if isinstance(value, str) and value.strip().lower() == "auto":
        return auto_workers()
    try:
        n = int(value)
    except ValueError:
        raise UsageError(f"--workers must be a number or 'auto', got {value!r}") from None
    if not 1 <= n <= MAX_WORKERS:
        raise UsageError(f"--workers must be 1..{MAX_WORKERS}, got {n}")
    return n


def add_batching_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("dynamic batching (off by default; only for models whose first dimension is -1)")
    g.add_argument(
        "--max-batch-size",
        type=int,
        default=None,
        help="turn dynamic batching on: at most this many rows in one ONNX Runtime call",
    )
    g.add_argument(
        "--max-queue-delay-us",
        type=int,
        default=0,
        help="while a call is in flight, how long a request may wait for others (default 0)",
    )
    g.add_argument(
        "--preferred-batch-sizes",
        default="",
        help="comma-separated row counts a batch fires at without waiting (e.g. 8,16,32)",
    )
    g.add_argument(
        "--batch-instances",
        type=int,
        default=1,
        help="ONNX Runtime calls of one model in flight at once (default 1)",
    )


def batching_from_args(a: argparse.Namespace) -> BatchingConfig | None:
    if a.max_batch_size is None:
        if a.max_queue_delay_us or a.preferred_batch_sizes or a.batch_instances != 1:
            raise UsageError("the dynamic batching flags need --max-batch-size")
        return None
    try:
        sizes = tuple(sorted({int(v) for v in a.preferred_batch_sizes.split(",") if v.strip()}))
    except ValueError:
        raise UsageError(
            f"--preferred-batch-sizes must be integers, got {a.preferred_batch_sizes!r}"
        ) from None
    return BatchingConfig(
        max_batch_size=a.max_batch_size,
        max_queue_delay_us=a.max_queue_delay_us,
        preferred_batch_sizes=sizes,
        instances=a.batch_instances,
    )


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    try:
        run_server(config, echo=lambda line: print(line, flush=True))
    except MlplatError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
