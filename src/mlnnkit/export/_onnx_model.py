"""Loading and reading a Keras model for ONNX export: interface, model to export, metadata.

The model (and the float64 reference) from what :func:`to_onnx` was passed; what goes in
and comes out (one input ``inputs``, rows x variables; named outputs), the variable names,
ranges and transforms read from the model's layers (a chain's physical input ranges from
its steps); the model actually exported (a chain's ``scope_error`` and the optional
``quality_flags`` as outputs of their own) and the ``metadata_props`` written into the
file. Used by :mod:`mlnnkit.export._onnx` and :mod:`mlnnkit.export._onnx_check`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlnnkit.errors import UserError

if TYPE_CHECKING:
    from mlnnkit.legacy.spec import NetworkSpec

#: Name of the one input of every exported file, and of the output of one-output models.
INPUT_NAME = "inputs"
OUTPUT_NAME = "outputs"


def _columns(transforms, x, *, inverse: bool = False) -> np.ndarray:
    """One transform of the physical-units vocabulary per column (float64, NaN where a
    transform cannot take a value): :func:`mlnnkit.layers.transform_numpy`."""
    from mlnnkit.layers import transform_numpy

    x = np.asarray(x, np.float64).reshape(len(x), -1)
    return np.stack(
        [transform_numpy(t, x[:, j], inverse=inverse) for j, t in enumerate(transforms)], axis=1
    )


# ------------------------------------------------------------------- reading the model


def _walk(layer):
    for sub in getattr(layer, "layers", []) or []:
        yield sub
        yield from _walk(sub)


def _layers_of(model, kind: str) -> list:
    return [l for l in _walk(model) if type(l).__name__ == kind]


def _io_names(model) -> tuple[list[str] | None, list[str] | None]:
    from mlnnkit.models import io_names  # physical names, chains (#11, #12)

    return io_names(model)


def _is_float64(model) -> bool:
    dt = str(getattr(model.inputs[0], "dtype", ""))
    return "float64" in dt or any("float64" in str(w.dtype) for w in model.weights)


@dataclass
class _Interface:
    """The model and reference from what :func:`to_onnx` was passed; what goes in and comes out, read from the model's layers."""

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
    phys_min: np.ndarray | None = None  # physical input ranges (chains)
    phys_max: np.ndarray | None = None
    chain: dict | None = None


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
    in_names, out_names = _io_names(model)
    from mlnnkit.retrieval import chain_info

    info = chain_info(model)
    if info is not None:
        return _chain_interface(model, info, shape, in_names, out_names)
    scal_in = next(iter(_layers_of(model, "InputScaling")), None)
    scal_out = (_layers_of(model, "OutputScaling") or [None])[-1]
    tr_in = next(iter(_layers_of(model, "InputTransform")), None)
    tr_out = (_layers_of(model, "OutputTransform") or [None])[-1]

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


def _chain_interface(model, info, shape, in_names, out_names) -> _Interface:
    """A chain's inputs are physical variables, each the input of some step: its range is
    that step's network range mapped back through the step's input transform."""
    lo = np.full(shape[0], -1.0)
    hi = np.full(shape[0], 1.0)
    found = np.zeros(shape[0], bool)
    by_name = {l.name: l for l in model.layers}
    for step in info["steps"]:
        pre = f"{step['name']}__"
        scal = next((l for n, l in by_name.items() if n.startswith(pre)
                     and type(l).__name__ == "InputScaling"), None)  # fmt: skip
        if scal is None or scal.minimum is None:
            continue
        # The step's input transforms: in its record (chains since the transforms are
        # shared), else its own InputTransform layer (chains saved before).
        kinds = step.get("input_transforms")
        if kinds is None:
            tr = next((l for n, l in by_name.items() if n.startswith(pre)
                       and type(l).__name__ == "InputTransform"), None)  # fmt: skip
            kinds = tr.transforms if tr is not None else None
        a, b = np.asarray(scal.minimum), np.asarray(scal.maximum)
        if kinds is not None:
            a, b = _columns(kinds, a[None], inverse=True)[0], _columns(
                kinds, b[None], inverse=True)[0]  # fmt: skip
            a, b = np.minimum(a, b), np.maximum(a, b)
        for j, n in enumerate(step["inputs"]):
            if n in info["input_names"]:
                k = info["input_names"].index(n)
                if not found[k]:
                    lo[k], hi[k], found[k] = a[j], b[j], True
    return _Interface(
        sample_shape=shape, n_in=shape[0], in_names=in_names, in_min=None, in_max=None,
        in_transforms=None, in_network_names=None, out_names=out_names, out_min=None,
        out_max=None, out_transforms=None, out_network_names=None, source_format="chain",
        phys_min=lo, phys_max=hi, chain=info,
    )  # fmt: skip


def _export_model(model, io: _Interface, flags: bool, limit_margin: float):
    """The model to export and its output names: a chain's ``scope_error`` as an output of
    its own, and with ``flags`` the ``quality_flags`` output (same compiled program)."""
    import keras

    scope = bool(io.chain and io.chain.get("scope"))
    if not flags and not scope:
        if len(model.outputs) == 1:
            return model, [OUTPUT_NAME]
        return model, [str(n) for n in model.output_names]
    if len(model.outputs) != 1:
        raise UserError(f"model {model.name!r}: --flags needs a model with one output tensor")
    base = model
    if flags:
        from mlnnkit.retrieval import flags_model

        base = flags_model(model, limit_margin)
    inp = keras.Input(io.sample_shape, dtype=model.inputs[0].dtype, name=INPUT_NAME)
    out = base(inp)
    y, f = (out[0], out[1]) if flags else (out, None)
    outs, names = ([y[:, :-1], y[:, -1]], [OUTPUT_NAME, "scope_error"]) if scope else ([y], [OUTPUT_NAME])
    if flags:
        outs.append(f)
        names.append("quality_flags")
    return keras.Model(inp, outs, name=model.name), names


def _metadata(
    model, io: _Interface, *, dtype: str, exporter: str, source: str | None, outputs: list[str]
) -> dict:
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
        "outputs": outputs,
        "output_names": (
            io.out_names[:-1]
            if io.out_names and "scope_error" in outputs and io.out_names[-1] == "scope_error"
            else io.out_names
        ),
        "chain_inputs_range": (
            None if io.phys_min is None else [[float(a), float(b)] for a, b in zip(io.phys_min, io.phys_max)]
        ),
        "chain_steps": None if io.chain is None else [st["name"] for st in io.chain["steps"]],
        "scope": None if io.chain is None else io.chain.get("scope"),
        "quality_flags": _flag_meta() if "quality_flags" in outputs else None,
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


def _flag_meta() -> dict:
    from mlnnkit.retrieval import flag_attrs

    a = flag_attrs()
    return {
        "flag_masks": [int(m) for m in a["flag_masks"]],
        "flag_meanings": a["flag_meanings"].split(),
        "comment": a["comment"],
    }


# ---------------------------------------------------------------- what was passed


def _reference_of(model, reference) -> NetworkSpec | None:
    from mlnnkit import legacy
    from mlnnkit.legacy.spec import NetworkSpec

    if reference is False:
        return None
    if isinstance(reference, NetworkSpec):
        return reference
    if reference is not None:
        return legacy.read(reference)
    from mlnnkit.retrieval import is_chain

    if is_chain(model):
        return None  # several networks: the model itself is the yardstick
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
