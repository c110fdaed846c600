"""The serializable Keras layers of chains and flags (no weights, Keras ops only).

- :class:`PickColumns`: one step's inputs, picked by column from the chain's inputs and
  the outputs of earlier steps (the wiring of a chain by variable name).
- :class:`ScopeError`: the autoassociative test, ``mean_rel`` (OC-SMART: mean over the
  variables of ``|x'/x - 1|``) or ``sum_abs`` (C2RCC: sum of ``|x' - x|``).
- :class:`ChainOutputs`: the chain's last layer: every step's outputs side by side (and
  ``scope_error``), rows with an invalid input set to NaN; its config records the chain's
  input and output names and its steps, which is what makes a model a chain.
- :class:`QualityFlags`: the per-row flag bits from the tensors around every network's
  scaling layers (built by :func:`mlnnkit.retrieval.flags_model`, never saved).

Keras registers them with the package's other layers, so a chain saved as ``.keras``
reloads with ``import mlnnkit`` alone.

Example:
    >>> import numpy as np
    >>> pick = PickColumns([[0, 1], [1, 0]])
    >>> pick([np.array([[1.0, 2.0]]), np.array([[3.0]])]).tolist()
    [[2.0, 3.0]]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from mlnnkit._precision import enable_float64, is_float64

__all__ = ["FLAG_BITS", "ChainOutputs", "PickColumns", "QualityFlags", "ScopeError"]

#: The flag bits, in order: (name, mask, what it means).
FLAG_BITS: tuple[tuple[str, int, str], ...] = (
    (
        "input_out_of_range",
        1,
        "a network input, in the network's own variables, outside its [min, max]",
    ),
    ("output_out_of_range", 2, "a network output, in its own variables, outside its [min, max]"),
    ("output_at_limit", 4, "a network output within the limit margin of its min or max"),
    ("out_of_scope", 8, "the scope (autoassociative) test failed: scope_error above the threshold"),
    ("invalid_input", 16, "NaN or Inf in an input, or a non-positive value under a log"),
)

SCOPE_METRICS = ("mean_rel", "sum_abs")


class _NoWeights(keras.layers.Layer):
    """A layer of fixed computation: no weights, never trained."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        if is_float64(self.dtype_policy):
            enable_float64()

    def _flat(self, inputs) -> list:
        return list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]


def _runs(columns: Sequence[Sequence[int]]) -> list[list[int]]:
    """``[source, column]`` pairs as runs ``[source, start, stop]`` of consecutive columns
    of one source: each run becomes one slice (a gather of single columns lowers to
    transposes and copies that cost XLA's CPU backend more than a network layer)."""
    runs: list[list[int]] = []
    for s, c in columns:
        if runs and runs[-1][0] == s and runs[-1][2] == c:
            runs[-1][2] = c + 1
        else:
            runs.append([s, c, c + 1])
    return runs


def _pick(xs: Sequence, runs: list[list[int]], dtype):
    parts = [ops.cast(xs[s][:, a:b], dtype) for s, a, b in runs]
    return parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=-1)


@keras.saving.register_keras_serializable(package="mlnnkit")
class PickColumns(_NoWeights):
    """Columns of several tensors side by side: ``out[:, j] = inputs[s_j][:, c_j]``.

    Args:
        columns: one ``[source, column]`` pair per output column (``source`` indexes the
            list of tensors the layer is called on).
        names: the variable names of the output columns (metadata).

    Example:
        >>> PickColumns([[0, 0], [0, 0]])(np.array([[5.0, 6.0]])).tolist()
        [[5.0, 5.0]]
    """

    def __init__(
        self, columns: Sequence[Sequence[int]], names: Sequence[str] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.columns = [[int(s), int(c)] for s, c in columns]
        if not self.columns:
            raise ValueError("PickColumns needs at least one [source, column] pair")
        self.names = [str(n) for n in names] if names is not None else None
        self._runs = _runs(self.columns)

    def call(self, inputs):
        return _pick(self._flat(inputs), self._runs, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        first = input_shape[0] if isinstance(input_shape[0], (list, tuple)) else input_shape
        return (first[0], len(self.columns))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(columns=self.columns, names=self.names)
        return config


@keras.saving.register_keras_serializable(package="mlnnkit")
class ScopeError(_NoWeights):
    """How far an autoassociative network's reconstruction ``x'`` is from its input ``x``.

    Called on ``[x, x_rec]``; uses columns ``x_columns`` of ``x`` and ``y_columns`` of
    ``x_rec`` (the same variables, in the same order):

    - ``mean_rel`` (OC-SMART): ``mean_k |x'_k / x_k - 1|``;
    - ``sum_abs`` (C2RCC): ``sum_k |x'_k - x_k|``.

    With ``logs="log10"`` (or ``"ln"``) the layer is called on the logs of ``x`` and
    ``x'`` (what the networks see) and ``mean_rel`` is ``mean_k |10**(y_k - l_k) - 1|``
    (``exp`` for ``ln``): the same value without mapping ``x'`` back.

    Returns ``(rows, 1)``. ``threshold`` (the out-of-scope limit: ``scope_error >
    threshold``) and ``variables`` are kept in the config for the flags.

    Args:
        metric: ``"mean_rel"`` or ``"sum_abs"``.
        x_columns, y_columns: column indices into ``x`` and ``x_rec``.
        threshold: the out-of-scope threshold.
        variables: the names of the compared variables (metadata).
        logs: None (default: ``x`` and ``x'`` as they are), ``"log10"`` or ``"ln"``
            (``mean_rel`` only: called on their logs).

    Example:
        >>> s = ScopeError("sum_abs", [0, 1], [0, 1], 0.01)
        >>> s([np.array([[1.0, 2.0]]), np.array([[1.5, 2.0]])]).tolist()
        [[0.5]]
    """

    def __init__(
        self,
        metric: str,
        x_columns: Sequence[int],
        y_columns: Sequence[int],
        threshold: float,
        variables: Sequence[str] | None = None,
        logs: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if logs not in (None, "log10", "ln") or (logs is not None and metric != "mean_rel"):
            raise ValueError(f"logs must be None, 'log10' or 'ln' (with mean_rel), not {logs!r}")
        self.logs = logs
        if metric not in SCOPE_METRICS:
            raise ValueError(f"metric must be one of {', '.join(SCOPE_METRICS)}, not {metric!r}")
        self.metric = metric
        self.x_columns = [int(c) for c in x_columns]
        self.y_columns = [int(c) for c in y_columns]
        if len(self.x_columns) != len(self.y_columns) or not self.x_columns:
            raise ValueError(
                "x_columns and y_columns must name the same, non-zero number of columns"
            )
        self.threshold = float(threshold)
        self.scope_variables = [str(v) for v in variables] if variables is not None else None

    def call(self, inputs):
        x, y = self._flat(inputs)
        x = _pick([x], _runs([[0, c] for c in self.x_columns]), self.compute_dtype)
        y = _pick([y], _runs([[0, c] for c in self.y_columns]), self.compute_dtype)
        if self.logs is not None:
            d = y - x if self.logs == "ln" else (y - x) * np.log(10.0)
            return ops.mean(ops.abs(ops.expm1(d)), axis=1, keepdims=True)
        if self.metric == "mean_rel":
            return ops.mean(ops.abs(y / x - 1.0), axis=1, keepdims=True)
        return ops.sum(ops.abs(y - x), axis=1, keepdims=True)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], 1)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            metric=self.metric, x_columns=self.x_columns, y_columns=self.y_columns,
            threshold=self.threshold, variables=self.scope_variables, logs=self.logs,
        )  # fmt: skip
        return config


@keras.saving.register_keras_serializable(package="mlnnkit")
class ChainOutputs(_NoWeights):
    """The last layer of a chain: its outputs side by side, invalid rows NaN.

    Called on ``[*outputs, *checks]`` (``n_outputs`` tensors of outputs, then tensors
    whose non-finite values mark a row invalid: the chain's inputs and every network's
    inputs in its own variables, where a log of a non-positive value is NaN). Returns the
    outputs concatenated, NaN in every column of an invalid row.

    The config is the chain's record: ``input_names``, ``output_names``, ``steps`` (one
    dict per step: ``name``, ``role`` ``"step"`` or ``"scope"``, ``inputs``, ``outputs``)
    and ``scope`` (``metric``, ``variables``, ``threshold``, or None).

    Example:
        >>> layer = ChainOutputs(1, ["a"], ["b"], [])
        >>> layer([np.array([[1.0], [2.0]]), np.array([[0.0], [np.nan]])]).tolist()
        [[1.0], [nan]]
    """

    def __init__(
        self,
        n_outputs: int,
        input_names: Sequence[str],
        output_names: Sequence[str],
        steps: Sequence[dict],
        scope: dict | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.n_outputs = int(n_outputs)
        self.input_names = [str(n) for n in input_names]
        self.output_names = [str(n) for n in output_names]
        self.steps = [dict(s) for s in steps]
        self.scope = dict(scope) if scope else None

    def call(self, inputs):
        xs = self._flat(inputs)
        outs = [ops.cast(t, self.compute_dtype) for t in xs[: self.n_outputs]]
        bad = None
        for t in xs[self.n_outputs :]:
            b = ops.any(ops.logical_not(ops.isfinite(t)), axis=1, keepdims=True)
            bad = b if bad is None else ops.logical_or(bad, b)
        if bad is not None:
            # NaN put in each part before they are joined, so that XLA computes the parts,
            # the NaN and the join in one pass over the outputs (not three).
            nan = ops.cast(float("nan"), self.compute_dtype)
            outs = [ops.where(bad, nan, t) for t in outs]
        return outs[0] if len(outs) == 1 else ops.concatenate(outs, axis=-1)

    def compute_output_shape(self, input_shape):
        shapes = input_shape[: self.n_outputs]
        return (shapes[0][0], sum(int(s[-1]) for s in shapes))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            n_outputs=self.n_outputs, input_names=self.input_names,
            output_names=self.output_names, steps=self.steps, scope=self.scope,
        )  # fmt: skip
        return config


@keras.saving.register_keras_serializable(package="mlnnkit")
class QualityFlags(_NoWeights):
    """Per-row flag bits (uint8) from the tensors around every network's scaling layers.

    Called on ``[*checks, *net_inputs, *net_outputs, *scope_errors]``, with counts
    ``n_checks`` (tensors whose non-finite values set ``invalid_input``: the model's
    inputs), ``input_ranges`` (one ``[minimum, maximum]`` per tensor entering an
    InputScaling; NaN there also sets ``invalid_input``), ``output_ranges`` (one per tensor
    leaving an OutputScaling) and ``thresholds`` (one per scope error). Bits: see
    :data:`FLAG_BITS`; ``limit_margin`` is absolute, in the network's own variables.
    ``check_inputs=False`` when the checks alone find every invalid row (a chain's).

    Example:
        >>> f = QualityFlags(0, [[[0.0], [1.0]]], [], [], 0.02)
        >>> f([np.array([[0.5], [2.0], [np.nan]])]).tolist()
        [0, 1, 16]
    """

    def __init__(
        self,
        n_checks: int,
        input_ranges: Sequence,
        output_ranges: Sequence,
        thresholds: Sequence[float],
        limit_margin: float = 0.02,
        check_inputs: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.n_checks = int(n_checks)
        self.check_inputs = bool(check_inputs)
        self.input_ranges = [[list(map(float, a)), list(map(float, b))] for a, b in input_ranges]
        self.output_ranges = [[list(map(float, a)), list(map(float, b))] for a, b in output_ranges]
        self.thresholds = [float(t) for t in thresholds]
        self.limit_margin = float(limit_margin)

    def _const(self, v):
        return ops.convert_to_tensor(np.asarray(v, np.float64), dtype=self.compute_dtype)

    def call(self, inputs):
        xs = [ops.cast(t, self.compute_dtype) for t in self._flat(inputs)]
        n_in, n_out = len(self.input_ranges), len(self.output_ranges)
        checks = xs[: self.n_checks]
        ins = xs[self.n_checks : self.n_checks + n_in]
        outs = xs[self.n_checks + n_in : self.n_checks + n_in + n_out]
        scopes = xs[self.n_checks + n_in + n_out :]
        rows = ops.shape(xs[0])[0]
        no = ops.zeros((rows,), dtype="bool")

        def any_of(tests):
            acc = no
            for t in tests:
                acc = ops.logical_or(acc, ops.any(t, axis=1) if len(t.shape) > 1 else t)
            return acc

        oor_in = any_of(
            ops.logical_or(t < self._const(a), t > self._const(b))
            for t, (a, b) in zip(ins, self.input_ranges)
        )
        # One code per output value, 6 out of range (which is also at the limit: the
        # margin is >= 0), 4 at the limit only, 0 inside: the row's largest code gives
        # both bits in one pass over the outputs.
        m = self.limit_margin
        u8 = np.uint8
        code = None
        for t, (a, b) in zip(outs, self.output_ranges):
            a, b = np.asarray(a), np.asarray(b)
            oor = ops.logical_or(t < self._const(a), t > self._const(b))
            lim = ops.logical_or(t > self._const(b - m), t < self._const(a + m))
            c = ops.max(ops.where(oor, u8(6), ops.where(lim, u8(4), u8(0))), axis=1)
            code = c if code is None else ops.maximum(code, c)
        if code is None:
            code = ops.zeros((rows,), dtype="uint8")
        oos = any_of(s[:, 0] > self._const(th) for s, th in zip(scopes, self.thresholds))
        invalid = any_of(
            ops.logical_not(ops.isfinite(t)) for t in [*checks, *(ins if self.check_inputs else [])]
        )
        flags = code
        for mask, b in ((1, oor_in), (8, oos), (16, invalid)):
            flags = flags | ops.cast(b, "uint8") * np.uint8(mask)
        return flags

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0],)

    def compute_output_spec(self, inputs):
        first = self._flat(inputs)[0]
        return keras.KerasTensor((first.shape[0],), dtype="uint8")

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            n_checks=self.n_checks, input_ranges=self.input_ranges,
            output_ranges=self.output_ranges, thresholds=self.thresholds,
            limit_margin=self.limit_margin, check_inputs=self.check_inputs,
        )  # fmt: skip
        return config
