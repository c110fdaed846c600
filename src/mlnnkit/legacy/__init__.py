# Over 400 lines: the package's public face, file <-> spec <-> Keras; the formats are modules.
"""Legacy raw-weight networks in and out of Keras: OC-SMART MLNN HDF5, ffbp ``.net``,
generic raw-weight HDF5.

Each format is one module that reads a file into a neutral
:class:`~mlnnkit.legacy.spec.NetworkSpec` and writes one back, without Keras
(:mod:`~mlnnkit.legacy.ocsmart`, :mod:`~mlnnkit.legacy.ffbp`,
:mod:`~mlnnkit.legacy.rawh5`). This package joins specs to Keras models:

- :func:`load` (file -> checked ``keras.Model``) and :func:`save` (model -> file, checked);
- :func:`read`, :func:`write`, :func:`detect_format` (file <-> spec);
- :func:`to_keras`, :func:`from_keras` (spec <-> model);
- :func:`verify`: the model against the file's own float64 math;
- :func:`input_ranges`, :func:`source_format`: what an imported model remembers.

Example:
    >>> import mlnnkit, numpy as np
    >>> model = mlnnkit.legacy.load("net.h5")             # an OC-SMART file, 7-5-1
    >>> model.predict(np.ones((2, 7)), verbose=0).shape
    (2, 1)
    >>> mlnnkit.legacy.save(model, "tuned.h5", format="ocsmart").passed
    True
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlnnkit import _atomic
from mlnnkit.errors import UserError
from mlnnkit.legacy import _hdf5, ffbp, ocsmart, rawh5
from mlnnkit.legacy.spec import MAX_RANGE, MAX_WEIGHT, NetworkSpec, Scaling

if TYPE_CHECKING:
    import keras

    from mlnnkit.legacy._keras import from_keras, input_ranges, source_format, to_keras
    from mlnnkit.legacy._verify import VerifyResult

__all__ = [
    "FORMATS",
    "NetworkSpec",
    "Scaling",
    "VerifyResult",
    "detect_format",
    "from_keras",
    "import_spec",
    "input_ranges",
    "load",
    "physical_recipe",
    "read",
    "save",
    "source_format",
    "to_keras",
    "verify",
    "write",
]

#: Format name -> module with ``read(path, **options)``, ``write(spec, path)``,
#: ``check_writable(spec)``, ``NAME``, ``DESCRIPTION``.
FORMATS = {m.NAME: m for m in (ocsmart, ffbp, rawh5)}

_LAZY = {
    "to_keras": "mlnnkit.legacy._keras",
    "from_keras": "mlnnkit.legacy._keras",
    "input_ranges": "mlnnkit.legacy._keras",
    "source_format": "mlnnkit.legacy._keras",
    "VerifyResult": "mlnnkit.legacy._verify",
}


def __getattr__(name: str):
    # The Keras side is imported on first use: reading and inspecting files stays fast.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mlnnkit.legacy' has no attribute {name!r}")


def _format_module(fmt: str):
    try:
        return FORMATS[fmt]
    except KeyError:
        raise UserError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}") from None


def detect_format(path: str | Path) -> str:
    """Tell a file's format from its content: ``"ocsmart"``, ``"ffbp"``, ``"rawh5"``
    (HDF5 without the OC-SMART datasets) or ``"keras"`` (a saved Keras model).

    Example:
        >>> detect_format("olci_rw_iop_37x37x37_596495.4.net")
        'ffbp'
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: file not found")
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a network file")
    with open(path, "rb") as f:
        head = f.read(65536)
    if head[:4] == b"PK\x03\x04" and path.suffix.lower() == ".keras":
        return "keras"
    if head[:8] == _hdf5.HDF5_SIGNATURE:
        with _hdf5.open_h5(path) as h5:
            if ocsmart.looks_like(h5):
                return ocsmart.NAME
            if "model_config" in h5.attrs or "keras_version" in h5.attrs:
                return "keras"
        return rawh5.NAME
    if b"\x00" not in head and ffbp.looks_like(head.decode("utf-8", errors="replace")):
        return ffbp.NAME
    raise UserError(
        f"{path}: cannot tell the network format (not HDF5, not an ffbp .net text file); "
        f"pass --format {'|'.join(FORMATS)}"
    )


def read(
    path: str | Path,
    format: str | None = None,
    *,
    allow_large_weights: bool = False,
    max_weight: float | None = MAX_WEIGHT,
    max_range: float | None = MAX_RANGE,
    **options: Any,
) -> NetworkSpec:
    """Read a legacy network file into a :class:`NetworkSpec` (format detected if None).

    Args:
        path: the network file.
        format: ``"ocsmart"``, ``"ffbp"``, ``"rawh5"``, ``"keras"`` or None (detect).
        allow_large_weights: False (default): a weight or bias beyond ``max_weight`` or
            a range limit beyond ``max_range`` in magnitude is refused as a damaged file
            (UserError naming the dataset or line and the value); True: no such limit.
        max_weight: the limit for weights and biases (default 1e4; the largest in 136
            real C2RCC networks is 208).
        max_range: the limit for input and output range limits (default 1e12).
        **options: the rawh5 reader's (``weights``, ``biases``, ``activations``,
            ``transpose``, ``norm_in``, ``norm_out``, ``scale_range``); None is ignored.

    Example:
        >>> read("net.h5").sizes
        [7, 5, 1]
        >>> spec = read("net.h5", "rawh5", weights="Weights/Layer{i}", biases="Bias/Layer{i}",
        ...             activations="tanh,linear")
        >>> spec.activations
        ['tanh', 'linear']
    """
    options = {k: v for k, v in options.items() if v is not None}
    fmt = format or detect_format(path)
    if fmt == "keras":
        from mlnnkit.legacy._keras import from_keras, read_keras_file

        return from_keras(read_keras_file(path))
    module = _format_module(fmt)
    if options and module is not rawh5:
        raise UserError(
            f"options {', '.join(sorted(options))} apply to --format rawh5 only; "
            f"{path} is read as {fmt}"
        )
    if allow_large_weights:
        max_weight = max_range = None
    return module.read(path, max_weight=max_weight, max_range=max_range, **options)


def write(spec: NetworkSpec, path: str | Path, format: str, **options: Any) -> Path:
    """Write ``spec`` in ``format`` atomically (no check against a model; see :func:`save`).

    Example:
        >>> write(read("net.h5"), "copy.h5", "ocsmart").name
        'copy.h5'
    """
    module = _format_module(format)
    module.check_writable(spec)
    with _atomic.atomic_path(path) as tmp:
        module.write(spec, tmp, **options)
    return Path(path)


def load(
    path: str | Path,
    format: str | None = None,
    *,
    dtype: str | None = None,
    sigmoid: str = "exact",
    check: bool = True,
    samples: int = 10_000,
    tolerance: float = 1e-5,
    allow_large_weights: bool = False,
    physical: bool = False,
    transforms: str | list[str] | None = None,
    output_transforms: str | list[str] | None = None,
    names: str | list[str] | None = None,
    output_names: str | list[str] | None = None,
    **options: Any,
) -> keras.Model:
    """Import a legacy network file as a Keras model, checked against the file's math.

    With ``physical=True`` the model takes and gives physical values, named:
    ``InputTransform -> InputScaling -> Dense ... -> OutputScaling -> OutputTransform``,
    the transforms from the network's family (:func:`mlnnkit.retrieval.resolve`: an
    OC-SMART file name, C2RCC ``log_X`` names) or from ``transforms``.

    Either way it is what ``mlnnkit import`` does (the same model): the network in float32, or in float64
    when float32 arithmetic cannot reproduce it within ``tolerance`` (said in a note;
    JAX's 64-bit mode is then on for the process).

    Args:
        path: the network file.
        format: ``"ocsmart"``, ``"ffbp"``, ``"rawh5"`` or None (detect).
        dtype: ``"float32"``, ``"float64"`` or None (default: float32, falling back to
            float64 as above; float64 with ``sigmoid="snap"``).
        sigmoid: ``"exact"`` (default) or ``"snap"`` (SNAP's tabulated sigmoid, for ffbp).
        check: run :func:`verify` on ``samples`` inputs and raise
            :class:`~mlnnkit.errors.VerificationError` above ``tolerance`` of the output
            ranges (default True; without it there is no float64 fallback); a physical
            model is verified whole.
        allow_large_weights: False (default): refuse weights or biases beyond 1e4 and
            range limits beyond 1e12 in magnitude as a damaged file (see :func:`read`).
        physical: take and give physical values (default False: the network's own).
        transforms, output_transforms: per-variable transforms, ``"cos_deg:1-3,log10:4-5"``
            (1-based) or one name per variable; they override the family's for the
            variables they list (default None). Giving any of these four implies
            ``physical=True``.
        names, output_names: physical names, a comma list or a list (default None: the
            family's, or the file's names without ``log_``).
        **options: rawh5 reader options, ``max_weight``, ``max_range`` (see :func:`read`).

    Raises:
        UserError: ``physical=True`` for a file of no known family without
            ``transforms``/``output_transforms``; options that do not fit the network.

    Example:
        >>> model = load("PACE_Lrc_aaNN.H5", physical=True)
        >>> mlnnkit.io_names(model)[0][:4]
        ['solz', 'senz', 'relaz', 'Lrc_1']
        >>> model = load("net.h5", "rawh5", weights="Weights/Layer{i}",
        ...              biases="Bias/Layer{i}", activations="tanh,linear")
        >>> model.count_params()
        46
    """
    spec = read(path, format, allow_large_weights=allow_large_weights, **options)
    recipe = physical_recipe(
        spec,
        path,
        physical=physical,
        transforms=transforms,
        output_transforms=output_transforms,
        names=names,
        output_names=output_names,
    )
    model, result = import_spec(
        spec, dtype=dtype, sigmoid=sigmoid, check=check, samples=samples,
        tolerance=tolerance, name=Path(path).stem, recipe=recipe,
    )  # fmt: skip
    if result is not None:
        result.raise_if_failed(f"the model imported from {path}")
    return model


def import_spec(
    spec: NetworkSpec,
    *,
    dtype: str | None = None,
    sigmoid: str = "exact",
    check: bool = True,
    samples: int = 10_000,
    tolerance: float = 1e-5,
    name: str = "network",
    recipe=None,
) -> tuple[keras.Model, VerifyResult | None]:
    """Build the Keras model of ``spec`` and verify it: ``(model, result)`` (``result``
    None without ``check``); the dtype choice and float64 fallback of :func:`load`, which
    ``mlnnkit import`` shares. A failed check is returned, not raised.

    Args:
        spec: the network read from a file.
        dtype: ``"float32"``, ``"float64"`` or None (default: float32, float64 when the
            network holds values beyond float32's range or float32 fails ``tolerance``).
        sigmoid: ``"exact"`` (default) or ``"snap"``.
        check: verify against the float64 reference (and fall back to float64); default True.
        samples: verification inputs (default 10,000, as ``mlnnkit import``).
        tolerance: allowed error, a fraction of each output's range (default 1e-5).
        name: the model's name (default ``"network"``).
        recipe: the physical-units recipe (:func:`physical_recipe`), or None (default: the
            bare network).

    Example:
        >>> model, result = import_spec(read("net.h5"), name="net")
        >>> model.name, result.passed
        ('net', True)
    """
    from mlnnkit._precision import enable_float64, note
    from mlnnkit.legacy._keras import fits_float32, to_keras

    auto = dtype is None and sigmoid != "snap"
    dtype = dtype or ("float64" if sigmoid == "snap" else "float32")
    if auto and not fits_float32(spec):
        note("the network holds values beyond float32's range; importing in float64")
        enable_float64()  # said just above
        auto, dtype = False, "float64"
    model = to_keras(spec, dtype, sigmoid=sigmoid, name=name, recipe=recipe)
    if not check:
        return model, None
    result = verify(model, spec, samples=samples, tolerance=tolerance)
    phys = result.max_physical_rel_error
    if auto and (not result.passed or (phys is not None and phys > tolerance)):
        # Some networks are too ill-conditioned for float32 arithmetic: say so, use float64.
        # A physical model also needs its exponentiated outputs within the tolerance,
        # relative to their values (an error in log space is a relative error after exp).
        what = (
            f"{result.max_rel_error:.3g} of an output's range"
            if not result.passed
            else f"{phys:.3g} relative to its physical outputs (after pow10/exp)"
        )
        note(
            f"in float32 this network errs by {what} (> tolerance {tolerance:g}); importing "
            "it in float64 instead, JAX's 64-bit mode now on for this process (ask for "
            "float32 explicitly to insist)"
        )
        enable_float64()  # said just above
        model = to_keras(spec, "float64", sigmoid=sigmoid, name=name, recipe=recipe)
        result = verify(model, spec, samples=samples, tolerance=tolerance)
    return model, result


def physical_recipe(
    spec: NetworkSpec,
    path: str | Path,
    *,
    physical: bool = False,
    transforms=None,
    output_transforms=None,
    names=None,
    output_names=None,
    options: dict[str, str] | None = None,
):
    """The :class:`~mlnnkit.retrieval.Recipe` of a physical import, or None (bare).

    None when ``physical`` is False and none of the four transform/name arguments is
    given; ``options`` says how errors name them (default: these parameter names).

    Example:
        >>> recipe = physical_recipe(read("net.h5"), "net.h5", transforms="log10:1-7")
        >>> recipe.input_transforms[:2]
        ['log10', 'log10']
        >>> physical_recipe(read("net.h5"), "net.h5") is None   # not asked for: the bare network
        True
    """
    given = (transforms, output_transforms, names, output_names)
    if not physical and all(v is None for v in given):
        return None
    from mlnnkit.retrieval import _recipes

    return _recipes.resolve(
        spec,
        path,
        transforms=transforms,
        output_transforms=output_transforms,
        names=names,
        output_names=output_names,
        options=options or _recipes.PARAMETERS,
    )


def save(
    model: keras.Model,
    path: str | Path,
    format: str | None = None,
    *,
    samples: int = 2048,
    tolerance: float = 1e-5,
    **options: Any,
) -> VerifyResult:
    """Write ``model`` in a legacy format; the written file is read back and verified.

    A physical model's transform layers are left out (a legacy file has no place for
    them): the file holds the bare network, verified against the whole physical model.

    Args:
        model: an imported (possibly fine-tuned) model, or one built from Dense layers.
        path: the output file, written atomically: nothing is left if anything fails.
        format: ``"ocsmart"``, ``"ffbp"`` or ``"rawh5"``; None: the format the model was
            imported from (else ``"ocsmart"``).
        **options: rawh5 writer options (``weights``, ``biases``, ``transpose``,
            ``norm_in``, ``norm_out``).

    Returns:
        the :class:`VerifyResult` of the model against the file it wrote.

    Raises:
        UserError: the model cannot be expressed in the format (the message says why).
        VerificationError: the written file does not compute what the model computes.

    Example:
        >>> model = load("net.h5")
        >>> save(model, "tuned.h5", "ocsmart").passed      # written, read back, verified
        True
    """
    from mlnnkit.legacy._keras import from_keras, source_format

    fmt = format or source_format(model) or ocsmart.NAME
    module = _format_module(fmt)
    options = {k: v for k, v in options.items() if v is not None}
    if options and module is not rawh5:
        raise UserError(f"options {', '.join(sorted(options))} apply to --format rawh5 only")
    spec = from_keras(model)
    try:
        module.check_writable(spec)
    except UserError as e:
        raise UserError(f"cannot export model {model.name!r} as {fmt}: {e}") from None
    with _atomic.atomic_path(path) as tmp:
        module.write(spec, tmp, **options)
        back = module.read(tmp, max_weight=None, max_range=None)  # the model's own values
        result = verify(model, back, samples=samples, tolerance=tolerance)
        result.raise_if_failed(f"the {fmt} file written from model {model.name!r}")
    return result


def verify(
    model: keras.Model,
    source: str | Path | NetworkSpec,
    *,
    samples: int = 10_000,
    tolerance: float = 1e-5,
    seed: int = 0,
    format: str | None = None,
    allow_large_weights: bool = False,
    **options: Any,
) -> VerifyResult:
    """Compare ``model`` with the float64 NumPy reference of a legacy file (or spec).

    Returns a :class:`VerifyResult` with the per-output max absolute error and max error
    relative to the output's range; ``result.passed`` is ``max <= tolerance``. For a
    rawh5 file, the reading options the model was imported with are reused unless
    given; ``allow_large_weights`` (default False) is :func:`read`'s.

    Example:
        >>> r = verify(load("net.h5"), "net.h5")
        >>> r.passed, bool(r.max_rel_error < 1e-5)
        (True, True)
    """
    from mlnnkit.layers import InputScaling
    from mlnnkit.legacy._keras import _layers
    from mlnnkit.legacy._verify import verify as _verify

    if isinstance(source, NetworkSpec):
        spec = source
    else:
        fmt = format or detect_format(source)
        if fmt == rawh5.NAME and not any(v is not None for v in options.values()):
            layer = next((l for l in _layers(model) if isinstance(l, InputScaling)), None)
            if layer is not None and layer.source_format == rawh5.NAME:
                options = dict(layer.source_options)
        spec = read(source, fmt, allow_large_weights=allow_large_weights, **options)
    return _verify(model, spec, samples=samples, tolerance=tolerance, seed=seed)
