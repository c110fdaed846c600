"""mlnnkit: build, train, tune, port and fine-tune small neural networks on Keras 3.

Importing mlnnkit selects the JAX backend for Keras unless ``KERAS_BACKEND`` is already
set. Keras picks its backend when it is first imported, so this works only if mlnnkit is
imported first: ``import keras`` before ``import mlnnkit`` fails with ``No module named
'tensorflow'`` (Keras's default backend, which mlnnkit does not use). Import mlnnkit
first, or set ``KERAS_BACKEND=jax`` in the environment. If Keras was already imported
with another backend and ``KERAS_BACKEND`` is not set, ``import mlnnkit`` raises an
``ImportError`` saying so.

The centre of everything is a plain ``keras.Model``: importers return one, training,
fine-tuning, tuning and prediction take one, exporters write one back to a legacy file.
"""

from __future__ import annotations

import os
import sys


def _check_keras_backend() -> None:
    # Keras imported before mlnnkit (with KERAS_BACKEND unset) runs on the backend of
    # ~/.keras/keras.json, not JAX: say so here rather than fail obscurely later.
    keras = sys.modules.get("keras")
    if keras is None or "KERAS_BACKEND" in os.environ:
        return
    try:
        backend = keras.backend.backend()
    except Exception:  # noqa: BLE001 - a half-imported Keras: it is imported again later
        return
    if backend != "jax":
        raise ImportError(
            f"Keras was imported before mlnnkit and runs on the {backend!r} backend; mlnnkit "
            "runs Keras on JAX: set KERAS_BACKEND=jax in the environment (or import mlnnkit "
            "before keras)"
        )


_check_keras_backend()
os.environ.setdefault("KERAS_BACKEND", "jax")

from mlnnkit import _keras_hook
from mlnnkit._version import __version__
from mlnnkit.errors import MlnnkitError, UserError

# Keras finds mlnnkit's layers (saved in .keras files of imported networks) once it is
# imported, without `import mlnnkit` importing Keras itself.
_keras_hook.install()

__all__ = ["MlnnkitError", "UserError", "__version__", "io_names"]


def __getattr__(name: str):
    # Lazy re-exports keep `import mlnnkit` (and so `mlnnkit --help`) cheap.
    if name == "layers":
        import importlib

        return importlib.import_module("mlnnkit.layers")
    if name == "legacy":
        import importlib

        return importlib.import_module("mlnnkit.legacy")
    if name == "io_names":
        from mlnnkit.models import io_names

        return io_names
    if name == "predict_array":
        from mlnnkit.predict import predict_array

        return predict_array
    raise AttributeError(f"module 'mlnnkit' has no attribute {name!r}")
