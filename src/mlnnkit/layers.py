# Over 400 lines: the package's registered Keras layers; saved .keras configs name this module.
"""mlnnkit's own serializable Keras layers: the scaling ends of imported legacy networks.

An imported network is ``InputScaling -> Dense ... -> OutputScaling``; a physical import
(``mlnnkit import --physical``) wraps it as ``InputTransform -> InputScaling -> Dense ... ->
OutputScaling -> OutputTransform``. The two scaling
layers hold the physical ranges, the variable names and where the network came from in
their config, so a saved ``.keras`` file keeps them and reloads with only
``import mlnnkit`` (the package registers these layers as soon as Keras is imported).

- :class:`InputScaling`: physical inputs -> the network's interval (min-max; OC-SMART
  uses [-1, 1], ffbp [0, 1]); with no ranges it passes inputs through and only carries
  the metadata.
- :class:`OutputScaling`: the network's interval -> physical outputs.
- :class:`InputTransform`: physical inputs -> the network's own variables, elementwise per
  column (``identity``, ``log10``, ``ln``, ``cos_deg``); no weights, never trained.
- :class:`OutputTransform`: the network's own output variables -> physical outputs
  (``identity``, ``pow10``, ``exp``).
- :func:`transform_numpy`: the same maps (and their inverses) in NumPy, float64, for
  references, ranges in physical units and targets mapped into the network's space.
- :func:`snap_sigmoid`: the tabulated sigmoid of SNAP's ffbp reader, as a Dense
  activation, for reproducing SNAP's numbers exactly (the default is the exact sigmoid).

Example:
    >>> import keras, mlnnkit.layers as ml
    >>> inputs = keras.Input((2,))
    >>> x = ml.InputScaling([0.0, 10.0], [1.0, 20.0], names=["a", "b"])(inputs)
    >>> x = keras.layers.Dense(1, activation="tanh")(x)
    >>> model = keras.Model(inputs, ml.OutputScaling([0.0], [5.0])(x))
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from mlnnkit._precision import float64_enabled, is_float64

__all__ = [
    "INPUT_TRANSFORMS",
    "OUTPUT_TRANSFORMS",
    "InputScaling",
    "InputTransform",
    "OutputScaling",
    "OutputTransform",
    "snap_sigmoid",
    "transform_numpy",
]

#: Elementwise maps an :class:`InputTransform` applies (physical -> network variable).
INPUT_TRANSFORMS = ("identity", "log10", "ln", "cos_deg")
#: Elementwise maps an :class:`OutputTransform` applies (network variable -> physical).
OUTPUT_TRANSFORMS = ("identity", "pow10", "exp")

# SNAP's ffbp table (see mlnnkit.legacy.reference): 100,000 entries over [-10, 10].
_SNAP_START = -10.0
_SNAP_SIZE = 100_000
_SNAP_DELTA = 20.0 / (_SNAP_SIZE - 1)


@keras.saving.register_keras_serializable(package="mlnnkit")
def snap_sigmoid(x):
    """The sigmoid as SNAP's ffbp reader evaluates it: a 100,000-entry table on [-10, 10].

    The argument is mapped to index ``floor((x + 10) / delta)`` clamped to [0, 99999],
    ``delta = 20 / 99999``, and the table value ``1 / (1 + exp(-(-10 + (i + 0.5) *
    delta)))`` is returned. It differs from the exact sigmoid by up to about 5e-5 and is
    flat outside [-10, 10]; use it only to reproduce SNAP's outputs (its gradient is zero,
    so do not train with it).

    Example:
        >>> layer = keras.layers.Dense(4, activation=snap_sigmoid)
    """
    x = ops.convert_to_tensor(x)
    idx = ops.clip(ops.floor((x - _SNAP_START) / _SNAP_DELTA), 0.0, _SNAP_SIZE - 1.0)
    t = _SNAP_START + (idx + 0.5) * _SNAP_DELTA
    return 1.0 / (1.0 + ops.exp(-t))


def _floats(values: Sequence[float] | np.ndarray | None, what: str) -> list[float] | None:
    if values is None:
        return None
    out = [float(v) for v in np.asarray(values, dtype=np.float64).reshape(-1)]
    if not all(np.isfinite(out)):
        raise ValueError(f"{what} must be finite numbers, got {out}")
    return out


def _warn_if_float64_off(layer: keras.layers.Layer) -> None:
    """A float64 layer while JAX's 64-bit mode is off computes in float32: say so. (No
    switching here: a constructor has no business with process state.)"""
    if is_float64(layer.dtype_policy) and not float64_enabled():
        warnings.warn(
            f"{type(layer).__name__} {layer.name!r} is float64 but JAX's 64-bit mode is off, "
            "so it computes in float32: call mlnnkit.float64() first (mlnnkit.models."
            "load_model does it for a float64 model, with a note)",
            stacklevel=3,
        )


class _MinMax(keras.layers.Layer):
    """Shared state of the two scaling layers (ranges, interval, names, provenance)."""

    def __init__(
        self,
        minimum: Sequence[float] | None = None,
        maximum: Sequence[float] | None = None,
        network_range: Sequence[float] = (-1.0, 1.0),
        names: Sequence[str] | None = None,
        source_format: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        _warn_if_float64_off(self)
        self.minimum = _floats(minimum, "minimum")
        self.maximum = _floats(maximum, "maximum")
        if (self.minimum is None) != (self.maximum is None):
            raise ValueError("Pass both `minimum` and `maximum`, or neither (no scaling).")
        if self.minimum is not None:
            if len(self.minimum) != len(self.maximum):
                raise ValueError(
                    f"`minimum` has {len(self.minimum)} values but `maximum` {len(self.maximum)}"
                )
            same = [i for i, (a, b) in enumerate(zip(self.minimum, self.maximum)) if a >= b]
            if same:
                i = same[0]
                raise ValueError(
                    f"range {i} is [{self.minimum[i]}, {self.maximum[i]}]: minimum must be "
                    "below maximum"
                )
        lo, hi = (float(v) for v in network_range)
        if not lo < hi:
            raise ValueError(f"`network_range` must be (lo, hi) with lo < hi, got {network_range}")
        self.network_range = (lo, hi)
        self.names = [str(n) for n in names] if names is not None else None
        if (
            self.names is not None
            and self.minimum is not None
            and len(self.names) != len(self.minimum)
        ):
            raise ValueError(f"{len(self.names)} names for {len(self.minimum)} ranges")
        self.source_format = source_format

    @property
    def size(self) -> int | None:
        """Number of variables (None when neither ranges nor names say)."""
        if self.minimum is not None:
            return len(self.minimum)
        return len(self.names) if self.names is not None else None

    def build(self, input_shape) -> None:
        n = input_shape[-1]
        if self.size is not None and n is not None and n != self.size:
            raise ValueError(
                f"{type(self).__name__} '{self.name}' describes {self.size} variables but "
                f"receives {n}"
            )
        self.built = True

    def compute_output_shape(self, input_shape):
        return input_shape

    def _const(self, values: np.ndarray):
        return ops.convert_to_tensor(np.asarray(values, np.float64), dtype=self.compute_dtype)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            minimum=self.minimum,
            maximum=self.maximum,
            network_range=list(self.network_range),
            names=self.names,
            source_format=self.source_format,
        )
        return config


@keras.saving.register_keras_serializable(package="mlnnkit")
class InputScaling(_MinMax):
    """Min-max scaling of physical inputs into the network's interval.

    ``y = lo + (x - minimum) * (hi - lo) / (maximum - minimum)`` per column, with
    ``(lo, hi) = network_range``. With ``minimum=maximum=None`` the layer passes its
    input through and only carries metadata.

    Args:
        minimum, maximum: per-input physical range (lists of floats), or None.
        network_range: the interval the network works in; default ``(-1, 1)``
            (OC-SMART, MATLAB ``mapminmax``); ffbp uses ``(0, 1)``.
        names: input variable names, kept for reports and export.
        source_format: the legacy format the network came from (``"ocsmart"``,
            ``"ffbp"``, ``"rawh5"``), used to export a fine-tuned model back.
        source_options: reader options needed to read the source file again (rawh5).
        header: free text of the source file's header (ffbp), written back on export.

    Example:
        >>> layer = InputScaling([0.0], [10.0], network_range=(0, 1))
        >>> float(layer(np.array([[5.0]]))[0, 0])
        0.5
    """

    def __init__(
        self,
        minimum: Sequence[float] | None = None,
        maximum: Sequence[float] | None = None,
        network_range: Sequence[float] = (-1.0, 1.0),
        names: Sequence[str] | None = None,
        source_format: str | None = None,
        source_options: dict[str, Any] | None = None,
        header: str = "",
        **kwargs: Any,
    ) -> None:
        super().__init__(minimum, maximum, network_range, names, source_format, **kwargs)
        self.source_options = dict(source_options or {})
        self.header = str(header or "")

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self.minimum is None:
            return x
        lo, hi = self.network_range
        mn, mx = np.asarray(self.minimum), np.asarray(self.maximum)
        return self._const(lo) + (x - self._const(mn)) * self._const((hi - lo) / (mx - mn))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(source_options=self.source_options, header=self.header)
        return config


@keras.saving.register_keras_serializable(package="mlnnkit")
class OutputScaling(_MinMax):
    """Min-max scaling of the network's outputs back to physical values.

    ``y = minimum + (x - lo) * (maximum - minimum) / (hi - lo)`` per column, with
    ``(lo, hi) = network_range``; the inverse of :class:`InputScaling`.

    Args:
        minimum, maximum: per-output physical range, or None (outputs as computed).
        network_range: the interval the network's last layer works in; default (-1, 1).
        names: output variable names.
        source_format: the legacy format the network came from.

    Example:
        >>> layer = OutputScaling([0.0], [10.0], network_range=(0, 1))
        >>> float(layer(np.array([[0.5]]))[0, 0])
        5.0
    """

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self.minimum is None:
            return x
        lo, hi = self.network_range
        mn, mx = np.asarray(self.minimum), np.asarray(self.maximum)
        return self._const(mn) + (x - self._const(lo)) * self._const((mx - mn) / (hi - lo))


# --- transform layers -------------------------------------------------------------------

_LN10 = float(np.log(10.0))


def transform_numpy(kind: str, x, *, inverse: bool = False) -> np.ndarray:
    """Apply one transform of the vocabulary (or its inverse) in NumPy float64.

    Forward maps are the layers' (``identity``, ``log10``, ``ln``, ``cos_deg`` on inputs;
    ``pow10``, ``exp`` on outputs): a non-positive value under a log and NaN/Inf anywhere
    give NaN. ``inverse=True`` maps back (``log10`` -> ``10**``, ``cos_deg`` ->
    ``degrees(arccos(clip(c, -1, 1)))``, ``pow10`` -> ``log10``, ...).

    Args:
        kind: a name from :data:`INPUT_TRANSFORMS` or :data:`OUTPUT_TRANSFORMS`.
        x: values (array-like).
        inverse: map back instead (default False).

    Example:
        >>> transform_numpy("cos_deg", [0.0, 60.0]).round(6).tolist()
        [1.0, 0.5]
        >>> transform_numpy("log10", [100.0, -1.0]).tolist()
        [2.0, nan]
        >>> float(transform_numpy("cos_deg", 0.5, inverse=True).round(6))
        60.0
    """
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(all="ignore"):
        if kind == "identity":
            y = x.copy()
        elif kind in ("log10", "ln"):
            f, g = (np.log10, lambda v: 10.0**v) if kind == "log10" else (np.log, np.exp)
            y = g(x) if inverse else np.where(x > 0, f(np.where(x > 0, x, 1.0)), np.nan)
        elif kind == "cos_deg":
            y = np.degrees(np.arccos(np.clip(x, -1.0, 1.0))) if inverse else np.cos(np.radians(x))
        elif kind in ("pow10", "exp"):
            f, g = (lambda v: 10.0**v, np.log10) if kind == "pow10" else (np.exp, np.log)
            y = np.where(x > 0, g(np.where(x > 0, x, 1.0)), np.nan) if inverse else f(x)
        else:
            known = ", ".join(INPUT_TRANSFORMS + OUTPUT_TRANSFORMS[1:])
            raise ValueError(f"unknown transform {kind!r}: use one of {known}")
    return np.where(np.isfinite(x), y, np.nan)


class _Transform(keras.layers.Layer):
    """Shared state of the two transform layers: one transform name per variable, names."""

    _VOCABULARY: tuple[str, ...] = ()

    def __init__(
        self,
        transforms: Sequence[str],
        names: Sequence[str] | None = None,
        network_names: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs["trainable"] = False
        super().__init__(**kwargs)
        _warn_if_float64_off(self)
        if isinstance(transforms, str):
            raise ValueError(  # noqa: TRY004 - a ValueError like the other argument errors here
                f"`transforms` must be one name per variable (a list), got the string {transforms!r}"
            )
        self.transforms = [str(t) for t in transforms]
        if not self.transforms:
            raise ValueError("`transforms` must name at least one variable's transform")
        bad = sorted({t for t in self.transforms if t not in self._VOCABULARY})
        if bad:
            raise ValueError(
                f"{type(self).__name__}: unknown transform(s) {', '.join(bad)}: use "
                f"{', '.join(self._VOCABULARY)}"
            )
        self.names = self._names(names, "names")
        self.network_names = self._names(network_names, "network_names")

    def _names(self, names, what):
        if names is None:
            return None
        names = [str(n) for n in names]
        if len(names) != len(self.transforms):
            raise ValueError(f"{len(names)} `{what}` for {len(self.transforms)} transforms")
        return names

    @property
    def size(self) -> int:
        """Number of variables."""
        return len(self.transforms)

    def build(self, input_shape) -> None:
        n = input_shape[-1]
        if n is not None and n != self.size:
            raise ValueError(
                f"{type(self).__name__} '{self.name}' has {self.size} transforms but "
                f"receives {n} variables"
            )
        self.built = True

    def compute_output_shape(self, input_shape):
        return input_shape

    def _by_runs(self, x, fn):
        """``fn(kind, columns)`` on each run of consecutive columns of one transform,
        side by side again: each map costs only its own columns (computing ``cos`` or
        ``log10`` over every column and selecting afterwards cost PACE's 111 columns
        ~110 needless cosines per row)."""
        runs: list[list] = []
        for k, t in enumerate(self.transforms):
            if runs and runs[-1][0] == t:
                runs[-1][2] = k + 1
            else:
                runs.append([t, k, k + 1])
        if len(runs) == 1:
            return fn(runs[0][0], x)
        width: dict[str, int] = {}
        for t, a, b in runs:
            width[t] = width.get(t, 0) + b - a
        base = max(width, key=width.get)
        if 4 * (self.size - width[base]) > self.size:
            return ops.concatenate([fn(t, x[..., a:b]) for t, a, b in runs], axis=-1)
        # One map covers three quarters of the columns or more (PACE: 108 log10, 3 cos):
        # it maps every column and the few others are written over their runs in place,
        # one pass over the values instead of a map and a join (values of the wrong map
        # there, NaN or not, are replaced).
        y = fn(base, x)
        lead = (0,) * (len(x.shape) - 1)
        for t, a, b in runs:
            if t != base:
                y = ops.slice_update(y, (*lead, a), fn(t, x[..., a:b]))
        return y

    def _nan(self, x):
        return ops.full_like(x, np.nan)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.pop("trainable", None)
        config.update(
            transforms=list(self.transforms),
            names=self.names,
            network_names=self.network_names,
        )
        return config


@keras.saving.register_keras_serializable(package="mlnnkit")
class InputTransform(_Transform):
    """Elementwise per-column map of physical inputs into the network's own variables.

    Column ``k`` gets ``transforms[k]``: ``identity``, ``log10``, ``ln`` or ``cos_deg``
    (``cos(radians(x))``, angles in degrees). A non-positive value under ``log10``/``ln``,
    and NaN or Inf in any column, give NaN in that column (never ``-inf``), so the row's
    outputs are NaN and the rest of a file is unaffected. Keras ops only: no weights,
    never trained, compiled into the same program as the network.

    Args:
        transforms: one name per input variable, from :data:`INPUT_TRANSFORMS`.
        names: the physical variable names (``solz``, ``Lrc_1``, ``rw_443``), or None.
        network_names: the network's own names of the same variables (what
            :class:`InputScaling` carries, e.g. ``log_rw_443``), or None.

    Example:
        >>> layer = InputTransform(["cos_deg", "log10"], names=["solz", "Lrc_1"])
        >>> np.asarray(layer(np.array([[60.0, 100.0], [0.0, -1.0]]))).round(6).tolist()
        [[0.5, 2.0], [1.0, nan]]
    """

    _VOCABULARY = INPUT_TRANSFORMS

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        return self._by_runs(x, self._map)

    def _map(self, kind: str, x):
        if kind == "identity":
            return ops.where(ops.isfinite(x), x, self._nan(x))
        if kind == "cos_deg":
            return ops.where(ops.isfinite(x), ops.cos(x * (np.pi / 180.0)), self._nan(x))
        positive = x > 0  # False for NaN; +Inf stays positive and is caught below
        safe = ops.where(positive, x, ops.ones_like(x))
        y = ops.log10(safe) if kind == "log10" else ops.log(safe)
        return ops.where(ops.logical_and(positive, ops.isfinite(x)), y, self._nan(x))


@keras.saving.register_keras_serializable(package="mlnnkit")
class OutputTransform(_Transform):
    """Elementwise per-column map of the network's output variables to physical outputs.

    Column ``k`` gets ``transforms[k]``: ``identity``, ``pow10`` (``10**x``) or ``exp``.
    NaN in gives NaN out. Keras ops only: no weights, never trained.

    Args:
        transforms: one name per output variable, from :data:`OUTPUT_TRANSFORMS`.
        names: the physical output names (``Rrs_1``, ``apig``), or None.
        network_names: the network's own names (what :class:`OutputScaling` carries,
            e.g. ``log_apig``), or None.

    Example:
        >>> layer = OutputTransform(["pow10", "identity"], names=["aph_1", "x"])
        >>> np.asarray(layer(np.array([[-2.0, 3.0]])), dtype=float).round(6).tolist()
        [[0.01, 3.0]]
    """

    _VOCABULARY = OUTPUT_TRANSFORMS

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        return self._by_runs(x, self._map)

    def _map(self, kind: str, x):
        if kind == "pow10":
            y = ops.exp(x * _LN10)
        elif kind == "exp":
            y = ops.exp(x)
        else:
            y = x
        return ops.where(ops.isfinite(x), y, self._nan(x))
