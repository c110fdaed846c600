"""Every private Keras and JAX name mlnnkit touches, in one place.

The fast fit path (:mod:`mlnnkit.fastfit`) and float64 support (:mod:`mlnnkit._precision`)
rely on a few names Keras and JAX do not promise to keep. They are all reached through
this module, listed in :data:`PRIVATE_NAMES` and checked by one test
(``tests/test_compat.py``). The versions the fast path is tested on are
:data:`KERAS_TESTED` and :data:`JAX_TESTED` (the ranges ``pyproject.toml`` pins); outside
them :func:`version_reason` says why the fast path falls back to ``model.fit`` (it
becomes the run's ``engine_reason``).

Example:
    >>> from mlnnkit import _compat
    >>> _compat.missing()
    []
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from collections.abc import Iterator
from typing import Any

#: ``(lowest, first untested)`` versions of Keras and JAX the fast path is tested on.
KERAS_TESTED = ("3.8", "3.16")
JAX_TESTED = ("0.4.34", "0.11")

#: ``(module, attribute path)`` of each private name used; ``missing()`` checks them.
PRIVATE_NAMES: tuple[tuple[str, str], ...] = (
    ("keras", "Model._flatten_layers"),
    ("keras", "Model._symbolic_build"),
    ("keras.src.backend.common.dtypes", "BIT64_TO_BIT32_DTYPE"),
    ("jax._src.interpreters.mlir", "_platform_specific_lowerings"),
    ("jax._src.interpreters.mlir", "LoweringRuleEntry"),
    ("jax._src.random", "threefry2x32"),
    ("jax._src.random", "threefry2x32.threefry2x32_p"),
    ("jax._src.random", "threefry2x32._threefry2x32_lowering_rule"),
)

#: Private attributes Keras sets on a model instance (``compile``; ``BackupAndRestore``
#: sets ``_initial_epoch``, which Keras's JAX trainer reads in ``fit``).
INSTANCE_NAMES: tuple[str, ...] = ("_compile_metrics", "_compile_loss", "_initial_epoch")


def _resolve(module: str, path: str) -> Any:
    obj: Any = importlib.import_module(module)
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def missing(model=None) -> list[str]:
    """The private names of :data:`PRIVATE_NAMES` this Keras/JAX no longer has (and, given
    a compiled ``model``, those of :data:`INSTANCE_NAMES` it lacks)."""
    out = [f"model.{n}" for n in INSTANCE_NAMES if model is not None and not hasattr(model, n)]
    for module, path in PRIVATE_NAMES:
        try:
            _resolve(module, path)
        except (ImportError, AttributeError):
            out.append(f"{module}.{path}")
    return out


def _version_tuple(v: str) -> tuple[int, ...]:
    nums = []
    for part in v.split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        nums.append(int(digits))
    return tuple(nums)


def _outside(v: str, tested: tuple[str, str]) -> bool:
    lo, hi = (_version_tuple(t) for t in tested)
    return not lo <= _version_tuple(v) < hi


@functools.cache
def version_reason() -> str | None:
    """Why the fast path does not run on this Keras/JAX (``None`` when both are in the
    tested ranges :data:`KERAS_TESTED`, :data:`JAX_TESTED` and every private name exists)."""
    import jax
    import keras

    if _outside(keras.__version__, KERAS_TESTED):
        return (
            f"keras {keras.__version__} is outside the versions the fast path is tested on "
            f"(>={KERAS_TESTED[0]},<{KERAS_TESTED[1]})"
        )
    if _outside(jax.__version__, JAX_TESTED):
        return (
            f"jax {jax.__version__} is outside the versions the fast path is tested on "
            f"(>={JAX_TESTED[0]},<{JAX_TESTED[1]})"
        )
    gone = missing()
    if gone:
        return f"this Keras/JAX lacks {gone[0]}, which the fast path uses"
    return None


# ------------------------------------------------------------------- Keras, private
def flatten_layers(model, *, include_self: bool = True, recursive: bool = True) -> list:
    """Every layer of ``model`` (nested models included): ``Layer._flatten_layers``."""
    return list(model._flatten_layers(include_self=include_self, recursive=recursive))


def symbolic_build(model, x, y) -> None:
    """Build a compiled model, its compiled loss and metrics from one batch, as
    ``model.fit`` does: ``Trainer._symbolic_build``."""
    model._symbolic_build(data_batch=(x, y))


def compiled_loss_and_metrics(model) -> tuple[Any, Any]:
    """``(model._compile_loss, model._compile_metrics)``: the containers ``compile`` makes."""
    return getattr(model, "_compile_loss", None), getattr(model, "_compile_metrics", None)


def initial_epoch(model) -> int | None:
    """The epoch a ``BackupAndRestore`` callback resumes at (it sets
    ``model._initial_epoch`` in ``on_train_begin``; Keras's fit reads it the same way)."""
    return getattr(model, "_initial_epoch", None)


def is_keras_class(obj) -> bool:
    """True for an instance of one of Keras's own classes (module ``keras.src...``)."""
    return type(obj).__module__.split(".")[:2] == ["keras", "src"]


def bit64_to_bit32_table() -> dict | None:
    """Keras's table mapping promoted 64-bit dtypes to 32 bits on JAX
    (``keras.src.backend.common.dtypes.BIT64_TO_BIT32_DTYPE``), or None without one."""
    try:
        from keras.src.backend.common import dtypes
    except ImportError:
        return None
    table = getattr(dtypes, "BIT64_TO_BIT32_DTYPE", None)
    return table if isinstance(table, dict) else None


# --------------------------------------------------------------------- JAX, private
@contextlib.contextmanager
def unrolled_threefry() -> Iterator[None]:
    """Lower JAX's threefry hash (Keras's dropout generator) unrolled while lowering.

    On CPU JAX emits threefry as a 5-trip XLA while loop (small programs); inside the
    scanned step that nested loop adds kernels and loop bookkeeping, and the epoch
    program compiled ~0.1-0.15 s slower (of ~0.8 s) with it. The unrolled form is JAX's
    own lowering for other platforms and computes the same bits. Uses JAX internals
    (``mlir._platform_specific_lowerings``): if they move, JAX's own lowering is kept.
    """
    try:
        from jax._src.interpreters import mlir
        from jax._src.random import threefry2x32 as tf2x32

        table = mlir._platform_specific_lowerings["cpu"]
        prim = tf2x32.threefry2x32_p
        old = table.get(prim)
        new = mlir.LoweringRuleEntry(tf2x32._threefry2x32_lowering_rule, False)
    except Exception:  # noqa: BLE001 - JAX internals moved: keep JAX's own lowering
        yield
        return
    table[prim] = new
    try:
        yield
    finally:
        if old is None:
            table.pop(prim, None)
        else:
            table[prim] = old
