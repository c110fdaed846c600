"""Per-pixel quality flags, computed in the same compiled program as the outputs.

:func:`flags_model` turns any model mlnnkit made (an imported network, physical or not,
or a chain) into a ``keras.Model`` with two outputs, the model's own and a ``uint8`` flag
per row, built from the tensors that enter every InputScaling (the network's inputs in its
own variables, after their transform) and leave every OutputScaling (its outputs in its
own variables, before theirs) and from the chain's ``scope_error``. Nothing is run twice:
the flags are a few comparisons more in the one program. Bits (OR-ed over every network):

====  =======================  ===========================================================
bit   name                     set when
====  =======================  ===========================================================
1     ``input_out_of_range``   a network input outside its [min, max]
2     ``output_out_of_range``  a network output outside its [min, max] (*)
4     ``output_at_limit``      a network output above ``max - margin`` or below ``min + margin`` (*)
8     ``out_of_scope``         the chain's ``scope_error`` above its threshold
16    ``invalid_input``        NaN or Inf in an input, or a non-positive value under a log
====  =======================  ===========================================================

(*) The outputs of a chain's scope network are reconstructions of its inputs: the scope
test judges them (bit 8), their ranges do not (as in C2RCC, whose ``Iop_OOR`` and
``<iop>_at_max`` concern the IOP network, and OC-SMART); the scope network's inputs are
tested like every network's (C2RCC's ``Rtosa_OOR``).

Example:
    >>> import mlnnkit
    >>> model = mlnnkit.load_model("net.keras")    # an imported 7-5-1 network
    >>> x = np.array([[0.5] * 7, [50.0] * 7, [np.nan] * 7])
    >>> y, flags = mlnnkit.predict_array(model, x, flags=True)
    >>> flags.tolist()[1:], flag_counts(flags)["input_out_of_range"]
    ([7, 16], 1)
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import numpy as np

from mlnnkit.errors import UserError
from mlnnkit.retrieval._layers import (
    FLAG_BITS,
    ChainOutputs,
    PickColumns,
    QualityFlags,
    ScopeError,
)

__all__ = [
    "DEFAULT_LIMIT_MARGIN",
    "FLAG_BITS",
    "FLAG_NAME",
    "flag_attrs",
    "flag_counts",
    "flags_model",
    "format_flag_counts",
]

#: C2RCC's ``log_threshfak_oor``: the margin of ``output_at_limit``, in network variables.
DEFAULT_LIMIT_MARGIN = 0.02

#: Name of the flag variable (scenes) or column (tables).
FLAG_NAME = "quality_flags"

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def _check_margin(limit_margin: float) -> float:
    m = float(limit_margin)
    if not np.isfinite(m) or m < 0:
        raise UserError(f"limit_margin must be a number >= 0, got {limit_margin}")
    return m


def flags_model(model, limit_margin: float = DEFAULT_LIMIT_MARGIN):
    """``model`` with a second output: the ``uint8`` quality flag of every row.

    Args:
        model: a functional or sequential ``keras.Model`` with one input tensor; its
            InputScaling/OutputScaling layers (with ranges) are the networks tested. A
            model without them only gets ``invalid_input``.
        limit_margin: absolute margin of ``output_at_limit``, in the network's own
            variables (default 0.02, C2RCC's ``log_threshfak_oor``).

    Returns:
        A ``keras.Model`` sharing ``model``'s layers and weights, with outputs
        ``[model's output, flags]`` (cached: the same object for the same model and
        margin, so its compiled program is reused).

    Example:
        >>> import keras, mlnnkit.layers as ml
        >>> x = keras.Input((1,))
        >>> net = keras.Model(x, ml.InputScaling([0.0], [1.0])(x))
        >>> y, f = flags_model(net)(np.array([[0.5], [3.0]]))
        >>> [int(v) for v in f]
        [0, 1]
    """
    import keras

    from mlnnkit.layers import InputScaling, OutputScaling

    margin = _check_margin(limit_margin)
    with _LOCK:
        per = _CACHE.setdefault(model, {})
        if margin in per:
            return per[margin]
    inputs = getattr(model, "inputs", None)
    if not inputs or len(inputs) != 1 or len(model.outputs) != 1:
        raise UserError("flags need a model with one input and one output tensor")
    from mlnnkit.retrieval._chain import chain_info

    # A scope network's outputs reconstruct its inputs: they are judged by the scope test
    # (out_of_scope), not by their ranges (as in C2RCC and OC-SMART); its inputs are tested.
    info = chain_info(model)
    scope_prefix = f"{info['scope']['step']}__" if info and info["scope"] else None
    picks = {id(l.output): l for l in model.layers if isinstance(l, PickColumns)}
    tested: list = []  # tensors whose columns enter an InputScaling, and their bounds
    bounds: dict[int, list] = {}
    outs, out_ranges, scopes, thresholds = [], [], [], []

    def bound(t, col, lo, hi):
        if id(t) not in bounds:
            tested.append(t)
            n = int(t.shape[-1])
            bounds[id(t)] = [np.full(n, -np.inf), np.full(n, np.inf)]
        b = bounds[id(t)]
        b[0][col], b[1][col] = max(b[0][col], lo), min(b[1][col], hi)

    for layer in model.layers:
        if (
            scope_prefix
            and isinstance(layer, OutputScaling)
            and layer.name.startswith(scope_prefix)
        ):
            continue
        if isinstance(layer, InputScaling) and layer.minimum is not None:
            # A chain's networks take their inputs picked from shared tensors (the chain's
            # mapped inputs, an earlier network's outputs): each shared column is tested
            # once, against the intersection of the ranges of the networks taking it.
            pick = picks.get(id(layer.input))
            srcs = None
            if pick is not None:
                srcs = pick.input if isinstance(pick.input, (list, tuple)) else [pick.input]
            for j, (lo, hi) in enumerate(zip(layer.minimum, layer.maximum)):
                if srcs is None:
                    bound(layer.input, j, lo, hi)
                else:
                    s, c = pick.columns[j]
                    bound(srcs[s], c, lo, hi)
        elif isinstance(layer, OutputScaling) and layer.minimum is not None:
            outs.append(layer.output)
            out_ranges.append([layer.minimum, layer.maximum])
        elif isinstance(layer, ScopeError):
            scopes.append(layer.output)
            thresholds.append(layer.threshold)
    in_ranges = [[bounds[id(t)][0].tolist(), bounds[id(t)][1].tolist()] for t in tested]
    if info is not None:
        # The chain's own checks (its inputs and every mapped input) find every invalid row.
        chain_layer = next(l for l in model.layers if isinstance(l, ChainOutputs))
        checks = list(chain_layer.input[chain_layer.n_outputs :])
    else:
        checks = [inputs[0]]
    dtype = "float64" if "float64" in str(inputs[0].dtype) else "float32"
    flags = QualityFlags(
        len(checks), in_ranges, out_ranges, thresholds, margin, check_inputs=info is None,
        dtype=dtype, name="quality_flags",
    )([*checks, *tested, *outs, *scopes])  # fmt: skip
    fm = keras.Model(inputs[0], [model.outputs[0], flags], name=f"{model.name}_flags")
    with _LOCK:
        return _CACHE.setdefault(model, {}).setdefault(margin, fm)


def flag_attrs() -> dict[str, Any]:
    """The CF attributes of the flag variable (``flag_masks``, ``flag_meanings``,
    ``long_name``, ``comment``), so xarray, Panoply and SNAP decode its bits. No
    ``_FillValue``: every pixel has flags, and xarray keeps the variable as integers.

    Example:
        >>> flag_attrs()["flag_meanings"].split()[0]
        'input_out_of_range'
    """
    return {
        "long_name": "mlnnkit quality flags (bits OR-ed over every network of the model)",
        "flag_masks": np.array([m for _, m, _ in FLAG_BITS], dtype=np.uint8),
        "flag_meanings": " ".join(n for n, _, _ in FLAG_BITS),
        "comment": "; ".join(f"{m}: {d}" for _, m, d in FLAG_BITS),
    }


def flag_counts(flags: np.ndarray) -> dict[str, int]:
    """How many rows carry each flag bit.

    Example:
        >>> flag_counts(np.array([0, 1, 9, 16], np.uint8))["input_out_of_range"]
        2
    """
    f = np.asarray(flags, dtype=np.uint8).reshape(-1)
    return {name: int(np.count_nonzero(f & mask)) for name, mask, _ in FLAG_BITS}


def format_flag_counts(counts: dict[str, int], rows: int) -> list[str]:
    """One line per flag: its name, how many rows carry it, the share of the rows.

    Example:
        >>> format_flag_counts({"out_of_scope": 5}, 100)
        ['out_of_scope          5 of 100 rows (5.00%)']
    """
    width = max(len(n) for n, _, _ in FLAG_BITS)
    out = []
    for name, n in counts.items():
        share = 100.0 * n / rows if rows else 0.0
        out.append(
            f"{name:<{width}} {n:>{max(1, len(f'{rows:,}'))},} of {rows:,} rows ({share:.2f}%)"
        )
    return out
