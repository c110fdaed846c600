"""Load a saved model whatever its format: ``.keras``, legacy full-model ``.h5``, or
weights-only ``.weights.h5`` (loaded into the architecture of a run config: weights are
shared between models of the same architecture).

Keras 3 cannot rebuild the compiled loss of some legacy ``.h5`` files (e.g. "Could not
deserialize 'keras.metrics.mse'"); those are loaded without their compile state and,
when a run config is given, compiled from it.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import keras

from mlnnkit.errors import UserError

if TYPE_CHECKING:
    from mlnnkit.config import RunConfig


def _custom_objects() -> dict:
    # Importing mlnnkit.layers registers the package's serializable layers with Keras.
    try:
        import mlnnkit.layers  # noqa: F401
    except ImportError:
        pass
    return {}


def load_model(
    path: str | Path,
    config: RunConfig | str | os.PathLike | None = None,
    *,
    input_shape: tuple[int, ...] | None = None,
    compile: bool = True,
) -> keras.Model:
    """Load ``path`` into a ``keras.Model``.

    Args:
        path: ``.keras``, ``.h5``/``.hdf5`` (full model) or ``.weights.h5``.
        config: a run config, as a :class:`~mlnnkit.config.RunConfig` or the path of its
            TOML file (default None); needed for ``.weights.h5`` (its layer stack is
            built and the weights loaded into it) and used to compile a legacy ``.h5``
            whose own compile state cannot be restored.
        input_shape: shape of one sample (default None: the config's
            ``model.input_shape``, else the shape of its data's samples; ``.weights.h5``
            only).
        compile: restore/apply the compile state (default True; False: inference only).

    Example:
        >>> model = load_model("runs/tiny/model.keras")                    # doctest: +SKIP
        >>> model = load_model("w.weights.h5", "runs/tiny/config.toml")   # doctest: +SKIP
    """
    if isinstance(config, (str, os.PathLike)):
        from mlnnkit.config import load_config

        config = load_config(config)
    elif config is not None and not hasattr(config, "model"):
        raise UserError(
            f"config must be a RunConfig or the path of a TOML run config, not {type(config).__name__}"
        )
    path = Path(path)
    if not path.exists():
        raise UserError(f"model file not found: {path}")
    name = path.name.lower()
    _custom_objects()
    if name.endswith(".weights.h5"):
        if config is None:
            raise UserError(
                f"{path}: a weights-only file needs the architecture: pass --config CONFIG"
            )
        from mlnnkit.build import build_model

        if input_shape is None and config.model.input_shape is None:
            from mlnnkit.data import load_data  # the shape of one sample, from the data

            input_shape = tuple(load_data(config).x_train.shape[1:])
        model = build_model(config, input_shape=input_shape, compile=compile)
        try:
            with warnings.catch_warnings():  # e.g. "Skipping variable loading for optimizer"
                warnings.simplefilter("ignore")
                model.load_weights(path)
        except Exception as e:  # noqa: BLE001 - h5py/Keras raise several types here
            raise UserError(
                f"{path}: weights do not fit the config's architecture: {' '.join(str(e).split())[:300]}"
            ) from None
        return model
    if not name.endswith((".keras", ".h5", ".hdf5")):
        raise UserError(f"{path}: unknown model format (use .keras, .h5 or .weights.h5)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return keras.saving.load_model(path, compile=compile)
    except Exception as e:  # noqa: BLE001
        msg = " ".join(str(e).split())
        if compile and ("deserialize" in msg or "compile" in msg.lower()):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model = keras.saving.load_model(path, compile=False)
            except Exception:  # noqa: BLE001
                raise UserError(f"{path}: cannot load model: {msg[:300]}") from None
            if config is not None:
                from mlnnkit.build import compile_model

                compile_model(model, config.compile)
            return model
        raise UserError(f"{path}: cannot load model: {msg[:300]}") from None
