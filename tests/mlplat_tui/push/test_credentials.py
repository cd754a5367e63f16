"""Credentials by reference: env or a 0600 file outside the project, never echoed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlplat_runtime.errors import TargetError, UsageError
from mlplat_tui.project.targets import CredentialRef
from mlplat_tui.push.credentials import parse_value, resolve_credentials

SECRET = "s3cret-value-that-must-never-show"


def test_user_password_is_basic_auth_and_a_bare_value_a_token() -> None:
    basic = parse_value(f"pusher:{SECRET}")
    assert (basic.username, basic.secret, basic.basic) == ("pusher", SECRET, ("pusher", SECRET))
    token = parse_value(SECRET)
    assert token.username is None and token.secret == SECRET and token.basic is None
    assert SECRET not in repr(basic) and SECRET not in repr(token) and SECRET not in str(basic)


def test_half_a_pair_an_empty_value_and_several_lines_are_refused_without_the_value() -> None:
    for bad in ("pusher:", f":{SECRET}", "  ", f"a:{SECRET}\nb:c"):
        with pytest.raises(UsageError) as err:
            parse_value(bad, "env X")
        assert SECRET not in str(err.value)


def test_env_reference(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MLPLAT_T_TOKEN", f"u:{SECRET}")
    got = resolve_credentials(CredentialRef(env="MLPLAT_T_TOKEN"), tmp_path)
    assert got is not None and got.username == "u" and got.source == "env MLPLAT_T_TOKEN"
    monkeypatch.delenv("MLPLAT_T_TOKEN")
    with pytest.raises(TargetError, match=r"MLPLAT_T_TOKEN.*not set"):
        resolve_credentials(CredentialRef(env="MLPLAT_T_TOKEN"), tmp_path)
    assert resolve_credentials(None, tmp_path) is None


def test_file_must_be_0600_ours_regular_and_outside_the_project(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    secret_dir = tmp_path / "home"
    secret_dir.mkdir()
    token = secret_dir / "prod.token"
    token.write_text(f"pusher:{SECRET}\n")
    token.chmod(0o644)
    with pytest.raises(UsageError, match="readable by others") as err:
        resolve_credentials(CredentialRef(file=str(token)), project)
    assert SECRET not in str(err.value)
    token.chmod(0o600)
    got = resolve_credentials(CredentialRef(file=str(token)), project)
    assert got is not None and got.username == "pusher" and got.secret == SECRET
    inside = project / "in.token"
    inside.write_text(SECRET)
    inside.chmod(0o600)
    with pytest.raises(UsageError, match="inside the project"):
        resolve_credentials(CredentialRef(file=str(inside)), project)
    link = secret_dir / "link.token"
    os.symlink(token, link)
    with pytest.raises(UsageError, match="symbolic link"):
        resolve_credentials(CredentialRef(file=str(link)), project)
    with pytest.raises(TargetError, match="does not exist"):
        resolve_credentials(CredentialRef(file=str(secret_dir / "none")), project)
