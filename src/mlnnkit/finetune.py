"""Fine-tune a saved or imported network on new data, and show whether it helped.

``mlnnkit finetune MODEL --data FILE -o OUTDIR`` is :func:`run`. The steps:

1. load MODEL (``.keras``, a Keras ``.h5``, or a legacy network file: OC-SMART ``.h5``,
   ffbp ``.net``, imported through :mod:`mlnnkit.legacy`);
2. read the data (``.npz`` with arrays ``x`` and ``y``, or a ``.csv``/``.parquet``/``.npz``
   table with named ``--inputs``/``--targets`` columns), in the model's own physical units;
   warn when rows fall outside the network's input ranges (it would extrapolate there);
3. split the rows at random (seeded): ``test_fraction`` held out and never trained on,
   ``val_fraction`` of the rest for early stopping on the validation loss (restore-best);
4. freeze the first K Dense layers (``freeze``) or every layer up to a named one
   (``freeze_until``); the scaling layers of an imported network are never trained;
5. optionally add the L2-SP penalty ``alpha * ||w - w_original||^2`` on every fine-tuned
   weight (:class:`L2SP`, Li, Grandvalet & Davoine 2018), zero at the start;
6. fit through :func:`mlnnkit.train.fit` (the package's one fit path) with a standardized
   mean squared error (each output's error divided by the standard deviation of that output
   over the training rows, so outputs in different units weigh alike);
7. optionally train the same architecture from a fresh initialization on the same rows
   (``compare_scratch``);
8. write ``report.json`` (held-out metrics of original, fine-tuned, scratch), ``history.png``,
   ``scatter.png``, ``model.keras`` and, for a network from a legacy file, the fine-tuned
   network in that format again.

Example:
    >>> from mlnnkit import finetune
    >>> res = finetune.run("net.h5", "matchups.csv", "runs/ft",  # doctest: +SKIP
    ...                    inputs="Rrs_*", targets="chl", freeze=1, l2sp=1e-3)
    >>> res.report["finetuned"]["rmse"] < res.report["original"]["rmse"]  # doctest: +SKIP
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import ops

from mlnnkit import _atomic
from mlnnkit.errors import UserError

LEGACY_SUFFIX = {"ocsmart": ".h5", "ffbp": ".net"}


# --------------------------------------------------------------------------- L2-SP
@keras.saving.register_keras_serializable(package="mlnnkit")
class L2SP(keras.regularizers.Regularizer):
    """L2-SP penalty ``alpha * sum((w - w0)**2)``: keeps a weight near its start point.

    From Li, Grandvalet & Davoine (2018), "Explicit inductive bias for transfer learning
    with convolutional networks": instead of pulling fine-tuned weights towards zero (plain
    L2), pull them towards the pretrained weights ``w0``. The penalty is zero for the
    original network and grows as fine-tuning moves away from it.

    Args:
        alpha: strength of the penalty (``>= 0``).
        reference: the original weights ``w0`` (an array of the weight's shape).

    Example:
        >>> w0 = layer.kernel.numpy()  # doctest: +SKIP
        >>> layer.kernel.regularizer = L2SP(1e-3, w0)  # doctest: +SKIP
    """

    def __init__(self, alpha: float, reference):
        self.alpha = float(alpha)
        self.reference = np.array(reference)

    def __call__(self, w):
        ref = ops.convert_to_tensor(self.reference, dtype=w.dtype)
        return self.alpha * ops.sum(ops.square(w - ref))

    def get_config(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "reference": self.reference.tolist()}


def attach_l2sp(model: keras.Model, alpha: float) -> list:
    """Put an :class:`L2SP` penalty (reference: the current values) on every trainable
    weight of ``model``; returns the variables it was put on (for :func:`detach_l2sp`)."""
    if alpha < 0:
        raise UserError(f"--l2sp must be >= 0 (got {alpha})")
    touched = []
    if alpha == 0:
        return touched
    for v in model.trainable_weights:
        v.regularizer = L2SP(alpha, keras.ops.convert_to_numpy(v.value))
        touched.append(v)
    return touched


def detach_l2sp(variables: list) -> None:
    """Remove the penalties :func:`attach_l2sp` added (the saved model then needs nothing
    beyond Keras and ``import mlnnkit`` to load)."""
    for v in variables:
        v.regularizer = None


def l2sp_penalty(model: keras.Model) -> float:
    """The current total L2-SP penalty of ``model`` (0.0 when none is attached)."""
    total = 0.0
    for v in model.trainable_weights:
        if isinstance(v.regularizer, L2SP):
            total += float(keras.ops.convert_to_numpy(v.regularizer(v.value)))
    return total


# --------------------------------------------------------------------------- loss
@keras.saving.register_keras_serializable(package="mlnnkit")
class StandardizedMSE(keras.losses.Loss):
    """Mean squared error with each output's error divided by ``scale[j]``.

    With ``scale`` = the standard deviation of each target over the training rows, outputs
    in different physical units (or of very different sizes) weigh alike, and the loss (and
    so the L2-SP strength) does not depend on the data's units.

    Example:
        >>> loss = StandardizedMSE(scale=y_train.std(axis=0))  # doctest: +SKIP
    """

    def __init__(self, scale, name: str = "standardized_mse", **kwargs):
        super().__init__(name=name, **kwargs)
        self.scale = np.asarray(scale, dtype="float64").reshape(-1)

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, y_pred.dtype)
        s = ops.convert_to_tensor(self.scale, dtype=y_pred.dtype)
        return ops.mean(ops.square((y_pred - y_true) / s), axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {"scale": self.scale.tolist(), "name": self.name}


def target_scale(y: np.ndarray) -> np.ndarray:
    """Per-output standard deviation of ``y`` (1.0 where an output is constant)."""
    s = np.asarray(y, dtype="float64").reshape(len(y), -1).std(axis=0)
    return np.where(s > 0, s, 1.0)


# --------------------------------------------------------------------------- model
def load_network(path: str | Path) -> keras.Model:
    """Load MODEL for fine-tuning: a Keras model (``.keras``, full-model ``.h5``) or a legacy
    network file (OC-SMART ``.h5``, ffbp ``.net``) imported with :func:`mlnnkit.legacy.load`.
    """
    from mlnnkit.models import load_model

    path = Path(path)
    if not path.exists():
        raise UserError(f"model file not found: {path}")
    name = path.name.lower()
    if name.endswith(".weights.h5"):
        raise UserError(
            f"{path}: a weights-only file has no architecture; fine-tune a .keras model instead"
        )
    legacy_file = name.endswith(".net") or (
        name.endswith((".h5", ".hdf5")) and not _is_keras_h5(path)
    )
    if legacy_file:
        try:
            from mlnnkit import legacy
        except ImportError:
            raise UserError(
                f"{path}: looks like a legacy network file, but this mlnnkit has no legacy "
                "importer; import it first (`mlnnkit import FILE -o MODEL.keras`)"
            ) from None
        return legacy.load(path)
    return load_model(path, compile=False)


def _is_keras_h5(path: Path) -> bool:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return "model_config" in f.attrs or "model_weights" in f
    except OSError as e:
        raise UserError(f"{path}: not a readable HDF5 file: {e}") from None


def _legacy_attr(name: str) -> Callable | None:
    """A function of :mod:`mlnnkit.legacy` (None when the importer is not available)."""
    try:
        from mlnnkit import legacy
    except ImportError:
        return None
    return getattr(legacy, name, None)


def input_ranges(model: keras.Model):
    """``(mins, maxs, names)`` of an imported network's inputs, or None when unknown."""
    fn = _legacy_attr("input_ranges")
    return fn(model) if fn is not None else None


def source_format(model: keras.Model) -> str | None:
    """The legacy format the network came from (``"ocsmart"``, ``"ffbp"``), or None."""
    fn = _legacy_attr("source_format")
    return fn(model) if fn is not None else None


def _walk(model: keras.Model):
    """All layers of ``model`` in order, descending into nested models."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _walk(layer)
        else:
            yield layer


def is_fixed_layer(layer: keras.layers.Layer) -> bool:
    """True for layers that transform data rather than learn: mlnnkit's scaling layers of
    an imported network (never trained), and layers without trainable weights."""
    own = type(layer).__module__.startswith("mlnnkit.")
    return own or not layer.trainable_weights


def freeze_layers(
    model: keras.Model, freeze: int = 0, freeze_until: str | None = None
) -> list[str]:
    """Set ``trainable = False`` on the first ``freeze`` Dense layers, or on every layer up
    to and including the one named ``freeze_until``; the package's scaling layers are
    always frozen. Returns the names of the frozen layers that have weights.

    Example:
        >>> freeze_layers(model, freeze=1)  # doctest: +SKIP
        ['dense']
    """
    if freeze and freeze_until:
        raise UserError("give either --freeze K or --freeze-until NAME, not both")
    if freeze < 0:
        raise UserError(f"--freeze must be >= 0 (got {freeze})")
    layers = list(_walk(model))
    dense = [ly for ly in layers if isinstance(ly, keras.layers.Dense)]
    tabulated = [
        ly.name for ly in dense if getattr(ly.activation, "__name__", "") == "snap_sigmoid"
    ]
    if tabulated:
        raise UserError(
            f"layers {', '.join(tabulated)} use SNAP's tabulated sigmoid, whose gradient is zero: "
            "fine-tune the network imported with the exact sigmoid (the default of "
            "`mlnnkit import`) and export it again"
        )
    to_freeze: list[keras.layers.Layer] = []
    if freeze:
        if freeze >= len(dense):
            raise UserError(
                f"--freeze {freeze} leaves nothing to fine-tune: the model has {len(dense)} "
                f"Dense layers; pass at most {len(dense) - 1}"
            )
        to_freeze = dense[:freeze]
    elif freeze_until:
        names = [ly.name for ly in layers]
        if freeze_until not in names:
            raise UserError(
                f"--freeze-until: no layer named {freeze_until!r}; layers: {', '.join(names)}"
            )
        to_freeze = layers[: names.index(freeze_until) + 1]
    for ly in layers:
        if type(ly).__module__.startswith("mlnnkit."):
            ly.trainable = False
    for ly in to_freeze:
        ly.trainable = False
    if not model.trainable_weights:
        raise UserError("nothing left to fine-tune: every layer with weights is frozen")
    return [ly.name for ly in to_freeze if ly.weights]


# --------------------------------------------------------------------------- data
@dataclass
class TableData:
    """Rows of inputs ``x`` and targets ``y`` with their column names."""

    x: np.ndarray
    y: np.ndarray
    input_names: list[str]
    target_names: list[str]
    n_dropped: int = 0


def model_io_shapes(model: keras.Model) -> tuple[tuple, tuple]:
    """Shapes of one input sample and one output sample of ``model``."""
    return tuple(model.inputs[0].shape[1:]), tuple(model.outputs[0].shape[1:])


def read_data(
    path: str | Path,
    model: keras.Model,
    *,
    inputs: str | list[str] | None = None,
    targets: str | list[str] | None = None,
    drop_nonfinite: bool = False,
    warn: Callable[[str], None] | None = None,
) -> TableData:
    """Read fine-tuning rows from ``path`` and check them against ``model``.

    ``.npz`` with arrays ``x`` and ``y`` is used as it is; otherwise (and whenever
    ``inputs``/``targets`` are given) the file is a table (:func:`mlnnkit.data.tables.read_table`)
    and the columns are chosen by :func:`~mlnnkit.data.tables.select_columns` (a comma
    list or globs such as ``Rrs_*``, in file order). Without ``inputs``, an imported
    network's own input names are looked for. Rows with NaN/Inf are an error unless
    ``drop_nonfinite`` (then they are dropped with a warning).
    """
    from mlnnkit.data.tables import read_table, select_columns

    path = Path(path)
    in_shape, out_shape = model_io_shapes(model)
    n_in = int(np.prod([d or 1 for d in in_shape]))
    n_out = int(np.prod([d or 1 for d in out_shape]))
    where = f"{path}: "
    if not path.exists():
        raise UserError(f"data file not found: {path}")
    x = y = None
    if path.suffix.lower() == ".npz" and inputs is None and targets is None:
        with np.load(path, allow_pickle=False) as f:
            if "x" not in f.files or "y" not in f.files:
                raise UserError(
                    f"{where}an .npz needs arrays 'x' (rows x inputs) and 'y' (rows x outputs); "
                    f"it has {', '.join(f.files) or 'none'}: rename them, or pass --inputs and "
                    "--targets to pick columns"
                )
            x, y = np.asarray(f["x"]), np.asarray(f["y"])
        if y.ndim == 1:
            y = y[:, None]
        if x.ndim == 1 and len(in_shape) == 1:
            x = x[:, None]
        if len(x) != len(y):
            raise UserError(f"{where}'x' has {len(x)} rows but 'y' has {len(y)}")
        names = _ranges_names(model)
        if x.ndim == 2 and names and len(names) == x.shape[1]:
            input_names = names  # an imported network's own input names
        else:
            input_names = [f"x[{j}]" for j in range(x.shape[1])] if x.ndim == 2 else []
        target_names = [f"y[{j}]" for j in range(y.shape[1])] if y.ndim == 2 else []
        if x.shape[1:] != in_shape and not (len(in_shape) == 1 and x.ndim == 2):
            raise UserError(
                f"{where}'x' has samples of shape {x.shape[1:]} but the model takes {in_shape}"
            )
    else:
        df = read_table(path)
        if inputs is None:
            names = _ranges_names(model)
            if names and all(n in df.columns for n in names):
                inputs = list(names)
            else:
                raise UserError(
                    f"{where}pass --inputs COLS (the model's {n_in} inputs, in its order; a "
                    "comma list or a glob such as 'Rrs_*')"
                )
        if targets is None:
            raise UserError(f"{where}pass --targets COLS (the model's {n_out} outputs, in order)")
        input_names = select_columns(df.columns, inputs, what="--inputs", where=where)
        target_names = select_columns(df.columns, targets, what="--targets", where=where)
        try:
            x = df[input_names].to_numpy("float64")
            y = df[target_names].to_numpy("float64")
        except (ValueError, TypeError) as e:
            raise UserError(f"{where}non-numeric values in the chosen columns: {e}") from None
    if len(in_shape) == 1 and x.shape[1] != n_in:
        raise UserError(
            f"{where}{x.shape[1]} input columns ({_short(input_names)}) but the model takes "
            f"{n_in} inputs: pass --inputs with {n_in} columns in the network's order"
        )
    if y.shape[1:] != out_shape and (y.ndim != 2 or y.shape[1] != n_out):
        raise UserError(
            f"{where}{y.shape[1] if y.ndim == 2 else y.shape[1:]} target columns "
            f"({_short(target_names)}) but the model has {n_out} outputs: pass --targets with "
            f"{n_out} columns in the network's order"
        )
    if not (np.issubdtype(x.dtype, np.number) and np.issubdtype(y.dtype, np.number)):
        raise UserError(f"{where}'x' and 'y' must be numeric arrays")
    x = x.astype("float64")
    y = y.astype("float64")
    flat_x = x.reshape(len(x), -1)
    bad = ~(np.isfinite(flat_x).all(axis=1) & np.isfinite(y.reshape(len(y), -1)).all(axis=1))
    n_bad = int(bad.sum())
    if n_bad:
        first = int(np.flatnonzero(bad)[0])
        cols = [*input_names, *target_names] if len(in_shape) == 1 else []
        vals = np.concatenate([flat_x[first], y.reshape(len(y), -1)[first]])
        col = cols[int(np.flatnonzero(~np.isfinite(vals))[0])] if cols else "?"
        msg = f"{n_bad} of {len(x)} rows have NaN or Inf values (first: row {first}, column {col})"
        if not drop_nonfinite:
            raise UserError(f"{where}{msg}: remove those rows or pass --drop-nonfinite")
        (warn or _stderr)(f"{where}{msg}: dropped")
        x, y = x[~bad], y[~bad]
    if len(x) == 0:
        raise UserError(f"{where}no rows to fine-tune on")
    return TableData(
        x=x, y=y, input_names=list(input_names), target_names=list(target_names), n_dropped=n_bad
    )


def _ranges_names(model: keras.Model) -> list[str] | None:
    r = input_ranges(model)
    if r is None or r[2] is None:
        return None
    return [str(n) for n in r[2]]


def _short(names: list[str], k: int = 6) -> str:
    return ", ".join(names[:k]) + (f", ... ({len(names)} in all)" if len(names) > k else "")


def _stderr(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


def range_warning(
    model: keras.Model, x: np.ndarray, input_names: list[str] | None = None
) -> str | None:
    """A one-line message when rows of ``x`` fall outside the network's input ranges
    (the fraction of rows, and the inputs concerned with their own fractions and ranges),
    or None when every row is inside or the network has no known ranges."""
    r = input_ranges(model)
    if r is None:
        return None
    mins, maxs, names = r
    mins = np.asarray(mins, dtype="float64").reshape(-1)
    maxs = np.asarray(maxs, dtype="float64").reshape(-1)
    flat = np.asarray(x, dtype="float64").reshape(len(x), -1)
    if flat.shape[1] != len(mins):
        return None
    out = (flat < mins) | (flat > maxs)
    rows = out.any(axis=1)
    if not rows.any():
        return None
    names = [str(n) for n in names] if names is not None else list(input_names or [])
    if len(names) != len(mins):
        names = [f"input {j}" for j in range(len(mins))]
    per = out.mean(axis=0)
    order = [j for j in np.argsort(-per, kind="stable") if per[j] > 0]
    shown = [f"{names[j]} {100 * per[j]:.1f}% [{mins[j]:.4g}, {maxs[j]:.4g}]" for j in order[:5]]
    more = f" and {len(order) - 5} more inputs" if len(order) > 5 else ""
    return (
        f"{100 * rows.mean():.1f}% of rows ({int(rows.sum())} of {len(rows)}) have inputs "
        f"outside the network's input ranges, where it extrapolates: {'; '.join(shown)}{more}"
    )


def split_rows(
    n: int, test_fraction: float, val_fraction: float, seed: int, *, where: str = ""
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded random split of ``n`` rows into (train, validation, test) indices.

    ``test_fraction`` of all rows is held out for testing; ``val_fraction`` of the rest is
    kept for early stopping. Each part asked for must get at least one row.
    """
    if not 0 <= test_fraction < 1:
        raise UserError(f"--test-fraction must be in [0, 1) (got {test_fraction})")
    if not 0 <= val_fraction < 1:
        raise UserError(f"--val-fraction must be in [0, 1) (got {val_fraction})")
    order = np.random.default_rng(seed).permutation(n)
    n_test = round(n * test_fraction)
    n_val = round((n - n_test) * val_fraction)
    n_train = n - n_test - n_val
    if (test_fraction > 0 and n_test < 1) or (val_fraction > 0 and n_val < 1) or n_train < 1:
        raise UserError(
            f"{where}{n} rows are too few for --test-fraction {test_fraction} and "
            f"--val-fraction {val_fraction} ({n_test} test, {n_val} validation, {n_train} "
            "training rows): give more rows or smaller fractions"
        )
    return order[n_test + n_val :], order[n_test : n_test + n_val], order[:n_test]


# --------------------------------------------------------------------------- metrics
def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """``rmse``, ``mae``, ``bias`` (mean of predicted - true) over all outputs, and ``r2``
    (averaged over outputs, as :func:`sklearn.metrics.r2_score` does)."""
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    t = np.asarray(y_true, dtype="float64").reshape(len(y_true), -1)
    p = np.asarray(y_pred, dtype="float64").reshape(len(y_pred), -1)
    return {
        "rmse": float(np.sqrt(mean_squared_error(t, p))),
        "mae": float(mean_absolute_error(t, p)),
        "bias": float(np.mean(p - t)),
        "r2": float(r2_score(t, p)) if len(t) > 1 else float("nan"),
    }


def verdict(report: dict) -> str:
    """One or two sentences: did fine-tuning help, by how much (held-out RMSE)."""
    r0, r1 = report["original"]["rmse"], report["finetuned"]["rmse"]
    change = (r1 - r0) / r0 * 100 if r0 > 0 else 0.0
    if r1 < r0:
        text = (
            f"fine-tuning helped: held-out RMSE {r0:.4g} -> {r1:.4g} ({change:+.1f}%), "
            f"R2 {report['original']['r2']:.3f} -> {report['finetuned']['r2']:.3f}"
        )
    else:
        text = (
            f"fine-tuning did not help: held-out RMSE {r0:.4g} -> {r1:.4g} ({change:+.1f}%); "
            "keep the original network"
        )
    if "scratch" in report:
        rs = report["scratch"]["rmse"]
        better = "fine-tuned beats scratch" if r1 < rs else "scratch beats fine-tuned"
        text += f"; from scratch: RMSE {rs:.4g} ({better})"
    return text


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
    from mlnnkit.train import fit

    callbacks = []
    if x_val is not None and len(x_val):
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=patience, restore_best_weights=True, verbose=0
            )
        )
        val = (x_val, y_val)
    else:
        val = None
    dt = model.inputs[0].dtype or "float32"
    return fit(
        model,
        x_tr.astype(dt),
        y_tr.astype(dt),
        epochs=epochs,
        batch_size=batch_size,
        validation_data=None if val is None else (val[0].astype(dt), val[1].astype(dt)),
        callbacks=callbacks,
        verbose=verbose,
        engine=engine,
    )


def scratch_copy(model: keras.Model) -> keras.Model:
    """The same architecture freshly initialized: learned layers get new weights, fixed
    layers (input/output scaling, normalization statistics) keep the original's."""
    new = keras.models.clone_model(model)
    for a, b in zip(_walk(model), _walk(new)):
        if is_fixed_layer(a):
            b.set_weights(a.get_weights())
        b.trainable = a.trainable
    return new


def _trainable_flags(model: keras.Model) -> dict[int, bool]:
    return {id(ly): ly.trainable for ly in _walk(model)}


def _restore_trainable(model: keras.Model, flags: dict[int, bool]) -> None:
    """Give the layers their flags back: the saved model trains like the original when
    loaded again (freezing was this run's choice)."""
    for ly in _walk(model):
        ly.trainable = flags.get(id(ly), ly.trainable)


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
        raise UserError("--lr must be > 0")
    if epochs < 1 or batch_size < 1 or patience < 0:
        raise UserError("--epochs and --batch-size must be >= 1, --patience >= 0")
    y = np.asarray(y).reshape(len(y), -1)
    tr, va, te = split_rows(len(x), test_fraction, val_fraction, seed, where=where)
    if len(te) == 0:
        raise UserError(
            "--test-fraction must be > 0: the held-out rows measure whether fine-tuning helped"
        )
    x_tr, y_tr, x_va, y_va, x_te, y_te = x[tr], y[tr], x[va], y[va], x[te], y[te]
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
    _compile(model, lr, scale)
    fr = _fit(
        model,
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
        _compile(scratch, scratch_lr, scale)
        sr = _fit(
            scratch,
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
        "loss": "mean squared error, each output divided by its training-row standard deviation",
        "engine": fr.engine,
        "fit_seconds": round(fr.fit_seconds, 3),
        "seed": seed,
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
def run(
    model_path: str | Path,
    data_path: str | Path,
    out_dir: str | Path,
    *,
    inputs: str | list[str] | None = None,
    targets: str | list[str] | None = None,
    drop_nonfinite: bool = False,
    warn: Callable[[str], None] | None = None,
    **options: Any,
) -> FinetuneResult:
    """``mlnnkit finetune``: load, check, fine-tune, write OUTDIR. ``options`` are those of
    :func:`finetune`. Every file is written under a temporary name and renamed."""
    from mlnnkit.report import plot_history, plot_predicted_vs_true
    from mlnnkit.train import save_model

    warn = warn or _stderr
    model = load_network(model_path)
    from mlnnkit.retrieval._chain import refuse_chain

    refuse_chain(model, str(model_path))
    fmt = source_format(model)
    data = read_data(
        data_path, model, inputs=inputs, targets=targets, drop_nonfinite=drop_nonfinite, warn=warn
    )
    msg = range_warning(model, data.x, data.input_names)
    if msg:
        warn(msg)
    res = finetune(
        model, data.x, data.y, target_names=data.target_names, where=f"{data_path}: ", **options
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
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
    res.report["input_range_warning"] = msg
    res.report["files"] = files
    _atomic.write_json(out / "report.json", res.report)
    return res


__all__ = [
    "L2SP",
    "FinetuneResult",
    "StandardizedMSE",
    "attach_l2sp",
    "detach_l2sp",
    "finetune",
    "freeze_layers",
    "l2sp_penalty",
    "load_network",
    "range_warning",
    "read_data",
    "regression_metrics",
    "run",
    "scratch_copy",
    "split_rows",
    "verdict",
]
