"""Dynamic batching with real ONNX Runtime sessions: batched answers equal unbatched ones,
concurrent requests share calls, a lone request never waits for a window, and requests of
different shapes never share a call. The batcher is driven directly (deterministic: requests
submitted in one turn of the loop), then through the handler and a real serving process."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from mlplat_runtime.errors import RequestError
from mlplat_runtime.providers import batch_threads
from mlplat_runtime.serving.app import InferenceHandler
from mlplat_runtime.serving.batching import Batcher, BatchingConfig
from mlplat_runtime.serving.http import Request, Response, as_asgi
from mlplat_runtime.serving.metrics import ServingMetrics
from mlplat_runtime.serving.model import LoadedModel
from mlplat_runtime.serving.repository import Repository
from tests.helpers.models import make_bundle, make_identity_onnx, make_multi_io_onnx
from tests.runtime.serving.conftest import (
    build_version,
    logreg_expected,
    make_slow_logreg_onnx,
    rehash,
    sample,
)

CPU = ["CPUExecutionProvider"]
NAMES = ("label", "probabilities")


@pytest.fixture
def pool() -> Any:
    ex = ThreadPoolExecutor(max_workers=2)
    yield ex
    ex.shutdown(wait=True)


def load(
    tmp_path: Path, config: BatchingConfig, bundle: Path | None = None
) -> tuple[Repository, LoadedModel]:
    repo = Repository(providers=CPU)
    repo.load(bundle or build_version(tmp_path, "1", seed=5), batching=config)
    model = repo.find("m") or repo.models()[0]
    assert model.batching == config
    return repo, model


def rows(n: int, seed: int = 0) -> list[np.ndarray]:
    x = np.random.default_rng(seed).normal(size=(n, 4)).astype(np.float32)
    return [x[i : i + 1] for i in range(n)]


async def test_requests_submitted_together_share_one_call_and_get_their_own_rows(
    tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    repo, model = load(tmp_path, BatchingConfig(max_batch_size=8))
    metrics = ServingMetrics()
    batcher = Batcher(model, model.batching, pool, metrics)  # type: ignore[arg-type]
    xs = rows(20, seed=1)
    # one request of 3 rows among them, and one asking for the probabilities only
    xs[5] = np.random.default_rng(2).normal(size=(3, 4)).astype(np.float32)
    futures = [
        batcher.submit({"input": x}, ("probabilities",) if i == 7 else NAMES) for i, x in enumerate(xs)
    ]
    results = await asyncio.gather(*futures)
    assert batcher.calls == 3  # 22 rows in calls of at most 8 rows: 8, 8, then the last 6
    for i, (x, got) in enumerate(zip(xs, results, strict=True)):
        want = model.predict({"input": x}, NAMES)  # the unbatched answer
        if i == 7:
            assert len(got) == 1 and np.array_equal(got[0], want[1])
            continue
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
        label, _ = logreg_expected(x, seed=5)
        assert np.array_equal(got[0], label)
    text = metrics.render().decode()
    hist = {"model": "m", "version": "1"}
    assert sample(text, "mlplat_batch_size_count", **hist) == 3
    assert sample(text, "mlplat_batch_size_sum", **hist) == 22
    assert sample(text, "mlplat_batch_size_bucket", **hist, le="4.0") == 0
    assert sample(text, "mlplat_queue_duration_seconds_count", **hist) == 20
    repo.close()


async def test_a_lone_request_fires_at_once_even_with_a_long_delay(
    tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    config = BatchingConfig(max_batch_size=32, max_queue_delay_us=1_000_000, preferred_batch_sizes=(16,))
    repo, model = load(tmp_path, config)
    batcher = Batcher(model, config, pool, ServingMetrics())
    future = batcher.submit({"input": rows(1)[0]}, NAMES)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert batcher.calls == 1  # dispatched within two turns of the loop, no window waited for
    await future
    repo.close()


async def test_a_free_runner_waits_for_company_only_while_a_call_is_in_flight(
    tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    src = make_slow_logreg_onnx(tmp_path / "slow" / "model.onnx", iterations=200_000)
    bundle = build_version(tmp_path, "1")
    (bundle / "model.onnx").write_bytes(src.read_bytes())
    rehash(bundle)
    config = BatchingConfig(
        max_batch_size=32, max_queue_delay_us=1_000_000, preferred_batch_sizes=(4,), instances=2
    )
    repo, model = load(tmp_path, config, bundle)
    batcher = Batcher(model, config, pool, ServingMetrics())
    xs = rows(5, seed=3)
    first = batcher.submit({"input": xs[0]}, NAMES)
    for _ in range(3):
        await asyncio.sleep(0)
    assert batcher.calls == 1  # the first runs alone at once
    later = [batcher.submit({"input": x}, NAMES) for x in xs[1:4]]
    for _ in range(3):
        await asyncio.sleep(0)
    if not first.done():  # a call in flight: 3 rows < the preferred 4, the free runner waits
        assert batcher.calls == 1
    later.append(batcher.submit({"input": xs[4]}, NAMES))  # the 4th row: fire without the deadline
    got = await asyncio.gather(first, *later)
    assert batcher.calls == 2
    for x, out in zip(xs, got, strict=True):
        assert np.array_equal(out[0], logreg_expected(x, seed=0)[0])
    repo.close()


async def test_requests_of_different_widths_never_share_a_call(
    tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    src = make_multi_io_onnx(tmp_path / "multi" / "model.onnx")
    repo = Repository(providers=CPU)
    repo.load(make_bundle(tmp_path, name="multi", version="1", model=src), batching=BatchingConfig())
    model = repo.get("multi")
    batcher = Batcher(model, model.batching, pool, ServingMetrics())  # type: ignore[arg-type]
    rng = np.random.default_rng(4)
    feeds = [
        {"a": rng.normal(size=(2, w)).astype(np.float32), "b": rng.integers(0, 9, size=(2, 3))}
        for w in (3, 5, 3, 5, 3)
    ]
    got = await asyncio.gather(*(batcher.submit(f, ("sum", "b2")) for f in feeds))
    assert batcher.calls == 2  # one call per width
    for f, (s, b2) in zip(feeds, got, strict=True):
        assert np.array_equal(s, f["a"] + f["a"]) and np.array_equal(b2, f["b"] * 2)
    repo.close()


def test_only_models_with_a_batch_dimension_batch(tmp_path: Path) -> None:
    src = make_identity_onnx(tmp_path / "src" / "model.onnx", "FP32", shape=(2, 4))
    bundle = make_bundle(tmp_path, name="fixed", version="1", model=src)
    repo = Repository(providers=CPU, batching=BatchingConfig())
    with pytest.raises(RequestError, match="first dimension is not a batch dimension"):
        repo.load(bundle, batching=BatchingConfig(max_batch_size=4))
    repo.load(bundle)  # the server's default is skipped for it, with a warning
    assert repo.get("fixed").batching is None
    repo.load(build_version(tmp_path, "1"))  # ... and applied to a model that can batch
    assert repo.get("m").batching == BatchingConfig()
    with pytest.raises(RequestError, match="preferred_batch_sizes"):
        BatchingConfig(max_batch_size=8, preferred_batch_sizes=(16,))
    with pytest.raises(RequestError, match="unknown key"):
        BatchingConfig.parse({"max_batch": 8})
    repo.close()


async def test_concurrent_http_requests_share_calls_and_match_unbatched_answers(
    tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    repo, model = load(tmp_path, BatchingConfig(max_batch_size=64))
    handler = InferenceHandler(repo, executor=pool)
    transport = httpx.ASGITransport(app=as_asgi(handler))
    xs = rows(40, seed=6)
    async with httpx.AsyncClient(transport=transport, base_url="http://serving") as client:
        body = [
            {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": x.ravel().tolist()}]}
            for x in xs
        ]
        answers = await asyncio.gather(*(client.post("/v2/models/m/infer", json=b) for b in body))
        config = (await client.get("/v2/models/m/config")).json()
    assert config["max_batch_size"] == 64 and config["dynamic_batching"]["max_queue_delay_microseconds"] == 0
    assert handler.batcher(model).calls < len(xs)
    for x, r in zip(xs, answers, strict=True):
        assert r.status_code == 200, r.text
        outs = {o["name"]: o for o in r.json()["outputs"]}
        want = model.predict({"input": x}, NAMES)
        assert outs["label"]["data"] == want[0].tolist()
        assert np.array_equal(np.array(outs["probabilities"]["data"], np.float32), want[1].ravel())
    repo.close()


@pytest.mark.integration
def test_a_serving_process_with_batching_shares_calls_between_clients(
    tmp_path: Path, serving_factory: Any
) -> None:
    src = make_slow_logreg_onnx(tmp_path / "slow" / "model.onnx", iterations=20_000)
    bundle = build_version(tmp_path, "1")
    (bundle / "model.onnx").write_bytes(src.read_bytes())
    rehash(bundle)
    s = serving_factory(bundle, "--max-batch-size", "16", "--preferred-batch-sizes", "4,8")
    xs = rows(16 * 8, seed=7)
    errors: list[str] = []

    def client(chunk: list[np.ndarray]) -> None:
        with httpx.Client(base_url=s.url, timeout=30) as c:
            for x in chunk:
                body = {
                    "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": x.tolist()}]
                }
                r = c.post("/v2/models/m/infer", json=body)
                if (
                    r.status_code != 200
                    or r.json()["outputs"][0]["data"] != logreg_expected(x, 0)[0].tolist()
                ):
                    errors.append(r.text)

    threads = [threading.Thread(target=client, args=(xs[i::16],)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    text = httpx.get(f"{s.url}/metrics").text
    calls = sample(text, "mlplat_batch_size_count", model="m", version="1")
    assert sample(text, "mlplat_batch_size_sum", model="m", version="1") == len(xs)
    assert calls is not None and calls < len(xs)  # 16 clients at once: calls were shared
    assert sample(text, "mlplat_queue_duration_seconds_count", model="m", version="1") == len(xs)


def test_a_bundle_records_its_batching_and_serving_applies_it(tmp_path: Path) -> None:
    from mlplat_runtime.bundle import open_bundle

    wanted = {"max_batch_size": 16, "max_queue_delay_us": 200, "preferred_batch_sizes": [8, 4]}
    bundle = build_version(tmp_path, "1", batching=wanted)
    manifest = open_bundle(bundle).manifest
    assert manifest.serving is not None and manifest.serving.batching is not None
    assert manifest.serving.batching.preferred_batch_sizes == (4, 8)
    plain = build_version(tmp_path, "2")
    assert '"serving"' not in (plain / "manifest.json").read_text()  # absent: not even a null
    assert open_bundle(plain).manifest.serving is None

    from_bundle = BatchingConfig(max_batch_size=16, max_queue_delay_us=200, preferred_batch_sizes=(4, 8))
    repo = Repository(providers=CPU)
    repo.load(bundle)
    assert repo.get("m").batching == from_bundle
    assert repo.get("m").threads == batch_threads()  # a batched session gets the worker's cores
    repo.load(bundle, batching=False)  # a load may still turn it off
    assert repo.get("m").batching is None
    assert repo.get("m").threads == 1
    repo.load(bundle, batching=BatchingConfig(max_batch_size=4))  # ... or set its own
    assert repo.get("m").batching == BatchingConfig(max_batch_size=4)
    repo.close()
    # the server's flags (--max-batch-size) override what the bundle asks for
    flags = BatchingConfig(max_batch_size=64)
    repo = Repository(providers=CPU, batching=flags)
    repo.load(bundle)
    assert repo.get("m").batching == flags
    repo.close()


def test_batching_is_refused_at_build_for_a_model_without_a_batch_dimension(tmp_path: Path) -> None:
    from mlplat_runtime.errors import BundleError, UsageError

    src = make_identity_onnx(tmp_path / "src" / "model.onnx", "FP32", shape=(2, 4))
    with pytest.raises(BundleError, match=r"input 'input' has shape \[2, 4\]: its first dimension") as info:
        make_bundle(tmp_path, name="fixed", version="1", model=src, batching={"max_batch_size": 8})
    assert "[serving.batching]" in (info.value.hint or "")
    assert not list(tmp_path.glob("fixed-bundle*")) and not list(tmp_path.glob(".fixed-bundle*"))
    for bad, why in (
        ({"max_batch_size": 0}, "batching.max_batch_size: Input should be greater than or equal to 1"),
        ({"max_batch_size": "8"}, "batching.max_batch_size: Input should be a valid integer"),
        ({"max_batch_size": 8, "preferred_batch_sizes": [16]}, "not within 1..max_batch_size"),
        ({"max_batch_size": 8, "window": 3}, "batching.window: Extra inputs are not permitted"),
    ):
        with pytest.raises(UsageError, match=why):
            build_version(tmp_path, "9", batching=bad)


def test_a_hand_edited_manifest_asking_batching_for_a_fixed_shape_model_is_refused_at_load(
    tmp_path: Path,
) -> None:
    import json

    from mlplat_runtime.errors import ModelLoadError

    src = make_identity_onnx(tmp_path / "src" / "model.onnx", "FP32", shape=(2, 4))
    bundle = make_bundle(tmp_path, name="fixed", version="1", model=src)
    path = bundle / "manifest.json"
    doc = json.loads(path.read_text())
    doc["serving"] = {"batching": {"max_batch_size": 8}}
    path.write_text(json.dumps(doc))  # the manifest is not covered by the bundle id
    repo = Repository(providers=CPU)
    with pytest.raises(ModelLoadError, match=r"asks for dynamic batching .* cannot batch"):
        repo.load(bundle)
    repo.load(bundle, batching=False)  # the way out the hint names
    assert repo.get("fixed").batching is None
    repo.close()


async def test_a_lone_client_is_answered_in_its_own_turn_and_a_crowd_still_shares_calls(
    tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    repo, model = load(tmp_path, BatchingConfig(max_batch_size=32))
    batcher = Batcher(model, model.batching, pool, ServingMetrics())  # type: ignore[arg-type]
    assert batcher.inline  # a fast model: batches run on the loop thread
    xs = rows(12, seed=9)
    # one client: each request in a turn of its own is answered at once, no queue, no future
    for x in xs[:3]:
        got = batcher.run_now({"input": x}, NAMES)
        assert got is not None and np.array_equal(got[0], logreg_expected(x, seed=5)[0])
        await asyncio.sleep(0)
    assert batcher.calls == 3
    # a second request in the same turn is not run alone: it queues, and the turn's others join it
    assert batcher.run_now({"input": xs[3]}, NAMES) is not None
    assert batcher.run_now({"input": xs[4]}, NAMES) is None
    futures = [batcher.submit({"input": x}, NAMES) for x in xs[4:]]
    results = await asyncio.gather(*futures)
    assert batcher.calls == 5  # 3 + 1 alone, then the 8 queued ones in one call
    for x, got in zip(xs[4:], results, strict=True):
        assert np.array_equal(got[0], logreg_expected(x, seed=5)[0])
    # the last batch answered 8 requests: company is expected, so the next request queues
    await asyncio.sleep(0)
    assert batcher.run_now({"input": xs[0]}, NAMES) is None
    repo.close()


@pytest.mark.slow
def test_serving_batching_in_mlplat_toml_reaches_the_bundle_built_by_the_cycle(tmp_path: Path) -> None:
    from mlplat_runtime.bundle import open_bundle
    from mlplat_tui.cycle.pipeline import Pipeline
    from mlplat_tui.project.config import load_project
    from tests.helpers.stack import copy_sample

    root = copy_sample("churn", tmp_path)
    with (root / "mlplat.toml").open("a", encoding="utf-8") as f:
        f.write("\n[serving.batching]\nmax_batch_size = 16\npreferred_batch_sizes = [8]\n")
    result = Pipeline(load_project(root), None).run_cycle()
    assert result.bundle_path is not None, result.error
    manifest = open_bundle(result.bundle_path).manifest
    assert manifest.serving is not None and manifest.serving.batching is not None
    assert manifest.serving.batching.max_batch_size == 16
    assert manifest.serving.batching.preferred_batch_sizes == (8,)
    repo = Repository(providers=CPU)
    repo.load(result.bundle_path)
    assert repo.models()[0].batching == BatchingConfig(max_batch_size=16, preferred_batch_sizes=(8,))
    repo.close()


async def test_after_a_big_batch_a_free_runner_waits_briefly_for_its_clients_not_for_a_lone_one(
    tmp_path: Path, pool: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlplat_runtime.serving.batching as batching

    monkeypatch.setattr(batching, "AUTO_DELAY_MAX_S", 30.0)  # no deadline can pass during the test
    repo, model = load(tmp_path, BatchingConfig(max_batch_size=32))
    batcher = Batcher(model, model.batching, pool, ServingMetrics())  # type: ignore[arg-type]
    batcher._last_s = 40.0  # as if the last call were slow (a memory-bound model)
    first = await asyncio.gather(*(batcher.submit({"input": x}, NAMES) for x in rows(8)))
    assert len(first) == 8 and batcher.calls == 1
    batcher._last_s = 40.0
    # 3 of the 8 clients are back: the runner holds them (a share of that call) for the rest
    early = [batcher.submit({"input": x}, NAMES) for x in rows(3, seed=1)]
    for _ in range(3):
        await asyncio.sleep(0)
    assert batcher.calls == 1
    late = [batcher.submit({"input": x}, NAMES) for x in rows(5, seed=2)]  # all 8 back: fire now
    await asyncio.gather(*early, *late)
    assert batcher.calls == 2
    # a fast model never waits: its calls cost less than the floor
    batcher._last_s = 0.00005
    batcher._expected = 8
    assert batcher._delay_s() == 0.0
    repo.close()


async def test_clients_queued_behind_a_call_wait_for_its_clients_so_batches_do_not_split_in_halves(
    tmp_path: Path, pool: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlplat_runtime.serving.batching as batching

    # no deadline can pass during the test: what is measured is who waits for whom
    monkeypatch.setattr(batching, "AUTO_DELAY_SHARE", 1e6)
    monkeypatch.setattr(batching, "AUTO_DELAY_MAX_S", 30.0)
    repo, model = load(tmp_path, BatchingConfig(max_batch_size=32))
    metrics = ServingMetrics()
    batcher = Batcher(model, model.batching, pool, metrics)  # type: ignore[arg-type]
    batcher.inline = False  # batches in a worker thread, as a memory-bound model's are
    first = [batcher.submit({"input": x}, NAMES) for x in rows(8)]
    await asyncio.sleep(0)
    assert batcher.calls == 1 and not batcher.idle  # 8 rows in flight
    behind = [batcher.submit({"input": x}, NAMES) for x in rows(8, seed=1)]  # queued behind the call
    await asyncio.gather(*first)
    for _ in range(3):
        await asyncio.sleep(0)
    # 8 queued, but 16 clients circulate: the runner waits for the first call's clients
    assert batcher.calls == 1
    back = [batcher.submit({"input": x}, NAMES) for x in rows(8, seed=2)]  # they are back: fire
    answers = await asyncio.gather(*behind, *back)
    assert batcher.calls == 2
    xs = rows(8, seed=1) + rows(8, seed=2)
    for x, got in zip(xs, answers, strict=True):
        assert np.array_equal(got[0], model.predict({"input": x}, NAMES)[0])
    text = metrics.render().decode()
    assert sample(text, "mlplat_batch_size_sum", model="m", version="1") == 24  # 8, then 16 in one call
    repo.close()


async def test_a_lone_request_of_a_slow_model_takes_the_unbatched_path_and_a_crowd_joins_after(
    tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    src = make_slow_logreg_onnx(tmp_path / "slow" / "model.onnx", iterations=200_000)
    bundle = build_version(tmp_path, "1")
    (bundle / "model.onnx").write_bytes(src.read_bytes())
    rehash(bundle)
    repo, model = load(tmp_path, BatchingConfig(max_batch_size=32), bundle)
    handler = InferenceHandler(repo, executor=pool)
    batcher = handler.batcher(model)
    batcher.inline = False  # batches in worker threads (what a call over the inline budget decides)

    def request(x: np.ndarray) -> Request:
        doc = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.tolist()}]}
        return Request("POST", "/v2/models/m/infer", [], orjson.dumps(doc))

    xs = rows(6, seed=4)
    lone = handler(request(xs[0]))
    # the unbatched path (a coroutine run in a worker thread), not the queue's future
    assert asyncio.iscoroutine(lone) and batcher.calls == 1
    crowd = [handler(request(x)) for x in xs[1:]]  # arrive while it runs: they queue
    assert all(isinstance(c, asyncio.Future) for c in crowd)
    answers = await asyncio.gather(lone, *crowd)
    assert batcher.calls == 2  # the lone call, then the 5 queued ones in one call
    for x, resp in zip(xs, answers, strict=True):
        assert isinstance(resp, Response) and resp.status == 200, resp.body
        label = orjson.loads(resp.body)["outputs"][0]["data"]
        assert label == model.predict({"input": x}, NAMES)[0].tolist()
    text = handler.metrics.render().decode()
    assert sample(text, "mlplat_batch_size_count", model="m", version="1") == 2
    assert sample(text, "mlplat_batch_size_sum", model="m", version="1") == 6
    # the last batch answered 5 requests: company is expected, so the next one queues
    await asyncio.sleep(0)
    last = handler(request(xs[0]))
    assert isinstance(last, asyncio.Future)
    assert (await last).status == 200 and batcher.idle and batcher.calls == 3
    # the path gRPC shares: a lone request (the last batch held one) runs unbatched too
    got = await handler.run(model, {"input": xs[1]}, NAMES)
    assert np.array_equal(got[0], model.predict({"input": xs[1]}, NAMES)[0])
    assert batcher.calls == 4 and batcher.idle
    repo.close()
