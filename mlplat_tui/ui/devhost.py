"""What the dashboard needs of the dev loop it hosts (``mlplat dev``): a small protocol, so the
screens and the app depend on it and not on ``mlplat_tui.devloop`` (nor on each other).

No textual and no I/O here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from mlplat_tui.events import EventSink


class DevLoopHandle(Protocol):
    """What the dashboard needs of ``mlplat_tui.devloop.loop.DevLoop``."""

    def start(self) -> None: ...

    def stop(self, timeout_s: float = ...) -> None: ...

    def trigger(self) -> None: ...

    @property
    def died(self) -> bool: ...


DevLoopFactory = Callable[["EventSink"], DevLoopHandle]
