"""The metadata service: the one process that owns the DuckDB file of runs, bundles, gates,
deployments and events, behind an HTTP API.

``records`` (pydantic, shared with the control-plane client), ``schema`` (versioned migrations),
``store`` (the only code that opens DuckDB), ``readonly`` (the guard of ``mlplat sql``),
``service`` (ASGI routes), ``__main__`` (``python -m mlplat_runtime.metadata``).

Kept import-free on purpose: the client imports ``records`` and must not pull in duckdb.
"""
