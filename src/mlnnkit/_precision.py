"""Float64 on the JAX backend.

Two things stop a Keras model built with ``dtype="float64"`` from computing in float64
on JAX, both silently:

- JAX holds float32 arrays only unless ``jax_enable_x64`` is on;
- Keras (3.15) maps every promoted 64-bit dtype to 32 bits on JAX
  (``keras.src.backend.common.dtypes.BIT64_TO_BIT32_DTYPE``, reached through
  :func:`mlnnkit._compat.bit64_to_bit32_table`; "to be aligned with JAX's
  default behavior"), so ``ops.tanh`` or ``ops.floor`` of a float64 tensor returns
  float32 even with x64 on (keras-team/keras PR #23225 fixes this in later versions).

:func:`enable_float64` turns x64 on and makes Keras keep float64 as JAX then does; the
public switch is :func:`mlnnkit.float64`. float32 models are unaffected: Keras casts their
inputs and weights to float32 itself. No layer constructor turns it on; where mlnnkit
must turn it on itself (building or loading a float64 model, an import falling back to
float64) it says so once, through :func:`note` (the ``mlnnkit.notes`` logger, which the
CLI prints as ``note: ...``).
"""

from __future__ import annotations

import logging
import os

from mlnnkit import _compat

#: The logger of mlnnkit's one-line notices (float64 switched on, an import falling back
#: to float64): shown as warnings in Python, printed as ``note: ...`` by the CLI.
NOTES = logging.getLogger("mlnnkit.notes")


def note(message: str) -> None:
    """Tell the user something mlnnkit did on its own (one line)."""
    NOTES.warning(message)


def float64_enabled() -> bool:
    """True when JAX's 64-bit mode is on (float64 models compute in float64)."""
    if os.environ.get("KERAS_BACKEND", "jax") != "jax":
        return False
    import jax

    return bool(jax.config.jax_enable_x64)


def enable_float64(reason: str | None = None) -> None:
    """Allow float64 arrays on the JAX backend (no-op on other backends).

    Args:
        reason: why mlnnkit turns it on by itself (default None: the user asked); when
            given and 64-bit mode was off, one note says so.

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
        if reason:
            note(f"{reason}: JAX's 64-bit mode is now on for this process")
    table = _compat.bit64_to_bit32_table()
    if table is not None and table.get("float64") == "float32":
        table["float64"] = "float64"


def is_float64(dtype) -> bool:
    """True for ``"float64"``, ``numpy.float64`` or a Keras dtype policy of float64."""
    name = getattr(dtype, "compute_dtype", None) or getattr(dtype, "name", None) or str(dtype)
    return "float64" in str(name)
