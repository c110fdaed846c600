# Over 400 lines: one dataclass (NetworkSpec) and the checks that every format's reader runs on it.
"""The neutral description of a dense retrieval network that every format reads and writes.

A :class:`NetworkSpec` is what a legacy file *means*, independent of its layout and of
Keras: plane sizes, one activation per layer, weights in ``(out, in)`` orientation
(``z = W @ a + b``, MATLAB's and ffbp's convention; a Keras kernel is ``W.T``), biases,
and min-max scaling of the inputs and outputs. Format modules
(:mod:`~mlnnkit.legacy.ocsmart`, :mod:`~mlnnkit.legacy.ffbp`,
:mod:`~mlnnkit.legacy.rawh5`) turn files into specs and back;
:mod:`mlnnkit.legacy` turns specs into Keras models and back.

Example:
    >>> import numpy as np
    >>> spec = NetworkSpec(
    ...     weights=[np.ones((3, 2)), np.ones((1, 3))],
    ...     biases=[np.zeros(3), np.zeros(1)],
    ...     activations=["tanh", "linear"],
    ...     input_scaling=Scaling([0.0, 0.0], [1.0, 2.0], target=(-1.0, 1.0)),
    ... )
    >>> spec.sizes
    [2, 3, 1]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlnnkit.errors import UserError

#: Activations a spec may use (what every format and the NumPy reference know).
ACTIVATIONS = ("linear", "tanh", "sigmoid", "relu")

#: Largest magnitude of a weight or bias an imported file may hold (``validate``'s
#: ``max_weight``). The largest in 136 real C2RCC networks is 208, in OC-SMART's PACE
#: network 0.88: a value beyond 1e4 is a damaged file (a flipped exponent byte gives 1e163),
#: not a trained network. ``--allow-large-weights`` / ``allow_large_weights=True`` lifts it.
MAX_WEIGHT = 1e4

#: Largest magnitude of an input or output range limit (``validate``'s ``max_range``).
#: Ranges are physical units (angles, log radiances, pressure in hPa or Pa ~1e5,
#: concentrations); 1e12 is far above any of them and far below what a damaged float
#: gives (1e30 and up), and keeps the scaling well inside float32.
MAX_RANGE = 1e12

#: Other spellings accepted on input (MATLAB's transfer-function names among them).
ALIASES = {
    "identity": "linear",
    "none": "linear",
    "purelin": "linear",
    "tansig": "tanh",
    "logsig": "sigmoid",
    "logistic": "sigmoid",
    "poslin": "relu",
}


def canonical_activation(name: str, where: str = "") -> str:
    """Return the canonical spelling of an activation name or raise a UserError.

    Example:
        >>> canonical_activation("tansig")
        'tanh'
    """
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in ACTIVATIONS:
        prefix = f"{where}: " if where else ""
        raise UserError(f"{prefix}unknown activation {name!r}; use one of {', '.join(ACTIVATIONS)}")
    return key


@dataclass
class Scaling:
    """Min-max scaling between physical values and the network's own interval.

    ``forward`` maps physical values to the network interval ``target = (lo, hi)``:
    ``lo + (x - minimum) * (hi - lo) / (maximum - minimum)``; ``inverse`` maps back.
    OC-SMART scales to ``(-1, 1)`` (MATLAB ``mapminmax``), ffbp to ``(0, 1)``.
    """

    minimum: np.ndarray
    maximum: np.ndarray
    target: tuple[float, float] = (-1.0, 1.0)

    def __post_init__(self) -> None:
        self.minimum = np.asarray(self.minimum, dtype=np.float64).reshape(-1)
        self.maximum = np.asarray(self.maximum, dtype=np.float64).reshape(-1)
        self.target = (float(self.target[0]), float(self.target[1]))

    def __len__(self) -> int:
        return len(self.minimum)

    def forward(self, x: np.ndarray) -> np.ndarray:
        lo, hi = self.target
        return lo + (x - self.minimum) * (hi - lo) / (self.maximum - self.minimum)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        lo, hi = self.target
        return self.minimum + (y - lo) * (self.maximum - self.minimum) / (hi - lo)


#: ``where(kind, index) -> label`` names the place in a file a problem comes from
#: (``"Weights/Layer2"``, ``"line 812 (wgt 1 37 37)"``, ``"Norm_in row 5"``). Kinds:
#: ``weights``/``biases`` (layer index from 0), ``input_range``/``output_range`` (row
#: from 0), ``activations``, ``input_names``/``output_names`` (index None).
Where = Callable[[str, "int | None"], str]

#: ``locate(kind, layer, flat_index) -> label`` names the exact place of one weight or
#: bias value (``"line 815"`` in an ffbp file); optional, for the plausibility message.
Locate = Callable[[str, int, int], str]


def _default_where(kind: str, index: int | None) -> str:
    if index is None:
        return kind
    if kind in ("weights", "biases"):
        return f"{kind} of layer {index + 1}"
    return f"{kind.replace('_', ' ')} {index + 1}"


@dataclass
class NetworkSpec:
    """A dense feed-forward network as a legacy file describes it.

    Args:
        weights: one ``(out, in)`` float64 array per layer (``z = W @ a + b``).
        biases: one ``(out,)`` float64 array per layer.
        activations: one name per layer from :data:`ACTIVATIONS`.
        input_scaling: physical inputs -> network interval (None: inputs used as given).
        output_scaling: network interval -> physical outputs (None: outputs as computed).
        input_names, output_names: variable names when the file has them.
        source_format: ``"ocsmart"``, ``"ffbp"``, ``"rawh5"`` or ``"keras"``.
        header: free text the file carried (the ffbp header block), kept for export.
        source_options: reader options needed to read the file again (rawh5 patterns).
        precision: ``"float32"`` when the numbers went through a float32 model (writers
            then print the shortest decimal that gives the same float32).
    """

    weights: list[np.ndarray]
    biases: list[np.ndarray]
    activations: list[str]
    input_scaling: Scaling | None = None
    output_scaling: Scaling | None = None
    input_names: list[str] | None = None
    output_names: list[str] | None = None
    source_format: str | None = None
    header: str = ""
    source_options: dict[str, Any] = field(default_factory=dict)
    precision: str = "float64"

    @property
    def sizes(self) -> list[int]:
        """Plane sizes, input first: ``[7, 100, 1]``."""
        if not self.weights:
            return []
        return [int(self.weights[0].shape[1])] + [int(w.shape[0]) for w in self.weights]

    @property
    def n_inputs(self) -> int:
        return self.sizes[0]

    @property
    def n_outputs(self) -> int:
        return self.sizes[-1]

    @property
    def n_params(self) -> int:
        return int(sum(w.size + b.size for w, b in zip(self.weights, self.biases)))

    def names_in(self) -> list[str]:
        """Input names, or ``input_1 ...`` when the file has none."""
        return list(self.input_names or [f"input_{i + 1}" for i in range(self.n_inputs)])

    def names_out(self) -> list[str]:
        """Output names, or ``output_1 ...`` when the file has none."""
        return list(self.output_names or [f"output_{i + 1}" for i in range(self.n_outputs)])

    def output_span(self) -> np.ndarray | None:
        """``max - min`` of each output from the file, or None when it has no ranges."""
        if self.output_scaling is None:
            return None
        return self.output_scaling.maximum - self.output_scaling.minimum

    def validate(
        self,
        path: str,
        where: Where | None = None,
        *,
        max_weight: float | None = None,
        max_range: float | None = None,
        locate: Locate | None = None,
    ) -> NetworkSpec:
        """Check the description is a computable (and, with limits, plausible) network.

        Args:
            path: the file (or model) named first in every message.
            where: ``where(kind, index)`` names the dataset or line at fault (default:
                ``"weights of layer 2"``).
            max_weight: refuse a weight or bias whose magnitude exceeds it (default None:
                no limit; readers pass :data:`MAX_WEIGHT` unless told to allow large ones).
            max_range: the same for input and output range limits (default None; readers
                pass :data:`MAX_RANGE`).
            locate: ``locate(kind, layer, flat_index)`` names the place of one value
                (default None: the message gives the index in the array).

        Returns self. Raises a :class:`~mlnnkit.errors.UserError` naming ``path`` and the
        dataset or line at fault: shapes that do not chain, a bias whose length differs
        from its layer, NaN or Inf in weights, biases or ranges, a value beyond the
        limits, a range with min >= max, an unknown activation, a count of names that
        differs from the planes.

        Example:
            >>> spec = NetworkSpec([np.full((1, 2), 5e7)], [np.zeros(1)], ["linear"])
            >>> spec.validate("net.h5", max_weight=1e4)
            Traceback (most recent call last):
            ...
            mlnnkit.errors.UserError: net.h5: weights of layer 1: a weight of 5e+07 at index [0, 0], ...
        """
        where = where or _default_where

        def fail(msg: str) -> None:
            raise UserError(f"{path}: {msg}")

        if not self.weights:
            fail("the network has no layers")
        if len(self.biases) != len(self.weights):
            fail(f"{len(self.weights)} weight arrays but {len(self.biases)} bias arrays")
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            wl, bl = where("weights", k), where("biases", k)
            if w.ndim != 2 or 0 in w.shape:
                fail(f"{wl} has shape {tuple(w.shape)}; a layer needs a non-empty 2-D array")
            if k > 0 and w.shape[1] != self.weights[k - 1].shape[0]:
                fail(
                    f"{wl} has shape {tuple(w.shape)}: its {w.shape[1]} inputs do not match "
                    f"the {self.weights[k - 1].shape[0]} outputs of {where('weights', k - 1)} "
                    f"(shape {tuple(self.weights[k - 1].shape)}): the layers do not chain"
                )
            if b.size != w.shape[0]:
                fail(
                    f"{bl} has {b.size} values but {wl} has {w.shape[0]} outputs "
                    f"(shape {tuple(w.shape)})"
                )
            _check_finite(w, wl, fail)
            _check_finite(b, bl, fail)
        if max_weight is not None:
            for k, (w, b) in enumerate(zip(self.weights, self.biases)):
                for kind, a in (("weights", w), ("biases", b)):
                    _check_magnitude(a, kind, k, max_weight, where, locate, fail)
        if len(self.activations) != len(self.weights):
            fail(
                f"{where('activations', None)}: {len(self.activations)} activations for "
                f"{len(self.weights)} layers"
            )
        self.activations = [
            canonical_activation(a, f"{path}: {where('activations', None)}")
            for a in self.activations
        ]
        for kind, scaling, n in (
            ("input_range", self.input_scaling, self.n_inputs),
            ("output_range", self.output_scaling, self.n_outputs),
        ):
            if scaling is not None:
                _check_scaling(scaling, kind, n, where, fail, self, max_range)
        for kind, names, n in (
            ("input_names", self.input_names, self.n_inputs),
            ("output_names", self.output_names, self.n_outputs),
        ):
            if names is not None and len(names) != n:
                fail(f"{where(kind, None)}: {len(names)} names for {n} {kind.split('_')[0]}s")
        return self

    def summary(self) -> str:
        """One line: ``planes 7-100-1, activations tanh,linear, 901 parameters``."""
        return (
            f"planes {'-'.join(map(str, self.sizes))}, activations "
            f"{_runs(self.activations)}, {self.n_params:,} parameters"
        )

    def describe(self) -> str:
        """Several lines for people: format, planes, activations, parameters, scaling,
        and every input and output with its name and range."""
        acts = _runs(self.activations)
        lines = [
            f"format:      {self.source_format or 'unknown'}",
            f"planes:      {'-'.join(map(str, self.sizes))} ({len(self.weights)} layers)",
            f"activations: {acts}",
            f"parameters:  {self.n_params:,}",
        ]
        for side, s, names in (
            ("inputs", self.input_scaling, self.names_in()),
            ("outputs", self.output_scaling, self.names_out()),
        ):
            if s is None:
                scaling = "none (used as given)"
            elif side == "inputs":
                scaling = f"min-max to [{s.target[0]:g}, {s.target[1]:g}]"
            else:
                scaling = f"min-max from [{s.target[0]:g}, {s.target[1]:g}]"
            lines.append(f"{side} ({len(names)}), scaling {scaling}:")
            w = max(len(n) for n in names)
            for i, n in enumerate(names):
                rng = f"[{s.minimum[i]:.7g}, {s.maximum[i]:.7g}]" if s is not None else ""
                lines.append(f"  {i + 1:>4}  {n:<{w}}  {rng}".rstrip())
        return "\n".join(lines)


def _runs(items: list[str]) -> str:
    """``tanh x3, linear`` for ``[tanh, tanh, tanh, linear]``."""
    out: list[str] = []
    i = 0
    while i < len(items):
        j = i
        while j < len(items) and items[j] == items[i]:
            j += 1
        out.append(items[i] + (f" x{j - i}" if j - i > 1 else ""))
        i = j
    return ", ".join(out)


def _check_finite(a: np.ndarray, label: str, fail: Callable[[str], None]) -> None:
    bad = ~np.isfinite(a)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        what = "NaN" if np.isnan(a[idx]) else "Inf"
        at = f" at index {list(idx)}" if a.size > 1 else ""
        fail(f"{label} contains {what}{at} ({int(bad.sum())} non-finite values)")


#: The option that lifts the plausibility limits, named in their messages.
ALLOW_HINT = "--allow-large-weights (library: allow_large_weights=True)"


def _check_magnitude(
    a: np.ndarray,
    kind: str,
    layer: int,
    limit: float,
    where: Where,
    locate: Locate | None,
    fail: Callable[[str], None],
) -> None:
    mag = np.abs(a)
    over = mag > limit
    if not over.any():
        return
    flat = int(np.argmax(mag))
    value = float(a.reshape(-1)[flat])
    idx = [int(i) for i in np.unravel_index(flat, a.shape)]
    at = f" ({locate(kind, layer, flat)})" if locate else f" at index {idx}"
    what = "weight" if kind == "weights" else "bias"
    fail(
        f"{where(kind, layer)}: a {what} of {value:.3g}{at}, the largest of "
        f"{int(over.sum())} beyond {limit:g} in magnitude: no trained network of this format "
        f"has such values (the file is likely damaged); if it is real, pass {ALLOW_HINT}"
    )


def _check_scaling(
    s: Scaling,
    kind: str,
    n: int,
    where: Where,
    fail: Callable[[str], None],
    spec: NetworkSpec,
    max_range: float | None = None,
) -> None:
    side = kind.split("_")[0]
    if len(s.minimum) != n or len(s.maximum) != n:
        fail(f"{where(kind, None)}: {len(s.minimum)} ranges for the {n} {side}s of the network")
    names = spec.input_names if side == "input" else spec.output_names
    for i in range(n):
        lo, hi = s.minimum[i], s.maximum[i]
        name = f" ({names[i]})" if names and i < len(names) else ""
        if not (np.isfinite(lo) and np.isfinite(hi)):
            fail(f"{where(kind, i)}: {side} {i + 1}{name} has a non-finite range [{lo}, {hi}]")
        if max_range is not None and max(abs(lo), abs(hi)) > max_range:
            big = lo if abs(lo) >= abs(hi) else hi
            fail(
                f"{where(kind, i)}: {side} {i + 1}{name} has the range [{lo:.6g}, {hi:.6g}]: "
                f"{big:.3g} is beyond {max_range:g} in magnitude, which no physical variable "
                f"of a retrieval network has (the file is likely damaged); if it is real, "
                f"pass {ALLOW_HINT}"
            )
        if lo == hi:
            fail(
                f"{where(kind, i)}: {side} {i + 1}{name} has min == max == {lo}: "
                "its scaling would divide by zero"
            )
        if lo > hi:
            fail(f"{where(kind, i)}: {side} {i + 1}{name} has min {lo} > max {hi}")
        with np.errstate(over="ignore"):
            wide = not np.isfinite(hi - lo)
        if wide:
            fail(
                f"{where(kind, i)}: {side} {i + 1}{name} has the range [{lo:.3g}, {hi:.3g}], "
                "whose width is beyond float64: its scaling cannot be computed"
            )
    lo, hi = s.target
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo >= hi:
        fail(f"{where(kind, None)}: scaling interval {s.target} must have lo < hi")
