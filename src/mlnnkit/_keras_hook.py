"""Register mlnnkit's Keras layers the moment Keras is imported, without importing it.

A ``.keras`` file of an imported network names ``mlnnkit>InputScaling``; Keras finds it
only if :mod:`mlnnkit.layers` has run. Importing Keras eagerly in ``import mlnnkit``
would cost seconds on every ``mlnnkit --help``, so :func:`install` instead imports
:mod:`mlnnkit.layers` right after Keras itself is first imported (or at once, when Keras
is already loaded). Then ``import mlnnkit; keras.saving.load_model("net.keras")`` works.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys


def _register() -> None:
    try:
        importlib.import_module("mlnnkit.layers")
        importlib.import_module("mlnnkit.retrieval._layers")  # chains and flags
    except Exception as e:  # noqa: BLE001 - never break `import keras` because of mlnnkit
        import warnings

        warnings.warn(f"mlnnkit could not register its Keras layers: {e}", stacklevel=2)


class _Loader(importlib.abc.Loader):
    """Wraps Keras's own loader; runs :func:`_register` after Keras has executed."""

    def __init__(self, inner: importlib.abc.Loader) -> None:
        self.inner = inner

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module) -> None:
        self.inner.exec_module(module)
        _register()

    def __getattr__(self, name: str):
        # Everything else (get_resource_reader, is_package, get_data, ...) is Keras's own.
        return getattr(self.inner, name)


class _AfterKerasImport(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != "keras":
            return None
        uninstall()
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader)
        return spec


def uninstall() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _AfterKerasImport)]


def install() -> None:
    """Register the layers now if Keras is loaded, else right after it is imported."""
    if "keras" in sys.modules:
        _register()
    elif not any(isinstance(f, _AfterKerasImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterKerasImport())
