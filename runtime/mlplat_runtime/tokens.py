"""Bearer-token files: the serving admin port and the metadata service's writes use them.

A token file is a secret on a shared machine, so reading one trusts nothing about the path:

- opened with ``O_NOFOLLOW`` (a symlink planted at the path is refused, never followed, and
  nothing is chmod-ed through it) and ``O_NONBLOCK`` (a fifo cannot hang the service);
- it must be a regular file owned by the user running the service: a file someone else
  created (say, in a shared folder, holding a token they know) is refused;
- group/other permission bits are taken back through the open descriptor (``fchmod``);
- the token must be at least ``MIN_TOKEN_CHARS`` characters: a 4-byte token is guessable.

A missing file is created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` and mode 0600 in a 0700 folder,
holding ``secrets.token_urlsafe(32)`` (43 characters).

Standard library only; both planes import it.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from mlplat_runtime.errors import UsageError

MIN_TOKEN_CHARS = 32
MAX_TOKEN_BYTES = 4096


def read_token_file(path: Path) -> str:
    """The token in ``path``; UsageError (with what to do) when the file cannot be trusted."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if os.path.islink(path):
            raise UsageError(
                f"the token file {path} is a symlink; refusing to follow it",
                hint="replace it with a regular file (delete it to have a new token created)",
            ) from None
        raise UsageError(f"cannot read the token file {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UsageError(f"the token file {path} is not a regular file", hint="delete it")
        if info.st_uid != os.geteuid():
            raise UsageError(
                f"the token file {path} belongs to uid {info.st_uid}, not to this user ({os.geteuid()})",
                hint="someone else may know the token: delete the file to have a new one created",
            )
        if info.st_mode & 0o077:
            os.fchmod(fd, 0o600)  # through the descriptor: never a path that could be swapped
        raw = os.read(fd, MAX_TOKEN_BYTES + 1)
    finally:
        os.close(fd)
    if len(raw) > MAX_TOKEN_BYTES:
        raise UsageError(f"the token file {path} is over {MAX_TOKEN_BYTES} bytes", hint="delete it")
    token = raw.decode("utf-8", errors="replace").strip()
    if not token:
        raise UsageError(f"the token file {path} is empty", hint="delete it to have a new token created")
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() or not c.isprintable() for c in token):
        raise UsageError(
            f"the token in {path} is too weak: at least {MIN_TOKEN_CHARS} printable characters, no spaces",
            hint="delete the file to have a strong token created",
        )
    return token


def ensure_token_file(path: Path) -> str:
    """Read the token in ``path``, or create the file with a new token when it is missing."""
    path = Path(path)
    try:
        return read_token_file(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:  # another process created it first (or a link is there): check theirs
        return read_token_file(path)
    except OSError as exc:
        raise UsageError(f"cannot create the token file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(token + "\n")
    return token
