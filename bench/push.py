"""Benchmark: a push to a single-node Swarm with 2 replicas behind the HAProxy edge.

Starts what a push needs on this machine: a single-node Swarm (when the engine is not in one;
left again at the end), Debian's docker-registry on a free loopback port, and version 1 of a
small model served by the swarm engine (``mlplat_tui/push/swarm.py``, its default health
timing: the figures are what a real push waits). Then, in one run, under a bounded load of 2
clients posting through the edge:

- **good push** (version 2): from the start of the push (image build + registry push + rollout)
  to every replica serving version 2 (the last old replica shut down, engine timestamps), and
  to the engine's ``completed`` (after the update monitor);
- **bad push** (version 3, a bundle serving refuses at start: its replicas never turn ready):
  from the start of the push to Swarm's rollback completed;

and for each the requests the clients saw fail, plus the raw failures the edge hid with its
one retry (HAProxy's connection and response errors, retries and redispatches). Everything it
made is removed at the end.

    .venv/bin/python bench/push.py [--runtime-image mlplat-runtime:test] [--deadline 300]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "runtime"))

import numpy as np  # noqa: E402

from mlplat_runtime.bundle import open_bundle  # noqa: E402
from mlplat_tui.project.config import load_project  # noqa: E402
from mlplat_tui.push.edge import EdgeStats, edge_stats  # noqa: E402
from mlplat_tui.push.engine import ImageRef, RolloutRequest, RolloutResult  # noqa: E402
from mlplat_tui.push.image import build_and_push  # noqa: E402
from mlplat_tui.push.swarm import SwarmEngine  # noqa: E402
from tests.helpers.load import InferenceLoad, infer_body  # noqa: E402
from tests.helpers.models import make_bundle, make_logreg_onnx  # noqa: E402
from tests.helpers.registry import started_registry  # noqa: E402
from tests.helpers.swarm import remove_swarm_objects, single_node_swarm  # noqa: E402


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bundle(tmp: Path, version: str, seed: int, broken: bool = False) -> tuple[Path, str]:
    model = make_logreg_onnx(tmp / f"src-{version}" / "model.onnx", seed=seed)
    path = make_bundle(tmp, name="m", version=version, model=model, out=tmp / f"bundle-{version}")
    bid = open_bundle(path).manifest.bundle_id
    if broken:  # the samples changed after the build: serving refuses the bundle at start
        samples = path / "samples.npz"
        data = bytearray(samples.read_bytes())
        data[-40] ^= 0xFF
        samples.write_bytes(bytes(data))
    return path, bid


def _delta(a: EdgeStats, b: EdgeStats) -> dict[str, int]:
    return {
        "connection_errors": b.connection_errors - a.connection_errors,
        "response_errors": b.response_errors - a.response_errors,
        "retries": b.retries - a.retries,
        "redispatches": b.redispatches - a.redispatches,
    }


def _all_new_at(result: RolloutResult, old_version: str) -> datetime | None:
    """The engine's time of the last old replica's shutdown: from then every replica is new."""
    stamps = [
        t.at
        for t in result.transitions
        if t.state in ("shutdown", "complete") and f" v{old_version} " in f"{t.subject} "
    ]
    return max(stamps) if stamps else None


def _push(
    engine: SwarmEngine,
    tmp: Path,
    registry: str,
    runtime_image: str,
    version: str,
    seed: int,
    deadline: float,
    broken: bool = False,
) -> tuple[RolloutResult, float, float, ImageRef]:
    path, bid = _bundle(tmp, version, seed, broken)
    begun = time.monotonic()
    image = build_and_push(
        path, "m", version, bid, registry, None, lambda _: None, runtime_image=runtime_image
    )
    built = time.monotonic() - begun
    request = RolloutRequest(
        model_name="m", version=version, bundle_id=bid, bundle_path=path, image=image,
        previous=engine.current("m"), deadline_s=deadline,
    )  # fmt: skip
    result = engine.rollout(request, lambda _: None)
    return result, built, time.monotonic() - begun, image


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runtime-image", default="mlplat-runtime:test", help="the runtime image to build on")
    p.add_argument("--deadline", type=float, default=300.0, help="mlplat's rollout deadline (s)")
    a = p.parse_args()

    import docker

    client = docker.from_env()
    rows = np.zeros((1, 4), dtype=np.float32)
    pushed: list[ImageRef] = []
    with (
        tempfile.TemporaryDirectory(prefix="mlplat-bench-push-") as tmpdir,
        single_node_swarm(client) as made_swarm,
        started_registry(Path(tmpdir) / "registry") as reg,
    ):
        tmp = Path(tmpdir)
        name = f"bench{uuid.uuid4().hex[:6]}"
        root = tmp / "project"
        root.mkdir()
        port = _free_port()
        (root / "mlplat.toml").write_text(
            f'[project]\nname = "{name}"\n\n[model]\nname = "m"\n\n[targets.prod]\nkind = "swarm"\n'
            f'stage = "prod"\nregistry = "http://127.0.0.1:5000"\nimage_registry = "{reg.address}"\n'
            f'docker_host = "unix:///var/run/docker.sock"\nreplicas = 2\npublish = "edge"\nport = {port}\n'
        )
        project = load_project(root)
        engine = SwarmEngine(project, "prod", project.config.targets["prod"], None)  # type: ignore[arg-type]
        h = engine.health
        swarm_is = "made for this run" if made_swarm else "already there"
        print(
            f"single-node Swarm ({swarm_is}), registry {reg.address}, edge 127.0.0.1:{port}, 2 replicas, "
            f"health start period {h.start_period_s:.0f}s, monitor {h.monitor_s:.0f}s"
        )
        try:
            first, built1, total1, image = _push(
                engine, tmp, reg.address, a.runtime_image, "1", 1, a.deadline
            )
            pushed.append(image)
            print(
                f"version 1 (fresh service): {first.outcome} in {total1:.1f}s "
                f"(image build+push {built1:.1f}s)"
            )
            url = f"{engine.endpoint('m')}/v2/models/m/infer"
            figures: list[tuple[str, Any]] = []
            for label, version, seed, broken in (("good push", "2", 2, False), ("bad push", "3", 3, True)):
                s0 = edge_stats(engine.client, engine._edge("m"))
                t0 = datetime.now(UTC)
                with InferenceLoad(url, infer_body(rows), clients=2, pause_s=0.02) as load:
                    result, built, total, image = _push(
                        engine, tmp, reg.address, a.runtime_image, version, seed, a.deadline, broken
                    )
                pushed.append(image)
                s1 = edge_stats(engine.client, engine._edge("m"))
                versions = sorted({v for _, st, v in load.outcomes if st == 200})
                all_new = _all_new_at(result, "1") if not broken else None
                figures.append((label, result, built, total, all_new, t0, load, _delta(s0, s1), versions))
            print()
            for label, result, built, total, all_new, t0, load, raw, versions in figures:
                print(f"{label}: {result.outcome}" + (f" ({result.reason})" if result.reason else ""))
                print(f"  image build + push          {built:7.1f} s")
                if all_new is not None:
                    print(
                        f"  push -> every replica new   {(all_new - t0).total_seconds():7.1f} s"
                        "  (engine timestamps)"
                    )
                word = "completed" if label == "good push" else "rolled back"
                print(f"  push -> engine {word:<12} {total:7.1f} s")
                print(
                    f"  requests {len(load.outcomes)}, failed {len(load.failures)}"
                    f" (versions answering: {versions})"
                )
                print(
                    f"  edge raw: {raw['connection_errors']} connection errors, {raw['response_errors']} "
                    f"response errors, {raw['retries']} retries, {raw['redispatches']} redispatches"
                )
        finally:
            remove_swarm_objects(client, name)
            for ref in pushed:
                for ref_name in (f"{ref.repository}:{ref.tag}", ref.pinned):
                    with contextlib.suppress(docker.errors.DockerException):
                        client.images.remove(client.images.get(ref_name).id, force=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
