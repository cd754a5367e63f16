"""Tampered bundle folders: open_bundle refuses them, verify_bundle lists every problem."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from mlplat_runtime.bundle import open_bundle, verify_bundle
from mlplat_runtime.bundle.samples import write_samples
from mlplat_runtime.errors import BundleError, UnsafeArchiveError
from tests.helpers.models import (
    make_identity_onnx,
    make_logreg_onnx,
    make_unknown_op_onnx,
    write_corrupt_onnx,
)
from tests.runtime.bundle.conftest import reseal


def flip_byte(path: Path, offset: int = -1) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def edit_manifest(root: Path, **changes: object) -> None:
    manifest = json.loads((root / "manifest.json").read_text())
    manifest.update(changes)
    (root / "manifest.json").write_text(json.dumps(manifest))


def test_intact_bundle_has_no_problem(bundle_dir: Path) -> None:
    assert verify_bundle(bundle_dir) == []
    assert open_bundle(bundle_dir).manifest.model_name == "churn"


@pytest.mark.parametrize("member", ["model.onnx", "samples.npz"])
def test_changed_byte(bundle_dir: Path, member: str) -> None:
    flip_byte(bundle_dir / member, offset=len((bundle_dir / member).read_bytes()) // 2)
    with pytest.raises(BundleError, match=f"'{member}': checksum differs") as caught:
        open_bundle(bundle_dir)
    assert not isinstance(caught.value, UnsafeArchiveError)
    assert any(f"'{member}': checksum differs" in p for p in verify_bundle(bundle_dir))


def test_extra_file(bundle_dir: Path) -> None:
    (bundle_dir / "notes").mkdir()
    (bundle_dir / "notes" / "extra.txt").write_text("hello")
    with pytest.raises(BundleError, match=r"'notes/extra.txt': not listed in the manifest"):
        open_bundle(bundle_dir)
    assert verify_bundle(bundle_dir) == [
        "bundle member 'notes/extra.txt': not listed in the manifest (rule: no unlisted files)"
    ]


def test_missing_file(bundle_dir: Path) -> None:
    (bundle_dir / "samples.npz").unlink()
    with pytest.raises(BundleError, match=r"'samples\.npz': listed in the manifest but missing"):
        open_bundle(bundle_dir)
    assert verify_bundle(bundle_dir) == ["bundle member 'samples.npz': listed in the manifest but missing"]


def test_missing_manifest(bundle_dir: Path) -> None:
    (bundle_dir / "manifest.json").unlink()
    with pytest.raises(BundleError, match=r"'manifest\.json': missing"):
        open_bundle(bundle_dir)


def test_manifest_not_json(bundle_dir: Path) -> None:
    (bundle_dir / "manifest.json").write_text("{not json")
    assert len(problems := verify_bundle(bundle_dir)) == 1 and "not valid JSON" in problems[0]


def test_manifest_unknown_key_and_bad_types(bundle_dir: Path) -> None:
    edit_manifest(bundle_dir, surprise=1, metrics={"auc": "high"}, schema_version=2)
    problems = verify_bundle(bundle_dir)
    assert any("schema: surprise: Extra inputs are not permitted" in p for p in problems)
    assert any("schema: metrics.auc" in p for p in problems)
    assert any("schema: schema_version" in p for p in problems)
    with pytest.raises(BundleError, match="schema"):
        open_bundle(bundle_dir)


def test_wrong_bundle_id(bundle_dir: Path) -> None:
    edit_manifest(bundle_dir, bundle_id="sha256:" + "0" * 64)
    assert verify_bundle(bundle_dir) == [
        "bundle member 'manifest.json': bundle_id sha256:"
        + "0" * 64
        + " is not the digest of the listed files (rule: the id covers the content)"
    ]


def test_manifest_listing_a_path_outside(bundle_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "outside.txt").write_text("secret")
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    manifest["files"]["../outside.txt"] = "sha256:" + "0" * 64
    (bundle_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UnsafeArchiveError, match=r"manifest lists '\.\./outside\.txt'.*escapes the bundle"):
        open_bundle(bundle_dir)


def test_symlink_in_place_of_a_file(bundle_dir: Path, tmp_path: Path) -> None:
    # Same bytes behind the link, so only the "no symlinks" rule can catch it.
    real = tmp_path / "elsewhere.onnx"
    (bundle_dir / "model.onnx").rename(real)
    os.symlink(real, bundle_dir / "model.onnx")
    with pytest.raises(
        UnsafeArchiveError, match=r"'model\.onnx': is a symlink.*only regular files and folders"
    ):
        open_bundle(bundle_dir)
    problems = verify_bundle(bundle_dir)
    assert any("is a symlink" in p for p in problems)
    assert not any("ONNX Runtime" in p for p in problems)  # an unsafe bundle is never loaded


def test_fifo_in_the_folder(bundle_dir: Path) -> None:
    os.mkfifo(bundle_dir / "pipe")
    with pytest.raises(UnsafeArchiveError, match="'pipe': is a fifo"):
        open_bundle(bundle_dir)


def test_swapped_model_no_longer_reproduces_samples(bundle_dir: Path) -> None:
    make_logreg_onnx(bundle_dir / "model.onnx", seed=7)  # same signature, other weights
    reseal(bundle_dir)
    open_bundle(bundle_dir)  # structurally intact...
    problems = verify_bundle(bundle_dir)  # ...but the model is not the one the samples recorded
    assert problems and all(p.startswith("samples: output '") for p in problems)
    assert any("'probabilities' no longer matches" in p and "largest difference" in p for p in problems)


def test_swapped_model_with_another_signature(bundle_dir: Path) -> None:
    make_identity_onnx(bundle_dir / "model.onnx", "FP32", shape=(-1, 4))
    reseal(bundle_dir)
    problems = verify_bundle(bundle_dir)
    assert any("signature differs from the manifest's" in p and "output FP32[-1, 4]" in p for p in problems)
    assert any("samples: output 'label' was not produced" in p for p in problems)


def test_corrupt_model(bundle_dir: Path) -> None:
    write_corrupt_onnx(bundle_dir / "model.onnx")
    reseal(bundle_dir)
    problems = verify_bundle(bundle_dir)
    assert problems and all("not a readable ONNX model" in p for p in problems)


def test_model_onnx_runtime_refuses(bundle_dir: Path) -> None:
    make_unknown_op_onnx(bundle_dir / "model.onnx")
    reseal(bundle_dir)
    problems = verify_bundle(bundle_dir)
    assert any("ONNX Runtime cannot load 'model.onnx'" in p for p in problems)


def test_samples_that_do_not_match_the_signature(bundle_dir: Path) -> None:
    write_samples(
        bundle_dir / "samples.npz",
        {"input": np.zeros((2, 5), dtype=np.float64)},
        {"label": np.zeros(2, dtype=np.int64)},
    )
    reseal(bundle_dir)
    problems = verify_bundle(bundle_dir)
    assert "samples: input 'input' has dtype float64, the signature says FP32" in problems
    assert "samples: input 'input' has shape [2, 5], the signature says [-1, 4] (-1 = any)" in problems
    assert "samples: output 'probabilities' is missing" in problems


def test_samples_needing_pickle_are_refused(bundle_dir: Path) -> None:
    np.savez(bundle_dir / "samples.npz", **{"input:input": np.array([{"a": 1}], dtype=object)})  # type: ignore[arg-type]
    reseal(bundle_dir)
    problems = verify_bundle(bundle_dir)
    assert any("only read with pickle" in p for p in problems)
    with pytest.raises(BundleError, match="pickle"):
        open_bundle(bundle_dir).samples()
