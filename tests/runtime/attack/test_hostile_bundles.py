"""The standing corpus of hostile bundles: each is refused by ``verify_bundle`` (a list of
problems, never a traceback), by ``open_bundle`` (a ``BundleError``) and by serving's load (an
error from the one tree, the serving version unchanged), and none writes outside its folder.

Each entry is a function that spoils a good bundle the way a tool or an attacker would, resealing
the checksums where that hides the change from the cheap checks."""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from mlplat_runtime.bundle import build_bundle, open_bundle, verify_bundle
from mlplat_runtime.errors import BundleError, MlplatError
from mlplat_runtime.serving.repository import Repository
from tests.helpers.models import _save, make_bundle
from tests.runtime.bundle.conftest import reseal

CPU = ["CPUExecutionProvider"]


def _manifest(root: Path, **changes: object) -> None:
    doc = json.loads((root / "manifest.json").read_text())
    doc.update(changes)
    (root / "manifest.json").write_text(json.dumps(doc))


def _samples(root: Path, members: dict[str, bytes]) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    (root / "samples.npz").write_bytes(buf.getvalue())
    reseal(root)


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, allow_pickle=True)
    return buf.getvalue()


def nested_manifest(root: Path) -> str:
    (root / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    return "nested too deeply"


def nul_in_model_name(root: Path) -> str:
    _manifest(root, model_name="m\x00../../etc")
    return "model_name"


def traversal_version(root: Path) -> str:
    _manifest(root, version="../../x")
    return "version"


def huge_version(root: Path) -> str:
    _manifest(root, version="1" * 100_000)
    return "version"


def listed_outside(root: Path) -> str:
    doc = json.loads((root / "manifest.json").read_text())
    doc["files"]["../outside.txt"] = "sha256:" + "0" * 64
    (root / "manifest.json").write_text(json.dumps(doc))
    return "escapes the bundle"


def symlink_member(root: Path) -> str:
    os.symlink("/etc/passwd", root / "passwd")
    return "symlink"


def huge_npy_header(root: Path) -> str:
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 4), " + " " * 200_000 + "}\n"
    data = b"\x93NUMPY\x02\x00" + len(header).to_bytes(4, "little") + header.encode()
    _samples(root, {"input:input.npy": data + np.zeros((2, 4), np.float32).tobytes()})
    return ".npy header"


def pickled_samples(root: Path) -> str:
    _samples(root, {"input:input.npy": _npy(np.array([{"x": 1}], dtype=object))})
    return "pickle"


def samples_zip_bomb(root: Path) -> str:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("input:input.npy", b"\0" * (600 * 1024 * 1024))  # 600 MiB in ~600 KB
    (root / "samples.npz").write_bytes(buf.getvalue())
    reseal(root)
    return "cap for samples"


def not_npy_member(root: Path) -> str:
    _samples(root, {"input:input.npy": b"hello, not numpy"})
    return "not an .npy array"


def missing_output_sample(root: Path) -> str:
    with np.load(root / "samples.npz") as data:
        kept = {k: data[k] for k in data.files if k != "output:label"}
    _samples(root, {k + ".npy": _npy(v) for k, v in kept.items()})
    return "output 'label' is missing"


def truncated_model(root: Path) -> str:
    data = (root / "model.onnx").read_bytes()
    (root / "model.onnx").write_bytes(data[: len(data) // 2])
    reseal(root)
    return "model.onnx"


def tampered_model(root: Path) -> str:
    with (root / "model.onnx").open("ab") as fh:
        fh.write(b"\0")
    return "checksum differs"


CORPUS: dict[str, Callable[[Path], str]] = {
    f.__name__: f
    for f in (
        nested_manifest, nul_in_model_name, traversal_version, huge_version, listed_outside,
        symlink_member, huge_npy_header, pickled_samples, samples_zip_bomb, not_npy_member,
        missing_output_sample, truncated_model, tampered_model,
    )
}  # fmt: skip


@pytest.fixture(scope="module")
def serving(tmp_path_factory: pytest.TempPathFactory) -> object:
    root = tmp_path_factory.mktemp("serving")
    repo = Repository(providers=CPU)  # the in-process load path: no check process to lean on
    repo.load(make_bundle(root, name="m", version="1"))
    yield repo
    repo.close()


@pytest.mark.parametrize("spoil", CORPUS.values(), ids=CORPUS.keys())
def test_a_hostile_bundle_is_refused_everywhere_and_writes_nothing(
    spoil: Callable[[Path], str], serving: Repository, tmp_path: Path
) -> None:
    root = make_bundle(tmp_path, name="m", version="2")
    why = spoil(root)
    before = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    problems = verify_bundle(root)
    assert problems and any(why in p for p in problems), problems
    try:  # refused when opened, or when its samples are read and checked
        _, _, sample_problems = open_bundle(root).checked_samples()
    except BundleError:
        pass
    else:
        assert sample_problems
    with pytest.raises(MlplatError) as err:
        serving.load(root, name="m")
    assert type(err.value).__name__ in (
        "BundleError",
        "UnsafeArchiveError",
        "ModelLoadError",
        "NotFoundError",
    )
    assert [m.version for m in serving.models()] == ["1"]  # still serving what it served
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == before


def test_a_huge_declared_input_shape_is_a_message_at_build(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    shape = [100_000, 100_000, 1000]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "wide",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
    )
    model = _save(graph, tmp_path / "src" / "model.onnx")
    with pytest.raises(BundleError, match=r"declares shape \[100000, 100000, 1000\]"):
        build_bundle(model, "wide", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["../up", "a\x00b", "x" * 200, ""])
def test_a_bad_name_is_refused_at_build(tmp_path: Path, name: str) -> None:
    from mlplat_runtime.errors import UsageError
    from tests.helpers.models import make_logreg_onnx

    model = make_logreg_onnx(tmp_path / "src" / "model.onnx")
    with pytest.raises(UsageError, match="is not allowed"):
        build_bundle(model, name, tmp_path / "out")
    with pytest.raises(UsageError, match="is not allowed"):
        build_bundle(model, "m", tmp_path / "out", version=name or "-")
    assert not (tmp_path / "out").exists()
