"""Describe any Keras model for people: what ``mlnnkit inspect model.keras`` prints.

A model imported from a legacy file also carries mlnnkit's metadata (source format,
variable names and ranges in its InputScaling/OutputScaling layers); a model saved by
``mlnnkit train`` sits in a run directory whose ``metrics.json`` says how it scored.
Both are shown when present.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras

__all__ = ["describe_model", "describe_run_dir"]


def _shape(shape) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + (
        ",)" if len(shape) == 1 else ")"
    )


def _output_shape(layer) -> str:
    try:
        out = layer.output
    except (AttributeError, ValueError):
        return "?"
    if isinstance(out, (list, tuple)):
        return ", ".join(_shape(o.shape) for o in out)
    return _shape(out.shape)


def _activation(layer) -> str:
    act = getattr(layer, "activation", None)
    if act is None:
        return ""
    return getattr(act, "__name__", type(act).__name__)


def _count(weights) -> int:
    import numpy as np

    return int(sum(int(np.prod(w.shape)) for w in weights))


def describe_model(model: keras.Model, *, summary: bool = True, metadata: bool = True) -> str:
    """Several lines: the model's class and dtype, input and output shapes, parameter
    counts, one line per layer (name, type, output shape, parameters, activation), and
    mlnnkit's metadata when the model was imported from a legacy file.

    Args:
        model: any built ``keras.Model`` (Sequential, functional, or subclassed).
        summary: start with the format, shapes and parameter counts (default True).
        metadata: end with mlnnkit's metadata when present (default True).

    Example:
        >>> import keras
        >>> m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="out")])
        >>> print(describe_model(m).splitlines()[3])
        parameters:  8 (8 trainable)
    """
    inputs = list(getattr(model, "inputs", None) or [])
    outputs = list(getattr(model, "outputs", None) or [])
    dtype = str(inputs[0].dtype) if inputs else str(getattr(model, "dtype", "?"))
    n_train, n_fixed = _count(model.trainable_weights), _count(model.non_trainable_weights)
    lines = summary * [
        f"format:      keras ({type(model).__name__} model {model.name!r}, {dtype})",
        "inputs:      " + (", ".join(_shape(t.shape) for t in inputs) or "?"),
        "outputs:     " + (", ".join(_shape(t.shape) for t in outputs) or "?"),
        f"parameters:  {n_train + n_fixed:,} ({n_train:,} trainable"
        + (f", {n_fixed:,} not trainable)" if n_fixed else ")"),
    ]
    layers = [l for l in model.layers if not isinstance(l, keras.layers.InputLayer)]
    rows = [
        (str(i), l.name, type(l).__name__, _output_shape(l), f"{l.count_params():,}", _activation(l))
        for i, l in enumerate(layers, start=1)
    ]
    head = ("#", "name", "type", "output shape", "params", "activation")
    widths = [max(len(r[k]) for r in [head, *rows]) for k in range(len(head))]
    lines.append(f"layers ({len(layers)}):")
    for r in [head, *rows]:
        cells = [
            c.rjust(w) if k in (0, 4) else c.ljust(w) for k, (c, w) in enumerate(zip(r, widths))
        ]
        lines.append(("  " + "  ".join(cells)).rstrip())
    if metadata:
        lines.extend(_mlnnkit_metadata(model))
    return "\n".join(lines)


def _mlnnkit_metadata(model: keras.Model) -> list[str]:
    from mlnnkit.layers import InputScaling, OutputScaling

    out = []
    for layer in model.layers:
        if not isinstance(layer, (InputScaling, OutputScaling)):
            continue
        side = "inputs" if isinstance(layer, InputScaling) else "outputs"
        src = f" (imported from a {layer.source_format} file)" if layer.source_format else ""
        if layer.minimum is None:
            out.append(f"mlnnkit {side}{src}: no scaling")
            continue
        names = list(layer.names or [f"{side[:-1]}_{i + 1}" for i in range(len(layer.minimum))])
        out.append(f"mlnnkit {side} ({len(names)}){src}, [min, max]:")
        w = max(len(n) for n in names)
        for i, (n, lo, hi) in enumerate(zip(names, layer.minimum, layer.maximum), start=1):
            out.append(f"  {i:>4}  {n:<{w}}  [{lo:.7g}, {hi:.7g}]")
    return out


def describe_run_dir(model_path: str | Path) -> str | None:
    """One line about the run directory a model file sits in (``mlnnkit train``'s
    ``metrics.json``: test metrics, epochs, seed), or None when there is none.

    Args:
        model_path: the model file (e.g. ``runs/tiny/model.keras``).

    Example:
        >>> describe_run_dir("/nonexistent/model.keras") is None
        True
    """
    metrics = Path(model_path).parent / "metrics.json"
    if not metrics.is_file():
        return None
    try:
        m = json.loads(metrics.read_text())
        test = ", ".join(f"{k} {float(v):.4g}" for k, v in m.get("test", {}).items())
    except (ValueError, TypeError, AttributeError, OSError):
        return None
    extra = [f"{m['epochs']} epochs" if "epochs" in m else "", f"seed {m['seed']}" if "seed" in m else ""]
    extra = ", ".join(e for e in extra if e)
    return f"run:         {metrics}: test {test or '-'}" + (f" ({extra})" if extra else "")
