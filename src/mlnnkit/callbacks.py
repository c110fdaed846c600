"""Config -> Keras callbacks (early stopping, best-model checkpoint, reduce-on-plateau,
resume after interruption) and the run's epoch log.

All are Keras's own callbacks; the only additions are that the best-model checkpoint is
written under a temporary name and renamed (a kill mid-save never leaves a broken
``best.keras``), and that a resumed run keeps the history of the epochs before the kill.
"""

from __future__ import annotations

import os
from pathlib import Path

import keras

from mlnnkit.config import CallbacksConfig

RESUME_DIR = ".resume"
EPOCH_LOG = "epochs.csv"


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


def make_callbacks(cfg: CallbacksConfig, run_dir: Path | None, *, has_validation: bool):
    """The run's callbacks, in a fixed order. Without a run directory, no file callbacks."""
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
            # The epoch log survives a kill, so a resumed run reports its whole history.
            cbs.append(keras.callbacks.CSVLogger(str(resume_dir / EPOCH_LOG), append=True))
            cbs.append(keras.callbacks.BackupAndRestore(str(resume_dir / "backup")))
    return cbs


def is_resuming(run_dir: Path) -> bool:
    """True when ``run_dir`` holds the backup of an interrupted run."""
    return (run_dir / RESUME_DIR / "backup" / "training_metadata.json").exists()
