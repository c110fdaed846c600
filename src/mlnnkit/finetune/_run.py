# Over 400 lines: finetune() alone is ~200 lines (split, freeze, fit, measure); run() wraps it.
"""The fine-tuning run: :func:`finetune` (split, freeze, penalize, fit, measure) on
arrays, and :func:`run` (``mlnnkit finetune``: load, read, check, fine-tune, write OUTDIR).

Example:
    >>> from mlnnkit import finetune
    >>> res = finetune.run("net.h5", "matchups.csv", "runs/ft", inputs="x*", targets="y",
    ...                    freeze=1, verbose=0)
    >>> sorted(res.report)[:3]
    ['data', 'dropped_nonfinite_rows', 'dropped_untransformable_rows']
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from mlnnkit import _atomic, _rundir
from mlnnkit.data.rows import split_rows
from mlnnkit.data.tables import TableData, read_xy
from mlnnkit.errors import UserError
from mlnnkit.finetune._freeze import (
    _restore_trainable,
    _trainable_flags,
    freeze_layers,
    scratch_copy,
)
from mlnnkit.finetune._losses import (
    StandardizedMSE,
    attach_l2sp,
    detach_l2sp,
    l2sp_penalty,
    target_scale,
)
from mlnnkit.finetune._report import (
    OCEAN_COLOUR_METRICS,
    ocean_colour_metrics,
    positive_outputs,
    regression_metrics,
    verdict,
)
from mlnnkit.models import io_names, load_network, model_io_shapes

LEGACY_SUFFIX = {"ocsmart": ".h5", "ffbp": ".net"}


# --------------------------------------------------------------------------- model and data
def input_ranges(model: keras.Model):
    """``(mins, maxs, names)`` of an imported network's inputs, or None when unknown."""
    from mlnnkit.legacy import input_ranges as ranges

    return ranges(model)


def source_format(model: keras.Model) -> str | None:
    """The legacy format the network came from (``"ocsmart"``, ``"ffbp"``), or None."""
    from mlnnkit.legacy import source_format as fmt

    return fmt(model)


def _ranges_names(model: keras.Model) -> list[str] | None:
    r = input_ranges(model)
    if r is None or r[2] is None:
        return None
    return [str(n) for n in r[2]]


def read_data(
    path: str | Path,
    model: keras.Model,
    *,
    inputs: str | list[str] | None = None,
    targets: str | list[str] | None = None,
    drop_nonfinite: bool = False,
    warn: Callable[[str], None] | None = None,
) -> TableData:
    """Read fine-tuning rows from ``path`` and check them against ``model``
    (:func:`mlnnkit.data.tables.read_xy` with the model's sample shapes and, for an
    imported network, its own input names)."""
    in_shape, out_shape = model_io_shapes(model)
    known_in, known_out = io_names(model)  # physical names for a physical model
    return read_xy(
        path, in_shape, out_shape, known_inputs=known_in or _ranges_names(model),
        inputs=inputs, targets=targets, drop_nonfinite_rows=drop_nonfinite,
        warn=warn or _stderr, known_targets=known_out,
    )  # fmt: skip


def _stderr(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


def range_warning(
    model: keras.Model, x: np.ndarray, input_names: list[str] | None = None
) -> str | None:
    """A one-line message when rows of ``x`` fall outside the network's input ranges
    (the fraction of rows, the first such row counted from 1 as ``predict`` counts them,
    and the inputs concerned with their own fractions and ranges), or None when every row
    is inside or the network has no known ranges.

    Inputs are named by ``input_names`` (the data's columns, default ``None``), with the
    network's own name in parentheses where it differs (``Rrs_443 (input_2)``); without
    column names, by the network's names.

    Example:
        >>> range_warning(net, x, ["Rrs_412", "Rrs_443"])            # doctest: +SKIP
        '5.0% of rows (10 of 200) have inputs outside ... (first: data row 3): Rrs_412 ...'
    """
    from mlnnkit.retrieval import inputs_to_network, physical_ranges, transform_layers

    r = input_ranges(model)
    if r is None:
        return None
    mins, maxs, names = r
    mins = np.asarray(mins, dtype="float64").reshape(-1)
    maxs = np.asarray(maxs, dtype="float64").reshape(-1)
    flat = np.asarray(x, dtype="float64").reshape(len(x), -1)
    if flat.shape[1] != len(mins):
        return None
    t_in, _ = transform_layers(model)
    show_lo, show_hi = mins, maxs
    if t_in is not None:  # compare in the network's space, show in physical units
        flat = inputs_to_network(model, flat)
        show_lo, show_hi = physical_ranges(mins, maxs, t_in.transforms)
        names = t_in.names or names
    with np.errstate(invalid="ignore"):
        out = (flat < mins) | (flat > maxs)
    rows = out.any(axis=1)
    if not rows.any():
        return None
    own = [str(n) for n in names] if names is not None and len(names) == len(mins) else None
    cols = [str(n) for n in input_names] if input_names and len(input_names) == len(mins) else None
    if cols is not None:
        names = [c if own is None or own[j] == c else f"{c} ({own[j]})" for j, c in enumerate(cols)]
    elif own is not None:
        names = own
    else:
        names = [f"input {j + 1}" for j in range(len(mins))]
    per = out.mean(axis=0)
    order = [j for j in np.argsort(-per, kind="stable") if per[j] > 0]
    shown = [
        f"{names[j]} {100 * per[j]:.1f}% [{show_lo[j]:.4g}, {show_hi[j]:.4g}]" for j in order[:5]
    ]
    more = f" and {len(order) - 5} more inputs" if len(order) > 5 else ""
    first = int(np.flatnonzero(rows)[0]) + 1
    return (
        f"{100 * rows.mean():.1f}% of rows ({int(rows.sum())} of {len(rows)}) have inputs "
        f"outside the network's input ranges, where it extrapolates (first: data row "
        f"{first}): {'; '.join(shown)}{more}"
    )




# --------------------------------------------------------------------------- fitting
@dataclass
class FinetuneResult:
    """What :func:`finetune` gives back: the models, histories and the report."""

    model: keras.Model
    report: dict[str, Any]
    history: dict[str, list[float]]
    predictions: dict[str, np.ndarray] = field(default_factory=dict)
    y_test: np.ndarray | None = None
    scratch_model: keras.Model | None = None
    scratch_history: dict[str, list[float]] | None = None
    l2sp_start: float = 0.0


def _predict(model: keras.Model, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=model.inputs[0].dtype or "float32")
    return np.asarray(model.predict(x, batch_size=1024, verbose=0), dtype="float64")


def _compile(model: keras.Model, lr: float, scale: np.ndarray) -> None:
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr), loss=StandardizedMSE(scale))


def _plain_compile(model: keras.Model, lr: float) -> None:
    """Compile with Keras's own MSE and a built Adam: the saved model then loads (and trains
    on) with plain Keras, without this module's loss."""
    opt = keras.optimizers.Adam(learning_rate=lr)
    model.compile(optimizer=opt, loss="mse")
    opt.build(model.trainable_variables)


def _fit(model, x_tr, y_tr, x_val, y_val, *, epochs, batch_size, patience, verbose, engine):
    """:func:`mlnnkit.train.fit` on the rows in the model's input dtype, early stopping on
    the validation rows (when there are any)."""
    from mlnnkit.train import fit

    dt = model.inputs[0].dtype or "float32"
    val = None if x_val is None or not len(x_val) else (x_val.astype(dt), y_val.astype(dt))
    return fit(
        model, x_tr.astype(dt), y_tr.astype(dt), epochs=epochs, batch_size=batch_size,
        validation_data=val, patience=patience, verbose=verbose, engine=engine,
    )  # fmt: skip


def finetune(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    *,
    test_fraction: float = 0.2,
    val_fraction: float = 0.2,
    freeze: int = 0,
    freeze_until: str | None = None,
    lr: float = 1e-4,
    epochs: int = 200,
    batch_size: int = 32,
    patience: int = 20,
    l2sp: float = 0.0,
    seed: int = 0,
    compare_scratch: bool = False,
    scratch_lr: float = 1e-3,
    target_names: list[str] | None = None,
    verbose: int | str = "auto",
    engine: str = "auto",
    where: str = "",
) -> FinetuneResult:
    """Fine-tune ``model`` in place on rows ``x``, ``y`` and measure it on held-out rows.

    Defaults: 20% of the rows held out for testing, 20% of the rest for early stopping
    (patience 20, best weights restored), Adam at ``lr=1e-4``, up to 200 epochs of batch 32,
    no freezing, no L2-SP. With ``compare_scratch`` the same architecture is also trained
    from a fresh initialization (Adam at ``scratch_lr=1e-3``) on the same rows.

    Returns a :class:`FinetuneResult` whose ``report`` has the held-out ``rmse``, ``mae``,
    ``bias``, ``r2`` of the original, the fine-tuned (and scratch) network, overall and
    ``per_output``.
    """
    from mlnnkit.retrieval._chain import refuse_chain

    refuse_chain(model)
    if lr <= 0 or scratch_lr <= 0:
        raise UserError(f"{'lr' if lr <= 0 else 'scratch_lr'} must be > 0")
    if epochs < 1 or batch_size < 1 or patience < 0:
        raise UserError("epochs and batch_size must be >= 1, patience >= 0")
    if l2sp < 0:
        raise UserError(f"l2sp must be >= 0 (got {l2sp})")
    from mlnnkit.retrieval import (
        is_physical,
        network_model,
        targets_to_network,
        transform_layers,
        untransformable_rows,
    )

    y = np.asarray(y).reshape(len(y), -1)
    physical = is_physical(model)
    if physical:
        bad = untransformable_rows(model, x, y)
        if bad.any():
            raise UserError(
                f"{where}{int(bad.sum())} of {len(x)} rows have values the model's transforms "
                f"cannot take (first: data row {int(np.flatnonzero(bad)[0]) + 1}; a non-positive value "
                "under a logarithm, or NaN/Inf): remove them (drop_nonfinite=True, --drop-nonfinite)"
            )
    # The loss stays in the network's own space: a physical model is trained up to its
    # OutputScaling, on targets mapped through the inverse output transforms.
    y_net = targets_to_network(model, y) if physical else y
    tr, va, te = split_rows(
        len(x), test_fraction, val_fraction, seed, where=where,
        names=("test_fraction", "val_fraction"),
    )  # fmt: skip
    if len(te) == 0:
        raise UserError(
            "test_fraction must be > 0: the held-out rows measure whether fine-tuning helped"
        )
    x_tr, y_tr, x_va, y_va, x_te, y_te = x[tr], y_net[tr], x[va], y_net[va], x[te], y[te]
    names = list(target_names or [f"y[{j}]" for j in range(y.shape[1])])

    preds = {"original": _predict(model, x_te)}
    original_weights = [w.copy() for w in model.get_weights()]
    trainable_before = _trainable_flags(model)
    scratch = scratch_copy(model) if compare_scratch else None

    frozen = freeze_layers(model, freeze, freeze_until)
    penalized = attach_l2sp(model, l2sp)
    start_penalty = l2sp_penalty(model)
    scale = target_scale(y_tr)
    keras.utils.set_random_seed(seed)
    trained = network_model(model)  # the model itself when it is not physical
    _compile(trained, lr, scale)
    fr = _fit(
        trained,
        x_tr,
        y_tr,
        x_va,
        y_va,
        epochs=epochs,
        batch_size=batch_size,
        patience=patience,
        verbose=verbose,
        engine=engine,
    )
    end_penalty = l2sp_penalty(model)
    detach_l2sp(penalized)
    _restore_trainable(model, trainable_before)
    _plain_compile(model, lr)
    preds["finetuned"] = _predict(model, x_te)

    scratch_hist = None
    if scratch is not None:
        scratch_flags = _trainable_flags(scratch)
        freeze_layers(scratch)  # the scaling layers only
        keras.utils.set_random_seed(seed)
        scratch_trained = network_model(scratch)
        _compile(scratch_trained, scratch_lr, scale)
        sr = _fit(
            scratch_trained,
            x_tr,
            y_tr,
            x_va,
            y_va,
            epochs=epochs,
            batch_size=batch_size,
            patience=patience,
            verbose=verbose,
            engine=engine,
        )
        scratch_hist = sr.history
        preds["scratch"] = _predict(scratch, x_te)
        _restore_trainable(scratch, scratch_flags)
        _plain_compile(scratch, scratch_lr)

    report: dict[str, Any] = {k: regression_metrics(y_te, p) for k, p in preds.items()}
    report["per_output"] = {
        n: {k: regression_metrics(y_te[:, j], p[:, j]) for k, p in preds.items()}
        for j, n in enumerate(names)
    }
    positive = positive_outputs(y_te)
    if positive:  # the ratio metrics of ocean-colour validation, for positive outputs
        for k, p in preds.items():
            report[k].update(ocean_colour_metrics(y_te[:, positive], p[:, positive]))
            for j in positive:
                report["per_output"][names[j]][k].update(ocean_colour_metrics(y_te[:, j], p[:, j]))
        report["ocean_colour_metrics"] = {
            "outputs": [names[j] for j in positive],
            "definitions": OCEAN_COLOUR_METRICS,
            "overall": "pooled over every held-out value of these outputs",
            "references": [
                (
                    "Seegers, B. N., et al. (2018). Performance metrics for the assessment of "
                    "satellite data products: an ocean color case study. Optics Express 26(6)."
                ),
                (
                    "Morley, S. K., Brito, T. V., & Welling, D. T. (2018). Measures of model "
                    "performance based on the log accuracy ratio. Space Weather 16(1)."
                ),
            ],
        }
    report["n_train"] = len(tr)
    report["n_test"] = len(te)
    report["n_val"] = len(va)
    moved = [
        float(np.sqrt(np.sum((a - b) ** 2))) for a, b in zip(original_weights, model.get_weights())
    ]
    report["finetuning"] = {
        "frozen_layers": frozen,
        "lr": lr,
        "batch_size": batch_size,
        "max_epochs": epochs,
        "patience": patience,
        "epochs_run": fr.epochs,
        "best_epoch": _best_epoch(fr.history),
        "l2sp": l2sp,
        "l2sp_penalty_start": start_penalty,
        "l2sp_penalty_end": end_penalty,
        "weight_distance_from_original": float(np.sqrt(np.sum(np.square(moved)))),
        "loss": "mean squared error, each output divided by its training-row standard deviation"
        + (
            ", in the network's own space: targets mapped through the inverse output "
            "transforms (log10 for pow10, ln for exp) and the model trained up to its "
            "OutputScaling; the transform and scaling layers untouched; the metrics are in "
            "physical units"
            if physical
            else ""
        ),
        "engine": fr.engine,
        "fit_seconds": round(fr.fit_seconds, 3),
        "seed": seed,
    }
    if physical:
        t_in, t_out = transform_layers(model)
        ins, outs = io_names(model)
        report["physical"] = {
            "input_names": ins,
            "output_names": outs,
            "input_transforms": None if t_in is None else list(t_in.transforms),
            "output_transforms": None if t_out is None else list(t_out.transforms),
            "loss_space": "network (inverse output transforms applied to the targets)",
        }
    if scratch is not None:
        report["finetuning"]["scratch_lr"] = scratch_lr
        report["finetuning"]["scratch_epochs_run"] = len(next(iter(scratch_hist.values()), []))
    report["verdict"] = verdict(report)
    return FinetuneResult(
        model=model,
        report=report,
        history=fr.history,
        predictions=preds,
        y_test=y_te,
        scratch_model=scratch,
        scratch_history=scratch_hist,
        l2sp_start=start_penalty,
    )


def _best_epoch(history: dict[str, list[float]]) -> int | None:
    v = history.get("val_loss")
    return int(np.argmin(v)) + 1 if v else None


# --------------------------------------------------------------------------- the command
@_rundir.one_writer("out_dir", command="finetune")  # one writer per run directory
def run(
    model_path: str | Path,
    data_path: str | Path,
    out_dir: str | Path,
    *,
    inputs: str | list[str] | None = None,
    targets: str | list[str] | None = None,
    drop_nonfinite: bool = False,
    warn: Callable[[str], None] | None = None,
    physical: bool = False,
    **options: Any,
) -> FinetuneResult:
    """``mlnnkit finetune``: load, check, fine-tune, write OUTDIR. ``options`` are those of
    :func:`finetune`. Every file is written under a temporary name and renamed.

    With ``physical=True`` a legacy file is imported in physical units (its family's
    transforms) and the data are physical values; a physical ``.keras`` model takes them
    anyway. Rows a transform cannot take (a non-positive value under a logarithm) are an
    error unless ``drop_nonfinite``."""
    from mlnnkit.report import plot_history, plot_predicted_vs_true
    from mlnnkit.train import save_model

    warn = warn or _stderr
    from mlnnkit.retrieval import is_physical, untransformable_rows

    _atomic.check_output_dir(out_dir)  # before the work: a folder that cannot be written
    model = load_network(model_path, physical=physical)
    from mlnnkit.retrieval._chain import refuse_chain

    refuse_chain(model, str(model_path))
    fmt = source_format(model)
    data = read_data(
        data_path, model, inputs=inputs, targets=targets, drop_nonfinite=drop_nonfinite, warn=warn
    )
    n_untransformable = 0
    if is_physical(model):
        bad = untransformable_rows(model, data.x, data.y)
        n_untransformable = int(bad.sum())
        if n_untransformable:
            msg = (
                f"{data_path}: {n_untransformable} of {len(bad)} rows have values the model's "
                f"transforms cannot take (first: row {int(np.flatnonzero(bad)[0])}; a "
                "non-positive value under a logarithm)"
            )
            if not drop_nonfinite:
                raise UserError(f"{msg}: remove those rows or pass --drop-nonfinite")
            warn(f"{msg}: dropped")
            data.x, data.y = data.x[~bad], data.y[~bad]
    msg = range_warning(model, data.x, data.input_names)
    if msg:
        warn(msg)
    res = finetune(
        model, data.x, data.y, target_names=data.target_names, where=f"{data_path}: ", **options
    )
    from mlnnkit import _interrupt
    from mlnnkit.errors import Interrupted

    # Ctrl-C while the outputs are written waits for the last one: all of them or none.
    try:
        with _interrupt.deferred():
            out = _atomic.make_dir(out_dir)
            files = ["report.json", "model.keras", "history.png", "scatter.png"]
            save_model(res.model, out / "model.keras")
            if fmt is not None:
                from mlnnkit import legacy

                target = out / f"model{LEGACY_SUFFIX.get(fmt, '.' + fmt)}"
                try:
                    with _atomic.atomic_path(target) as tmp:
                        legacy.save(res.model, tmp, fmt)
                    files.append(target.name)
                except UserError as e:
                    warn(f"the fine-tuned network was not written as {fmt}: {e}")
            if res.scratch_model is not None:
                save_model(res.scratch_model, out / "scratch.keras")
                files.append("scratch.keras")
            plot_history(res.history, out / "history.png", title="fine-tuning")
            if res.scratch_history:
                plot_history(res.scratch_history, out / "history_scratch.png", title="from scratch")
                files.append("history_scratch.png")
            plot_predicted_vs_true(res.y_test, res.predictions, data.target_names, out / "scatter.png")
            res.report["model"] = str(model_path)
            res.report["data"] = str(data_path)
            res.report["source_format"] = fmt
            res.report["inputs"] = data.input_names
            res.report["targets"] = data.target_names
            res.report["dropped_nonfinite_rows"] = data.n_dropped
            res.report["dropped_untransformable_rows"] = n_untransformable
            res.report["input_range_warning"] = msg
            res.report["files"] = files
            _atomic.write_json(out / "report.json", res.report)
    except Interrupted:
        raise
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted while the outputs were written; they were completed first: {out_dir}/"
        ) from None
    return res


__all__ = ["FinetuneResult", "finetune", "range_warning", "read_data", "run"]
