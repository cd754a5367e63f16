"""Crafted .mlbundle archives: each is rejected with a message naming the member and the rule,
and nothing is written outside the target (nor left inside it)."""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from mlplat_runtime.bundle import Limits, extract_archive, open_bundle, pack_archive, verify_bundle
from mlplat_runtime.bundle.safety import MAX_MEMBERS
from mlplat_runtime.errors import BundleError, UnsafeArchiveError
from tests.runtime.bundle.conftest import Member, bundle_members, file_member, special_member


def snapshot(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def assert_nothing_written(tmp_path: Path, before: set[str], dest: Path, names: tuple[str, ...] = ()) -> None:
    assert snapshot(tmp_path) == before, "extraction left files behind"
    assert list(dest.iterdir()) == []
    for name in names:  # where a traversal would have landed, beyond tmp_path
        assert not (tmp_path.parent / name).exists()
        assert not Path("/", name).exists()


CRAFTED: dict[str, tuple[Callable[[Path], Member], str]] = {
    "dotdot": (lambda t: file_member("../escaped.txt", b"x"), "escapes the bundle"),
    "dotdot-nested": (lambda t: file_member("sub/../../escaped.txt", b"x"), "escapes the bundle"),
    "dotdot-deep": (lambda t: file_member("../../../../../escaped.txt", b"x"), "escapes the bundle"),
    "absolute": (lambda t: file_member(str(t / "abs-escaped.txt"), b"x"), "absolute path"),
    "backslash": (lambda t: file_member("..\\escaped.txt", b"x"), "backslash"),
    "symlink-out": (lambda t: special_member("passwd", tarfile.SYMTYPE, "/etc/passwd"), "symlink"),
    "symlink-dir": (lambda t: special_member("sub", tarfile.SYMTYPE, str(t)), "symlink"),
    "hardlink-out": (lambda t: special_member("passwd", tarfile.LNKTYPE, "/etc/passwd"), "hard link"),
    "hardlink-in": (lambda t: special_member("copy.onnx", tarfile.LNKTYPE, "model.onnx"), "hard link"),
    "char-device": (lambda t: special_member("null", tarfile.CHRTYPE), "device file"),
    "block-device": (lambda t: special_member("disk", tarfile.BLKTYPE), "device file"),
    "fifo": (lambda t: special_member("pipe", tarfile.FIFOTYPE), "fifo"),
    "duplicate": (lambda t: file_member("model.onnx", b"replaced after the check"), "appears twice"),
    "file-over-folder": (lambda t: file_member("sub", b"x"), "a folder and a file share this path"),
}


@pytest.mark.parametrize("first", [False, True], ids=["last", "first"])
@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_crafted_member_is_rejected(
    case: str, first: bool, bundle_dir: Path, tmp_path: Path, craft: Callable[..., Path]
) -> None:
    make, rule = CRAFTED[case]
    evil = make(tmp_path)
    good = [*bundle_members(bundle_dir), file_member("sub/inner.txt", b"")]
    archive = craft([evil, *good] if first else [*good, evil])
    dest = tmp_path / "dest"
    dest.mkdir()
    before = snapshot(tmp_path)

    with pytest.raises(UnsafeArchiveError) as caught:
        extract_archive(archive, dest)
    message = str(caught.value)
    assert f"'{evil[0].name}" in message  # names the member (or the one it collides with)
    assert rule in message and "rule:" in message
    assert caught.value.hint
    assert_nothing_written(tmp_path, before, dest, ("escaped.txt",))

    with pytest.raises(UnsafeArchiveError):
        open_bundle(archive, extract_to=dest)
    assert_nothing_written(tmp_path, before, dest, ("escaped.txt",))

    problems = verify_bundle(archive)
    assert len(problems) == 1 and rule in problems[0]


def test_member_over_the_size_cap(bundle_dir: Path, tmp_path: Path, craft: Callable[..., Path]) -> None:
    archive = craft([*bundle_members(bundle_dir), file_member("big.bin", b"0" * 5000)])
    dest = tmp_path / "dest"
    dest.mkdir()
    before = snapshot(tmp_path)
    with pytest.raises(UnsafeArchiveError, match=r"'big.bin'.*5000 bytes.*member size is capped"):
        extract_archive(archive, dest, limits=Limits(max_member_bytes=4096))
    assert_nothing_written(tmp_path, before, dest)
    # the same archive is fine under the default caps, up to the unlisted file
    assert verify_bundle(archive) == [
        "bundle member 'big.bin': not listed in the manifest (rule: no unlisted files)"
    ]


def test_total_size_cap(bundle_dir: Path, tmp_path: Path, craft: Callable[..., Path]) -> None:
    archive = craft(bundle_members(bundle_dir))
    dest = tmp_path / "dest"
    dest.mkdir()
    before = snapshot(tmp_path)
    with pytest.raises(UnsafeArchiveError, match="total size is capped"):
        extract_archive(archive, dest, limits=Limits(max_total_bytes=1000))
    assert_nothing_written(tmp_path, before, dest)
    with pytest.raises(UnsafeArchiveError, match="total size is capped"):
        open_bundle(bundle_dir, limits=Limits(max_total_bytes=1000))


def test_too_many_members_with_the_default_cap(
    bundle_dir: Path, tmp_path: Path, craft: Callable[..., Path]
) -> None:
    filler = [file_member(f"f/{i:05d}", b"") for i in range(MAX_MEMBERS)]
    archive = craft([*bundle_members(bundle_dir), *filler])
    dest = tmp_path / "dest"
    dest.mkdir()
    before = snapshot(tmp_path)
    with pytest.raises(UnsafeArchiveError, match=f"more than {MAX_MEMBERS} members.*member count is capped"):
        extract_archive(archive, dest)
    assert_nothing_written(tmp_path, before, dest)
    with pytest.raises(UnsafeArchiveError, match="member count is capped"):
        extract_archive(
            craft(bundle_members(bundle_dir), name="ok.mlbundle"), dest, limits=Limits(max_members=2)
        )


def test_not_an_archive(tmp_path: Path, bundle_dir: Path) -> None:
    junk = tmp_path / "junk.mlbundle"
    junk.write_bytes(b"\x1f\x8b definitely not gzip" * 20)
    good = pack_archive(bundle_dir, tmp_path / "good.mlbundle")
    truncated = tmp_path / "truncated.mlbundle"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    dest = tmp_path / "dest"
    dest.mkdir()
    for bad in (junk, truncated):
        with pytest.raises(BundleError, match="not a readable") as caught:
            extract_archive(bad, dest)
        assert not isinstance(caught.value, UnsafeArchiveError)
        assert list(dest.iterdir()) == []
        assert verify_bundle(bad) and "not a readable" in verify_bundle(bad)[0]


def test_archive_with_a_top_folder_and_dot_slash_names(bundle_dir: Path, tmp_path: Path) -> None:
    wrapped = tmp_path / "wrapped.mlbundle"
    dotted = tmp_path / "dotted.mlbundle"
    with tarfile.open(wrapped, "w:gz") as tar:
        tar.add(bundle_dir, arcname="churn-3")
    with tarfile.open(dotted, "w") as tar:  # plain tar, "./" names, as `tar -C dir -cf x .` writes
        tar.add(bundle_dir, arcname=".")
    for archive in (wrapped, dotted):
        opened = open_bundle(archive, extract_to=tmp_path / "out")
        assert opened.extracted and opened.root.parent == tmp_path / "out"
        assert opened.manifest.version == "3"
        assert (opened.root / "manifest.json").is_file()
        assert verify_bundle(archive) == []


def test_external_data_outside_is_rejected_in_archives(
    bundle_dir: Path, tmp_path: Path, craft: Callable[..., Path]
) -> None:
    from tests.helpers.models import make_external_data_onnx
    from tests.runtime.bundle.conftest import reseal

    (tmp_path / "secret.bin").write_bytes(b"\0" * 16)  # what the crafted model points at
    make_external_data_onnx(bundle_dir / "model.onnx", location="../secret.bin")
    reseal(bundle_dir)
    archive = craft(bundle_members(bundle_dir))
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(
        UnsafeArchiveError, match=r"tensor 'W'.*'\.\./secret\.bin'.*external data must stay inside"
    ):
        open_bundle(archive, extract_to=dest)
    assert list(dest.iterdir()) == []
