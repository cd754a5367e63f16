"""Control-plane view of the one exception tree (see ``mlplat_runtime.errors``)."""

from mlplat_runtime.errors import (
    AuthError,
    BundleError,
    ConfigError,
    GateError,
    MetadataError,
    MlplatError,
    ModelLoadError,
    NotFoundError,
    RequestError,
    ServiceError,
    StackError,
    TrainingError,
    UnsafeArchiveError,
    UsageError,
)

__all__ = [
    "AuthError",
    "BundleError",
    "ConfigError",
    "GateError",
    "MetadataError",
    "MlplatError",
    "ModelLoadError",
    "NotFoundError",
    "RequestError",
    "ServiceError",
    "StackError",
    "TrainingError",
    "UnsafeArchiveError",
    "UsageError",
]
