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

This module: the extra, the exporters, :func:`to_onnx`; loading and reading the model
is :mod:`mlnnkit.export._onnx_model`, the checks :mod:`mlnnkit.export._onnx_check`.
"""

from __future__ import annotations

import importlib
import json
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlnnkit import _atomic
from mlnnkit._precision import is_float64
from mlnnkit.errors import UserError
from mlnnkit.export._onnx_check import OnnxCheck, OnnxExport, OnnxVerificationError, _check
from mlnnkit.export._onnx_model import (
    INPUT_NAME,
    _export_model,
    _Interface,
    _interface,
    _is_float64,
    _load,
    _metadata,
    _reference_of,
)

if TYPE_CHECKING:
    import keras

    from mlnnkit.legacy.spec import NetworkSpec

#: What a user without the extra is told to install.
ONNX_EXTRA_HINT = 'pip install "mlnnkit[onnx]"'
_MODULES = ("onnx", "onnxruntime", "jax2onnx")

DEFAULT_SAMPLES = 10_000
#: Default tolerance (fraction of each output's range) per dtype of the file.
DEFAULT_TOLERANCE = {"float32": 1e-5, "float64": 1e-12}



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
        >>> require_onnx()   # nothing to say when the onnx extra is installed
    """
    for name in _MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            raise UserError(
                f"ONNX export needs {name}, which is not installed: {ONNX_EXTRA_HINT} "
                "(jax2onnx, onnx, onnxruntime)"
            ) from None


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The ``metadata_props`` of an ``.onnx`` file, JSON values decoded.

    Example:
        >>> _ = to_onnx("net.keras", "net.onnx")
        >>> read_onnx_metadata("net.onnx")["source_format"]
        'ocsmart'
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


def _all_float64(model):
    """``model`` itself when every layer computes in float64, else a float64 copy (same
    weights, cast): jax2onnx's double precision types every tensor as double but keeps a
    cast to float32 inside a float32 part of a mixed model (a chain with a float32
    scope), and onnxruntime refuses the file (e.g. a Concat of float inputs declared
    double). The file computes everything in float64 either way."""
    import keras

    from mlnnkit._compat import flatten_layers

    layers = flatten_layers(model, include_self=False)
    if all(is_float64(getattr(layer, "dtype_policy", "float64")) for layer in layers):
        return model

    def as64(layer):
        config = layer.get_config()
        if "dtype" not in config:  # an operation (e.g. GetItem), not a layer: no dtype
            return layer.__class__.from_config(config)
        config["dtype"] = "float64"
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=as64, recursive=True)
    copy.set_weights([np.asarray(w, np.float64) for w in model.get_weights()])
    return copy


def _export_double(model, io: _Interface, opset: int | None):
    """jax2onnx in double precision (what Keras's exporter does not ask for)."""
    import jax
    import jax2onnx

    from mlnnkit._precision import enable_float64

    enable_float64()
    model = _all_float64(model)

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


# ------------------------------------------------------------------------------ entry


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
    flags: bool = False,
    limit_margin: float = 0.02,
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
            1e-5 for float32 files, 1e-12 for float64 files of all-float64 models (1e-5
            when part of the model, e.g. a chain step, computes in float32).
        seed: seed of the inputs (default 0).
        opset: ONNX opset (default: jax2onnx's, 23).
        flags: add the ``quality_flags`` output (``uint8`` per row, the bits of
            :func:`mlnnkit.retrieval.flags_model`, meanings in the metadata); default False.
            A chain with a scope always has its ``scope_error`` output.
        limit_margin: with ``flags``, the margin of ``output_at_limit`` (default 0.02).

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
    from mlnnkit.legacy._keras import model_sigmoid

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
    m0 = m
    m, names = _export_model(m0, io, flags, limit_margin)
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
    meta = _metadata(m0, io, dtype=dtype, exporter=exporter, source=source, outputs=names)
    doc = (
        f"{m.name} exported by mlnnkit {meta['mlnnkit_version']}: input {INPUT_NAME!r} "
        f"(rows x {' x '.join(map(str, io.sample_shape))}, {dtype}), output(s) "
        f"{', '.join(names)}; variable names, ranges and transforms in metadata_props"
    )
    proto = _finish(proto, m, names, meta, doc)
    if proto.ByteSize() > 2_000_000_000:
        raise UserError(f"model {m.name!r} is too large for a single ONNX file (> 2 GB)")
    # A float64 model with float32 parts (a chain of float32 and float64 steps): the file
    # computes every part in float64, the model some in float32, so they agree only to
    # float32 precision.
    all64 = all("float64" in str(w.dtype) for w in m.weights if "float" in str(w.dtype))
    tol_dtype = "float64" if double and all64 else "float32"
    tol = float(tolerance) if tolerance is not None else DEFAULT_TOLERANCE[tol_dtype]
    with _atomic.atomic_path(path) as tmp:
        tmp.write_bytes(proto.SerializeToString())
        checks = _check(
            tmp, m, io, names, ref, dtype=dtype, samples=samples, tolerance=tol, seed=seed,
            sigmoid=model_sigmoid(m0),
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
