"""Fakes of the control plane's client protocols (``mlplat_tui.clients.protocols``).

Each is named ``Fake*`` and honours the real client's contract: the same suite
(``tests/mlplat_tui/clients/test_contracts.py``) runs against the fake and the real service.
The fast test tier gives them to the cycle and the deploy use case instead of a started stack.
"""

from tests.fakes.clients import FakeConnector, FakeMetadata, FakeServingAdmin, FakeTracker, fake_clients

__all__ = ["FakeConnector", "FakeMetadata", "FakeServingAdmin", "FakeTracker", "fake_clients"]
