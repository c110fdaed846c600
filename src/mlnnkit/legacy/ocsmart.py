"""OC-SMART MLNN HDF5: read and write the layout OC-SMART ships its networks in.

Layout (see FORMATS.md): ``Layers`` (int16 plane sizes, input first), ``Norm_in`` and
``Norm_out`` (one ``[min, max]`` row per variable), ``Weights/LayerK`` of shape
``(size[K], size[K-1])`` (MATLAB orientation, ``z = W @ x``) and ``Bias/LayerK`` of shape
``(size[K], 1)``, K = 1 .. L-1. Math: inputs min-max scaled to [-1, 1], ``tanh`` on every
hidden layer, a linear output layer, outputs scaled back from [-1, 1].

mlnnkit adds two optional root attributes, ``input_names`` and ``output_names``, when the
network has names; OC-SMART ignores them.

Example:
    >>> spec = read("PACE_Lrc_aaNN.H5")
    >>> spec.sizes
    [111, 111, 57, 111, 107]
    >>> write(spec, "copy.h5")
    >>> read("copy.h5").sizes
    [111, 111, 57, 111, 107]
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from mlnnkit.errors import UserError
from mlnnkit.legacy import _hdf5
from mlnnkit.legacy.spec import MAX_RANGE, MAX_WEIGHT, NetworkSpec, Scaling

NAME = "ocsmart"
DESCRIPTION = "OC-SMART MLNN HDF5"
TARGET = (-1.0, 1.0)


def looks_like(f: h5py.File) -> bool:
    """True when an open HDF5 file has the OC-SMART datasets."""
    return _hdf5.has(f, "Layers") and _hdf5.has(f, "Weights/Layer1")


def _where(kind: str, index: int | None) -> str:
    return {
        "weights": lambda: f"Weights/Layer{index + 1}",
        "biases": lambda: f"Bias/Layer{index + 1}",
        "input_range": lambda: "Norm_in" if index is None else f"Norm_in[{index}]",
        "output_range": lambda: "Norm_out" if index is None else f"Norm_out[{index}]",
        "activations": lambda: "activations (tanh hidden, linear output)",
        "input_names": lambda: "attribute input_names",
        "output_names": lambda: "attribute output_names",
    }[kind]()


def read(
    path: str | Path,
    *,
    max_weight: float | None = MAX_WEIGHT,
    max_range: float | None = MAX_RANGE,
) -> NetworkSpec:
    """Read an OC-SMART MLNN HDF5 file into a :class:`NetworkSpec`.

    Every inconsistency (a missing dataset, ``Layers`` disagreeing with the weights,
    shapes that do not chain, a bias of the wrong length, NaN/Inf, a weight or bias
    beyond ``max_weight`` (default 1e4) or a range limit beyond ``max_range`` (default
    1e12) in magnitude, a range with min == max) raises a UserError naming the file and
    the dataset. None lifts a limit.
    """
    with _hdf5.open_h5(path, DESCRIPTION) as f:
        layers = _hdf5.read_array(f, "Layers", path)
        if layers.ndim != 1 or layers.size < 2:
            raise UserError(
                f"{path}: dataset 'Layers' has shape {layers.shape}; it must list at least "
                "two plane sizes, input first"
            )
        if (
            not np.all(np.isfinite(layers))
            or np.any(layers != np.round(layers))
            or np.any(layers < 1)
        ):
            raise UserError(
                f"{path}: dataset 'Layers' = {layers.tolist()} must hold positive integers"
            )
        sizes = [int(s) for s in layers]
        n_layers = len(sizes) - 1
        weights, biases = [], []
        for k in range(1, n_layers + 1):
            for group in ("Weights", "Bias"):
                if not _hdf5.has(f, f"{group}/Layer{k}"):
                    raise UserError(
                        f"{path}: dataset '{group}/Layer{k}' not found, but 'Layers' = "
                        f"{sizes} lists {len(sizes)} planes ({n_layers} layers)"
                    )
            weights.append(_hdf5.read_array(f, f"Weights/Layer{k}", path))
            biases.append(_hdf5.read_array(f, f"Bias/Layer{k}", path))
        if _hdf5.has(f, f"Weights/Layer{n_layers + 1}"):
            raise UserError(
                f"{path}: 'Layers' = {sizes} lists {n_layers} layers but the file also has "
                f"'Weights/Layer{n_layers + 1}'"
            )
        norm_in = _hdf5.read_array(f, "Norm_in", path)
        norm_out = _hdf5.read_array(f, "Norm_out", path)
        in_names = _hdf5.read_names(f, "input_names")
        out_names = _hdf5.read_names(f, "output_names")

    for k, b in enumerate(biases):
        if b.ndim > 2 or (b.ndim == 2 and min(b.shape) != 1):
            raise UserError(
                f"{path}: dataset 'Bias/Layer{k + 1}' has shape {b.shape}; a bias is a column "
                f"vector ({weights[k].shape[0] if weights[k].ndim == 2 else '?'}, 1)"
            )
    norms = []
    for name, arr in (("Norm_in", norm_in), ("Norm_out", norm_out)):
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise UserError(
                f"{path}: dataset '{name}' has shape {arr.shape}; OC-SMART stores one row "
                "[min, max] per variable: shape (n, 2)"
            )
        norms.append(Scaling(arr[:, 0], arr[:, 1], target=TARGET))

    spec = NetworkSpec(
        weights=weights,
        biases=[b.reshape(-1) for b in biases],
        activations=["tanh"] * (n_layers - 1) + ["linear"],
        input_scaling=norms[0],
        output_scaling=norms[1],
        input_names=in_names,
        output_names=out_names,
        source_format=NAME,
    )
    spec.validate(str(path), _where, max_weight=max_weight, max_range=max_range)
    if spec.sizes != sizes:
        k = next(i for i, (a, b) in enumerate(zip(spec.sizes, sizes)) if a != b)
        culprit = f"Weights/Layer{max(k, 1)}"
        raise UserError(
            f"{path}: 'Layers' = {sizes} disagrees with the weights, which give planes "
            f"{spec.sizes} ({culprit} has shape {tuple(weights[max(k, 1) - 1].shape)})"
        )
    return spec


def check_writable(spec: NetworkSpec) -> None:
    """Raise a UserError saying why ``spec`` cannot be written as OC-SMART, if it cannot."""
    want = ["tanh"] * (len(spec.weights) - 1) + ["linear"]
    if spec.activations != want:
        raise UserError(
            f"OC-SMART networks use tanh on every hidden layer and a linear output layer "
            f"({','.join(want)}); this network has {','.join(spec.activations)}: export it "
            "as rawh5 (any activations), or as ffbp if it uses sigmoid everywhere"
        )
    for side, s in (("inputs", spec.input_scaling), ("outputs", spec.output_scaling)):
        if s is not None and s.target != TARGET:
            raise UserError(
                f"OC-SMART scales {side} to [-1, 1]; this network scales its {side} to "
                f"[{s.target[0]:g}, {s.target[1]:g}]"
            )
    if max(spec.sizes) > np.iinfo(np.int16).max:
        raise UserError(f"OC-SMART stores plane sizes as int16; {max(spec.sizes)} is too large")


def write(spec: NetworkSpec, path: str | Path) -> None:
    """Write ``spec`` as an OC-SMART MLNN HDF5 file at ``path`` (overwrites it).

    A network without scaling gets the identity ranges [-1, 1]. Callers wanting an
    atomic write pass a temporary path (``mlnnkit.legacy.save`` does).
    """
    check_writable(spec)
    n_in, n_out = spec.n_inputs, spec.n_outputs
    s_in = spec.input_scaling or Scaling(-np.ones(n_in), np.ones(n_in), TARGET)
    s_out = spec.output_scaling or Scaling(-np.ones(n_out), np.ones(n_out), TARGET)
    with h5py.File(path, "w") as f:
        f.create_dataset("Layers", data=np.asarray(spec.sizes, dtype=np.int16))
        f.create_dataset("Norm_in", data=np.stack([s_in.minimum, s_in.maximum], axis=1))
        f.create_dataset("Norm_out", data=np.stack([s_out.minimum, s_out.maximum], axis=1))
        for k, (w, b) in enumerate(zip(spec.weights, spec.biases), start=1):
            f.create_dataset(f"Weights/Layer{k}", data=np.asarray(w, dtype=np.float64))
            f.create_dataset(f"Bias/Layer{k}", data=np.asarray(b, dtype=np.float64).reshape(-1, 1))
        for attr, names in (("input_names", spec.input_names), ("output_names", spec.output_names)):
            if names:
                f.attrs[attr] = np.array(names, dtype=h5py.string_dtype())
