"""mlplat control plane: the CLI, project config, training, tracking, gates, stack backends,
the dev loop and (in ``ui/`` only) the Textual dashboard.

Only ``mlplat_tui.ui`` may import textual; heavy libraries (mlflow, docker, onnxruntime,
textual) are imported inside the functions that use them so ``mlplat --help`` stays fast.
"""

__version__ = "0.1.0"
