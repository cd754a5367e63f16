"""Guardrails: the gate kinds, their evaluation and the platform policy floors.

``ChampionUnknown`` is the agreed value for "the champion could not be looked up".
Keep this package's face light: ``project/config.py`` parses ``[gates]`` through ``gates.kinds``.
"""

from mlplat_tui.gates.champion import ChampionUnknown

__all__ = ["ChampionUnknown"]
