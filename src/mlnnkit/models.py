"""The one door for models: load any saved model, and read a model's input/output shapes
and names.

Loading: :func:`load_model` takes ``.keras``, a Keras full-model ``.h5``, or weights-only
``.weights.h5`` (loaded into the architecture of a run config: weights are shared between
models of the same architecture); :func:`load_network` also takes a legacy network file
(OC-SMART ``.h5``, ffbp ``.net``, through :func:`mlnnkit.legacy.load`);
:func:`load_model_for_predict` refuses one with the import command to run first.

A float64 model (e.g. a legacy network imported in float64) switches JAX's 64-bit mode
on as it loads, with one note (see :func:`mlnnkit.float64`).

Shapes and names: :func:`model_io_shapes`, :func:`model_io_sizes`,
:func:`sample_shape`, :func:`check_samples` (the one check of data against a model's
input), :func:`io_names`.

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


def _holds_float64(path: Path) -> bool:
    """True when the saved model's config asks for float64 (a ``.keras`` archive's
    ``config.json`` or a Keras ``.h5``'s ``model_config``)."""
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                text = z.read("config.json").decode("utf-8", "replace")
        else:
            import h5py

            with h5py.File(path, "r") as f:
                raw = f.attrs.get("model_config", "")
                text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    except Exception:  # noqa: BLE001 - unreadable files fail in Keras's loader, with a message
        return False
    return '"float64"' in text


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
        >>> load_model("net.keras").count_params()
        46
        >>> from mlnnkit.build import build_model
        >>> from mlnnkit.config import load_config
        >>> build_model(load_config("tiny.toml"), input_shape=(3,)).save_weights("w.weights.h5")
        >>> load_model("w.weights.h5", "tiny.toml", input_shape=(3,)).count_params()
        41
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
    if _holds_float64(path):
        from mlnnkit._precision import enable_float64

        enable_float64(f"{path.name} is a float64 model")  # before its weights are made
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


# --------------------------------------------------------------------------- legacy files
def _is_keras_h5(path: Path) -> bool:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return "model_config" in f.attrs or "model_weights" in f
    except OSError as e:
        raise UserError(f"{path}: not a readable HDF5 file: {e}") from None


def load_network(path: str | Path, *, physical: bool = False) -> keras.Model:
    """Load a model to adapt or run: a Keras model (``.keras``, full-model ``.h5``) or a
    legacy network file (OC-SMART ``.h5``, ffbp ``.net``) imported with
    :func:`mlnnkit.legacy.load`.

    Args:
        path: the model file.
        physical: import a legacy file in physical units (its family's transforms,
            :func:`mlnnkit.retrieval.resolve`); for a Keras model, require that it is
            physical already (default False).

    Example:
        >>> load_network("net.h5").count_params()   # an OC-SMART file, imported and verified
        46
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"model file not found: {path}")
    name = path.name.lower()
    if name.endswith(".weights.h5"):
        raise UserError(
            f"{path}: a weights-only file has no architecture; fine-tune a .keras model instead"
        )
    legacy_file = name.endswith(".net") or (
        name.endswith((".h5", ".hdf5")) and not _is_keras_h5(path)
    )
    if legacy_file:
        from mlnnkit import legacy

        return legacy.load(path, physical=physical)
    model = load_model(path, compile=False)
    if physical:
        from mlnnkit.retrieval import is_physical

        if not is_physical(model):
            raise UserError(
                f"--physical: {path} is a Keras model without transform layers; import the "
                "legacy network with `mlnnkit import NET --physical -o MODEL.keras`, or give "
                "the legacy file itself"
            )
    return model


def load_model_for_predict(path: str | Path) -> keras.Model:
    """Load a saved Keras model (``.keras``, ``.h5``) for inference; a legacy network file
    (OC-SMART, ffbp, raw HDF5) is refused with the import command to run first.

    Args:
        path: the model file.
    """
    path = Path(path)
    if path.is_file() and path.suffix.lower() != ".keras":
        from mlnnkit.legacy import detect_format

        try:
            fmt = detect_format(path)
        except UserError:
            fmt = None
        if fmt in ("ocsmart", "ffbp", "rawh5"):
            raise UserError(
                f"{path} is a {fmt} network file, not a Keras model: import it first "
                f"(`mlnnkit import {path} -o net.keras`, which verifies it), then predict "
                "with net.keras"
            )
    return load_model(path, compile=False)


# --------------------------------------------------------------------------- shapes
def model_io_shapes(model: keras.Model) -> tuple[tuple, tuple]:
    """Shapes of one input sample and one output sample of ``model`` (its first input and
    output tensors)."""
    return tuple(model.inputs[0].shape[1:]), tuple(model.outputs[0].shape[1:])


def sample_shape(model: keras.Model) -> tuple[int, ...]:
    """The shape of one input sample of a model with one input tensor and no free
    dimensions besides the rows (what the compiled forward pass needs)."""
    inputs = getattr(model, "inputs", None)
    if not inputs:
        raise UserError(
            "the model has no defined input shape: build it first (call it once on data, "
            "or start it with keras.Input(shape))"
        )
    if len(inputs) != 1:
        raise UserError(
            f"the model has {len(inputs)} inputs; predict_array takes models with one "
            "input tensor (concatenate the inputs into one array in the model instead)"
        )
    shape = tuple(inputs[0].shape[1:])
    if any(d is None for d in shape):
        raise UserError(f"the model's input shape {(None, *shape)} has free dimensions besides the rows")
    return shape


def model_io_sizes(model: keras.Model) -> tuple[int, int]:
    """``(n_inputs, n_outputs)`` of a model taking and giving rows of numbers."""
    inputs = getattr(model, "inputs", None)
    outputs = getattr(model, "outputs", None)
    if not inputs or not outputs:
        raise UserError("the model has no defined input shape; save it after building it")
    if len(inputs) != 1 or len(outputs) != 1:
        raise UserError(
            f"mlnnkit predict takes models with one input and one output tensor "
            f"(this one has {len(inputs)} and {len(outputs)}); use mlnnkit.predict_array"
        )
    ishape, oshape = tuple(inputs[0].shape[1:]), tuple(outputs[0].shape[1:])
    if len(ishape) != 1 or len(oshape) > 1:
        raise UserError(
            f"mlnnkit predict takes models whose samples are rows of numbers; this one maps "
            f"{ishape} to {oshape} (use mlnnkit.predict_array)"
        )
    return int(ishape[0]), int(oshape[0]) if oshape else 1


def check_samples(
    want: keras.Model | tuple | None, x, what: str = "input", *, by_columns: bool = True
) -> None:
    """The one check of data against a model's input: fail with a clear message when the
    samples of ``x`` (rows first) do not have the shape ``want`` (a shape, or a model whose
    input shape is read; ``None`` dimensions match anything; an unbuilt model: no check).
    Rows of numbers are reported as columns vs inputs unless ``by_columns=False``.

    Example:
        >>> check_samples((7,), np.zeros((3, 5)), "input")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        mlnnkit.errors.UserError: input has 5 columns but the model takes 7 inputs
        Traceback (most recent call last):
        mlnnkit.errors.UserError: input has 5 columns but the model takes 7 inputs
    """
    if want is not None and not isinstance(want, tuple):
        inputs = getattr(want, "inputs", None)
        want = tuple(inputs[0].shape[1:]) if inputs else None
    if want is None:
        return
    got = tuple(x.shape[1:])
    if len(want) == len(got) and all(w is None or w == g for w, g in zip(want, got)):
        return
    if by_columns and len(got) == 1 and len(want) == 1:
        raise UserError(f"{what} has {got[0]} columns but the model takes {want[0]} inputs")
    raise UserError(f"{what} has samples of shape {got} but the model takes {want}")


# --------------------------------------------------------------------------- names
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


def model_io_names(model) -> tuple[list[str] | None, list[str] | None]:
    """Input and output names of ``model`` for reading and writing files: those of
    :func:`io_names` (a chain's, physical names, the scaling layers' names), else the
    names of scaling layers nested in sub-models, ``None`` for each side nobody named."""
    from mlnnkit.layers import InputScaling, OutputScaling

    ins, outs = io_names(model)
    if ins is not None and outs is not None:
        return ins, outs

    def walk(layer):
        for sub in getattr(layer, "layers", []) or []:
            yield sub
            yield from walk(sub)

    nested_in = nested_out = None
    for layer in walk(model):
        if isinstance(layer, InputScaling) and layer.names and nested_in is None:
            nested_in = [str(n) for n in layer.names]
        elif isinstance(layer, OutputScaling) and layer.names:
            nested_out = [str(n) for n in layer.names]
    return ins if ins is not None else nested_in, outs if outs is not None else nested_out


__all__ = [
    "check_samples",
    "io_names",
    "load_model",
    "load_model_for_predict",
    "load_network",
    "model_io_names",
    "model_io_shapes",
    "model_io_sizes",
    "sample_shape",
]
