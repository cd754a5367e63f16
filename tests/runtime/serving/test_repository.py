"""Loads, hot swaps and refusals in the repository, with real bundles and the real check process."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlplat_runtime.errors import BundleError, ModelLoadError, NotFoundError, RequestError
from mlplat_runtime.serving.checker import Checker
from mlplat_runtime.serving.repository import ModelState, Repository
from tests.helpers.models import make_logreg_onnx, make_unknown_op_onnx
from tests.runtime.serving.conftest import (
    build_version,
    corrupt_onnx_bundle,
    rehash,
    sample,
    scrape,
    tampered_bundle,
    wrong_signature_bundle,
)

CPU = ["CPUExecutionProvider"]


@pytest.fixture
def repo() -> object:
    checker = Checker(providers=CPU)
    checker.start()
    r = Repository(checker=checker, providers=CPU)
    yield r
    r.close()
    checker.close()


def test_first_load_then_swap(repo: Repository, tmp_path: Path) -> None:
    assert repo.ready() and repo.index() == []
    first = repo.load(build_version(tmp_path, "1"))
    assert (first.name, first.version, first.swapped) == ("m", "1", False)
    assert first.provider == "CPUExecutionProvider" and first.bundle_id.startswith("sha256:")
    v1 = repo.get("m")
    second = repo.load(build_version(tmp_path, "2", seed=1), name="m")
    assert second.swapped and second.version == "2" and second.swap_ms > 0
    assert repo.get("m").version == "2" and repo.get("m", "2") is not v1
    with pytest.raises(NotFoundError, match="version '1' is not loaded \\(serving '2'\\)"):
        repo.get("m", "1")
    (entry,) = repo.index()
    assert entry.to_json() == {
        "name": "m", "version": "2", "state": "READY", "reason": "",
        "bundle_id": second.bundle_id, "provider": "CPUExecutionProvider",
    }  # fmt: skip
    text = repo.metrics.render().decode()
    active = [dict(labels) for (name, labels) in scrape(text) if name == "mlplat_model_active_info"]
    assert active == [
        {"model": "m", "version": "2", "bundle_id": second.bundle_id, "provider": "CPUExecutionProvider"}
    ]
    assert sample(text, "mlplat_model_swaps_total", model="m") == 1
    assert sample(text, "mlplat_model_loads_total", model="m", result="ok") == 2


@pytest.mark.parametrize(
    ("make", "error", "reason"),
    [
        (corrupt_onnx_bundle, BundleError, "not a readable ONNX model"),
        (wrong_signature_bundle, ModelLoadError, "manifest signature does not match its model"),
        (tampered_bundle, BundleError, "checksum differs from the manifest"),
    ],
)
def test_broken_bundles_are_refused_and_the_old_version_keeps_serving(
    repo: Repository, tmp_path: Path, make: object, error: type[Exception], reason: str
) -> None:
    repo.load(build_version(tmp_path, "1"))
    serving = repo.get("m")
    with pytest.raises(error, match=reason):
        repo.load(make(tmp_path, "2"), name="m")  # type: ignore[operator]
    assert repo.get("m") is serving
    (entry,) = repo.index()
    assert entry.state == ModelState.READY and entry.version == "1"
    assert entry.reason.startswith("last load rejected: ") and reason in entry.reason
    assert (
        sample(repo.metrics.render().decode(), "mlplat_model_loads_total", model="m", result="rejected") == 1
    )


def test_a_model_ort_refuses_is_caught_by_the_checker(repo: Repository, tmp_path: Path) -> None:
    repo.load(build_version(tmp_path, "1"))
    bad = build_version(tmp_path, "2")
    make_unknown_op_onnx(bad / "model.onnx")
    rehash(bad)
    with pytest.raises(ModelLoadError, match="refused the model in the check process"):
        repo.load(bad, name="m")
    assert repo.get("m").version == "1"


def test_name_in_url_must_match_the_bundle(repo: Repository, tmp_path: Path) -> None:
    with pytest.raises(RequestError, match="the bundle is for model 'm', not 'other'"):
        repo.load(build_version(tmp_path, "1"), name="other")
    (entry,) = repo.index()
    assert (entry.name, entry.state) == ("other", ModelState.UNAVAILABLE)
    with pytest.raises(NotFoundError, match="bundle not found"):
        repo.load(tmp_path / "nowhere", name="m")


def test_signature_change_needs_consent(repo: Repository, tmp_path: Path) -> None:
    repo.load(build_version(tmp_path, "1"))
    wider = make_logreg_onnx(tmp_path / "wide" / "model.onnx", n_features=6)
    from tests.helpers.models import make_bundle

    wide = make_bundle(tmp_path, name="m", version="2", model=wider, out=tmp_path / "wide-bundle")
    refused = r"incompatible with the serving one: input 'input' shape \[-1, 6\], serving v1 \[-1, 4\]"
    with pytest.raises(ModelLoadError, match=refused):
        repo.load(wide, name="m")
    assert repo.get("m").version == "1"
    assert repo.load(wide, name="m", allow_signature_change=True).version == "2"
    assert repo.get("m").inputs["input"].shape == (-1, 6)


def test_reloading_the_serving_bundle_is_a_no_op(repo: Repository, tmp_path: Path) -> None:
    path = build_version(tmp_path, "1")
    repo.load(path)
    model = repo.get("m")
    again = repo.load(path, name="m")
    assert not again.swapped and repo.get("m") is model


def test_archives_are_extracted_and_cleaned_up(repo: Repository, tmp_path: Path) -> None:
    archive = build_version(tmp_path, "1", archive=True)
    assert archive.is_file() and archive.name.endswith(".mlbundle")
    repo.load(archive)
    root = repo.get("m").keep.root
    assert root.is_dir()
    repo.load(build_version(tmp_path, "2"), name="m")
    assert not root.exists()  # the extracted copy of the swapped-out version is gone


def test_unload(repo: Repository, tmp_path: Path) -> None:
    repo.load(build_version(tmp_path, "1"))
    repo.unload("m")
    with pytest.raises(NotFoundError):
        repo.get("m")
    (entry,) = repo.index()
    assert (entry.state, entry.reason) == (ModelState.UNAVAILABLE, "unloaded")
    with pytest.raises(NotFoundError):
        repo.unload("m")
    assert not [k for k in scrape(repo.metrics.render().decode()) if k[0] == "mlplat_model_active_info"]
