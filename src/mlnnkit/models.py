"""Load a saved model whatever its format: ``.keras``, legacy full-model ``.h5``, or
weights-only ``.weights.h5`` (loaded into the architecture of a run config: weights are
shared between models of the same architecture).

Keras 3 cannot rebuild the compiled loss of some legacy ``.h5`` files (e.g. "Could not
deserialize 'keras.metrics.mse'"); those are loaded without their compile state and,
when a run config is given, compiled from it.
"""

from __future__ import annotations

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
    config: RunConfig | None = None,
    *,
    input_shape: tuple[int, ...] | None = None,
    compile: bool = True,
) -> keras.Model:
    """Load ``path`` into a ``keras.Model``.

    Args:
        path: ``.keras``, ``.h5``/``.hdf5`` (full model) or ``.weights.h5``.
        config: a run config; needed for ``.weights.h5`` (its layer stack is built and
            the weights loaded into it) and used to compile a legacy ``.h5`` whose own
            compile state cannot be restored.
        input_shape: shape of one sample when the config does not give one
            (``.weights.h5`` only).
        compile: restore/apply the compile state (False: inference only).
    """
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

        model = build_model(config, input_shape=input_shape, compile=compile)
        try:
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


def _layer_names(layer, physical: bool) -> list[str] | None:
    names = getattr(layer, "names", None)
    if names is None and physical:
        names = getattr(layer, "network_names", None)
    return list(names) if names is not None else None


def io_names(model: keras.Model) -> tuple[list[str] | None, list[str] | None]:
    """The input and output variable names of a model mlnnkit made.

    Physical names when the model has transform layers (:class:`~mlnnkit.layers.InputTransform`
    first, :class:`~mlnnkit.layers.OutputTransform` last), else the names the scaling layers
    carry (the network's own variables), else None for the side nobody named.

    Args:
        model: a ``keras.Model`` (an imported network, physical or bare, or any model).

    Returns:
        ``(input_names, output_names)``, each a list of strings or None.

    Example:
        >>> import keras, mlnnkit
        >>> from mlnnkit.layers import InputScaling, InputTransform
        >>> x = keras.Input((2,))
        >>> y = InputTransform(["cos_deg", "log10"], names=["solz", "Lrc_1"])(x)
        >>> y = InputScaling([0.0, -3.0], [1.0, 0.0], names=["cos_solz", "log_Lrc_1"])(y)
        >>> mlnnkit.io_names(keras.Model(x, keras.layers.Dense(1)(y)))
        (['solz', 'Lrc_1'], None)
    """
    from mlnnkit.layers import InputScaling, InputTransform, OutputScaling, OutputTransform
    from mlnnkit.retrieval._chain import chain_info

    info = chain_info(model)  # a chain records its own names (#12)
    if info is not None:
        return list(info["input_names"]), list(info["output_names"])
    layers = list(getattr(model, "layers", []))

    def first(kind):
        return next((layer for layer in layers if isinstance(layer, kind)), None)

    def last(kind):
        return next((layer for layer in reversed(layers) if isinstance(layer, kind)), None)

    def pick(transform, scaling):
        if transform is not None:
            names = _layer_names(transform, physical=True)
            if names is not None:
                return names
        return _layer_names(scaling, physical=False) if scaling is not None else None

    return (
        pick(first(InputTransform), first(InputScaling)),
        pick(last(OutputTransform), last(OutputScaling)),
    )
