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
from mlnnkit.errors import Interrupted, MlnnkitError, UserError, VerificationError

# Keras finds mlnnkit's layers (saved in .keras files of imported networks) once it is
# imported, without `import mlnnkit` importing Keras itself.
_keras_hook.install()

#: The public names, imported on first use (``import mlnnkit`` stays cheap, and so does
#: ``mlnnkit --help``): name -> (module, attribute, or None for the module itself).
_LAZY = {
    "chain": ("mlnnkit.retrieval", "chain"),
    "errors": ("mlnnkit.errors", None),
    "export": ("mlnnkit.export", None),
    "finetune": ("mlnnkit.finetune", None),
    "io_names": ("mlnnkit.models", "io_names"),
    "layers": ("mlnnkit.layers", None),
    "legacy": ("mlnnkit.legacy", None),
    "load_model": ("mlnnkit.models", "load_model"),
    "predict_array": ("mlnnkit.predict", "predict_array"),
    "retrieval": ("mlnnkit.retrieval", None),
    "train": ("mlnnkit.train", None),
    "tune": ("mlnnkit.tune", None),
}

# Every name of _LAZY is spelled out (tools read __all__ without running it);
# tests/test_api.py checks that __all__, dir() and the attributes agree.
__all__ = [
    "Interrupted",
    "MlnnkitError",
    "UserError",
    "VerificationError",
    "__version__",
    "chain",
    "errors",
    "export",
    "finetune",
    "float64",
    "io_names",
    "layers",
    "legacy",
    "load_model",
    "predict_array",
    "retrieval",
    "train",
    "tune",
]


def float64() -> None:
    """Switch this process to float64 support: JAX's 64-bit mode, and Keras keeping
    float64 results on JAX. Needed to build, load or train float64 models; float32
    models compute as before. mlnnkit never switches it on silently: where it must (a
    float64 model loaded or built, an import falling back to float64), it says so in a
    note. There is no switch back: decide per process.

    Example:
        >>> import mlnnkit, keras
        >>> mlnnkit.float64()
        >>> str(keras.layers.Dense(1, dtype="float64")(keras.ops.ones((1, 2), "float64")).dtype)
        'float64'
    """
    from mlnnkit._precision import enable_float64

    enable_float64()


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = importlib.import_module(module)
        return value if attr is None else getattr(value, attr)
    raise AttributeError(f"module 'mlnnkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    # What a user may import (and the module's own dunders), not the helpers above.
    return sorted(set(__all__) | {n for n in globals() if n.startswith("__")})
