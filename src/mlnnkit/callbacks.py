"""Config -> Keras callbacks (early stopping, best-model checkpoint, reduce-on-plateau,
resume after interruption).

All are Keras's own callbacks; the additions are that the best-model checkpoint is
written under a temporary name and renamed (a kill mid-save never leaves a broken
``best.keras``), and that the resume backup (:class:`ExactBackup`, a ``BackupAndRestore``)
keeps everything a resumed run needs to be the run it would have been: the weights and
optimizer, NumPy's random state (the shuffling), the layers' seed generators (dropout),
the early-stopping / reduce-on-plateau / checkpoint state, the history of the epochs
before the kill, the seconds they took, and the config they were trained with.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np

from mlnnkit.config import CallbacksConfig

RESUME_DIR = ".resume"
BACKUP_DIR = "backup"
METADATA = "training_metadata.json"


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """``ModelCheckpoint(save_best_only=True)`` that saves to a temporary file and renames.

    Example:
        >>> cb = AtomicModelCheckpoint("run/checkpoints/best.keras", monitor="val_loss")
    """

    def __init__(self, filepath: str | os.PathLike, **kwargs):
        self.final_path = Path(filepath)
        tmp = self.final_path.with_name(f".tmp-{self.final_path.name}")
        kwargs.setdefault("save_best_only", True)
        super().__init__(str(tmp), **kwargs)

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if os.path.exists(self.filepath):
            os.replace(self.filepath, self.final_path)


def _jsonable(v: Any) -> Any:
    if isinstance(v, (np.generic, np.ndarray)) or hasattr(v, "__array__"):
        a = np.asarray(v)
        return a.item() if a.ndim == 0 else a.tolist()
    return v


#: the state of Keras's epoch-level callbacks that a resumed run must continue from
_CALLBACK_STATE = {
    keras.callbacks.EarlyStopping: ("wait", "stopped_epoch", "best", "best_epoch"),
    keras.callbacks.ReduceLROnPlateau: ("wait", "cooldown_counter", "best"),
    keras.callbacks.ModelCheckpoint: ("best",),
}


def _state_keys(cb: keras.callbacks.Callback) -> tuple[str, ...]:
    return next((keys for cls, keys in _CALLBACK_STATE.items() if isinstance(cb, cls)), ())


class ExactBackup(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` after every epoch, atomic and exact.

    Keras's own backup keeps the weights, the optimizer and the epoch number. A run killed
    and resumed from it is not the run it would have been: NumPy's random state (each
    epoch's shuffling permutation), the layers' seed generators (dropout masks) and the
    state of early stopping, reduce-on-plateau and the best-model checkpoint start afresh.
    This backup keeps those too, with the history of the finished epochs, the seconds
    they took and ``config`` (what the run was started with), so that the same config and
    seed give the same history and test metrics whether or not the run was interrupted.

    It is written atomically: each epoch's weights go to a new file
    (``epoch-N.weights.h5``, under a temporary name first), and the metadata file that
    names it (``training_metadata.json``) is replaced in one rename, so a kill at any
    moment leaves the previous complete backup or the new one, never a mix.

    Arguments:
        backup_dir: the folder of the backup (created when the first epoch ends).
        callbacks: callbacks whose state to keep (Keras's ``EarlyStopping``,
            ``ReduceLROnPlateau``, ``ModelCheckpoint``); they must come before this one
            in the callback list. Default: none.
        config: JSON-able description of the run (kept in the metadata, read back with
            :func:`backup_metadata`). Default: ``None``.

    Example:
        >>> cbs = [keras.callbacks.EarlyStopping(patience=3)]
        >>> cbs.append(ExactBackup("run/.resume/backup", callbacks=cbs))
        >>> model.fit(x, y, epochs=10, callbacks=cbs)         # doctest: +SKIP
    """

    def __init__(self, backup_dir: str | os.PathLike, *, callbacks=(), config: Any = None):
        super().__init__(str(backup_dir), save_freq="epoch", delete_checkpoint=False)
        self.dir = Path(backup_dir)
        self.tracked = [cb for cb in callbacks if _state_keys(cb)]
        self.config = config
        #: every epoch's logs, those of the sessions before a resume included
        self.history: dict[str, list[float]] = {}
        #: fit seconds of the finished epochs of earlier sessions (0 for a fresh run)
        self.prior_seconds = 0.0
        #: the epoch this session started from (0 for a fresh run)
        self.resumed_from = 0
        self._t0 = time.perf_counter()

    # --------------------------------------------------------------- restore
    def on_train_begin(self, logs=None):
        self._t0 = time.perf_counter()
        meta = backup_metadata(self.dir)
        if meta is None:
            return
        model = self.model
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model.load_weights(self.dir / meta["weights"])
        epoch = int(meta["epoch"])
        self.resumed_from = epoch
        model._initial_epoch = epoch
        if meta.get("stopped"):  # early stopping had ended the fit: nothing left to run
            model._initial_epoch = max(epoch, int(self.params.get("epochs") or epoch))
        rng = meta.get("numpy_random")
        if rng is not None:
            np.random.set_state(
                (rng[0], np.asarray(rng[1], dtype="uint32"), int(rng[2]), int(rng[3]), float(rng[4]))
            )
        for sg, value in zip(_seed_generators(model), meta.get("seed_generators", [])):
            sg.state.assign(np.asarray(value, dtype=keras.backend.standardize_dtype(sg.state.dtype)))
        states = meta.get("callbacks", [])
        best = None
        if meta.get("best_weights"):
            with np.load(self.dir / meta["best_weights"]) as f:
                best = [f[f"w{i}"] for i in range(len(f.files))]
        for cb, state in zip(self.tracked, states):
            for k, v in state.items():
                setattr(cb, k, v)
            if isinstance(cb, keras.callbacks.EarlyStopping) and best is not None:
                cb.best_weights = best
        self.history = {k: list(v) for k, v in meta.get("history", {}).items()}
        self.prior_seconds = float(meta.get("seconds", 0.0))

    # ------------------------------------------------------------------ save
    def on_epoch_end(self, epoch, logs=None):
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(float(v))
        self._save(epoch + 1)

    def on_train_end(self, logs=None):
        pass  # the run removes the backup once its outputs are written

    def _save(self, epochs_done: int) -> None:
        from mlnnkit import _atomic

        self.dir.mkdir(parents=True, exist_ok=True)
        weights = f"epoch-{epochs_done}.weights.h5"
        with _atomic.atomic_path(self.dir / weights) as tmp:
            self.model.save_weights(tmp)
        best_name = None
        for cb in self.tracked:
            if isinstance(cb, keras.callbacks.EarlyStopping) and cb.best_weights is not None:
                best_name = f"epoch-{epochs_done}.best.npz"
                with _atomic.atomic_path(self.dir / best_name) as tmp, open(tmp, "wb") as f:
                    np.savez(f, **{f"w{i}": w for i, w in enumerate(cb.best_weights)})
        rng = np.random.get_state()
        meta = {
            "epoch": epochs_done,
            "batch": 0,
            "weights": weights,
            "best_weights": best_name,
            "stopped": bool(getattr(self.model, "stop_training", False)),
            "seconds": self.prior_seconds + time.perf_counter() - self._t0,
            "numpy_random": [rng[0], rng[1].tolist(), int(rng[2]), int(rng[3]), float(rng[4])],
            "seed_generators": [_jsonable(sg.state.value) for sg in _seed_generators(self.model)],
            "callbacks": [
                {k: _jsonable(getattr(cb, k, None)) for k in _state_keys(cb)} for cb in self.tracked
            ],
            "history": self.history,
            "config": self.config,
        }
        _atomic.write_json(self.dir / METADATA, meta)  # the commit point
        keep = {METADATA, weights, best_name}
        for old in self.dir.iterdir():
            if old.name not in keep and not old.name.startswith(".tmp-"):
                old.unlink(missing_ok=True)


def _seed_generators(model: keras.Model) -> list:
    out, seen = [], set()
    for layer in model._flatten_layers(include_self=True, recursive=True):
        for sg in getattr(layer, "_seed_generators", []):
            if id(sg) not in seen:
                seen.add(id(sg))
                out.append(sg)
    return out


def backup_metadata(backup_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The metadata of the resume backup in ``backup_dir``, or ``None`` when there is none
    (or it is not one :class:`ExactBackup` wrote, e.g. a run of an older mlnnkit).

    Example:
        >>> backup_metadata("runs/x/.resume/backup")["epoch"]      # doctest: +SKIP
        3
    """
    path = Path(backup_dir) / METADATA
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or "weights" not in meta or "epoch" not in meta:
        return None
    if not (Path(backup_dir) / meta["weights"]).exists():
        return None
    return meta


def make_callbacks(
    cfg: CallbacksConfig,
    run_dir: Path | None,
    *,
    has_validation: bool,
    run_config: Any = None,
):
    """The run's callbacks, in a fixed order. Without a run directory, no file callbacks.

    ``run_config`` (JSON-able, default ``None``) is kept in the resume backup, so a resume
    can be checked against the config the run was started with.
    """
    cbs: list[keras.callbacks.Callback] = []
    from mlnnkit.errors import UserError

    for key, sub in (
        ("early_stopping", cfg.early_stopping),
        ("checkpoint", cfg.checkpoint),
        ("reduce_lr_on_plateau", cfg.reduce_lr_on_plateau),
    ):
        if sub is not None and sub.monitor.startswith("val_") and not has_validation:
            raise UserError(
                f"callbacks.{key}.monitor = {sub.monitor!r} needs validation data: set "
                "fit.validation_split (e.g. 0.2) or fit.validation, or monitor 'loss'"
            )
    if cfg.early_stopping is not None:
        es = cfg.early_stopping
        cbs.append(
            keras.callbacks.EarlyStopping(
                monitor=es.monitor,
                patience=es.patience,
                min_delta=es.min_delta,
                mode=es.mode,
                restore_best_weights=es.restore_best_weights,
                start_from_epoch=es.start_from_epoch,
                verbose=1,
            )
        )
    if cfg.reduce_lr_on_plateau is not None:
        r = cfg.reduce_lr_on_plateau
        cbs.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor=r.monitor,
                factor=r.factor,
                patience=r.patience,
                min_delta=r.min_delta,
                min_lr=r.min_lr,
                mode=r.mode,
                verbose=1,
            )
        )
    if run_dir is not None:
        if cfg.checkpoint is not None:
            cbs.append(
                AtomicModelCheckpoint(
                    run_dir / "checkpoints" / "best.keras",
                    monitor=cfg.checkpoint.monitor,
                    mode=cfg.checkpoint.mode,
                    verbose=0,
                )
            )
        resume_dir = run_dir / RESUME_DIR
        if cfg.resume:
            resume_dir.mkdir(parents=True, exist_ok=True)
            cbs.append(ExactBackup(resume_dir / BACKUP_DIR, callbacks=cbs, config=run_config))
    return cbs


def is_resuming(run_dir: Path) -> bool:
    """True when ``run_dir`` holds the backup of an interrupted run."""
    return backup_metadata(Path(run_dir) / RESUME_DIR / BACKUP_DIR) is not None


def find_backup(callbacks) -> ExactBackup | None:
    """The :class:`ExactBackup` among ``callbacks``, if any."""
    return next((cb for cb in callbacks or [] if isinstance(cb, ExactBackup)), None)


__all__ = [
    "BACKUP_DIR", "METADATA", "RESUME_DIR", "AtomicModelCheckpoint", "ExactBackup",
    "backup_metadata", "find_backup", "is_resuming", "make_callbacks",
]
