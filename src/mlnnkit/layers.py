"""mlnnkit's own serializable Keras layers: the scaling ends of imported legacy networks.

An imported network is ``InputScaling -> Dense ... -> OutputScaling``. The two scaling
layers hold the physical ranges, the variable names and where the network came from in
their config, so a saved ``.keras`` file keeps them and reloads with only
``import mlnnkit`` (the package registers these layers as soon as Keras is imported).

- :class:`InputScaling`: physical inputs -> the network's interval (min-max; OC-SMART
  uses [-1, 1], ffbp [0, 1]); with no ranges it passes inputs through and only carries
  the metadata.
- :class:`OutputScaling`: the network's interval -> physical outputs.
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

__all__ = ["InputScaling", "OutputScaling", "snap_sigmoid"]

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
        if is_float64(self.dtype_policy) and not float64_enabled():
            # no switching here (a constructor has no business with process state): say it
            warnings.warn(
                f"{type(self).__name__} {self.name!r} is float64 but JAX's 64-bit mode is off, "
                "so it computes in float32: call mlnnkit.float64() first (mlnnkit.models."
                "load_model does it for a float64 model, with a note)",
                stacklevel=2,
            )
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
