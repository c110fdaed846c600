"""Between a :class:`~mlnnkit.legacy.spec.NetworkSpec` and a ``keras.Model``.

An imported network is the functional model ``Input -> InputScaling -> Dense ... ->
OutputScaling``: plain Dense layers (kernel ``W.T``, bias ``b``), with the ranges, names
and provenance in the two scaling layers of :mod:`mlnnkit.layers`. A physical import
(a :class:`~mlnnkit.retrieval.Recipe`) adds ``InputTransform`` before and
``OutputTransform`` after, with the physical names; the scaling layers keep the network's
own ranges and names.
"""

from __future__ import annotations

import re

import keras
import numpy as np

from mlnnkit._precision import enable_float64
from mlnnkit.errors import UserError
from mlnnkit.layers import (
    InputScaling,
    InputTransform,
    OutputScaling,
    OutputTransform,
    snap_sigmoid,
)
from mlnnkit.legacy.spec import ACTIVATIONS, ALIASES, NetworkSpec, Scaling

DTYPES = ("float32", "float64")

# Layers that compute nothing at inference time: skipped when reading a model.
_IDENTITY_AT_INFERENCE = (
    "Dropout",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
    "ActivityRegularization",
    "SpatialDropout1D",
)


def _check_dtype(dtype: str) -> str:
    dtype = str(dtype)
    if dtype not in DTYPES:
        raise UserError(f"dtype {dtype!r}: use float32 or float64")
    return dtype


def fits_float32(spec: NetworkSpec) -> bool:
    """True when every weight, bias and range limit of ``spec`` is finite in float32.

    Example:
        >>> import numpy as np
        >>> fits_float32(NetworkSpec([np.full((1, 1), 1e39)], [np.zeros(1)], ["linear"]))
        False
    """
    big = float(np.finfo(np.float32).max)
    arrays = list(spec.weights) + list(spec.biases)
    for s in (spec.input_scaling, spec.output_scaling):
        if s is not None:
            arrays += [s.minimum, s.maximum]
    return all(not np.any(np.abs(np.asarray(a, np.float64)) > big) for a in arrays)


def model_name(text: str) -> str:
    """A Keras-safe model name from a file stem: ``"PACE_Lrc_aaNN"``."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", text).strip("_") or "network"
    return name if name[0].isalpha() else f"net_{name}"


def to_keras(
    spec: NetworkSpec,
    dtype: str = "float32",
    *,
    sigmoid: str = "exact",
    name: str = "network",
    recipe=None,
) -> keras.Model:
    """Build the Keras model that computes what ``spec`` describes.

    Args:
        spec: the network (validated by its reader).
        dtype: ``"float32"`` (default) or ``"float64"`` for every layer; float64 turns on
            JAX's 64-bit mode for the process (:func:`mlnnkit.float64`), with a note.
        sigmoid: ``"exact"`` (default, what the network means) or ``"snap"``: sigmoid
            layers use SNAP's tabulated sigmoid (:func:`mlnnkit.layers.snap_sigmoid`) to
            reproduce SNAP's outputs exactly; refused for a network without a sigmoid
            layer.
        name: the model's name.
        recipe: a :class:`~mlnnkit.retrieval.Recipe` (default None: the bare network):
            the model then takes and gives physical values, ``InputTransform`` first and
            ``OutputTransform`` last.

    Example:
        >>> model = to_keras(mlnnkit.legacy.read("net.h5"))
        >>> [l.name for l in model.layers]
        ['inputs', 'input_scaling', 'dense_1', 'dense_2', 'output_scaling']
    """
    dtype = _check_dtype(dtype)
    if sigmoid not in ("exact", "snap"):
        raise UserError(f"sigmoid {sigmoid!r}: use exact or snap")
    if sigmoid == "snap" and "sigmoid" not in spec.activations:
        raise UserError(
            f"sigmoid='snap' replaces sigmoid layers by SNAP's table, and this network has "
            f"none (activations {', '.join(spec.activations)}): use sigmoid='exact'"
        )
    if dtype == "float32" and not fits_float32(spec):
        raise UserError(
            "the network holds values beyond float32's range (3.4e38): import it with "
            "--dtype float64 (library: dtype='float64')"
        )
    if dtype == "float64":
        enable_float64(f"network {name!r} is built in float64")
    s_in, s_out = spec.input_scaling, spec.output_scaling
    inputs = keras.Input((spec.n_inputs,), dtype=dtype, name="inputs")
    x = inputs
    if recipe is not None:
        x = InputTransform(
            recipe.input_transforms,
            names=recipe.input_names,
            network_names=recipe.network_input_names,
            dtype=dtype,
            name="input_transform",
        )(x)
    x = InputScaling(
        minimum=None if s_in is None else s_in.minimum.tolist(),
        maximum=None if s_in is None else s_in.maximum.tolist(),
        network_range=(-1.0, 1.0) if s_in is None else s_in.target,
        names=spec.input_names,
        source_format=spec.source_format,
        source_options=spec.source_options,
        header=spec.header,
        dtype=dtype,
        name="input_scaling",
    )(x)
    dense = []
    for k, (w, b, act) in enumerate(zip(spec.weights, spec.biases, spec.activations)):
        activation = snap_sigmoid if (act == "sigmoid" and sigmoid == "snap") else act
        layer = keras.layers.Dense(
            w.shape[0], activation=activation, dtype=dtype, name=f"dense_{k + 1}"
        )
        x = layer(x)
        dense.append((layer, w, b))
    outputs = OutputScaling(
        minimum=None if s_out is None else s_out.minimum.tolist(),
        maximum=None if s_out is None else s_out.maximum.tolist(),
        network_range=(-1.0, 1.0) if s_out is None else s_out.target,
        names=spec.output_names,
        source_format=spec.source_format,
        dtype=dtype,
        name="output_scaling",
    )(x)
    if recipe is not None:
        outputs = OutputTransform(
            recipe.output_transforms,
            names=recipe.output_names,
            network_names=recipe.network_output_names,
            dtype=dtype,
            name="output_transform",
        )(outputs)
    model = keras.Model(inputs, outputs, name=model_name(name))
    with np.errstate(over="ignore"):  # checked above: nothing overflows
        for layer, w, b in dense:
            layer.set_weights(
                [np.asarray(w).T.astype(dtype), np.asarray(b).reshape(-1).astype(dtype)]
            )
    return model


def _activation_name(layer) -> str:
    fn = layer.activation
    if fn is snap_sigmoid:
        return "sigmoid"
    name = getattr(fn, "__name__", type(fn).__name__)
    key = ALIASES.get(name, name)
    if key not in ACTIVATIONS:
        raise UserError(
            f"layer {layer.name!r} uses activation {name!r}, which no legacy format has "
            f"(they have {', '.join(ACTIVATIONS)})"
        )
    return key


def _scaling_of(layer) -> Scaling | None:
    if layer is None or layer.minimum is None:
        return None
    return Scaling(layer.minimum, layer.maximum, layer.network_range)


def _layers(model: keras.Model) -> list:
    return [l for l in model.layers if not isinstance(l, keras.layers.InputLayer)]


def from_keras(model: keras.Model) -> NetworkSpec:
    """Describe a model of shape ``[InputScaling] -> Dense ... -> [OutputScaling]``.

    A physical model's ``InputTransform`` (first) and ``OutputTransform`` (last) are left
    out: the spec is the bare network, which is all a legacy file can hold.

    Works for imported networks (fine-tuned or not) and for models built from scratch
    from Dense layers (a linear Activation layer after a Dense is merged into it; Dropout
    and noise layers, which do nothing at inference, are skipped). Anything else raises
    a UserError saying which layer cannot be expressed and why.

    Example:
        >>> from_keras(keras.saving.load_model("net.keras")).sizes
        [7, 5, 1]
    """
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise UserError(
            f"model {model.name!r} has {len(model.inputs)} inputs and {len(model.outputs)} "
            "outputs; a legacy network has one of each"
        )
    if len(model.inputs[0].shape) != 2:
        raise UserError(
            f"model {model.name!r} takes samples of shape {tuple(model.inputs[0].shape[1:])}; "
            "a legacy network takes flat vectors (rows x inputs)"
        )
    layers = _layers(model)
    if layers and isinstance(layers[0], InputTransform):
        layers.pop(0)
    if layers and isinstance(layers[-1], OutputTransform):
        layers.pop()
    in_layer = layers.pop(0) if layers and isinstance(layers[0], InputScaling) else None
    out_layer = layers.pop() if layers and isinstance(layers[-1], OutputScaling) else None
    weights, biases, acts = [], [], []
    for layer in layers:
        kind = type(layer).__name__
        if isinstance(layer, keras.layers.Dense):
            w = np.asarray(keras.ops.convert_to_numpy(layer.kernel), dtype=np.float64).T
            b = (
                np.asarray(keras.ops.convert_to_numpy(layer.bias), dtype=np.float64)
                if layer.use_bias
                else np.zeros(w.shape[0])
            )
            weights.append(w)
            biases.append(b)
            acts.append(_activation_name(layer))
        elif isinstance(layer, keras.layers.Activation) and weights and acts[-1] == "linear":
            acts[-1] = _activation_name(layer)
        elif kind in _IDENTITY_AT_INFERENCE:
            continue
        elif isinstance(layer, (InputScaling, OutputScaling, InputTransform, OutputTransform)):
            raise UserError(
                f"layer {layer.name!r} ({kind}) sits between Dense layers; a legacy network "
                "scales only its inputs (first layer) and outputs (last layer)"
            )
        else:
            raise UserError(
                f"layer {layer.name!r} ({kind}) cannot be expressed in a legacy network file, "
                "which holds only a stack of Dense layers (with InputScaling/OutputScaling at "
                "the ends)"
            )
    if not weights:
        raise UserError(f"model {model.name!r} has no Dense layer")
    first = next(l for l in layers if isinstance(l, keras.layers.Dense))
    precision = "float64" if "float64" in str(first.kernel.dtype) else "float32"
    src = in_layer or out_layer
    spec = NetworkSpec(
        weights=weights,
        biases=biases,
        activations=acts,
        input_scaling=_scaling_of(in_layer),
        output_scaling=_scaling_of(out_layer),
        input_names=in_layer.names if in_layer is not None else None,
        output_names=out_layer.names if out_layer is not None else None,
        source_format=(src.source_format if src is not None else None) or "keras",
        header=in_layer.header if in_layer is not None else "",
        source_options=dict(in_layer.source_options) if in_layer is not None else {},
        precision=precision,
    )
    return spec.validate(f"model {model.name!r}", _model_where(model, layers))


def _model_where(model, layers):
    dense = [l for l in layers if isinstance(l, keras.layers.Dense)]

    def where(kind: str, index: int | None) -> str:
        if kind in ("weights", "biases"):
            return f"layer {dense[index].name!r} {'kernel' if kind == 'weights' else 'bias'}"
        return {"input_range": "InputScaling", "output_range": "OutputScaling"}.get(kind, kind)

    return where


def read_keras_file(path) -> keras.Model:
    """A saved Keras model (``.keras``, full-model ``.h5``) for :func:`from_keras`, without
    its compile state (the legacy layer reads it itself rather than through
    :mod:`mlnnkit.models`, which sits above it and imports it)."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return keras.saving.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001 - Keras raises many types
        msg = " ".join(str(e).split())
        raise UserError(f"{path}: cannot load model: {msg[:300]}") from None


def input_ranges(model: keras.Model) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
    """``(mins, maxs, names)`` of the model's inputs from its InputScaling layer, or None.

    Names are ``input_1 ...`` when the source file had none.

    Example:
        >>> mins, maxs, names = input_ranges(mlnnkit.legacy.load("net.h5"))
        >>> [float(v) for v in maxs[:3]]
        [1.0, 2.0, 3.0]
    """
    layer = next((l for l in _layers(model) if isinstance(l, InputScaling)), None)
    if layer is None or layer.minimum is None:
        return None
    names = layer.names or [f"input_{i + 1}" for i in range(len(layer.minimum))]
    return np.asarray(layer.minimum), np.asarray(layer.maximum), list(names)


def source_format(model: keras.Model) -> str | None:
    """The legacy format a model was imported from (``"ocsmart"``, ``"ffbp"``,
    ``"rawh5"``), or None for models that were not imported.

    Example:
        >>> source_format(mlnnkit.legacy.load("net.h5"))
        'ocsmart'
    """
    for layer in _layers(model):
        if isinstance(layer, (InputScaling, OutputScaling)) and layer.source_format:
            return layer.source_format
    return None


def model_sigmoid(model: keras.Model) -> str:
    """``"snap"`` when the model's sigmoid layers use SNAP's table, else ``"exact"``."""
    for layer in _layers(model):
        if isinstance(layer, keras.layers.Dense) and layer.activation is snap_sigmoid:
            return "snap"
    return "exact"


def model_dtype(model: keras.Model) -> str:
    """The dtype samples must have to enter the model (``"float32"``/``"float64"``)."""
    dt = str(getattr(model.inputs[0], "dtype", "float32"))
    return "float64" if "float64" in dt else "float32"

