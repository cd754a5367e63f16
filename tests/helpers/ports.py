"""Free loopback ports for the servers tests start, outside the kernel's ephemeral range.

A port found free is only a promise until the server binds it, which for a stack is seconds
later (MLflow starts first). A port in the ephemeral range (``ip_local_port_range``, usually
32768-60999) can meanwhile become the local end of any outgoing connection on the machine,
and the server then fails with "Address already in use" (seen in CI: serving, started last,
lost its port to a connection the other test worker opened). Ports below that range are
handed out only by explicit binds, so tests pick theirs there.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOWEST = 20000
_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def ephemeral_low() -> int:
    """The first port the kernel hands out for outgoing connections (32768 when unknown)."""
    try:
        return int(_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# Ports this process has handed out: free until their server binds them (a stack's, seconds
# later), so a second pick must not land on them (seen in CI: a target's port_base equal to its
# project's stack ports, both picked before either was bound).
_HANDED: set[int] = set()


def free_port_base(width: int = 4) -> int:
    """A base port with ``width`` consecutive free ports after it, below the ephemeral range,
    none of them handed out before by this process."""
    high = max(LOWEST + 4 * width, ephemeral_low()) - width
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(LOWEST, high, 4)
        ports = range(base, base + width)
        if _HANDED.isdisjoint(ports) and all(_free(p) for p in ports):
            _HANDED.update(ports)
            return base
    raise RuntimeError(f"no {width} free consecutive ports found in {LOWEST}..{high + width}")


def free_port() -> int:
    """One free port, below the ephemeral range."""
    return free_port_base(1)
