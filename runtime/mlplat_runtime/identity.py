"""Which project a running service belongs to: what ``GET /identity`` answers.

Every project uses the same default ports (7800-7803), so a client that finds a metadata
service on 7801 cannot tell whether it is this project's or one left running by another:
the demo's stack once answered ``mlplat runs`` in a fresh project with the demo's runs. The
metadata and serving services are started with ``--project NAME --project-root DIR`` and
report them here; the control plane (``mlplat_tui.clients.identity``) compares them with the
project it works for before it reads or writes anything.

    GET /identity   {"project": "churn", "project_root": "/home/me/churn",
                     "service": "metadata", "pid": 4242, "started_at": 1714000000.0}

Served on the metadata port and on serving's inference port (not on the admin port: it needs
no token). Imports pydantic and the standard library only.
"""

from __future__ import annotations

import argparse
import os
import time

from pydantic import BaseModel, ConfigDict, Field

IDENTITY_PATH = "/identity"


class StackIdentity(BaseModel):
    """One service's answer; ``project_root`` is the project folder on the host that started it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    project: str = Field(min_length=1)
    project_root: str = Field(min_length=1)
    service: str = ""
    pid: int | None = None
    started_at: float | None = None  # epoch seconds

    def body(self) -> bytes:
        return self.model_dump_json().encode()


def add_identity_arguments(parser: argparse.ArgumentParser) -> None:
    """``--project NAME --project-root DIR`` (both or neither: a service without them answers
    ``/identity`` with 404, and clients then cannot tell whose it is)."""
    parser.add_argument("--project", default=None, help="the project this service belongs to")
    parser.add_argument(
        "--project-root", default=None, help="the project's folder on the host that started it"
    )


def identity_from_args(
    args: argparse.Namespace, service: str, parser: argparse.ArgumentParser
) -> StackIdentity | None:
    if (args.project is None) != (args.project_root is None):
        parser.error("--project and --project-root go together")
    if args.project is None:
        return None
    return StackIdentity(
        project=args.project,
        project_root=args.project_root,
        service=service,
        pid=os.getpid(),
        started_at=time.time(),
    )
