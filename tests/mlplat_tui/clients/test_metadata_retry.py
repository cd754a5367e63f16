"""A kept-alive connection the metadata service closed as a request went out: reads are sent
again once on a new connection, writes are not (they may have landed). The transport is httpx's
own mock transport: it stands in for the network's failure, not for our service."""

from __future__ import annotations

import httpx
import pytest

from mlplat_runtime.errors import ServiceError
from mlplat_runtime.metadata.records import RunRecord
from mlplat_tui.clients.metadata import MetadataClient


def _flaky(answer: dict[str, object]) -> tuple[httpx.MockTransport, list[str]]:
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        if len(seen) == 1:
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            )
        return httpx.Response(200, json=answer)

    return httpx.MockTransport(handle), seen


def test_a_read_is_sent_again_once() -> None:
    transport, seen = _flaky({"rows": [[1]], "columns": ["x"], "truncated": False})
    with MetadataClient("http://127.0.0.1:1", transport=transport) as client:
        result = client.sql("SELECT 1")
    assert seen == ["POST /sql", "POST /sql"]
    assert result.rows == [[1]]


def test_a_write_is_not_sent_again() -> None:
    transport, seen = _flaky({})
    with (
        MetadataClient("http://127.0.0.1:1", transport=transport) as client,
        pytest.raises(ServiceError, match="cannot reach the metadata service"),
    ):
        client.record_run(RunRecord(run_id="r1", model_name="m"))
    assert seen == ["POST /runs"]
