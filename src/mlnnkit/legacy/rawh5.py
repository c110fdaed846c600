"""Generic raw-weight HDF5: per-layer weight and bias arrays at dataset paths you name.

For networks saved as plain arrays by some other tool. You give the dataset patterns
(``{i}`` is the layer number; numbering starts at 0 or 1, whichever exists), the
activations (one per layer, one for all, or a ``hidden,output`` pair), and optionally
``[min, max]`` scaling datasets. The orientation of each weight array is found from how
the shapes chain (and the bias lengths and scaling sizes); when that cannot decide (all
layers square) pass ``transpose``: False means arrays are stored ``(out, in)``
(``z = W @ x``, MATLAB style), True means ``(in, out)`` (a Keras kernel).

Files written by :func:`write` describe themselves (attributes ``activations``,
``scale_range``, names), so reading them back needs no options.

Example:
    >>> spec = read("net.h5", weights="W{i}", biases="b{i}",
    ...             activations="relu,linear", norm_in="x_range")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from mlnnkit.errors import UserError
from mlnnkit.legacy import _hdf5
from mlnnkit.legacy.spec import MAX_RANGE, MAX_WEIGHT, NetworkSpec, Scaling, canonical_activation

NAME = "rawh5"
DESCRIPTION = "raw-weight HDF5"
DEFAULTS: dict[str, Any] = {
    "weights": "Weights/Layer{i}",
    "biases": "Bias/Layer{i}",
    "norm_in": None,
    "norm_out": None,
}


def parse_activations(value: str | Sequence[str] | None, n_layers: int, where: str) -> list[str]:
    """Expand ``"tanh,linear"`` (hidden, output), ``"relu"`` (all) or one per layer.

    Example:
        >>> parse_activations("tanh,linear", 3, "")
        ['tanh', 'tanh', 'linear']
    """
    if value is None:
        raise UserError(
            f"{where}: the file does not say its activations; pass them, e.g. "
            "--activations tanh,linear (hidden, output) or one per layer"
        )
    items = [a.strip() for a in value.split(",")] if isinstance(value, str) else list(value)
    items = [canonical_activation(a, where) for a in items if a]
    if len(items) == 1:
        return items * n_layers
    if len(items) == n_layers:
        return items
    if len(items) == 2:
        return [items[0]] * (n_layers - 1) + [items[1]]
    raise UserError(
        f"{where}: {len(items)} activations ({','.join(items)}) for {n_layers} layers; give "
        "one per layer, one for all, or a hidden,output pair"
    )


def parse_range(value: str | Sequence[float] | None) -> tuple[float, float] | None:
    """``"-1,1"`` or ``(-1, 1)`` -> ``(-1.0, 1.0)``."""
    if value is None:
        return None
    parts = value.split(",") if isinstance(value, str) else list(value)
    try:
        lo, hi = (float(p) for p in parts)
    except (TypeError, ValueError):
        raise UserError(f"scale range {value!r}: give two numbers lo,hi such as -1,1") from None
    if not lo < hi:
        raise UserError(f"scale range {value!r}: lo must be below hi")
    return lo, hi


def _layer_names(
    f: h5py.File, pattern: str, what: str, path, start: int | None = None
) -> tuple[int, list[str]]:
    if "{i}" not in pattern:
        raise UserError(
            f"{what} pattern {pattern!r} has no '{{i}}' for the layer number, e.g. 'Weights/Layer{{i}}'"
        )
    tried = (0, 1) if start is None else (start,)
    start = next((s for s in tried if _hdf5.has(f, pattern.format(i=s))), None)
    if start is None:
        raise UserError(
            f"{path}: no dataset matches the {what} pattern {pattern!r} (tried "
            + " and ".join(repr(pattern.format(i=s)) for s in tried)
            + ")"
        )
    names, i = [], start
    while _hdf5.has(f, pattern.format(i=i)):
        names.append(pattern.format(i=i))
        i += 1
    return start, names


_LAYOUT_ATTRS = ("weights_pattern", "biases_pattern", "transpose", "norm_in", "norm_out")


def _attr_str(f: h5py.File, name: str) -> str | None:
    v = f.attrs.get(name)
    if v is None:
        return None
    return v.decode() if isinstance(v, bytes) else str(v)


def _read_norm(f: h5py.File, name: str, path) -> tuple[np.ndarray, np.ndarray, tuple | None]:
    arr = _hdf5.read_array(f, name, path)
    target = f[name].attrs.get("scale_range")
    target = tuple(float(v) for v in target) if target is not None else None
    if arr.ndim == 2 and arr.shape[1] == 2:
        return arr[:, 0], arr[:, 1], target
    if arr.ndim == 2 and arr.shape[0] == 2:
        return arr[0], arr[1], target
    raise UserError(
        f"{path}: dataset {name!r} has shape {arr.shape}; a range dataset holds [min, max] "
        "per variable: shape (n, 2) or (2, n)"
    )


def _orientations(ws: list[np.ndarray], bs: list[np.ndarray | None], n_in, n_out):
    """Which of (stored, transposed) give a consistent network: dict name -> problems."""
    out = {}
    for flip in (False, True):
        mats = [w.T if flip else w for w in ws]
        problems = []
        for k in range(1, len(mats)):
            if mats[k].shape[1] != mats[k - 1].shape[0]:
                problems.append("chain")
        for m, b in zip(mats, bs):
            if b is not None and b.size != m.shape[0]:
                problems.append("bias")
        if n_in is not None and mats[0].shape[1] != n_in:
            problems.append("inputs")
        if n_out is not None and mats[-1].shape[0] != n_out:
            problems.append("outputs")
        out[flip] = problems
    return out


def read(
    path: str | Path,
    *,
    weights: str | None = None,
    biases: str | None = None,
    activations: str | Sequence[str] | None = None,
    transpose: bool | None = None,
    norm_in: str | None = None,
    norm_out: str | None = None,
    scale_range: str | Sequence[float] | None = None,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    start: int | None = None,
    max_weight: float | None = MAX_WEIGHT,
    max_range: float | None = MAX_RANGE,
) -> NetworkSpec:
    """Read per-layer arrays from an HDF5 file into a :class:`NetworkSpec`.

    Args:
        weights: dataset pattern of the weight arrays, ``{i}`` = layer number (default:
            the file's ``weights_pattern`` attribute, else ``Weights/Layer{i}``).
        biases: dataset pattern of the biases (default: the file's ``biases_pattern``
            attribute, else ``Bias/Layer{i}``; ``""``: no biases, zeros).
        activations: ``"tanh,linear"`` (hidden, output), ``"relu"`` or one per layer;
            default: the file's ``activations`` attribute.
        transpose: None: find the orientation from the shapes; False: stored
            ``(out, in)``; True: stored ``(in, out)``.
        norm_in, norm_out: datasets of ``[min, max]`` per input/output (default: the
            file's ``norm_in``/``norm_out`` attributes, else no scaling).
        scale_range: the network's interval for the scaled values (default: the range
            dataset's ``scale_range`` attribute, else ``-1,1``).
        input_names, output_names: variable names (default: the file's attributes).
        start: the number of the first layer (default None: 0 or 1, whichever exists);
            kept in ``source_options`` so :func:`write` numbers the layers the same way.
        max_weight, max_range: refuse a weight or bias (default beyond 1e4) or a range
            limit (default beyond 1e12) of larger magnitude, as a damaged file; None: no
            limit.
    """
    p = str(path)
    with _hdf5.open_h5(path, DESCRIPTION) as f:
        layout = {k: _attr_str(f, k) for k in _LAYOUT_ATTRS}
        weights = weights or layout["weights_pattern"] or DEFAULTS["weights"]
        biases = layout["biases_pattern"] if biases is None else biases
        biases = DEFAULTS["biases"] if biases is None else biases
        norm_in = norm_in or layout["norm_in"]
        norm_out = norm_out or layout["norm_out"]
        if transpose is None and layout["transpose"] is not None:
            transpose = layout["transpose"] == "True"
        start, w_names = _layer_names(f, weights, "weights", p, start)
        ws = [_hdf5.read_array(f, n, p) for n in w_names]
        b_names: list[str | None] = [None] * len(ws)
        bs: list[np.ndarray | None] = [None] * len(ws)
        if biases:
            if "{i}" not in biases:
                raise UserError(f"biases pattern {biases!r} has no '{{i}}' for the layer number")
            for k in range(len(ws)):
                name = biases.format(i=start + k)
                if not _hdf5.has(f, name):
                    raise UserError(
                        f"{p}: dataset {name!r} not found: the weights pattern {weights!r} "
                        f"matches {len(ws)} layers, each needs a bias: pass --biases PATTERN, "
                        "or --biases '' if the network has none"
                    )
                b_names[k] = name
                bs[k] = _hdf5.read_array(f, name, p)
            extra = biases.format(i=start + len(ws))
            if _hdf5.has(f, extra):
                raise UserError(
                    f"{p}: bias dataset {extra!r} has no weight dataset "
                    f"{weights.format(i=start + len(ws))!r}"
                )
        norms = {}
        for side, name in (("in", norm_in), ("out", norm_out)):
            norms[side] = _read_norm(f, name, p) if name else None
        file_acts = f.attrs.get("activations")
        file_names = {
            "in": _hdf5.read_names(f, "input_names"),
            "out": _hdf5.read_names(f, "output_names"),
        }

    for n, w in zip(w_names, ws):
        if w.ndim != 2:
            raise UserError(f"{p}: weight dataset {n!r} has shape {w.shape}; weights must be 2-D")
    for n, b in zip(b_names, bs):
        if b is not None and (b.ndim > 2 or (b.ndim == 2 and min(b.shape) != 1)):
            raise UserError(f"{p}: bias dataset {n!r} has shape {b.shape}; a bias must be a vector")
    n_in = len(norms["in"][0]) if norms["in"] else None
    n_out = len(norms["out"][0]) if norms["out"] else None

    if transpose is None:
        checks = _orientations(ws, bs, n_in, n_out)
        ok = [flip for flip, probs in checks.items() if not probs]
        if len(ok) == 1:
            transpose = ok[0]
        elif len(ok) == 2:
            raise UserError(
                f"{p}: cannot tell the orientation of the weights from their shapes "
                f"({', '.join(str(w.shape) for w in ws)}); pass --no-transpose if they are "
                "stored (out, in) (z = W @ x), --transpose if (in, out) (Keras kernels)"
            )
        else:
            chained = [flip for flip, probs in checks.items() if "chain" not in probs]
            if not chained:
                shapes = ", ".join(f"{n} {w.shape}" for n, w in zip(w_names, ws))
                raise UserError(
                    f"{p}: the weight shapes do not chain in either orientation: {shapes}"
                )
            transpose = chained[0]  # validate() below names the dataset at fault
    mats = [w.T if transpose else w for w in ws]
    acts = (
        activations
        if activations is not None
        else (
            [a.decode() if isinstance(a, bytes) else str(a) for a in np.atleast_1d(file_acts)]
            if file_acts is not None
            else None
        )
    )
    acts = parse_activations(acts, len(ws), f"{p}: activations")
    target = parse_range(scale_range)
    scalings = {}
    for side in ("in", "out"):
        if norms[side] is None:
            scalings[side] = None
            continue
        lo, hi, file_target = norms[side]
        scalings[side] = Scaling(lo, hi, target or file_target or (-1.0, 1.0))

    def where(kind: str, index: int | None) -> str:
        if kind == "weights":
            return f"dataset {w_names[index]!r}"
        if kind == "biases":
            return f"dataset {b_names[index]!r}"
        if kind in ("input_range", "output_range"):
            name = norm_in if kind == "input_range" else norm_out
            return f"dataset {name!r}" if index is None else f"dataset {name!r} entry {index}"
        return kind.replace("_", " ")

    spec = NetworkSpec(
        weights=mats,
        biases=[b.reshape(-1) if b is not None else np.zeros(m.shape[0]) for m, b in zip(mats, bs)],
        activations=acts,
        input_scaling=scalings["in"],
        output_scaling=scalings["out"],
        input_names=list(input_names) if input_names else file_names["in"],
        output_names=list(output_names) if output_names else file_names["out"],
        source_format=NAME,
        source_options={
            "weights": weights,
            "biases": biases,
            "activations": acts,
            "transpose": bool(transpose),
            "norm_in": norm_in,
            "norm_out": norm_out,
            "start": start,
        },
    )
    return spec.validate(p, where, max_weight=max_weight, max_range=max_range)


def check_writable(spec: NetworkSpec) -> None:
    """Every dense network can be written as raw arrays: nothing to refuse."""


def write(
    spec: NetworkSpec,
    path: str | Path,
    *,
    weights: str | None = None,
    biases: str | None = None,
    transpose: bool | None = None,
    norm_in: str | None = None,
    norm_out: str | None = None,
    start: int | None = None,
) -> None:
    """Write ``spec`` as raw arrays (default: OC-SMART-like names, ``(out, in)`` weights).

    Options default to the ones the spec was read with (``spec.source_options``: a
    network read with ``W0, W1`` is written with ``W0, W1`` again), then to
    ``Weights/Layer{i}``, ``Bias/Layer{i}``, ``Norm_in``, ``Norm_out`` and layers
    numbered from ``start`` = 1. The layout
    (patterns, orientation, range datasets), activations, scaling intervals and names are
    stored as attributes, so :func:`read` of the file needs no options.
    """
    so = (
        {k: v for k, v in spec.source_options.items() if v is not None}
        if spec.source_format == NAME
        else {}
    )
    weights = weights or so.get("weights") or DEFAULTS["weights"]
    biases = biases or so.get("biases") or DEFAULTS["biases"]
    transpose = so.get("transpose", False) if transpose is None else transpose
    norm_in = norm_in or so.get("norm_in") or "Norm_in"
    norm_out = norm_out or so.get("norm_out") or "Norm_out"
    start = int(so.get("start", 1)) if start is None else int(start)
    with h5py.File(path, "w") as f:
        for k, (w, b) in enumerate(zip(spec.weights, spec.biases)):
            f.create_dataset(
                weights.format(i=start + k),
                data=np.asarray(w.T if transpose else w, dtype=np.float64),
            )
            f.create_dataset(biases.format(i=start + k), data=np.asarray(b, dtype=np.float64))
        for name, s in ((norm_in, spec.input_scaling), (norm_out, spec.output_scaling)):
            if s is not None:
                ds = f.create_dataset(name, data=np.stack([s.minimum, s.maximum], axis=1))
                ds.attrs["scale_range"] = np.asarray(s.target, dtype=np.float64)
        f.attrs["activations"] = np.array(spec.activations, dtype=h5py.string_dtype())
        layout = {
            "weights_pattern": weights,
            "biases_pattern": biases,
            "transpose": str(bool(transpose)),
        }
        layout.update(
            norm_in=norm_in if spec.input_scaling is not None else None,
            norm_out=norm_out if spec.output_scaling is not None else None,
        )
        for k, v in layout.items():
            if v is not None:
                f.attrs[k] = v
        for attr, names in (("input_names", spec.input_names), ("output_names", spec.output_names)):
            if names:
                f.attrs[attr] = np.array(names, dtype=h5py.string_dtype())
