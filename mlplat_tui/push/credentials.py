"""A target's credentials, read at push time from the reference in ``mlplat.toml``.

``[targets.NAME] credentials`` is ``{ env = "VAR" }`` or ``{ file = "PATH" }`` (never the secret:
``project/targets.py`` refuses that). The value is ``user:password`` (basic auth: the target
MLflow's basic-auth app, a docker registry's htpasswd) or a bare token. A file must be a regular
file of ours, mode 0600 (no group or other bits), outside the project folder; anything else is
refused before the value is read. The secret is never logged, printed or put in an error: the
``Credentials`` repr hides it.

Imports the standard library, the runtime's errors and ``project.targets`` only.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from mlplat_runtime.errors import TargetError, UsageError
from mlplat_tui.project.targets import CREDENTIALS_HINT, CredentialRef

MAX_BYTES = 8192


@dataclass(frozen=True)
class Credentials:
    """``username`` None: a bare token (bearer); else basic auth with ``secret`` as the password."""

    username: str | None
    secret: str = field(repr=False)
    source: str = ""  # "env MLPLAT_PROD_TOKEN" / "file ~/.config/mlplat/prod.token": for messages

    def __repr__(self) -> str:  # never the secret, in a traceback or a log line
        who = f"user {self.username}" if self.username else "token"
        return f"Credentials({who} from {self.source or 'given'})"

    @property
    def basic(self) -> tuple[str, str] | None:
        return (self.username, self.secret) if self.username is not None else None


def parse_value(value: str, source: str = "") -> Credentials:
    """``user:password`` -> basic auth; anything else (no ``:``) -> a bare token."""
    value = value.strip()
    if not value:
        raise UsageError(f"the credentials in {source or 'the reference'} are empty", hint=CREDENTIALS_HINT)
    if "\n" in value or "\r" in value:
        raise UsageError(
            f"the credentials in {source or 'the reference'} hold more than one line",
            hint="one line: user:password, or a token",
        )
    user, sep, password = value.partition(":")
    if sep and user and password:
        return Credentials(username=user, secret=password, source=source)
    if sep:
        raise UsageError(
            f"the credentials in {source or 'the reference'} look like user:password with a part missing",
            hint="write user:password, or a bare token",
        )
    return Credentials(username=None, secret=value, source=source)


def _read_file(path: Path, shown: str, project_root: Path) -> str:
    resolved = path.resolve()
    if resolved.is_relative_to(project_root.resolve()):
        raise UsageError(
            f"the credentials file {shown} is inside the project {project_root}: it would be committed",
            hint=CREDENTIALS_HINT,
        )
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise TargetError(f"the credentials file {shown} does not exist", hint=CREDENTIALS_HINT) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UsageError(
                f"the credentials file {shown} is a symbolic link",
                hint="point the reference at the file itself",
            ) from None
        raise TargetError(f"cannot open the credentials file {shown}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"the credentials file {shown} is not a regular file")
        if st.st_uid != os.getuid():
            raise UsageError(
                f"the credentials file {shown} belongs to another user (uid {st.st_uid})",
                hint="keep your own copy, owned by you",
            )
        if st.st_mode & 0o077:
            raise UsageError(
                f"the credentials file {shown} is readable by others (mode {st.st_mode & 0o777:o})",
                hint=f"chmod 600 {shown}",
            )
        data = os.read(fd, MAX_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_BYTES:
        raise UsageError(f"the credentials file {shown} is larger than {MAX_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"the credentials file {shown} is not UTF-8 text") from None


def resolve_credentials(ref: CredentialRef | None, project_root: Path) -> Credentials | None:
    """The credentials ``ref`` points at (None when the target has none). Raises ``TargetError``
    when the variable or file is missing, ``UsageError`` when the file is unsafe to use."""
    if ref is None:
        return None
    if ref.env is not None:
        value = os.environ.get(ref.env)
        if value is None:
            raise TargetError(
                f"the environment variable {ref.env} (this target's credentials) is not set",
                hint=f"export {ref.env}=user:password (or a token) before pushing",
            )
        return parse_value(value, f"env {ref.env}")
    assert ref.file is not None
    path = Path(ref.file).expanduser()
    if not path.is_absolute():
        path = project_root / path
    return parse_value(_read_file(path, ref.file, project_root), f"file {ref.file}")
