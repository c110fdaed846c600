"""Does a Keras model compute what a legacy file computes? Measure it.

:func:`verify` evaluates the model and the independent float64 NumPy forward pass of the
file (:mod:`mlnnkit.legacy.reference`) on the same inputs spread over the file's input
ranges, edges included, and reports per output the max absolute error and the max error
relative to the output's range (``max - min`` from the file). For sigmoid networks it
also measures how far SNAP's tabulated sigmoid is from the exact one on those inputs.

A physical model (with ``InputTransform``/``OutputTransform``) is verified whole: the
inputs drawn over the network's ranges are mapped to physical values (inverse input
transforms), the reference is the file's math plus the same transforms in float64, and
both outputs are mapped back through the inverse output transforms, so the error is
still relative to each output's range in the network's own space.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from mlnnkit.errors import UserError, VerificationError
from mlnnkit.legacy import reference
from mlnnkit.legacy._keras import model_dtype, model_sigmoid
from mlnnkit.legacy.spec import NetworkSpec
from mlnnkit.retrieval._physical import apply_columns, transform_layers

DEFAULT_SAMPLES = 10_000
DEFAULT_TOLERANCE = 1e-5


@dataclass
class VerifyResult:
    """Per-output agreement of a model with a file's float64 reference.

    Attributes:
        names: output names.
        abs_error: max ``|model - reference|`` per output.
        rel_error: ``abs_error / span`` per output.
        span: the output ranges used (``max - min`` from the file, or of the reference
            outputs when the file has no output ranges: ``span_from``).
        snap_difference: for sigmoid networks, max difference between SNAP's tabulated
            and the exact sigmoid per output, relative to the span; else None.
        inputs_from: where the inputs were drawn (the file's input ranges, or [-1, 1]
            when the file has none).
    """

    names: list[str]
    abs_error: np.ndarray
    rel_error: np.ndarray
    span: np.ndarray
    span_from: str
    tolerance: float
    samples: int
    dtype: str
    sigmoid: str
    source_format: str | None
    snap_difference: np.ndarray | None = None
    inputs_from: str = "the input ranges"
    physical: bool = False
    physical_rel_error: np.ndarray | None = None
    physical_names: list[str] | None = None

    @property
    def max_physical_rel_error(self) -> float | None:
        """For a physical model with ``pow10``/``exp`` outputs: the largest
        ``|model / reference - 1|`` of those outputs in physical units (what a user of
        the concentrations sees); None otherwise. Not part of :attr:`passed`."""
        r = self.physical_rel_error
        if r is None or np.all(np.isnan(r)):
            return None
        return float(np.nanmax(r))

    def physical_note(self) -> str | None:
        """The statement about relative errors in physical units, for physical models."""
        m = self.max_physical_rel_error
        if m is None:
            return None
        i = int(np.nanargmax(self.physical_rel_error))
        name = (self.physical_names or self.names)[i]
        return (
            f"physical units: max relative error {m:.2e} of the outputs after their "
            f"pow10/exp (output {name})"
        )

    @property
    def max_rel_error(self) -> float:
        return float(np.max(self.rel_error))

    @property
    def passed(self) -> bool:
        return bool(np.all(np.isfinite(self.rel_error)) and self.max_rel_error <= self.tolerance)

    @property
    def worst(self) -> int:
        r = np.where(np.isfinite(self.rel_error), self.rel_error, np.inf)
        return int(np.argmax(r))

    def table(self) -> str:
        """One line per output: name, max abs error, max error / range."""
        w = max(8, *(len(n) for n in self.names))
        lines = [f"  {'output':<{w}}  {'max abs err':>11}  {'max err / range':>15}"]
        for n, a, r in zip(self.names, self.abs_error, self.rel_error):
            flag = "" if r <= self.tolerance else "  FAIL"
            lines.append(f"  {n:<{w}}  {a:11.3e}  {r:15.3e}{flag}")
        return "\n".join(lines)

    def describe(self) -> str:
        """What was compared with what."""
        sig = {"exact": "exact sigmoid", "snap": "SNAP's tabulated sigmoid"}[self.sigmoid]
        what = f"{self.source_format} math" if self.source_format else "the file's math"
        uses_sigmoid = self.snap_difference is not None
        return (
            f"{self.samples:,} samples over {self.inputs_from} (edges included): {self.dtype} "
            f"model vs float64 NumPy reference of the {what}"
            + (f" ({sig})" if uses_sigmoid else "")
            + (
                "; physical model: inputs mapped to physical units, the reference with the "
                "same transforms, both outputs mapped back to the network's space"
                if self.physical
                else ""
            )
            + f"; error relative to each output's range ({self.span_from})"
        )

    def snap_note(self) -> str | None:
        """The statement about SNAP's tabulated sigmoid, for sigmoid networks."""
        if self.snap_difference is None:
            return None
        i = int(np.argmax(self.snap_difference))
        which = (
            "this model also uses the table"
            if self.sigmoid == "snap"
            else (
                "this model uses the exact sigmoid; import with --sigmoid snap to reproduce "
                "SNAP's numbers"
            )
        )
        return (
            f"note: SNAP's ffbp reader uses a tabulated sigmoid; on these samples its outputs "
            f"differ from the exact sigmoid's by up to {self.snap_difference[i]:.2e} of the "
            f"output range (output {self.names[i]}); {which}"
        )

    def summary(self) -> str:
        i = self.worst
        verdict = "passed" if self.passed else "FAILED"
        return (
            f"{verdict}: max error {self.rel_error[i]:.2e} of range (output {self.names[i]}, "
            f"abs {self.abs_error[i]:.2e}); tolerance {self.tolerance:g}"
        )

    def raise_if_failed(self, what: str = "model") -> VerifyResult:
        """Raise :class:`~mlnnkit.errors.VerificationError` when above tolerance."""
        if not self.passed:
            i = self.worst
            raise VerificationError(
                f"{what} does not compute what the file computes: max error "
                f"{self.rel_error[i]:.3g} of the range of output {self.names[i]} > tolerance "
                f"{self.tolerance:g}"
            )
        return self


def _evaluate(model: keras.Model, x: np.ndarray, batch: int = 8192) -> np.ndarray:
    """The model's outputs in float64. ``model.predict`` is not used: its data adapter
    rounds float64 inputs to ``floatx`` (float32), which would hide a float64 model's
    precision."""
    parts = [
        keras.ops.convert_to_numpy(
            model(keras.ops.convert_to_tensor(x[i : i + batch]), training=False)
        )
        for i in range(0, len(x), batch)
    ]
    return np.concatenate(parts).astype(np.float64)


def verify(
    model: keras.Model,
    spec: NetworkSpec,
    *,
    samples: int = DEFAULT_SAMPLES,
    tolerance: float = DEFAULT_TOLERANCE,
    seed: int = 0,
) -> VerifyResult:
    """Compare ``model`` with the float64 reference of ``spec`` on ``samples`` inputs.

    Inputs are drawn over the file's input ranges (all minima, all maxima, the centre,
    then uniform with 10% of the values at each edge); without ranges, over [-1, 1].
    Inputs are rounded to the model's dtype first, so the comparison measures the
    model's arithmetic, not the rounding of its inputs. The reference uses SNAP's table
    when the model does (``--sigmoid snap``), else the exact sigmoid.
    """
    if samples < 3:
        raise UserError(f"--samples {samples}: use at least 3")
    n_in = model.inputs[0].shape[-1]
    n_out = model.outputs[0].shape[-1]
    if (n_in, n_out) != (spec.n_inputs, spec.n_outputs):
        raise UserError(
            f"model {model.name!r} has {n_in} inputs and {n_out} outputs but the file's "
            f"network has {spec.n_inputs} and {spec.n_outputs}: they are not the same network"
        )
    if spec.input_scaling is not None:
        lo, hi = spec.input_scaling.minimum, spec.input_scaling.maximum
        inputs_from = "the input ranges"
    else:
        lo, hi = -np.ones(spec.n_inputs), np.ones(spec.n_inputs)
        inputs_from = "[-1, 1] per input (the file has no input ranges)"
    dtype = model_dtype(model)
    # Overflow, inf - inf and the like end as Inf/NaN errors, which fail the check: no
    # NumPy warning is worth showing on top.
    with np.errstate(all="ignore"):
        t_in, t_out = transform_layers(model)
        x = reference.sample_inputs(lo, hi, samples, seed=seed)
        if t_in is not None:  # network-space samples -> the physical values that give them
            x = apply_columns(t_in.transforms, x, inverse=True)
        x = x.astype(dtype)
        x64 = x.astype(np.float64)
        if t_in is not None:
            x64 = apply_columns(t_in.transforms, x64)
        sigmoid = model_sigmoid(model)
        ref = reference.forward(spec, x64, sigmoid)
        got = _evaluate(model, x)
        physical_rel = None
        if t_out is not None:  # physical outputs back to the network's space
            ref_phys = apply_columns(t_out.transforms, ref)
            with np.errstate(all="ignore"):
                rel = np.abs(got / ref_phys - 1.0)
            logs = np.array([t != "identity" for t in t_out.transforms])
            rel = np.where(np.isfinite(rel), rel, np.inf)
            physical_rel = np.where(logs, rel.max(axis=0), np.nan)
            got = apply_columns(t_out.transforms, got, inverse=True)
        with np.errstate(invalid="ignore"):
            err = np.abs(got - ref)
        bad = np.isnan(err).any(axis=0)  # NaN (e.g. a physical output overflowing): a failure
        abs_error = np.where(bad, np.inf, np.max(np.where(np.isnan(err), 0.0, err), axis=0))
        span = spec.output_span()
        span_from = "max - min from the file"
        if span is None:
            span = ref.max(axis=0) - ref.min(axis=0)
            span = np.where(span > 0, span, 1.0)
            span_from = "file has no output ranges: spread of the reference outputs"
        snap = None
        if "sigmoid" in spec.activations:
            other = reference.forward(spec, x64, "snap" if sigmoid == "exact" else "exact")
            snap = np.max(np.abs(other - ref), axis=0) / span
        names = spec.names_out()
        if t_out is not None and t_out.network_names and not spec.output_names:
            names = list(t_out.network_names)  # the network's (log10_Lrc_1), made by the recipe
        rel_error = abs_error / span
    return VerifyResult(
        names=names,
        abs_error=abs_error,
        rel_error=rel_error,
        span=span,
        span_from=span_from,
        tolerance=float(tolerance),
        samples=samples,
        dtype=dtype,
        sigmoid=sigmoid,
        source_format=spec.source_format,
        snap_difference=snap,
        inputs_from=inputs_from,
        physical=t_in is not None or t_out is not None,
        physical_rel_error=physical_rel,
        physical_names=list(t_out.names) if t_out is not None and t_out.names else None,
    )

