"""``make demo``: the dashboard on the churn sample, in dev mode, on the local backend.

Copies ``sample_projects/churn`` to ``.mlplat-demo/churn`` (git-ignored; kept between runs so
the run history grows, ``--fresh`` starts over), then opens the dashboard there with the dev
loop inside: the stack comes up, the model trains, passes its gates and serves. A small client
sends the model a few requests a second so the Serving panel shows it answering. Edit
``.mlplat-demo/churn/train.py`` and save: a new cycle trains, gates and hot-swaps.

Without a terminal (CI, a pipe) it does not wait for keys that never come: it runs one cycle
headless, printing the events, checks the served model answers, stops the stack and exits.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_projects" / "churn"
DEMO_DIR = REPO / ".mlplat-demo" / "churn"


def prepare(fresh: bool) -> Path:
    if fresh and DEMO_DIR.exists():
        _stop_stack(DEMO_DIR)
        shutil.rmtree(DEMO_DIR)
    if not DEMO_DIR.exists():
        DEMO_DIR.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(SAMPLE, DEMO_DIR, ignore=shutil.ignore_patterns(".mlplat", "__pycache__", "out"))
    return DEMO_DIR


def _stop_stack(root: Path) -> None:
    from mlplat_runtime.errors import MlplatError
    from mlplat_tui.project.config import load_project
    from mlplat_tui.stack.base import get_backend

    try:
        get_backend(load_project(root)).down()
    except MlplatError as exc:
        print(f"could not stop the demo stack: {exc}", file=sys.stderr)


def _request_body(base: str, model: str) -> dict | None:
    """One random row shaped like the served model's inputs (from its OIP metadata)."""
    import httpx
    import numpy as np

    try:
        meta = httpx.get(f"{base}/v2/models/{model}", timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return None
    if "inputs" not in meta:
        return None
    rng = np.random.default_rng()
    inputs = []
    for spec in meta["inputs"]:
        shape = [1 if d in (-1, None) else int(d) for d in spec["shape"]]
        dtype = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32}.get(
            spec["datatype"]
        )
        if dtype is None:
            return None
        data = rng.normal(size=shape).astype(dtype)
        inputs.append(
            {
                "name": spec["name"],
                "datatype": spec["datatype"],
                "shape": shape,
                "data": data.ravel().tolist(),
            }
        )
    return {"inputs": inputs}


def traffic(base: str, model: str, stop: threading.Event, per_second: float = 20.0) -> None:
    """A steady trickle of inference requests, so req/s and latency have something to show."""
    if stop.wait(2.0):  # let the dashboard paint first: imports here would compete for the GIL
        return
    import httpx

    body: dict | None = None
    with httpx.Client(timeout=5) as http:
        while not stop.wait(1.0 / per_second):
            if body is None:
                body = _request_body(base, model)
                if body is None:
                    stop.wait(1.0)  # nothing served yet
                    continue
            try:
                if http.post(f"{base}/v2/models/{model}/infer", json=body).status_code != 200:
                    body = None  # a new version may take other inputs: ask again
            except httpx.HTTPError:
                body = None
                stop.wait(1.0)


def headless(root: Path) -> int:
    """One cycle, printed, then a check that the served model answers; the stack is stopped."""
    import httpx

    from mlplat_tui.devloop.loop import DevLoop
    from mlplat_tui.events import Event
    from mlplat_tui.project.config import load_project
    from mlplat_tui.stack.base import Ports, get_backend

    project = load_project(root)
    backend = get_backend(project)

    def show(event: Event) -> None:
        if event.kind != "output":
            print(event.line(), flush=True)

    try:
        result = DevLoop(project, backend=backend, emit=show, headless=True).run_once()
        if result is None or not result.deployed:
            print(
                f"demo: the cycle did not deploy ({result.error if result else 'no result'})", file=sys.stderr
            )
            return 1
        base, model = Ports.from_project(project).url("serving"), project.config.model.name
        body = _request_body(base, model)
        answer = httpx.post(f"{base}/v2/models/{model}/infer", json=body, timeout=10) if body else None
        if answer is None or answer.status_code != 200:
            print("demo: the served model did not answer", file=sys.stderr)
            return 1
        out = answer.json()
        print(f"demo: {model} v{out.get('model_version')} answered: {out['outputs'][0]['data']}")
        return 0
    finally:
        backend.down()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--fresh", action="store_true", help="stop the demo stack and start from a clean copy"
    )
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    root = prepare(args.fresh)
    print(f"demo project: {root}")
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        print("no terminal: running one cycle headless instead of the dashboard")
        return headless(root)

    from mlplat_runtime.errors import MlplatError
    from mlplat_tui.cli.ui import open_dashboard
    from mlplat_tui.project.config import load_project
    from mlplat_tui.stack.base import Ports

    project = load_project(root)
    stop = threading.Event()
    client = threading.Thread(
        target=traffic,
        args=(Ports.from_project(project).url("serving"), project.config.model.name, stop),
        name="demo-traffic",
        daemon=True,
    )
    client.start()
    started = time.monotonic()
    try:
        open_dashboard(root, dev=True)
    except MlplatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    finally:
        stop.set()
    print(
        f"demo: left after {time.monotonic() - started:.0f}s; the stack is still up "
        f"(stop it: .venv/bin/mlplat --project {root.relative_to(REPO)} down)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
