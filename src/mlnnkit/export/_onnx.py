"""A Keras model as an ONNX file, checked with onnxruntime before it is kept.

Float32 models go through Keras's own exporter (``model.export(path, format="onnx")``,
which calls jax2onnx on the JAX backend). Keras does not pass jax2onnx's
``enable_double_precision``, so a float64 model exported that way is a file onnxruntime
refuses to load (``MatMul bound to different types``); float64 models are therefore
exported by calling ``jax2onnx.to_onnx`` here with double precision on.

The file is then given its interface -- one input ``inputs`` (rows x variables, dynamic
row count), named outputs (``outputs`` for a one-output model) -- and ``metadata_props``
(JSON strings: variable names, ranges, transforms, source file and format, dtype, mlnnkit
version; :func:`read_onnx_metadata` reads them back). Before the file is renamed into
place it is loaded in onnxruntime and run on inputs spread over the model's input ranges
(edges included) against the Keras model and, for a network that a legacy file
describes, against the float64 NumPy reference of that file's math
(:mod:`mlnnkit.legacy.reference`). If anything fails, nothing is left behind.
"""

from __future__ import annotations

import importlib
import json
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlnnkit import _atomic
from mlnnkit.errors import UserError, VerificationError
from mlnnkit.legacy._verify import VerifyResult

if TYPE_CHECKING:
    import keras

    from mlnnkit.legacy.spec import NetworkSpec

#: What a user without the extra is told to install.
ONNX_EXTRA_HINT = 'pip install "mlnnkit[onnx]"'
_MODULES = ("onnx", "onnxruntime", "jax2onnx")

#: Name of the one input of every exported file, and of the output of one-output models.
INPUT_NAME = "inputs"
OUTPUT_NAME = "outputs"

DEFAULT_SAMPLES = 10_000
#: Default tolerance (fraction of each output's range) per dtype of the file.
DEFAULT_TOLERANCE = {"float32": 1e-5, "float64": 1e-12}

# Elementwise transforms of the physical-units layers (RETRIEVAL_INTERFACE.md), in NumPy:
# the inverse of the input transforms maps network-space ranges to physical ranges (to draw
# physical inputs), the inverse of the output transforms maps physical outputs back to the
# network's own variables (where the errors are measured, relative to the file's ranges).
_INPUT_INVERSE = {
    "identity": lambda v: v,
    "log10": lambda v: 10.0**v,
    "ln": np.exp,
    "cos_deg": lambda v: np.degrees(np.arccos(np.clip(v, -1.0, 1.0))),
}
_INPUT_FORWARD = {
    "identity": lambda x: x,
    "log10": lambda x: np.where(x > 0, np.log10(np.where(x > 0, x, 1.0)), np.nan),
    "ln": lambda x: np.where(x > 0, np.log(np.where(x > 0, x, 1.0)), np.nan),
    "cos_deg": lambda x: np.cos(np.radians(x)),
}
_OUTPUT_FORWARD = {"identity": lambda v: v, "pow10": lambda v: 10.0**v, "exp": np.exp}
_OUTPUT_INVERSE = {
    "identity": lambda y: y,
    "pow10": lambda y: np.where(y > 0, np.log10(np.where(y > 0, y, 1.0)), np.nan),
    "exp": lambda y: np.where(y > 0, np.log(np.where(y > 0, y, 1.0)), np.nan),
}


# ---------------------------------------------------------------------------- the extra


def onnx_available() -> bool:
    """True when the ``onnx`` extra (jax2onnx, onnx, onnxruntime) is importable.

    Example:
        >>> isinstance(onnx_available(), bool)
        True
    """
    try:
        require_onnx()
    except UserError:
        return False
    return True


def require_onnx() -> None:
    """Import jax2onnx, onnx and onnxruntime, or raise a UserError saying what to install.

    Example:
        >>> require_onnx()  # doctest: +SKIP
    """
    for name in _MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            raise UserError(
                f"ONNX export needs {name}, which is not installed: {ONNX_EXTRA_HINT} "
                "(jax2onnx, onnx, onnxruntime)"
            ) from None


# ------------------------------------------------------------------------------ results


@dataclass
class OnnxCheck(VerifyResult):
    """Per-output agreement of the written ``.onnx`` file (run by onnxruntime) with
    ``against`` (the Keras model, or the float64 reference of the legacy file); the
    fields, :meth:`table` and :meth:`summary` are those of ``mlnnkit verify``."""

    against: str = "the Keras model"

    def describe(self) -> str:
        return (
            f"{self.samples:,} samples over the input ranges (edges included): onnxruntime "
            f"on the {self.dtype} file vs {self.against}; error relative to each output's "
            f"range ({self.span_from})"
        )


@dataclass
class OnnxExport:
    """What :func:`to_onnx` wrote and measured.

    Attributes:
        path: the ``.onnx`` file.
        dtype: ``"float32"`` or ``"float64"`` (the file's tensor type).
        exporter: how the graph was made (Keras's exporter or jax2onnx in double precision).
        input_name, input_shape: the input (``"inputs"``, ``("batch", n)``).
        output_names: the file's output names.
        metadata: the ``metadata_props`` written (JSON strings).
        checks: the onnxruntime comparisons (model, then reference when there is one).
    """

    path: Path
    dtype: str
    exporter: str
    input_name: str
    input_shape: tuple
    output_names: list[str]
    metadata: dict[str, str]
    checks: list[OnnxCheck] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def summary(self) -> str:
        shape = " x ".join(str(d) for d in self.input_shape)
        outs = ", ".join(self.output_names)
        return (
            f"{self.dtype}, input {self.input_name!r} ({shape}), output(s) {outs}; "
            f"{self.exporter}"
        )


class OnnxVerificationError(VerificationError):
    """The written ONNX file does not compute what the model computes (no file is left);
    ``checks`` holds the measured comparisons."""

    def __init__(self, message: str, checks: list[OnnxCheck]):
        super().__init__(message)
        self.checks = checks


# ------------------------------------------------------------------- reading the model


def _walk(layer):
    for sub in getattr(layer, "layers", []) or []:
        yield sub
        yield from _walk(sub)


def _layers_of(model, kind: str) -> list:
    return [l for l in _walk(model) if type(l).__name__ == kind]


def _io_names(model) -> tuple[list[str] | None, list[str] | None]:
    try:  # the lead's io_names (physical names, chains) when it exists
        from mlnnkit.models import io_names
    except ImportError:
        from mlnnkit.predict_io import model_io_names as io_names
    return io_names(model)


def _is_float64(model) -> bool:
    dt = str(getattr(model.inputs[0], "dtype", ""))
    return "float64" in dt or any("float64" in str(w.dtype) for w in model.weights)


@dataclass
class _Interface:
    """What goes in and comes out, read from the model's layers."""

    sample_shape: tuple
    n_in: int | None
    in_names: list[str] | None
    in_min: np.ndarray | None  # network-space ranges (what the legacy file holds)
    in_max: np.ndarray | None
    in_transforms: list[str] | None
    in_network_names: list[str] | None
    out_names: list[str] | None
    out_min: np.ndarray | None
    out_max: np.ndarray | None
    out_transforms: list[str] | None
    out_network_names: list[str] | None
    source_format: str | None


def _interface(model) -> _Interface:
    if len(model.inputs) != 1:
        raise UserError(
            f"model {model.name!r} has {len(model.inputs)} inputs; ONNX export writes one "
            f"input {INPUT_NAME!r} (rows x variables): join them into one array first"
        )
    shape = tuple(model.inputs[0].shape[1:])
    if any(d is None for d in shape):
        raise UserError(
            f"model {model.name!r} takes samples of shape {shape} with an unknown size; "
            "ONNX export needs a fixed sample shape (only the row count may vary)"
        )
    scal_in = next(iter(_layers_of(model, "InputScaling")), None)
    scal_out = (_layers_of(model, "OutputScaling") or [None])[-1]
    tr_in = next(iter(_layers_of(model, "InputTransform")), None)
    tr_out = (_layers_of(model, "OutputTransform") or [None])[-1]
    in_names, out_names = _io_names(model)

    def rng(layer):
        if layer is None or getattr(layer, "minimum", None) is None:
            return None, None
        return np.asarray(layer.minimum, np.float64), np.asarray(layer.maximum, np.float64)

    def transforms(layer):
        if layer is None:
            return None
        return [str(t) for t in layer.transforms]

    def network_names(layer, scaling):
        names = getattr(layer, "network_names", None) if layer is not None else None
        return list(names) if names else (list(scaling.names) if scaling and scaling.names else None)

    in_min, in_max = rng(scal_in)
    out_min, out_max = rng(scal_out)
    src = next((l.source_format for l in (scal_in, scal_out) if l is not None and l.source_format), None)
    return _Interface(
        sample_shape=shape,
        n_in=shape[0] if len(shape) == 1 else None,
        in_names=in_names,
        in_min=in_min,
        in_max=in_max,
        in_transforms=transforms(tr_in),
        in_network_names=network_names(tr_in, scal_in) if tr_in is not None else None,
        out_names=out_names,
        out_min=out_min,
        out_max=out_max,
        out_transforms=transforms(tr_out),
        out_network_names=network_names(tr_out, scal_out) if tr_out is not None else None,
        source_format=src,
    )


def _output_names(model) -> list[str]:
    if len(model.outputs) == 1:
        return [OUTPUT_NAME]
    return [str(n) for n in model.output_names]


def _metadata(model, io: _Interface, *, dtype: str, exporter: str, source: str | None) -> dict:
    import mlnnkit

    def lst(a):
        return None if a is None else [float(v) for v in a]

    meta: dict[str, Any] = {
        "mlnnkit_version": mlnnkit.__version__,
        "model_name": model.name,
        "source_file": Path(source).name if source else None,
        "source_format": io.source_format or "keras",
        "dtype": dtype,
        "exporter": exporter,
        "input_name": INPUT_NAME,
        "input_shape": ["batch", *io.sample_shape],
        "input_names": io.in_names,
        "input_min": lst(io.in_min),
        "input_max": lst(io.in_max),
        "input_transforms": io.in_transforms,
        "input_network_names": io.in_network_names,
        "output_names": io.out_names,
        "output_min": lst(io.out_min),
        "output_max": lst(io.out_max),
        "output_transforms": io.out_transforms,
        "output_network_names": io.out_network_names,
        "ranges": (
            "input_min/max and output_min/max are the network's training ranges in its own "
            "variables (after the input transforms, before the output transforms), as the "
            "source file gives them; the graph applies transforms and scaling itself"
        ),
    }
    return {k: json.dumps(v) if not isinstance(v, str) else v for k, v in meta.items() if v is not None}


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The ``metadata_props`` of an ``.onnx`` file, JSON values decoded.

    Example:
        >>> meta = read_onnx_metadata("pace.onnx")  # doctest: +SKIP
        >>> meta["input_names"][:3]                 # doctest: +SKIP
        ['solz', 'senz', 'relaz']
    """
    require_onnx()
    import onnx

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    proto = onnx.load(str(path), load_external_data=False)
    out: dict[str, Any] = {}
    for p in proto.metadata_props:
        try:
            out[p.key] = json.loads(p.value)
        except ValueError:
            out[p.key] = p.value
    return out


# -------------------------------------------------------------------------- exporting


def _export_keras(model, io: _Interface, opset: int | None):
    """Keras's own exporter (float32): returns the ModelProto."""
    import onnx

    if not getattr(model, "_called", True):  # Keras exports only models called once
        model(np.zeros((1, *io.sample_shape), "float32"), training=False)

    with tempfile.TemporaryDirectory(prefix="mlnnkit-onnx-") as td:
        f = Path(td) / "model.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.export(str(f), format="onnx", verbose=False, opset_version=opset)
        return onnx.load(str(f))  # external data (large weights), if any, loaded inline


def _export_double(model, io: _Interface, opset: int | None):
    """jax2onnx in double precision (what Keras's exporter does not ask for)."""
    import jax
    import jax2onnx

    from mlnnkit._precision import enable_float64

    enable_float64()

    def fn(x):
        return model(x, training=False)

    kwargs = {} if opset is None else {"opset": opset}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return jax2onnx.to_onnx(
            fn,
            inputs=[jax.ShapeDtypeStruct(("batch", *io.sample_shape), np.float64)],
            model_name=model.name,
            enable_double_precision=True,
            return_mode="proto",
            input_names=[INPUT_NAME],
            **kwargs,
        )


def _rename(graph, old: str, new: str) -> None:
    if old == new:
        return
    for node in graph.node:
        for i, n in enumerate(node.input):
            if n == old:
                node.input[i] = new
        for i, n in enumerate(node.output):
            if n == old:
                node.output[i] = new
    for coll in (graph.input, graph.output, graph.value_info):
        for vi in coll:
            if vi.name == old:
                vi.name = new


def _finish(proto, model, names: list[str], meta: dict[str, str], doc: str):
    import onnx

    import mlnnkit

    g = proto.graph
    inputs = [i for i in g.input if i.name not in {t.name for t in g.initializer}]
    if len(inputs) != 1 or len(g.output) != len(names):
        raise UserError(
            f"model {model.name!r}: the exported graph has {len(inputs)} inputs and "
            f"{len(g.output)} outputs, expected 1 and {len(names)}"
        )
    taken = {n for node in g.node for n in (*node.input, *node.output)} | {i.name for i in g.input}
    # Two passes so that a new name equal to another tensor's old one cannot collide.
    plan = [(inputs[0].name, INPUT_NAME)] + [(o.name, n) for o, n in zip(g.output, names)]
    tmp = []
    for k, (old, new) in enumerate(plan):
        t = f"__mlnnkit_rename_{k}"
        while t in taken:
            t += "_"
        _rename(g, old, t)
        tmp.append((t, new))
    for t, new in tmp:
        _rename(g, t, new)
    proto.producer_name = "mlnnkit"
    proto.producer_version = mlnnkit.__version__
    proto.doc_string = doc
    del proto.metadata_props[:]
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(proto)
    return proto


# ------------------------------------------------------------------------- verifying


def _sample(io: _Interface, samples: int, seed: int) -> np.ndarray:
    """Physical inputs over the ranges (edges included); [-1, 1] without ranges."""
    from mlnnkit.legacy import reference

    if io.n_in is None:  # samples that are not flat vectors: uniform in [-1, 1]
        rng = np.random.default_rng(seed)
        return rng.uniform(-1.0, 1.0, size=(samples, *io.sample_shape))
    if io.in_min is not None:
        lo, hi = io.in_min, io.in_max
    else:
        lo, hi = -np.ones(io.n_in), np.ones(io.n_in)
    x = reference.sample_inputs(lo, hi, samples, seed=seed)
    if io.in_transforms:
        x = np.column_stack(
            [_INPUT_INVERSE[t](x[:, j]) for j, t in enumerate(io.in_transforms)]
        )
    return x


def _to_network(io: _Interface, y: np.ndarray) -> np.ndarray:
    if not io.out_transforms or y.ndim != 2 or y.shape[1] != len(io.out_transforms):
        return y
    with np.errstate(all="ignore"):
        return np.column_stack([_OUTPUT_INVERSE[t](y[:, j]) for j, t in enumerate(io.out_transforms)])


def _run_keras(model, x: np.ndarray, batch: int = 8192) -> list[np.ndarray]:
    import keras

    parts = []
    for i in range(0, len(x), batch):
        y = model(keras.ops.convert_to_tensor(x[i : i + batch]), training=False)
        ys = y if isinstance(y, (list, tuple)) else list(y.values()) if isinstance(y, dict) else [y]
        parts.append([np.asarray(keras.ops.convert_to_numpy(v)) for v in ys])
    return [np.concatenate(p) for p in zip(*parts)]


def _run_onnx(path: Path, x: np.ndarray, batch: int = 65536) -> list[np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    parts = [session.run(None, {INPUT_NAME: x[i : i + batch]}) for i in range(0, len(x), batch)]
    return [np.concatenate(p) for p in zip(*parts)]


def _compare(got, want, names, span, span_from, **kw) -> OnnxCheck:
    got = np.asarray(got, np.float64).reshape(len(got), -1)
    want = np.asarray(want, np.float64).reshape(len(want), -1)
    with np.errstate(invalid="ignore"):
        err = np.abs(got - want)
    both_nan = np.isnan(got) & np.isnan(want)
    err = np.where(both_nan, 0.0, err)
    abs_error = np.where(np.isnan(err).any(axis=0), np.inf, np.nanmax(err, axis=0, initial=0.0))
    return OnnxCheck(
        names=list(names),
        abs_error=abs_error,
        rel_error=abs_error / span,
        span=span,
        span_from=span_from,
        **kw,
    )


def _span(io: _Interface, y: np.ndarray, i: int) -> tuple[np.ndarray, str]:
    if i == 0 and io.out_min is not None and y.shape[1] == len(io.out_min):
        return io.out_max - io.out_min, "max - min from the file"
    finite = np.where(np.isfinite(y), y, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = np.nanmax(finite, axis=0) - np.nanmin(finite, axis=0)
    s = np.where(np.isfinite(s) & (s > 0), s, 1.0)
    return s, "no output ranges: spread of the model's outputs"


def _check(
    path: Path,
    model,
    io: _Interface,
    names: list[str],
    reference_spec,
    *,
    dtype: str,
    samples: int,
    tolerance: float,
    seed: int,
) -> list[OnnxCheck]:
    from mlnnkit.legacy import reference
    from mlnnkit.legacy._keras import model_sigmoid

    x = _sample(io, samples, seed).astype(dtype)
    got = _run_onnx(path, x)
    want = _run_keras(model, x)
    sigmoid = model_sigmoid(model)
    common = dict(
        tolerance=tolerance, samples=samples, dtype=dtype, sigmoid=sigmoid,
        source_format=io.source_format,
    )  # fmt: skip
    checks = []
    if len(got) != len(want):
        raise OnnxVerificationError(
            f"the ONNX file has {len(got)} outputs but the model {len(want)}", checks
        )
    var_names, span_parts, from_parts, g_parts, w_parts = [], [], [], [], []
    for i, (g, w, name) in enumerate(zip(got, want, names)):
        g2 = _to_network(io, g.reshape(len(g), -1).astype(np.float64))
        w2 = _to_network(io, w.reshape(len(w), -1).astype(np.float64))
        span, span_from = _span(io, w2, i)
        n = w2.shape[1]
        if i == 0 and io.out_names and len(io.out_names) == n:
            var_names += list(io.out_names)
        elif len(names) == 1:
            var_names += [f"output_{j + 1}" for j in range(n)]
        else:
            var_names += [name] if n == 1 else [f"{name}[{j}]" for j in range(n)]
        span_parts.append(span)
        from_parts.append(span_from)
        g_parts.append(g2)
        w_parts.append(w2)
    checks.append(
        _compare(
            np.hstack(g_parts), np.hstack(w_parts), var_names, np.concatenate(span_parts),
            "; ".join(dict.fromkeys(from_parts)),
            against=f"the Keras model ({dtype})", **common,
        )  # fmt: skip
    )
    if reference_spec is not None and io.n_in is not None:
        xin = x.astype(np.float64)
        if io.in_transforms:
            with np.errstate(all="ignore"):
                xin = np.column_stack(
                    [_INPUT_FORWARD[t](xin[:, j]) for j, t in enumerate(io.in_transforms)]
                )
        ref = reference.forward(reference_spec, xin, sigmoid)
        span = reference_spec.output_span()
        span_from = "max - min from the file"
        if span is None:
            span, span_from = _span(io, ref, 1)
        what = f"{reference_spec.source_format} math" if reference_spec.source_format else "math"
        checks.append(
            _compare(
                g_parts[0], ref, reference_spec.names_out(), span, span_from,
                against=f"the float64 NumPy reference of the file's {what}", **common,
            )  # fmt: skip
        )
    return checks


# ------------------------------------------------------------------------------ entry


def _reference_of(model, reference) -> NetworkSpec | None:
    from mlnnkit import legacy
    from mlnnkit.legacy.spec import NetworkSpec

    if reference is False:
        return None
    if isinstance(reference, NetworkSpec):
        return reference
    if reference is not None:
        return legacy.read(reference)
    if _layers_of(model, "InputTransform") or _layers_of(model, "OutputTransform"):
        return None  # the bare network inside is what from_keras describes; not this model
    if legacy.source_format(model) is None:
        return None  # not imported: only the model itself is the yardstick
    try:
        return legacy.from_keras(model)
    except UserError:
        return None


def _load(model, samples: int):
    """(keras model, reference spec or None, source path or None) from what was passed."""
    import keras

    if isinstance(model, keras.Model):
        return model, None, None
    from mlnnkit import legacy
    from mlnnkit.models import load_model

    path = Path(model)
    fmt = legacy.detect_format(path)
    if fmt == "keras":
        return load_model(path, compile=False), None, path
    # A legacy file: import it as `mlnnkit import` does (float32 unless that is not
    # precise enough for this network), then export that model.
    spec = legacy.read(path, fmt)
    m = legacy.to_keras(spec, "float32", name=path.stem)
    if not legacy.verify(m, spec, samples=min(samples, 10_000)).passed:
        m = legacy.to_keras(spec, "float64", name=path.stem)
    return m, spec, path


def to_onnx(
    model: keras.Model | str | Path,
    path: str | Path,
    *,
    reference: str | Path | NetworkSpec | bool | None = None,
    source: str | Path | None = None,
    samples: int = DEFAULT_SAMPLES,
    tolerance: float | None = None,
    seed: int = 0,
    opset: int | None = None,
) -> OnnxExport:
    """Write ``model`` as an ONNX file, verified with onnxruntime; nothing is left if not.

    Args:
        model: a ``keras.Model``, a saved model (``.keras``/``.h5``), or a legacy network
            file (OC-SMART ``.h5``, ffbp ``.net``), which is imported first as ``mlnnkit
            import`` does (float32 when that passes verify, else float64).
        path: the file to write (atomically; ``.onnx`` by convention).
        reference: the float64 yardstick besides the model: None (default) uses the
            legacy file when ``model`` is one, else the network an imported model holds
            (:func:`mlnnkit.legacy.from_keras`); a legacy file path or
            :class:`~mlnnkit.legacy.NetworkSpec` to compare with; False for none.
        source: the file the model came from, recorded in the metadata (default: ``model``
            when it is a path).
        samples: inputs drawn over the model's input ranges, edges included (default
            10,000; without ranges, uniform in [-1, 1]).
        tolerance: largest error allowed, as a fraction of each output's range; default
            1e-5 for float32 files, 1e-12 for float64 files.
        seed: seed of the inputs (default 0).
        opset: ONNX opset (default: jax2onnx's, 23).

    Returns:
        :class:`OnnxExport`: the file, its interface, metadata and the checks.

    Raises:
        UserError: the extra is not installed, or the model cannot be exported.
        OnnxVerificationError: the file does not compute what the model (or the
            reference) computes; no file is written.

    Example:
        >>> import keras, numpy as np, onnxruntime as ort, tempfile, os
        >>> from mlnnkit.export import to_onnx
        >>> from mlnnkit.layers import InputScaling, OutputScaling
        >>> inputs = keras.Input((2,), name="inputs")
        >>> x = InputScaling([0.0, 0.0], [1.0, 10.0], names=["a", "b"])(inputs)
        >>> x = keras.layers.Dense(3, activation="tanh")(x)
        >>> model = keras.Model(inputs, OutputScaling([0.0], [5.0], names=["c"])(
        ...     keras.layers.Dense(1)(x)))
        >>> path = os.path.join(tempfile.mkdtemp(), "tiny.onnx")
        >>> result = to_onnx(model, path, samples=100)
        >>> result.passed, result.output_names, result.metadata["input_names"]
        (True, ['outputs'], '["a", "b"]')
        >>> session = ort.InferenceSession(path)
        >>> y = session.run(None, {"inputs": np.array([[0.5, 5.0]], np.float32)})[0]
        >>> bool(np.allclose(y, model(np.array([[0.5, 5.0]])), atol=1e-6))
        True
    """
    require_onnx()
    if samples < 3:
        raise UserError(f"samples must be at least 3, not {samples}")
    if tolerance is not None and not tolerance > 0:
        raise UserError(f"tolerance must be > 0, not {tolerance}")
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder; give the .onnx file to write")
    m, spec, src = _load(model, samples)
    if source is None:
        source = src if src is not None else (
            reference if isinstance(reference, (str, Path)) else None
        )
    io = _interface(m)
    ref = spec if (spec is not None and reference is None) else _reference_of(m, reference)
    double = _is_float64(m)
    dtype = "float64" if double else "float32"
    from importlib.metadata import version

    j2o = version("jax2onnx")
    if double:
        exporter = f"jax2onnx {j2o} with enable_double_precision (float64 model)"
        proto = _export_double(m, io, opset)
    else:
        exporter = f"keras.Model.export(format='onnx') via jax2onnx {j2o}"
        proto = _export_keras(m, io, opset)
    names = _output_names(m)
    meta = _metadata(m, io, dtype=dtype, exporter=exporter, source=source)
    doc = (
        f"{m.name} exported by mlnnkit {meta['mlnnkit_version']}: input {INPUT_NAME!r} "
        f"(rows x {' x '.join(map(str, io.sample_shape))}, {dtype}), output(s) "
        f"{', '.join(names)}; variable names, ranges and transforms in metadata_props"
    )
    proto = _finish(proto, m, names, meta, doc)
    if proto.ByteSize() > 2_000_000_000:
        raise UserError(f"model {m.name!r} is too large for a single ONNX file (> 2 GB)")
    tol = float(tolerance) if tolerance is not None else DEFAULT_TOLERANCE[dtype]
    with _atomic.atomic_path(path) as tmp:
        tmp.write_bytes(proto.SerializeToString())
        checks = _check(
            tmp, m, io, names, ref, dtype=dtype, samples=samples, tolerance=tol, seed=seed
        )
        failed = [c for c in checks if not c.passed]
        if failed:
            c = failed[0]
            i = c.worst
            raise OnnxVerificationError(
                f"the ONNX file written from model {m.name!r} does not compute what "
                f"{c.against} computes: max error {c.rel_error[i]:.3g} of the range of "
                f"output {c.names[i]} > tolerance {tol:g}; nothing written",
                checks,
            )
    return OnnxExport(
        path=path,
        dtype=dtype,
        exporter=exporter,
        input_name=INPUT_NAME,
        input_shape=("batch", *io.sample_shape),
        output_names=names,
        metadata=meta,
        checks=checks,
    )


__all__ = [
    "ONNX_EXTRA_HINT",
    "OnnxCheck",
    "OnnxExport",
    "OnnxVerificationError",
    "onnx_available",
    "read_onnx_metadata",
    "require_onnx",
    "to_onnx",
]

