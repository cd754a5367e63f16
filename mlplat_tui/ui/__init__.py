"""The Textual dashboard: the whole local platform on one screen.

This package is the only part of ``mlplat_tui`` that imports textual. Its modules split as:

- ``snapshots.py``, ``promstats.py``, ``devstate.py``, ``actions.py``: plain typed values and pure
  logic (no textual, no I/O) that the widgets render and the tests check directly;
- ``data.py``: ``DashboardData``, the one adapter that talks to the stack backend, the metadata
  service, the serving runtime and bundles. Widgets never do I/O themselves;
- one module per screen or widget, each with its ``.tcss`` beside it; ``app.py`` only assembles
  screens, binds keys and routes messages.

Nothing here is imported by ``mlplat --help``: ``mlplat_tui.cli.ui`` imports it inside the command.
"""
