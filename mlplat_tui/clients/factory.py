"""The one factory of the real stack clients: given a project and where its services listen,
the tracker, metadata and serving admin clients that answer now (each ``None`` when not).

Health is asked of each service over HTTP every time (a few loopback requests, milliseconds):
a cached answer had reported "tracked" for 30 s after the tracker was gone. The metadata
service is asked which project it serves (``check_identity``) before anything is used: a stack
of another project on the same ports must never receive this project's runs. Serving is asked
too (on its inference port; the admin port has no ``/identity``) before the admin client is
used, and the tracker, which cannot say whose it is, is used only when the metadata service
confirmed that the stack on these ports is this project's.

Takes the service URLs (``Endpoints``), not a stack backend: ``mlplat_tui.stack`` imports the
clients (to name who holds a port), so the clients must not import the stack. Imports httpx
and the client modules; mlflow only when a tracker answers.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from mlplat_runtime.errors import MlplatError
from mlplat_tui.clients.identity import check_identity, fetch_identity, foreign_stack_error, is_ours
from mlplat_tui.clients.protocols import MetadataApi, ServingAdminApi, TrackerApi
from mlplat_tui.project.config import Project


class _HasUrls(Protocol):
    def url(self, service: str) -> str: ...


@dataclass(frozen=True)
class Endpoints:
    """Where the services of one stack answer, and the serving admin token's file.

    ``serving`` (the inference port) and ``project`` let ``connect_admin`` ask serving whose it
    is before the admin client is used; without them it is not asked.
    """

    tracker: str
    metadata: str
    admin: str
    admin_token: Path
    serving: str = ""
    project: Project | None = field(default=None, compare=False)

    @classmethod
    def of(cls, project: Project, ports: _HasUrls) -> Endpoints:
        """From a backend's ``Ports`` (anything with ``url(service)``)."""
        return cls(
            tracker=ports.url("tracker"),
            metadata=ports.url("metadata"),
            admin=ports.url("admin"),
            admin_token=project.paths.admin_token,
            serving=ports.url("serving"),
            project=project,
        )


@dataclass
class StackClients:
    """The clients a cycle is given; a ``None`` client is a service that is not up."""

    tracker: TrackerApi | None = None
    metadata: MetadataApi | None = None
    admin: ServingAdminApi | None = None
    notes: tuple[str, ...] = field(default=())  # why a service is absent, for the cycle's event

    def close(self) -> None:
        """Close the HTTP clients (a dev loop reconnects; its old pools must not pile up)."""
        for client in (self.tracker, self.metadata, self.admin):
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()


def check_stack_identity(metadata_url: str, project: Project) -> bool:
    """True when the service at ``metadata_url`` says it is this project's, False when it does
    not say (down, or no identity); raise ``StackError`` when it serves another project."""
    holder = fetch_identity(metadata_url)
    if holder is None:
        return False
    if not is_ours(holder, project):
        raise foreign_stack_error(metadata_url, holder, project)
    return True


def _open_metadata(project: Project, url: str) -> tuple[MetadataApi | None, bool]:
    """The metadata client when the service answers (None when it is down), and whether it
    confirmed that it is this project's. Raises ``StackError`` when it is another project's."""
    from mlplat_tui.clients.metadata import MetadataClient

    client = MetadataClient(url, token_file=project.paths.metadata_token)  # writes need the metadata token
    if not client.health():
        client.close()
        return None, False
    try:
        confirmed = check_stack_identity(url, project)
    except BaseException:
        client.close()
        raise
    return client, confirmed


def connect_metadata(project: Project, url: str) -> MetadataApi | None:
    """The metadata client when the service answers for this project; None when it is down.

    Raises ``StackError`` when it answers for another project.
    """
    return _open_metadata(project, url)[0]


def connect_admin(endpoints: Endpoints, *, check: bool = True) -> ServingAdminApi | None:
    """The serving admin client when the admin port answers; None when it does not.

    Raises ``StackError`` when serving (asked on its inference port, unless ``check`` is False:
    the caller asked already) answers for another project: its admin must never load our bundles.
    """
    from mlplat_tui.clients.serving import ServingAdmin

    if check and endpoints.serving and endpoints.project is not None:
        check_identity(endpoints.serving, endpoints.project)
    if not endpoints.admin_token.exists():
        return None
    try:
        admin = ServingAdmin.from_token_file(endpoints.admin, endpoints.admin_token)
    except MlplatError:
        return None
    if not admin.health():
        admin.close()
        return None
    return admin


def connect_tracker(project: Project, uri: str) -> tuple[TrackerApi | None, str]:
    """The MLflow client when the tracker answers (None and why when it does not)."""
    from mlplat_tui.clients.tracker import Tracker, tracker_answers

    if not tracker_answers(uri):
        return None, f"the tracker at {uri} is not answering"
    try:
        return Tracker(uri, project.name), ""
    except MlplatError as exc:
        return None, exc.message


def connect_clients(project: Project, endpoints: Endpoints) -> StackClients:
    """The real clients of every service that answers now (the caller closes them).

    Raises ``StackError`` (from ``check_identity``) when the services on these ports belong
    to another project; nothing is connected then.
    """
    return StackConnector(project, endpoints).connect()


class ClientSource(Protocol):
    """Where a cycle gets its clients, asked once per cycle (services come and go)."""

    def connect(self) -> StackClients: ...

    def close(self) -> None: ...


@dataclass
class FixedClients:
    """Always the same clients (tests hand the fakes this way; nothing is probed)."""

    clients: StackClients

    def connect(self) -> StackClients:
        return self.clients

    def close(self) -> None:
        self.clients.close()


class StackConnector:
    """The real clients of one stack, probed before every cycle and kept between cycles.

    Keeping the objects matters for the tracker (its first use imports mlflow and looks the
    experiment up); probing each time is what tells a tracker that went away from one that
    answers. Raises ``StackError`` when the ports answer for another project.
    """

    def __init__(self, project: Project, endpoints: Endpoints) -> None:
        self.project = project
        self.endpoints = endpoints
        self._tracker: TrackerApi | None = None
        self._metadata: MetadataApi | None = None
        self._admin: ServingAdminApi | None = None

    def connect(self) -> StackClients:
        from mlplat_tui.clients.tracker import tracker_answers

        e, notes = self.endpoints, []
        if self._metadata is not None and self._metadata.health():
            # the stack may have been swapped under us
            confirmed = check_stack_identity(e.metadata, self.project)
            metadata: MetadataApi | None = self._metadata
        else:
            self._drop("_metadata")
            metadata, confirmed = _open_metadata(self.project, e.metadata)
            self._metadata = metadata
        if metadata is None:
            notes.append(f"the metadata service at {e.metadata} is not answering")
        if e.serving:
            check_identity(e.serving, self.project)  # before the admin client is used, every time
        if not confirmed:
            # The tracker cannot say whose it is: another project's may hold the port.
            self._drop("_tracker")
            notes.append(
                f"the tracker at {e.tracker} is not used: the metadata service did not confirm "
                "that the stack on these ports is this project's"
            )
        elif self._tracker is None or not tracker_answers(e.tracker):
            self._drop("_tracker")
            self._tracker, why = connect_tracker(self.project, e.tracker)
            if self._tracker is None:
                notes.append(why)
        if self._admin is None or not self._admin.health():
            self._drop("_admin")
            self._admin = connect_admin(e, check=False)
            if self._admin is None:
                notes.append(f"serving admin at {e.admin} is not answering")
        return StackClients(tracker=self._tracker, metadata=metadata, admin=self._admin, notes=tuple(notes))

    def _drop(self, name: str) -> None:
        client = getattr(self, name)
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()
        setattr(self, name, None)

    def close(self) -> None:
        for name in ("_tracker", "_metadata", "_admin"):
            self._drop(name)
