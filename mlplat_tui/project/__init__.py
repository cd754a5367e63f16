"""The project: ``mlplat.toml``, the ``.mlplat/`` state layout, lineage. The bottom layer: imports
no other control-plane package."""
