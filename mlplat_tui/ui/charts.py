"""Small charts drawn with Unicode blocks: a sparkline over time, paired bars for two histograms.

Rich renderables (``Text``), no widget state: the Monitoring screen puts them in ``Static``s.
Third-party plot widgets were unreliable under Textual 8; block characters render the same in
every terminal and in snapshot SVGs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.text import Text

BLOCKS = " ▁▂▃▄▅▆▇█"
BAR_EIGHTHS = " ▏▎▍▌▋▊▉█"
MARK = "▲"


def _finite(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def sparkline(
    values: Sequence[float | None],
    *,
    width: int | None = None,
    top: float | None = None,
    threshold: float | None = None,
    style: str = "",
    over_style: str = "bold red",
) -> Text:
    """One row of blocks, one per value (the last ``width``); None draws a gap. Values at or over
    ``threshold`` get ``over_style``. ``top`` fixes the scale (default: the largest value)."""
    shown = list(values)[-width:] if width else list(values)
    finite = _finite(shown)
    scale = top if top is not None else (max(finite) if finite else 1.0)
    scale = scale if scale > 0 else 1.0
    text = Text()
    for v in shown:
        if v is None or not math.isfinite(float(v)):
            text.append(" ")
            continue
        level = min(len(BLOCKS) - 1, max(1, round(float(v) / scale * (len(BLOCKS) - 1))))
        over = threshold is not None and float(v) >= threshold
        text.append(BLOCKS[level], style=over_style if over else style)
    return text


def markers(flags: Sequence[bool], *, width: int | None = None, style: str = "bold yellow") -> Text:
    """A row under a sparkline with ``▲`` where a flag is set (a swap to a new version)."""
    shown = list(flags)[-width:] if width else list(flags)
    text = Text()
    for flag in shown:
        text.append(MARK if flag else " ", style=style if flag else "")
    return text


def bar(fraction: float, width: int) -> str:
    """A horizontal bar of ``fraction`` (0..1) of ``width`` cells, in eighths."""
    cells = max(0.0, min(1.0, fraction)) * width
    full = int(cells)
    rest = round((cells - full) * 8)
    if rest == 8:
        full, rest = full + 1, 0
    out = "█" * full + (BAR_EIGHTHS[rest] if rest and full < width else "")
    return out.ljust(width)


def paired_bars(
    labels: Sequence[str],
    training: Sequence[float],
    live: Sequence[float],
    *,
    width: int = 24,
    training_style: str = "blue",
    live_style: str = "magenta",
) -> Text:
    """Training vs live shares per slot, one line per slot: ``label  ███▌  ████▊  12.0% 15.3%``.

    Both sides are shares of their own totals, drawn on one scale (the largest share)."""
    t_total = sum(training) or 1.0
    l_total = sum(live) or 1.0
    t_share = [v / t_total for v in training]
    l_share = [v / l_total for v in live] if live else [0.0] * len(training)
    top = max([*t_share, *l_share, 1e-9])
    pad = max((len(lbl) for lbl in labels), default=0)
    text = Text()
    for i, label in enumerate(labels):
        t = t_share[i] if i < len(t_share) else 0.0
        lv = l_share[i] if i < len(l_share) else 0.0
        text.append(label.rjust(pad) + " ")
        text.append(bar(t / top, width), style=training_style)
        text.append(" ")
        text.append(bar(lv / top, width), style=live_style)
        text.append(f" {t * 100:5.1f}% {lv * 100:5.1f}%")
        if i < len(labels) - 1:
            text.append("\n")
    return text


def slot_labels(kind: str | None, edges: Sequence[float], categories: Sequence[str]) -> list[str]:
    """Names of a reference's slots (``drift`` layout): numeric underflow, bins, overflow,
    missing; categorical categories, other, missing."""
    if kind == "numeric" and len(edges) >= 2:
        inner = [f"{_short(edges[i])}…{_short(edges[i + 1])}" for i in range(len(edges) - 1)]
        return [f"<{_short(edges[0])}", *inner, f">{_short(edges[-1])}", "missing"]
    return [*categories, "other", "missing"]


def _short(value: float) -> str:
    return f"{value:.3g}"
