"""mlnnkit: build, train, tune, port and fine-tune small neural networks on Keras 3.

Importing mlnnkit selects the JAX backend for Keras unless ``KERAS_BACKEND`` is already
set (it must happen before Keras is first imported; if you import keras yourself first,
set ``KERAS_BACKEND=jax`` in the environment instead).

The centre of everything is a plain ``keras.Model``: importers return one, training,
fine-tuning, tuning and prediction take one, exporters write one back to a legacy file.
"""

from __future__ import annotations

import os

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
