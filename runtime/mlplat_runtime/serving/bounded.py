"""The hot path's small caches (request targets, model routes, response templates, packers):
plain dicts read with ``get``, kept bounded by ``remember``.

Dropping the whole dict at the cap, instead of evicting one entry, keeps a hit at one dict
lookup; a client sending endless new keys costs what it would without the cache, and memory
stays at the cap. Under the GIL a lookup racing a ``clear`` sees an entry or none, never a
wrong one. Must not import textual, mlflow, docker or mlplat_tui.
"""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


def remember(cache: dict[K, V], key: K, value: V, cap: int) -> V:
    """``value`` kept under ``key``; at ``cap`` entries the cache is emptied first. Returns it."""
    if len(cache) >= cap:
        cache.clear()
    cache[key] = value
    return value
