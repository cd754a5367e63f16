"""``mlplat serve BUNDLE``: serve one bundle over the Open Inference Protocol v2, in the foreground.

The same server the stack runs (``python -m mlplat_runtime.serving``), started in this process
so a user can try a bundle without ``mlplat up``. ``--workers`` defaults to the project's
``[serving] workers`` when run in a project folder, else 1 (one process). The runtime is
imported only when the command runs, so ``mlplat --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command("serve")
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address of the inference API.")
@click.option(
    "--port", type=int, default=7802, show_default=True, help="Inference API port (0 = any free one)."
)
@click.option(
    "--admin-port", type=int, default=7803, show_default=True, help="Admin API port (loopback only)."
)
@click.option(
    "--admin-token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Admin bearer token; created (mode 0600) when missing. "
    "Default: $XDG_STATE_HOME/mlplat/admin.token (~/.local/state/mlplat/admin.token).",
)
@click.option(
    "--max-batch-size",
    type=click.IntRange(1, 65536),
    default=None,
    help="Turn dynamic batching on (models whose first dimension is -1): rows per ONNX Runtime call.",
)
@click.option(
    "--max-queue-delay-us",
    type=click.IntRange(0, 1_000_000),
    default=0,
    show_default=True,
    help="While a call is in flight, how long a request may wait for others to join its batch.",
)
@click.option(
    "--preferred-batch-sizes",
    default="",
    help="Comma-separated row counts a batch fires at without waiting (e.g. 8,16,32).",
)
@click.option(
    "--workers",
    default=None,
    help="Serving processes sharing the port, each with its own copy of the model, one admin API that"
    " swaps them all at once: a number, or 'auto' (one per core on CPU, at most 8; one with CUDA)."
    "  [default: [serving] workers in mlplat.toml, else 1]",
)
@click.option(
    "--drain-delay-s",
    type=click.FloatRange(0, 600),
    default=0.5,
    show_default=True,
    help="On SIGTERM, how long readiness is false before the port stops accepting (in-flight requests"
    " then finish).",
)
@click.pass_context
def serve(
    ctx: click.Context,
    bundle: Path,
    host: str,
    port: int,
    admin_port: int,
    admin_token_file: Path | None,
    max_batch_size: int | None,
    max_queue_delay_us: int,
    preferred_batch_sizes: str,
    workers: str | None,
    drain_delay_s: float,
) -> None:
    """Serve BUNDLE (a bundle folder or .mlbundle) until Ctrl-C.

    \b
    Inference:  POST http://HOST:PORT/v2/models/<name>/infer   (OIP v2, KServe/Triton clients work)
    Metrics:    GET  http://HOST:PORT/metrics
    Hot swap:   POST http://127.0.0.1:ADMIN_PORT/v2/repository/models/<name>/load
                with 'Authorization: Bearer <token>' and {"parameters": {"bundle": "<path>"}}
    Workers:    --workers 4 runs four processes on PORT; a hot swap answers once all four
                serve the new version (docs/serving.md)
    """
    from mlplat_runtime.errors import MlplatError
    from mlplat_runtime.serving.__main__ import parse_workers
    from mlplat_runtime.serving.batching import BatchingConfig
    from mlplat_runtime.serving.server import ServerConfig, run_server

    batching = None
    if max_batch_size is not None:
        try:
            sizes = tuple(sorted({int(v) for v in preferred_batch_sizes.split(",") if v.strip()}))
        except ValueError:
            raise click.BadParameter(
                "must be comma-separated integers", param_hint="--preferred-batch-sizes"
            ) from None
        batching = BatchingConfig(max_batch_size, max_queue_delay_us, sizes)
    elif max_queue_delay_us or preferred_batch_sizes:
        raise click.UsageError("the dynamic batching options need --max-batch-size")
    try:
        count = parse_workers(workers if workers is not None else _project_workers(ctx))
    except MlplatError as exc:
        raise click.BadParameter(exc.message, param_hint="--workers") from None
    config = ServerConfig(
        bundle=bundle,
        host=host,
        port=port,
        admin_port=admin_port,
        admin_token_file=admin_token_file,
        batching=batching,
        workers=count,
        drain_delay_s=drain_delay_s,
    )
    run_server(config, echo=lambda line: click.echo(line))


def _project_workers(ctx: click.Context) -> int | str:
    """``[serving] workers`` of the project in this folder (``--project``), else 1."""
    from mlplat_tui.cli.common import project_dir
    from mlplat_tui.project.config import CONFIG_NAME, load_project

    folder = project_dir(ctx)
    if not (folder / CONFIG_NAME).is_file():
        return 1
    return load_project(folder).config.serving.workers
