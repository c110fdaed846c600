"""Physical models seen from the network's side: arrays mapped through a model's own
transforms, and the part of the model that works in the network's variables.

A physical model is ``InputTransform -> InputScaling -> Dense ... -> OutputScaling ->
OutputTransform``. Fine-tuning keeps the loss in the network's own space (log10 of
reflectances, ln of IOPs: what the network was trained on), so it trains
:func:`network_model` (everything up to OutputScaling) on targets mapped through the
inverse output transforms (:func:`targets_to_network`).

Example:
    >>> model = mlnnkit.legacy.load("PACE_Lrc_aaNN.H5", physical=True)
    >>> net = network_model(model)        # shares its layers: training it trains model
    >>> net.output.shape, model.layers[-1].name
    ((None, 107), 'output_transform')
"""

from __future__ import annotations

import keras
import numpy as np

from mlnnkit.layers import InputTransform, OutputTransform, transform_numpy


def _layers(model: keras.Model) -> list:
    return [l for l in model.layers if not isinstance(l, keras.layers.InputLayer)]


def transform_layers(model: keras.Model) -> tuple[InputTransform | None, OutputTransform | None]:
    """``(InputTransform | None, OutputTransform | None)``: a model's first and last
    transform layers (both None for a bare network or any other model).

    Example:
        >>> m = mlnnkit.legacy.load("net.h5", transforms="log10:1-7", output_transforms="pow10")
        >>> [type(layer).__name__ for layer in transform_layers(m)]
        ['InputTransform', 'OutputTransform']
    """
    layers = _layers(model)
    first = next((l for l in layers if isinstance(l, InputTransform)), None)
    last = next((l for l in reversed(layers) if isinstance(l, OutputTransform)), None)
    return first, last


def is_physical(model: keras.Model) -> bool:
    """True when ``model`` has transform layers (it takes or gives physical values).

    Example:
        >>> m = mlnnkit.legacy.load("net.h5", transforms="log10:1-7", output_transforms="pow10")
        >>> is_physical(m), is_physical(mlnnkit.legacy.load("net.h5"))
        (True, False)
    """
    return any(layer is not None for layer in transform_layers(model))


def apply_columns(transforms, x, *, inverse: bool = False) -> np.ndarray:
    """One transform per column of ``x`` (float64; NaN where a transform cannot take a
    value). ``inverse=True`` maps the other way (see :func:`mlnnkit.layers.transform_numpy`).

    Example:
        >>> apply_columns(["cos_deg", "log10"], [[60.0, 100.0], [0.0, -1.0]]).round(6).tolist()
        [[0.5, 2.0], [1.0, nan]]
    """
    x = np.asarray(x, dtype=np.float64)
    x = x.reshape(len(x), -1)
    return np.stack(
        [transform_numpy(t, x[:, j], inverse=inverse) for j, t in enumerate(transforms)], axis=1
    )


def inputs_to_network(model: keras.Model, x) -> np.ndarray:
    """Physical inputs -> the network's input variables (what enters InputScaling).

    Example:
        >>> m = mlnnkit.legacy.load("net.h5", transforms="log10:1-7", output_transforms="pow10")
        >>> inputs_to_network(m, np.array([[10.0, 100, 1, 1, 1, 1, 1]]))[0, :2]
        array([1., 2.])
    """
    t_in, _ = transform_layers(model)
    x = np.asarray(x, dtype=np.float64)
    return x if t_in is None else apply_columns(t_in.transforms, x)


def targets_to_network(model: keras.Model, y) -> np.ndarray:
    """Physical outputs (targets) -> the network's output variables (what leaves
    OutputScaling): ``log10`` for a ``pow10`` output, ``ln`` for ``exp``; NaN for a
    non-positive value under a logarithm.

    Example:
        >>> m = mlnnkit.legacy.load("net.h5", transforms="log10:1-7", output_transforms="pow10")
        >>> targets_to_network(m, np.array([[1000.0]]))
        array([[3.]])
    """
    _, t_out = transform_layers(model)
    y = np.asarray(y, dtype=np.float64)
    return y if t_out is None else apply_columns(t_out.transforms, y, inverse=True)


def network_model(model: keras.Model) -> keras.Model:
    """The model without its ``OutputTransform``: physical inputs in, the network's own
    output variables out (it shares every layer, so training it trains ``model``). A
    model without an output transform is returned as it is.

    Example:
        >>> m = mlnnkit.legacy.load("net.h5", transforms="log10:1-7", output_transforms="pow10")
        >>> network_model(m).layers[-1].name
        'output_scaling'
    """
    _, t_out = transform_layers(model)
    if t_out is None:
        return model
    return keras.Model(model.inputs, t_out.input, name=f"{model.name}_network_space")


def untransformable_rows(model: keras.Model, x, y=None) -> np.ndarray:
    """Rows of physical inputs (and targets) that a transform of ``model`` cannot take:
    a non-positive value under a logarithm (or NaN/Inf). Boolean, one per row.

    Example:
        >>> m = mlnnkit.legacy.load("net.h5", transforms="log10:1-7", output_transforms="pow10")
        >>> untransformable_rows(m, np.array([[1.0] * 7, [0.0] + [1.0] * 6]))
        array([False,  True])
    """
    bad = ~np.isfinite(inputs_to_network(model, x)).all(axis=1)
    if y is not None:
        bad |= ~np.isfinite(targets_to_network(model, y)).all(axis=1)
    return bad
