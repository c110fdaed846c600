"""Float64 on the JAX backend.

Two things stop a Keras model built with ``dtype="float64"`` from computing in float64
on JAX, both silently:

- JAX holds float32 arrays only unless ``jax_enable_x64`` is on;
- Keras (3.15) maps every promoted 64-bit dtype to 32 bits on JAX
  (``keras.src.backend.common.dtypes.BIT64_TO_BIT32_DTYPE``, "to be aligned with JAX's
  default behavior"), so ``ops.tanh`` or ``ops.floor`` of a float64 tensor returns
  float32 even with x64 on (keras-team/keras PR #23225 fixes this in later versions).

:func:`enable_float64` turns x64 on and makes Keras keep float64 as JAX then does.
float32 models are unaffected: Keras casts their inputs and weights to float32 itself.
Model builders and layers that are asked for float64 call it.
"""

from __future__ import annotations

import os


def enable_float64() -> None:
    """Allow float64 arrays on the JAX backend (no-op on other backends).

    Example:
        >>> enable_float64()
        >>> import keras
        >>> keras.layers.Dense(2, dtype="float64").build((None, 3))
    """
    if os.environ.get("KERAS_BACKEND", "jax") != "jax":
        return
    import jax

    if not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)
    try:
        from keras.src.backend.common import dtypes
    except ImportError:  # a Keras without the table: nothing to undo
        return
    table = getattr(dtypes, "BIT64_TO_BIT32_DTYPE", None)
    if isinstance(table, dict) and table.get("float64") == "float32":
        table["float64"] = "float64"


def is_float64(dtype) -> bool:
    """True for ``"float64"``, ``numpy.float64`` or a Keras dtype policy of float64."""
    name = getattr(dtype, "compute_dtype", None) or getattr(dtype, "name", None) or str(dtype)
    return "float64" in str(name)


def disable_float64() -> None:
    """Undo :func:`enable_float64` (JAX's and Keras's 32-bit defaults again).

    For test suites that must not leak 64-bit mode into later tests; float64 models
    built before compute in float32 afterwards.
    """
    if os.environ.get("KERAS_BACKEND", "jax") != "jax":
        return
    import jax

    if jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", False)
    try:
        from keras.src.backend.common import dtypes
    except ImportError:
        return
    table = getattr(dtypes, "BIT64_TO_BIT32_DTYPE", None)
    if isinstance(table, dict) and table.get("float64") == "float64":
        table["float64"] = "float32"
