"""The tests' port helper never hands out the same port twice (tests/helpers/ports.py)."""

from __future__ import annotations

import pytest

from tests.helpers import ports


def test_ports_handed_out_are_never_handed_out_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ports, "_HANDED", set())  # this test's picks stay out of the others' way
    # 400 bases of 4 among ~3,000 slots: without the memory, a repeat is all but certain
    seen: set[int] = set()
    for _ in range(400):
        base = ports.free_port_base()
        picked = set(range(base, base + 4))
        assert seen.isdisjoint(picked)
        seen |= picked
    assert ports.free_port() not in seen
