"""The one exception tree of mlplat, shared by both planes.

It lives in the data plane because the control plane may import the runtime but never the
other way round. ``mlplat_tui.errors`` re-exports it and adds nothing but control-plane
subclasses.

    MlplatError                     every error mlplat raises on purpose; .hint says what to do
    ├── UsageError                  bad command-line use or bad config      (CLI exit 2)
    │   └── ConfigError             names the file, the key and what was expected
    ├── BundleError                 a bundle that is malformed, tampered or unsafe
    │   └── UnsafeArchiveError      traversal, links, device files, caps exceeded
    ├── ModelLoadError              ONNX Runtime refused the model, warm-up or sample check failed
    ├── RequestError                a bad inference/API request               (HTTP 400)
    ├── NotFoundError               unknown model, run or bundle              (HTTP 404)
    ├── AuthError                   missing or wrong admin/push token         (HTTP 401)
    ├── ServiceError                a stack service is down, unreachable or failed to start
    │   └── StackError              up/down failed; what was started was stopped again
    ├── TrainingError               the training command failed (carries its output tail)
    ├── GateError                   gates could not be evaluated (not: a gate that failed)
    └── MetadataError               the metadata store refused a query (e.g. a write via sql)

The CLI prints ``str(error)`` (and the hint) to stderr and exits 1, or 2 for UsageError.
The TUI shows a toast or modal. HTTP layers map ``http_status``.
"""

from __future__ import annotations


class MlplatError(Exception):
    """Base of every error mlplat raises on purpose."""

    http_status = 500
    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class UsageError(MlplatError):
    http_status = 400
    exit_code = 2


class ConfigError(UsageError):
    """A config file is wrong: says which file, which key and what was expected."""

    def __init__(
        self, file: str, key: str, expected: str, *, got: object = None, hint: str | None = None
    ) -> None:
        got_part = f", got {got!r}" if got is not None else ""
        super().__init__(f"{file}: key '{key}': expected {expected}{got_part}", hint=hint)
        self.file = file
        self.key = key
        self.expected = expected


class BundleError(MlplatError):
    http_status = 400


class UnsafeArchiveError(BundleError):
    pass


class ModelLoadError(MlplatError):
    http_status = 400


class RequestError(MlplatError):
    http_status = 400


class NotFoundError(MlplatError):
    http_status = 404


class AuthError(MlplatError):
    http_status = 401


class ServiceError(MlplatError):
    http_status = 503


class StackError(ServiceError):
    pass


class TargetError(ServiceError):
    """A push target could not be reached or refused us (engine, registry, credentials):
    raised before anything on the target changed."""


class TrainingError(MlplatError):
    def __init__(self, message: str, *, output_tail: str = "", hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.output_tail = output_tail

    def __str__(self) -> str:
        base = super().__str__()
        return f"{base}\n--- training output (tail) ---\n{self.output_tail}" if self.output_tail else base


class GateError(MlplatError):
    pass


class MetadataError(MlplatError):
    http_status = 400
