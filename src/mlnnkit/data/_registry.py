"""The data sources a run config can name in ``[data] source = ...``: one module each,
with its config model ``CONFIG`` and its ``load(src, seed=, base_dir=)``. Adding a source
is one new module and one entry in :data:`SOURCES`.
"""

from __future__ import annotations

from mlnnkit.data import auto_mpg, images, tables

SOURCES = (images, auto_mpg, tables)


def source_module(src):
    """The module of the source whose config ``src`` is."""
    for module in SOURCES:
        if isinstance(src, module.CONFIG):
            return module
    raise TypeError(f"no data source module for {type(src).__name__}")  # pragma: no cover
