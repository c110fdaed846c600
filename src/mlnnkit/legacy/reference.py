"""The independent float64 NumPy forward pass of a legacy network, the yardstick of verify.

:func:`forward` computes what the file computes, in float64 with plain NumPy: min-max
scaling of the inputs, ``a = act(W @ a + b)`` per layer, scaling back of the outputs
(each format's math, FORMATS.md). It shares no code with the Keras model, so agreement
between the two means the import is right.

:func:`snap_sigmoid` is the tabulated sigmoid of SNAP's ffbp reader
(``NNffbpAlphaTabFast``), exactly as FORMATS.md gives it: 100,000 entries over
[-10, 10], ``delta = 20 / (100000 - 1)``, entry ``i = 1 / (1 + exp(-(-10 + (i + 0.5) *
delta)))``, looked up at index ``(int)((t + 10) / delta)`` (truncated toward zero),
clamped to [0, 99999].

Example:
    >>> import numpy as np
    >>> from mlnnkit.legacy.spec import NetworkSpec
    >>> spec = NetworkSpec([np.eye(2)], [np.zeros(2)], ["sigmoid"])
    >>> forward(spec, np.zeros((1, 2)))
    array([[0.5, 0.5]])
"""

from __future__ import annotations

import functools

import numpy as np

from mlnnkit.legacy.spec import NetworkSpec

#: SNAP's table: size, left end (the right end is the negative), spacing.
SNAP_TABLE_SIZE = 100_000
SNAP_START = -10.0
SNAP_DELTA = -2.0 * SNAP_START / (SNAP_TABLE_SIZE - 1)

SIGMOIDS = ("exact", "snap")


@functools.cache
def snap_table() -> np.ndarray:
    """The 100,000 tabulated sigmoid values of SNAP's ffbp reader (float64, read-only)."""
    i = np.arange(SNAP_TABLE_SIZE, dtype=np.float64)
    table = 1.0 / (1.0 + np.exp(-(SNAP_START + (i + 0.5) * SNAP_DELTA)))
    table.flags.writeable = False
    return table


def snap_sigmoid(t: np.ndarray) -> np.ndarray:
    """SNAP's table lookup of the sigmoid at ``t`` (NaN stays NaN)."""
    t = np.asarray(t, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        idx = np.trunc((t - SNAP_START) / SNAP_DELTA)
        idx = np.clip(np.nan_to_num(idx, nan=0.0), 0, SNAP_TABLE_SIZE - 1).astype(np.int64)
    return np.where(np.isnan(t), np.nan, snap_table()[idx])


def exact_sigmoid(t: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-t))`` in float64 (0 and 1 at the extremes, no warnings)."""
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-t))


def activate(name: str, z: np.ndarray, sigmoid: str = "exact") -> np.ndarray:
    """Apply activation ``name`` (one of :data:`~mlnnkit.legacy.spec.ACTIVATIONS`)."""
    if name == "linear":
        return z
    if name == "tanh":
        return np.tanh(z)
    if name == "sigmoid":
        return snap_sigmoid(z) if sigmoid == "snap" else exact_sigmoid(z)
    if name == "relu":
        return np.maximum(z, 0.0)
    raise ValueError(f"unknown activation {name!r}")


def forward(spec: NetworkSpec, x: np.ndarray, sigmoid: str = "exact") -> np.ndarray:
    """Outputs of ``spec`` for rows ``x`` (physical units), computed in float64.

    Args:
        spec: the network.
        x: ``(rows, n_inputs)`` array.
        sigmoid: ``"exact"`` (the network's meaning) or ``"snap"`` (SNAP's table).
    """
    if sigmoid not in SIGMOIDS:
        raise ValueError(f"sigmoid must be one of {SIGMOIDS}, not {sigmoid!r}")
    a = np.asarray(x, dtype=np.float64)
    if spec.input_scaling is not None:
        a = spec.input_scaling.forward(a)
    for w, b, act in zip(spec.weights, spec.biases, spec.activations):
        a = activate(act, a @ np.asarray(w, np.float64).T + np.asarray(b, np.float64), sigmoid)
    if spec.output_scaling is not None:
        a = spec.output_scaling.inverse(a)
    return a


def sample_inputs(
    minimum: np.ndarray,
    maximum: np.ndarray,
    n: int,
    *,
    seed: int = 0,
    edge_fraction: float = 0.1,
) -> np.ndarray:
    """``n`` rows spread over the box ``[minimum, maximum]``, its edges included.

    Rows 0, 1 and 2 are all minima, all maxima and the centre; the others are uniform,
    with each value set to its minimum or maximum with probability ``edge_fraction``.

    Example:
        >>> sample_inputs(np.zeros(2), np.ones(2), 3)
        array([[0. , 0. ],
               [1. , 1. ],
               [0.5, 0.5]])
    """
    lo = np.asarray(minimum, np.float64).reshape(-1)
    hi = np.asarray(maximum, np.float64).reshape(-1)
    rng = np.random.default_rng(seed)
    u = rng.random((n, lo.size))
    r = rng.random((n, lo.size))
    u[r < edge_fraction] = 0.0
    u[r > 1.0 - edge_fraction] = 1.0
    u[0:1], u[1:2], u[2:3] = 0.0, 1.0, 0.5
    x = lo + u * (hi - lo)
    return np.where(u == 0.0, lo, np.where(u == 1.0, hi, x))
