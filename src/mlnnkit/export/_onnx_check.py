"""Checking a written ONNX file with onnxruntime: the result classes and the comparisons.

:class:`OnnxCheck` (per-output agreement), :class:`OnnxExport` (what :func:`to_onnx`
wrote and measured) and :class:`OnnxVerificationError`. The file is run on inputs spread
over the model's input ranges (edges included) against the Keras model and, for a network
that a legacy file describes, against the float64 NumPy reference of that file's math
(:mod:`mlnnkit.legacy.reference`); quality flags on inputs away from the exact edges.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlnnkit.errors import VerificationError
from mlnnkit.export._onnx_model import INPUT_NAME, _columns, _Interface
from mlnnkit.legacy._verify import VerifyResult

# ------------------------------------------------------------------------------ results


@dataclass
class OnnxCheck(VerifyResult):
    """Per-output agreement of the written ``.onnx`` file (run by onnxruntime) with
    ``against`` (the Keras model, or the float64 reference of the legacy file); the
    fields, :meth:`table` and :meth:`summary` are those of ``mlnnkit verify``."""

    against: str = "the Keras model"

    def describe(self) -> str:
        if self.names == ["quality_flags"]:
            return (
                f"{self.samples:,} samples uniform over the input ranges widened by 10% (no "
                f"exact edges): onnxruntime on the {self.dtype} file vs {self.against}; the "
                "error is the fraction of rows whose flags differ"
            )
        return (
            f"{self.samples:,} samples over the input ranges (edges included): onnxruntime "
            f"on the {self.dtype} file vs {self.against}; error relative to each output's "
            f"range ({self.span_from})"
        )


@dataclass
class OnnxExport:
    """What :func:`to_onnx` wrote and measured.

    Attributes:
        path: the ``.onnx`` file.
        dtype: ``"float32"`` or ``"float64"`` (the file's tensor type).
        exporter: how the graph was made (Keras's exporter or jax2onnx in double precision).
        input_name, input_shape: the input (``"inputs"``, ``("batch", n)``).
        output_names: the file's output names.
        metadata: the ``metadata_props`` written (JSON strings).
        checks: the onnxruntime comparisons (model, then reference when there is one).
    """

    path: Path
    dtype: str
    exporter: str
    input_name: str
    input_shape: tuple
    output_names: list[str]
    metadata: dict[str, str]
    checks: list[OnnxCheck] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def summary(self) -> str:
        shape = " x ".join(str(d) for d in self.input_shape)
        outs = ", ".join(self.output_names)
        return (
            f"{self.dtype}, input {self.input_name!r} ({shape}), output(s) {outs}; "
            f"{self.exporter}"
        )


class OnnxVerificationError(VerificationError):
    """The written ONNX file does not compute what the model computes (no file is left);
    ``checks`` holds the measured comparisons."""

    def __init__(self, message: str, checks: list[OnnxCheck]):
        super().__init__(message)
        self.checks = checks


# ------------------------------------------------------------------------- verifying


def _sample(io: _Interface, samples: int, seed: int) -> np.ndarray:
    """Physical inputs over the ranges (edges included); [-1, 1] without ranges."""
    from mlnnkit.legacy import reference

    if io.n_in is None:  # samples that are not flat vectors: uniform in [-1, 1]
        rng = np.random.default_rng(seed)
        return rng.uniform(-1.0, 1.0, size=(samples, *io.sample_shape))
    if io.phys_min is not None:
        return reference.sample_inputs(io.phys_min, io.phys_max, samples, seed=seed)
    if io.in_min is not None:
        lo, hi = io.in_min, io.in_max
    else:
        lo, hi = -np.ones(io.n_in), np.ones(io.n_in)
    x = reference.sample_inputs(lo, hi, samples, seed=seed)
    return _columns(io.in_transforms, x, inverse=True) if io.in_transforms else x


def _to_network(io: _Interface, y: np.ndarray) -> np.ndarray:
    if not io.out_transforms or y.ndim != 2 or y.shape[1] != len(io.out_transforms):
        return y
    return _columns(io.out_transforms, y, inverse=True)


def _run_keras(model, x: np.ndarray, batch: int = 8192) -> list[np.ndarray]:
    import keras

    parts = []
    for i in range(0, len(x), batch):
        y = model(keras.ops.convert_to_tensor(x[i : i + batch]), training=False)
        ys = y if isinstance(y, (list, tuple)) else list(y.values()) if isinstance(y, dict) else [y]
        parts.append([np.asarray(keras.ops.convert_to_numpy(v)) for v in ys])
    return [np.concatenate(p) for p in zip(*parts)]


def _run_onnx(path: Path, x: np.ndarray, batch: int = 65536) -> list[np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    parts = [session.run(None, {INPUT_NAME: x[i : i + batch]}) for i in range(0, len(x), batch)]
    return [np.concatenate(p) for p in zip(*parts)]


def _compare(got, want, names, span, span_from, **kw) -> OnnxCheck:
    got = np.asarray(got, np.float64).reshape(len(got), -1)
    want = np.asarray(want, np.float64).reshape(len(want), -1)
    with np.errstate(invalid="ignore"):
        err = np.abs(got - want)
    both_nan = np.isnan(got) & np.isnan(want)
    err = np.where(both_nan, 0.0, err)
    abs_error = np.where(np.isnan(err).any(axis=0), np.inf, np.nanmax(err, axis=0, initial=0.0))
    return OnnxCheck(
        names=list(names),
        abs_error=abs_error,
        rel_error=abs_error / span,
        span=span,
        span_from=span_from,
        **kw,
    )


def _span(io: _Interface, y: np.ndarray, i: int) -> tuple[np.ndarray, str]:
    if i == 0 and io.out_min is not None and y.shape[1] == len(io.out_min):
        return io.out_max - io.out_min, "max - min from the file"
    finite = np.where(np.isfinite(y), y, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = np.nanmax(finite, axis=0) - np.nanmin(finite, axis=0)
    s = np.where(np.isfinite(s) & (s > 0), s, 1.0)
    return s, "no output ranges: spread of the model's outputs"


#: Largest fraction of rows whose quality flags may differ between the file and the model
#: (a value within float rounding of a range edge or threshold can flip a bit either way).
FLAG_TOLERANCE = 1e-3


def _check_flags(path, model, io: _Interface, k: int, samples: int, seed: int, *, dtype, common):
    """Flags of the file vs the model on inputs uniform over the ranges widened by 10% on
    each side (so every range test is exercised), no value exactly at an edge."""
    from mlnnkit.legacy import reference

    if io.phys_min is not None:
        lo, hi = io.phys_min, io.phys_max
    elif io.in_min is not None:
        lo, hi = io.in_min, io.in_max
    else:
        lo, hi = -np.ones(io.n_in), np.ones(io.n_in)
    pad = 0.1 * (hi - lo)
    x = reference.sample_inputs(lo - pad, hi + pad, samples, seed=seed + 1, edge_fraction=0.0)
    if io.phys_min is None and io.in_transforms:
        x = _columns(io.in_transforms, x, inverse=True)
    x = x.astype(dtype)
    g = np.asarray(_run_onnx(path, x)[k]).reshape(-1)
    w = np.asarray(_run_keras(model, x)[k]).reshape(-1)
    frac = float(np.mean(g != w))
    c = {**common, "tolerance": FLAG_TOLERANCE}
    return OnnxCheck(
        names=["quality_flags"], abs_error=np.array([frac]), rel_error=np.array([frac]),
        span=np.array([1.0]), span_from="for quality_flags: the fraction of rows whose flags "
        "differ, on inputs uniform over the ranges widened by 10%, no exact edges",
        against="the Keras model's quality flags", **c,
    )  # fmt: skip


def _check(
    path: Path,
    model,
    io: _Interface,
    names: list[str],
    reference_spec,
    *,
    dtype: str,
    samples: int,
    tolerance: float,
    seed: int,
    sigmoid: str = "exact",
) -> list[OnnxCheck]:
    from mlnnkit.legacy import reference
    x = _sample(io, samples, seed).astype(dtype)
    got = _run_onnx(path, x)
    want = _run_keras(model, x)
    common = {
        "tolerance": tolerance, "samples": samples, "dtype": dtype, "sigmoid": sigmoid,
        "source_format": io.source_format,
    }  # fmt: skip
    checks = []
    if len(got) != len(want):
        raise OnnxVerificationError(
            f"the ONNX file has {len(got)} outputs but the model {len(want)}", checks
        )
    var_names, span_parts, from_parts, g_parts, w_parts = [], [], [], [], []
    for i, (g, w, name) in enumerate(zip(got, want, names)):
        if name == "quality_flags":
            continue  # checked below, on inputs away from the exact edges
        g2 = _to_network(io, g.reshape(len(g), -1).astype(np.float64))
        w2 = _to_network(io, w.reshape(len(w), -1).astype(np.float64))
        span, span_from = _span(io, w2, i)
        n = w2.shape[1]
        first = list(io.out_names or [])
        if "scope_error" in names and first[-1:] == ["scope_error"]:
            first = first[:-1]
        if i == 0 and first and len(first) == n:
            var_names += first
        elif len(names) == 1:
            var_names += [f"output_{j + 1}" for j in range(n)]
        else:
            var_names += [name] if n == 1 else [f"{name}[{j}]" for j in range(n)]
        span_parts.append(span)
        from_parts.append(span_from)
        g_parts.append(g2)
        w_parts.append(w2)
    vs_keras = _compare(
        np.hstack(g_parts), np.hstack(w_parts), var_names, np.concatenate(span_parts),
        "; ".join(dict.fromkeys(from_parts)),
        against=f"the Keras model ({dtype})", **common,
    )  # fmt: skip
    checks.append(vs_keras)
    if "quality_flags" in names:
        checks.append(_check_flags(path, model, io, names.index("quality_flags"), samples,
                                   seed, dtype=dtype, common=common))  # fmt: skip
    if reference_spec is not None and io.n_in is not None:
        xin = x.astype(np.float64)
        if io.in_transforms:
            xin = _columns(io.in_transforms, xin)
        ref = reference.forward(reference_spec, xin, sigmoid)
        span = reference_spec.output_span()
        span_from = "max - min from the file"
        if span is None:
            span, span_from = _span(io, ref, 1)
        what = f"{reference_spec.source_format} math" if reference_spec.source_format else "math"
        vs_file = _compare(
            g_parts[0], ref, reference_spec.names_out(), span, span_from,
            against=f"the float64 NumPy reference of the file's {what}", **common,
        )  # fmt: skip
        checks.append(vs_file)
    return checks
