"""Benchmark: how long from saving ``train.py`` to the new model serving, and what the platform adds.

Copies ``sample_projects/churn`` to a temp folder, starts its local stack on free loopback ports,
then runs the dev loop twice in one run — with the warm worker and without it (a fresh process
per training run) — each for ``--cycles`` saves that toggle a hyperparameter. For every cycle it
takes the loop's own ``cycle`` event: ``save_to_serving_s`` (first save -> the swap) and
``overhead_s`` (that minus the training command's own run time), plus the per-step times from
the event timestamps. Prints the medians and PASS/FAIL against the target: median platform
overhead <= 0.5 s with the warm worker.

    .venv/bin/python bench/devloop.py [--cycles 10] [--debounce-ms 200] [--target-s 0.5]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "runtime"))

from mlplat_tui.devloop.loop import DEFAULT_DEBOUNCE_S, DevLoop  # noqa: E402
from mlplat_tui.events import Event  # noqa: E402
from mlplat_tui.project.config import load_project  # noqa: E402
from mlplat_tui.stack.local import LocalBackend  # noqa: E402

STEPS = (  # (label, from kind, to kind): the per-step breakdown of a deployed cycle
    ("debounce+hash", "save", "change"),
    ("run setup", "change", "training"),
    ("train", "training", "trained"),
    ("bundle", "trained", "bundled"),
    ("gates", "bundled", "gated"),
    ("track+deploy", "gated", "swapped"),
)


def free_port_base() -> int:
    for _ in range(200):
        base = random.randrange(20000, 60000, 4)
        ok = True
        for port in range(base, base + 4):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise SystemExit("no free port range")


def copy_churn(dest: Path) -> Path:
    root = dest / "churn"
    shutil.copytree(
        REPO / "sample_projects" / "churn",
        root,
        ignore=shutil.ignore_patterns(".mlplat", "__pycache__", "out"),
    )
    toml = root / "mlplat.toml"
    toml.write_text(toml.read_text() + f"\n[stack]\nport_base = {free_port_base()}\n")
    return root


def save(path: Path, text: str) -> float:
    """Save like an editor does (write a temp file, rename it over); returns the save time."""
    tmp = path.with_name(f".{path.name}.bench-tmp")
    tmp.write_text(text)
    at = time.time()
    os.replace(tmp, path)
    return at


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.cond = threading.Condition()

    def __call__(self, event: Event) -> None:
        with self.cond:
            self.events.append(event)
            self.cond.notify_all()

    def wait_cycle(self, after: int, timeout: float) -> Event:
        with self.cond:
            ok = self.cond.wait_for(lambda: any(e.kind == "cycle" for e in self.events[after:]), timeout)
            if not ok:
                raise SystemExit(f"no cycle finished within {timeout:.0f}s")
            return next(e for e in self.events[after:] if e.kind == "cycle")


def run_mode(
    root: Path, backend: LocalBackend, *, warm: bool, cycles: int, warmup: int, debounce_s: float
) -> dict[str, Any]:
    project = load_project(root)
    rec = Recorder()
    loop = DevLoop(project, backend=backend, emit=rec, headless=True, warm=warm, debounce_s=debounce_s)
    loop.start()
    rows: list[dict[str, float]] = []
    try:
        rec.wait_cycle(0, 300)  # the initial training
        train_py = root / "train.py"
        for i in range(warmup + cycles):
            time.sleep(0.5)  # idle, as between two edits
            text = train_py.read_text()
            c = 1.0 + 0.01 * (i + 1) + (0.5 if warm else 0.0)  # a new value each time: a real change
            text = re.sub(r"^C = [0-9.]+", f"C = {c:.2f}", text, count=1, flags=re.M)
            mark = len(rec.events)
            saved_at = save(train_py, text)
            cycle = rec.wait_cycle(mark, 300)
            if cycle.data.get("outcome") != "deployed":
                raise SystemExit(f"cycle {i + 1} did not deploy: {cycle.message}")
            ts = {"save": saved_at}
            for e in rec.events[mark:]:
                ts.setdefault(e.kind, e.ts)
            row = {
                "save_to_serving_s": float(cycle.data["save_to_serving_s"]),
                "overhead_s": float(cycle.data["overhead_s"]),
                "train_s": float(cycle.data["train_s"]),
            }
            for label, a, b in STEPS:
                if a in ts and b in ts:
                    row[label] = ts[b] - ts[a]
            if i >= warmup:
                rows.append(row)
            print(
                f"  {'warm' if warm else 'cold'} #{i + 1:>2}{' (warm-up)' if i < warmup else ''}: "
                f"save->serving {row['save_to_serving_s']:.2f}s "
                f"train {row['train_s']:.2f}s overhead {row['overhead_s']:.2f}s",
                flush=True,
            )
        info = dict(getattr(loop.runner, "worker_info", {}) or {})
    finally:
        loop.stop()
    return {"rows": rows, "preloaded": len(info.get("loaded", ())), "import_s": info.get("import_s")}


def med(rows: list[dict[str, float]], key: str) -> float:
    vals = [r[key] for r in rows if key in r]
    return statistics.median(vals) if vals else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2, help="cycles per mode run first and not counted")
    ap.add_argument("--debounce-ms", type=int, default=round(DEFAULT_DEBOUNCE_S * 1000))
    ap.add_argument("--target-s", type=float, default=0.5, help="max median overhead with the warm worker")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mlplat-bench-devloop-"))
    root = copy_churn(tmp)
    backend = LocalBackend(load_project(root))
    print(f"project {root}; starting the local stack ({backend.ports.url('serving')}) ...", flush=True)
    started = time.monotonic()
    results: dict[str, dict[str, Any]] = {}
    try:
        backend.up()
        print(f"stack up in {time.monotonic() - started:.1f}s; {args.cycles} cycles per mode", flush=True)
        for warm in (True, False):
            results["warm" if warm else "cold"] = run_mode(
                root,
                backend,
                warm=warm,
                cycles=args.cycles,
                warmup=args.warmup,
                debounce_s=args.debounce_ms / 1000,
            )
    finally:
        backend.down()
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    header = f"{'mode':<6}{'n':>4}{'save->serving':>15}{'train':>9}{'overhead':>10}{'p90 ovh':>9}"
    print(header + "".join(f"{label:>15}" for label, _, _ in STEPS))
    for mode, res in results.items():
        rows = res["rows"]
        ovh = sorted(r["overhead_s"] for r in rows)
        p90 = ovh[min(len(ovh) - 1, int(0.9 * len(ovh)))]
        line = (
            f"{mode:<6}{len(rows):>4}{med(rows, 'save_to_serving_s'):>14.3f}s{med(rows, 'train_s'):>8.3f}s"
            f"{med(rows, 'overhead_s'):>9.3f}s{p90:>8.3f}s"
        )
        print(line + "".join(f"{med(rows, label):>14.3f}s" for label, _, _ in STEPS))
    warm_info = results["warm"]
    print(
        f"(warm worker: {warm_info['preloaded']} modules preloaded in {warm_info['import_s']}s; cold: "
        f"a fresh process per run; "
        f"debounce {args.debounce_ms} ms; medians over {args.cycles} cycles)"
    )
    warm_ovh = med(results["warm"]["rows"], "overhead_s")
    speedup = med(results["cold"]["rows"], "save_to_serving_s") / med(
        results["warm"]["rows"], "save_to_serving_s"
    )
    print(f"warm worker: save->serving {speedup:.2f}x faster than a fresh process per run")
    ok = warm_ovh <= args.target_s
    print(
        f"{'PASS' if ok else 'FAIL'}: median platform overhead with the warm worker {warm_ovh:.3f}s "
        f"(target <= {args.target_s:.2f}s)"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
