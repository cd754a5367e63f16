"""Token files trust nothing about their path: no symlinks followed (or chmod-ed through), the
owner checked, a long token required; a missing file is created private."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mlplat_runtime.errors import UsageError
from mlplat_runtime.serving.admin import ensure_admin_token
from mlplat_runtime.tokens import MIN_TOKEN_CHARS, ensure_token_file, read_token_file

STRONG = "s" * MIN_TOKEN_CHARS


def test_a_symlink_at_the_token_path_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    target = tmp_path / "someone-elses-file"
    target.write_text(STRONG + "\n")
    target.chmod(0o644)
    link = tmp_path / "state" / "admin.token"
    link.parent.mkdir()
    link.symlink_to(target)
    with pytest.raises(UsageError, match="is a symlink; refusing to follow it"):
        ensure_admin_token(link)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # not chmod-ed through the link
    dangling = tmp_path / "state" / "dangling.token"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(UsageError, match="symlink"):
        ensure_token_file(dangling)
    assert not (tmp_path / "nowhere").exists()  # O_EXCL | O_NOFOLLOW: nothing created at the target


def test_a_short_token_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "admin.token"
    path.write_text("abcd\n")
    path.chmod(0o600)
    with pytest.raises(UsageError, match=f"too weak: at least {MIN_TOKEN_CHARS} printable"):
        read_token_file(path)


def test_a_file_of_another_owner_is_refused(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        path, owner = tmp_path / "admin.token", 4242
        path.write_text(STRONG)
        path.chmod(0o600)
        os.chown(path, owner, owner)
    else:  # without root no file can be given away: one that root owns stands in for it
        path, owner = Path("/etc/passwd"), 0
    with pytest.raises(UsageError, match=f"belongs to uid {owner}, not to this user"):
        read_token_file(path)


def test_a_fifo_does_not_hang_and_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "admin.token"
    os.mkfifo(path, 0o600)
    with pytest.raises(UsageError, match="not a regular file"):
        read_token_file(path)


def test_group_and_other_bits_are_taken_back(tmp_path: Path) -> None:
    path = tmp_path / "admin.token"
    path.write_text(STRONG)
    path.chmod(0o644)
    assert read_token_file(path) == STRONG
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_missing_file_is_created_private_with_a_long_token(tmp_path: Path) -> None:
    path = tmp_path / "new" / "metadata.token"
    token = ensure_token_file(path)
    assert len(token) >= 43 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert ensure_token_file(path) == token
