"""mlplat data plane: what runs inside the stack, locally and in production.

The bundle reader/verifier, the serving runtime (ONNX Runtime behind the Open Inference
Protocol v2) and the metadata service (the one process that owns the DuckDB file).

Must never import textual, mlflow, docker or mlplat_tui: the runtime image ships without them
(tests/runtime/test_imports.py checks this in a subprocess).
"""

__version__ = "0.1.0"
