# Over 400 lines: the package's one fit path and the run directory `mlnnkit train` writes with it.
"""Fit, evaluate, and write a run directory.

:func:`fit` is the one fit path of the package: ``mlnnkit train``, ``finetune`` and
``tune`` all call it (no copies of the loop). :func:`run` is ``mlnnkit train``: data ->
model -> fit -> evaluate -> run directory with

- ``config.toml``      the resolved config (overrides applied),
- ``model.keras``      the trained model (Keras 3 format),
- ``model.h5``         the same model in the legacy HDF5 full-model format,
- ``history.csv``      loss and metrics per epoch (training and validation),
- ``history.png``      the same as a figure,
- ``metrics.json``     test metrics, epochs, fit seconds, backend, versions, seed, engine,
- ``checkpoints/best.keras`` when the checkpoint callback is on.

Every file is written under a temporary name and renamed, so a killed run never leaves a
half-written file; a run killed mid-fit (or stopped with Ctrl-C) and started again with
the same ``--out`` continues from its last finished epoch (``callbacks.resume``, on by
default), exactly: the same history and test metrics as a run that was never stopped.
A resume with a config that differs from the interrupted run's is refused (``fresh=True``,
``mlnnkit train --fresh``, starts over instead).
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from mlnnkit import _atomic, _rundir
from mlnnkit.callbacks import (
    BACKUP_DIR,
    RESUME_DIR,
    backup_metadata,
    find_backup,
    is_resuming,
    make_callbacks,
)
from mlnnkit.config import RunConfig
from mlnnkit.data import Dataset, load_data
from mlnnkit.errors import Interrupted, UserError
from mlnnkit.models import check_samples

#: the files a finished run writes (metrics.json last: it marks the run complete)
OUTPUT_FILES = (
    "metrics.json", "model.keras", "model.h5", "history.csv", "history.png",
    "checkpoints/best.keras",
)


@dataclass
class FitResult:
    history: dict[str, list[float]]
    engine: str
    fit_seconds: float
    epochs: int
    #: why the fast path did not run (engine "keras" chosen by "auto"), else None
    engine_reason: str | None = None


@dataclass
class RunResult:
    model: keras.Model
    metrics: dict[str, Any]
    history: dict[str, list[float]]
    out_dir: Path | None
    data: Dataset | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def default_verbose() -> int:
    """Keras progress bars on a terminal, one line per epoch otherwise (logs, CI)."""
    return 1 if sys.stdout.isatty() else 2


def check_input_shape(model: keras.Model, x: np.ndarray, what: str = "data") -> None:
    """Fail with a clear message when rows of ``x`` do not fit the model's input
    (:func:`mlnnkit.models.check_samples`)."""
    check_samples(model, x, what, by_columns=False)


# Words of the ValueErrors Keras raises for data that do not fit the model or its loss
# (shapes, ranks, dtypes, targets, class labels): the user's to fix.
_DATA_ERROR_WORDS = ("shape", "rank", "dtype", "incompatible", "target", "label", "logits")


def _data_error(e: ValueError) -> bool:
    msg = str(e).lower()
    return any(w in msg for w in _DATA_ERROR_WORDS)


def fit(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int = 32,
    validation_data: tuple[np.ndarray, np.ndarray] | None = None,
    callbacks: list[keras.callbacks.Callback] | None = None,
    shuffle: bool = True,
    verbose: int | str = "auto",
    engine: str = "auto",
    patience: int | None = None,
) -> FitResult:
    """Fit a compiled model; the one fit path of train, finetune, transfer and tune.

    ``engine``: ``"keras"`` is ``model.fit``; ``"auto"`` picks the fastest path that
    supports the model and callbacks (falling back to ``model.fit``). The result says which
    engine ran. ``patience`` (default None: off): early stopping on the validation loss
    after that many epochs without improvement, best weights restored (only with
    non-empty ``validation_data``). A ValueError of Keras about the data (shapes, dtypes,
    targets) becomes a :class:`~mlnnkit.errors.UserError`; any other error is raised as is.
    """
    check_input_shape(model, x, "training data")
    callbacks = list(callbacks or [])
    if patience is not None and validation_data is not None and len(validation_data[0]):
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=patience, restore_best_weights=True, verbose=0
            )
        )
    if validation_data is not None:
        check_input_shape(model, validation_data[0], "validation data")
    if verbose == "auto":
        verbose = default_verbose()
    chosen = "keras"
    runner = None
    why = None
    if engine in ("auto", "fast"):
        from mlnnkit import fastfit  # a whole epoch in one compiled call

        data = {"x": x, "y": y, "validation_data": validation_data}
        runner = fastfit.select(model, callbacks or [], engine=engine, **data)
        if runner is None:
            why = fastfit.unsupported_reason(model, callbacks or [], **data)
        if runner is None and engine == "fast":
            raise UserError(
                f"fit.engine = 'fast' cannot run this fit: {why}; "
                "use engine = 'auto' (falls back to Keras's fit) or 'keras'"
            )
    from mlnnkit import _interrupt

    # Ctrl-C is taken at the next batch/epoch boundary, after the resume backup
    # (see mlnnkit._interrupt: raised anywhere else, NumPy may swallow it).
    callbacks = [*(callbacks or []), _interrupt.InterruptCheck(batches=runner is None)]
    t0 = time.perf_counter()
    try:
        with _interrupt.deferred():
            if runner is not None:
                hist = runner(
                    model, x, y, epochs=epochs, batch_size=batch_size,
                    validation_data=validation_data, callbacks=callbacks, shuffle=shuffle,
                    verbose=verbose,
                )
                chosen = "fast"
            else:
                hist = model.fit(
                    x, y, epochs=epochs, batch_size=batch_size,
                    validation_data=validation_data, callbacks=callbacks, shuffle=shuffle,
                    verbose=verbose,
                )
    except ValueError as e:
        if not _data_error(e):
            raise  # a bug, not the user's data: keep the traceback
        raise UserError(f"training failed: {' '.join(str(e).split())[:500]}") from e
    seconds = time.perf_counter() - t0
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    n = len(next(iter(history.values()), []))
    return FitResult(
        history=history, engine=chosen, fit_seconds=seconds, epochs=n, engine_reason=why
    )


def evaluate(model: keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> dict[str, float]:
    """Test metrics as ``{name: value}`` (Keras's names: loss, accuracy, mae, ...)."""
    check_input_shape(model, x, "test data")
    if len(x) == 0:
        return {}
    try:
        res = model.evaluate(x, y, batch_size=batch_size, verbose=0, return_dict=True)
    except ValueError as e:
        if not _data_error(e):
            raise
        raise UserError(f"evaluation failed: {' '.join(str(e).split())[:500]}") from e
    return {k: float(v) for k, v in res.items()}


def versions() -> dict[str, str]:
    import jax

    from mlnnkit._version import __version__

    return {
        "mlnnkit": __version__,
        "python": platform.python_version(),
        "keras": keras.__version__,
        "jax": jax.__version__,
        "numpy": np.__version__,
    }


def apply_overrides(cfg: RunConfig, *, epochs: int | None = None, seed: int | None = None) -> RunConfig:
    cfg = cfg.model_copy(deep=True)
    if epochs is not None:
        if epochs < 1:
            raise UserError("--epochs must be at least 1")
        cfg.fit.epochs = epochs
    if seed is not None:
        if not 0 <= seed <= 2**32 - 1:
            raise UserError(f"--seed must be between 0 and 2**32 - 1 (got {seed})")
        cfg.seed = seed
    return cfg


def resume_fingerprint(cfg: RunConfig) -> dict[str, Any]:
    """The config as plain data with every file path absolute (what a resume must match).

    Example:
        >>> from mlnnkit.config import load_config
        >>> resume_fingerprint(load_config("tiny.toml"))["seed"]
        1
    """
    from mlnnkit.config import _path_fields

    out = cfg.to_dict()
    out.pop("tune", None)  # train ignores [tune]
    for keys, p in _path_fields(cfg):
        if keys[0] == "tune":
            continue
        where = out
        for k in keys[:-1]:
            where = where[k]
        where[keys[-1]] = os.path.abspath(cfg.resolve(p))
    return out


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out or {prefix: {}}
    if isinstance(d, list) and d and all(isinstance(v, dict) for v in d):
        out = {f"{prefix}.length": len(d)} if prefix else {}
        for i, v in enumerate(d):
            out.update(_flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: d}


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``key: old -> new`` for every dotted key whose value differs between two
    :func:`resume_fingerprint` dicts (a missing key shows as ``(unset)``).

    Example:
        >>> config_differences({"seed": 42, "fit": {"epochs": 5}}, {"seed": 9, "fit": {"epochs": 5}})
        ['seed: 42 -> 9']
    """
    a, b = _flatten(old), _flatten(new)
    missing = "(unset)"
    out = []
    for k in sorted(set(a) | set(b), key=lambda k: (k.split(".")[0], k)):
        va, vb = a.get(k, missing), b.get(k, missing)
        if va != vb:
            out.append(f"{k}: {_short(va)} -> {_short(vb)}")
    return out


def _short(v: Any) -> str:
    text = v if isinstance(v, str) and v == "(unset)" else repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_resume(out: Path, cfg: RunConfig) -> None:
    """Refuse to continue an interrupted run with another config."""
    meta = backup_metadata(out / RESUME_DIR / BACKUP_DIR)
    old = (meta or {}).get("config")
    if old is None:
        return
    diff = config_differences(old, resume_fingerprint(cfg))
    if diff:
        shown = "; ".join(diff[:4]) + (f"; and {len(diff) - 4} more" if len(diff) > 4 else "")
        raise UserError(
            f"{out} holds a run interrupted after epoch {meta['epoch']} with another config "
            f"({shown}); resume it with the config it was started with, or pass --fresh to "
            "start over"
        )


def _interrupted(out: Path | None, cfg: RunConfig) -> Interrupted:
    """The interrupt of a run, saying what is kept and how to continue."""
    if out is None or not cfg.callbacks.resume:
        return Interrupted("interrupted")
    meta = backup_metadata(out / RESUME_DIR / BACKUP_DIR)
    if meta is None:
        return Interrupted(
            f"interrupted before the first epoch ended; nothing kept in {out}: run the same "
            "command again to start over"
        )
    done = int(meta["epoch"])
    return Interrupted(
        f"interrupted after epoch {done} of {cfg.fit.epochs}; run the same command again "
        f"(same --out {out}) to continue from epoch {done + 1}"
    )


def write_history_csv(history: dict[str, list[float]], path: Path) -> None:
    import pandas as pd

    df = pd.DataFrame(history)
    df.insert(0, "epoch", np.arange(1, len(df) + 1))
    with _atomic.atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def save_model(model: keras.Model, path: Path) -> Path:
    """Save ``model`` atomically; the suffix (.keras, .h5, .weights.h5) picks the format."""
    import warnings

    from absl import logging as absl_logging

    level = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)  # Keras warns that .h5 is "legacy"
    try:
        with _atomic.atomic_path(path) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if str(path).endswith(".weights.h5"):
                model.save_weights(tmp)
            else:
                model.save(tmp)
    finally:
        absl_logging.set_verbosity(level)
    return Path(path)


@_rundir.one_writer("out_dir", when=lambda a: a["save"])  # one writer per run directory
def run(
    cfg: RunConfig,
    out_dir: str | Path | None,
    *,
    verbose: int | str = "auto",
    extra_callbacks: list[keras.callbacks.Callback] | None = None,
    data: Dataset | None = None,
    save: bool = True,
    fresh: bool = False,
) -> RunResult:
    """One training run: data -> model -> fit -> evaluate -> run directory.

    ``out_dir=None`` (or ``save=False``) trains and evaluates without writing files (what
    tuning trials do). ``extra_callbacks`` are appended to the config's callbacks (e.g. a
    pruning callback). Same config and seed give the same history and test metrics, also
    when the run was interrupted and resumed. A run directory holding an interrupted run
    is resumed when ``cfg`` is the config it was started with, refused (``UserError``
    naming the keys that differ) when not; ``fresh=True`` (default ``False``) discards it
    and starts over. Ctrl-C raises :class:`mlnnkit.errors.Interrupted` saying how to go on.

    Example:
        >>> from mlnnkit.config import load_config
        >>> res = run(load_config("tiny.toml"), "runs/tiny", verbose=0)
        >>> sorted(res.metrics["test"]), res.metrics["epochs"]
        (['loss', 'mae'], 2)
    """
    out = Path(out_dir) if (out_dir is not None and save) else None
    fingerprint = resume_fingerprint(cfg) if out is not None else None
    if out is not None:
        _atomic.make_dir(out, "run directory")
        if fresh or not is_resuming(out):
            # A fresh run: forget the backup and the outputs of an earlier run, so the
            # folder never shows this run's config next to another run's results.
            shutil.rmtree(out / RESUME_DIR, ignore_errors=True)
            for name in OUTPUT_FILES:
                (out / name).unlink(missing_ok=True)
        else:
            _check_resume(out, cfg)
        # Paths relative to the run directory: the copy runs from anywhere.
        _atomic.write_text(out / "config.toml", cfg.to_toml(relative_to=out))

    try:
        return _run(cfg, out, verbose, extra_callbacks, data, fingerprint)
    except Interrupted:
        raise
    except KeyboardInterrupt:
        raise _interrupted(out, cfg) from None


def _run(cfg, out, verbose, extra_callbacks, data, fingerprint) -> RunResult:
    keras.utils.set_random_seed(cfg.seed)
    ds = data if data is not None else load_data(cfg)
    model = _build(cfg, ds)
    has_val = ds.x_val is not None and len(ds.x_val) > 0
    callbacks = make_callbacks(cfg.callbacks, out, has_validation=has_val, run_config=fingerprint)
    callbacks += list(extra_callbacks or [])

    fr = fit(
        model, ds.x_train, ds.y_train,
        epochs=cfg.fit.epochs, batch_size=cfg.fit.batch_size,
        validation_data=(ds.x_val, ds.y_val) if has_val else None,
        callbacks=callbacks, shuffle=cfg.fit.shuffle, verbose=verbose, engine=cfg.fit.engine,
    )
    backup = find_backup(callbacks)
    history = fr.history
    seconds = fr.fit_seconds
    if backup is not None and backup.resumed_from:
        # a resumed run: the epochs (and seconds) of the sessions before the interruption too
        history = backup.history
        seconds += backup.prior_seconds
    n_epochs = len(next(iter(history.values()), []))
    test = evaluate(model, ds.x_test, ds.y_test, batch_size=max(cfg.fit.batch_size, 256))
    metrics = {
        "test": test,
        "epochs": n_epochs,
        "fit_seconds": round(seconds, 3),
        "seconds_per_epoch": round(seconds / max(n_epochs, 1), 4),
        "engine": fr.engine,
        **({"engine_reason": fr.engine_reason} if fr.engine_reason else {}),
        "backend": keras.backend.backend(),
        "versions": versions(),
        "seed": cfg.seed,
        "n_train": len(ds.x_train),
        "n_val": len(ds.x_val) if has_val else 0,
        "n_test": len(ds.x_test),
    }
    if backup is not None and backup.resumed_from:
        metrics["resumed_from_epoch"] = backup.resumed_from
    if has_val:
        metrics["validation"] = {k[4:]: v[-1] for k, v in history.items() if k.startswith("val_")}
    if out is not None:
        write_outputs(out, model, history, metrics, title=cfg.name or "")
        shutil.rmtree(out / RESUME_DIR, ignore_errors=True)
    return RunResult(model=model, metrics=metrics, history=history, out_dir=out, data=ds)


def _build(cfg: RunConfig, ds: Dataset) -> keras.Model:
    from mlnnkit.build import build_model

    model = build_model(cfg, x_train=ds.x_train)
    check_input_shape(model, ds.x_train, "training data")
    return model


def write_outputs(out: Path, model: keras.Model, history, metrics, title: str = "") -> None:
    from mlnnkit.report import plot_history

    save_model(model, out / "model.keras")
    save_model(model, out / "model.h5")
    write_history_csv(history, out / "history.csv")
    if history:
        plot_history(history, out / "history.png", title=title)
    _atomic.write_json(out / "metrics.json", metrics)


__all__ = [
    "OUTPUT_FILES", "FitResult", "RunResult", "config_differences", "evaluate", "fit",
    "resume_fingerprint", "run", "save_model", "versions",
]
