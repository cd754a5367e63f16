"""``make demo``: the dashboard on the churn sample, in dev mode, on the local backend.

Copies ``sample_projects/churn`` to ``.mlplat-demo/churn`` (git-ignored; kept between runs so
the run history grows, ``--fresh`` starts over), then opens the dashboard there with the dev
loop inside: the stack comes up, the model trains, passes its gates and serves. A small client
sends the model a few requests a second so the Serving panel shows it answering. Edit
``.mlplat-demo/churn/train.py`` and save: a new cycle trains, gates and hot-swaps.

Watching an alert open: the client draws its rows from the served bundle's training reference
(so nothing drifts), until drift is switched on — ``touch .mlplat-demo/churn/DRIFT`` (remove the
file to switch it off), or ``--drift-after SECONDS``. Then one feature's values come from the top
of its training range only; the demo's monitor window is one minute, so after three windows
(about three minutes) the Monitoring screen (``m``) shows the alert, and ``mlplat monitor`` too.

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
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from mlplat_runtime.monitoring.reference import FeatureRef, Reference

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_projects" / "churn"
DEMO_DIR = REPO / ".mlplat-demo" / "churn"
DRIFT_FILE = "DRIFT"
# A short monitor window, so an alert (3 windows in a row over the trigger) opens in minutes.
DEMO_MONITOR = '\n[monitor]\nwindow = "1m"\nbucket = "10s"\n'


def prepare(fresh: bool) -> Path:
    if fresh and DEMO_DIR.exists():
        _stop_stack(DEMO_DIR)
        shutil.rmtree(DEMO_DIR)
    if not DEMO_DIR.exists():
        DEMO_DIR.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(SAMPLE, DEMO_DIR, ignore=shutil.ignore_patterns(".mlplat", "__pycache__", "out"))
    toml = DEMO_DIR / "mlplat.toml"
    if "[monitor]" not in toml.read_text():
        toml.write_text(toml.read_text() + DEMO_MONITOR)
    return DEMO_DIR


class ReferenceRows:
    """Rows drawn from a bundle's training reference (reference v2): a slot by its training
    share, then a value inside it. ``drifted`` rows take the first numeric feature from the top
    three bins of its training range only."""

    def __init__(self, reference: Reference, rng: np.random.Generator) -> None:
        self.ref = reference
        self.rng = rng
        numeric = [f for f in reference.features.values() if f.kind == "numeric"]
        self.shifted = numeric[0].name if numeric else None

    @classmethod
    def newest(cls, root: Path) -> ReferenceRows | None:
        import numpy as np

        from mlplat_runtime.monitoring.reference import parse_reference

        found = sorted(root.glob(".mlplat/bundles/*/reference.json"), key=lambda p: p.stat().st_mtime)
        if not found:
            return None
        try:
            import json

            ref = parse_reference(json.loads(found[-1].read_text()))
        except (OSError, ValueError):
            return None
        return None if ref is None else cls(ref, np.random.default_rng())

    def value(self, f: FeatureRef, drifted: bool) -> float:
        import numpy as np

        rng = self.rng
        counts = np.asarray(f.counts[:-1], dtype=float)  # without the missing slot
        if f.kind == "numeric":
            edges = f.edges
            bins = counts[1:-1]  # underflow and overflow are empty in training
            if drifted and f.name == self.shifted:
                bins = np.zeros_like(bins)
                bins[-3:] = 1.0
            if bins.sum() <= 0:
                return float(edges[0])
            i = int(rng.choice(len(bins), p=bins / bins.sum()))
            return float(rng.uniform(edges[i], edges[i + 1]))
        cats = counts[:-1]  # the top categories, without "other"
        if not len(cats) or cats.sum() <= 0:
            return 0.0
        i = int(rng.choice(len(cats), p=cats / cats.sum()))
        try:
            return float(f.categories[i])
        except ValueError:  # a text category: this demo sends numbers only
            return 0.0

    def fill(self, name: str, shape: list[int], drifted: bool) -> list[float] | None:
        """One row for input ``name`` (``shape`` [1, k] or [1]); None when the reference lacks it."""
        if len(shape) == 2:
            columns = self.ref.columns_of(name)
            if len(columns) != shape[1]:
                return None
            return [self.value(self.ref.features[columns[c]], drifted) for c in range(shape[1])]
        feature = self.ref.features.get(name)
        return None if feature is None else [self.value(feature, drifted)]


def _stop_stack(root: Path) -> None:
    from mlplat_runtime.errors import MlplatError
    from mlplat_tui.project.config import load_project
    from mlplat_tui.stack.base import get_backend

    try:
        get_backend(load_project(root)).down()
    except MlplatError as exc:
        print(f"could not stop the demo stack: {exc}", file=sys.stderr)


def _input_specs(base: str, model: str) -> list[dict] | None:
    """The served model's inputs (OIP metadata), or None when nothing answers yet."""
    import httpx

    try:
        meta = httpx.get(f"{base}/v2/models/{model}", timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return None
    return meta.get("inputs") if isinstance(meta, dict) else None


def _body(specs: list[dict], rows: ReferenceRows | None = None, drifted: bool = False) -> dict | None:
    """One row shaped like ``specs``: drawn from the training reference when there is one, else
    random."""
    import numpy as np

    rng = np.random.default_rng()
    inputs = []
    for spec in specs:
        shape = [1 if d in (-1, None) else int(d) for d in spec["shape"]]
        dtype = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32}.get(
            spec["datatype"]
        )
        if dtype is None:
            return None
        drawn = rows.fill(spec["name"], shape, drifted) if rows is not None else None
        data = np.asarray(drawn, dtype=dtype) if drawn is not None else rng.normal(size=shape).astype(dtype)
        inputs.append(
            {
                "name": spec["name"],
                "datatype": spec["datatype"],
                "shape": shape,
                "data": data.ravel().tolist(),
            }
        )
    return {"inputs": inputs}


def _request_body(base: str, model: str) -> dict | None:
    """One random row shaped like the served model's inputs."""
    specs = _input_specs(base, model)
    return None if specs is None else _body(specs)


def traffic(
    base: str,
    model: str,
    stop: threading.Event,
    per_second: float = 20.0,
    root: Path | None = None,
    drift_at: float | None = None,
) -> None:
    """A steady trickle of inference requests, so req/s, latency and drift have something to
    show. Rows come from the newest bundle's training reference (looked up again every 30 s, a
    new version may have come); drift is on while ``root/DRIFT`` exists or after ``drift_at``
    (monotonic seconds)."""
    if stop.wait(2.0):  # let the dashboard paint first: imports here would compete for the GIL
        return
    import httpx

    specs: list[dict] | None = None
    rows: ReferenceRows | None = None
    looked = 0.0
    with httpx.Client(timeout=5) as http:
        while not stop.wait(1.0 / per_second):
            if specs is None:
                specs = _input_specs(base, model)
                if specs is None:
                    stop.wait(1.0)  # nothing served yet
                    continue
            if root is not None and time.monotonic() - looked > 30.0:
                rows, looked = ReferenceRows.newest(root), time.monotonic()
            drifted = (root is not None and (root / DRIFT_FILE).exists()) or (
                drift_at is not None and time.monotonic() >= drift_at
            )
            body = _body(specs, rows, drifted)
            if body is None:
                stop.wait(1.0)
                continue
            try:
                if http.post(f"{base}/v2/models/{model}/infer", json=body).status_code != 200:
                    specs, looked = None, 0.0  # a new version may take other inputs: ask again
            except httpx.HTTPError:
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
    parser.add_argument(
        "--drift-after",
        type=float,
        default=None,
        metavar="SECONDS",
        help="shift one feature of the demo traffic after this long, so a drift alert opens "
        f"(or touch {DEMO_DIR.relative_to(REPO)}/{DRIFT_FILE} at any time; remove it to stop)",
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
        kwargs={
            "root": root,
            "drift_at": None if args.drift_after is None else time.monotonic() + args.drift_after,
        },
        name="demo-traffic",
        daemon=True,
    )
    client.start()
    print(f"demo: drift on with `touch {root / DRIFT_FILE}`; press m in the dashboard for Monitoring")
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
