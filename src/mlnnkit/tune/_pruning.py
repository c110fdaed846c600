"""The Keras callback that reports a trial's validation metric to Optuna every epoch and
stops the trial when the pruner says so."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import keras

from mlnnkit.errors import UserError

if TYPE_CHECKING:
    import optuna


class PruningCallback(keras.callbacks.Callback):
    """Report ``logs[monitor]`` to ``trial`` after each epoch (step = epoch number, from 1)
    and raise ``optuna.TrialPruned`` when ``trial.should_prune()`` (never after the last
    epoch: a trial that trained to the end is complete).

    A value that is not finite (the training diverged) prunes the trial at once.

    Args:
        trial: the running ``optuna.trial.Trial``.
        monitor: a name Keras logs each epoch, e.g. ``"val_accuracy"`` (default
            ``"val_loss"``).

    Example:
        >>> cb = PruningCallback(trial, monitor="val_accuracy")          # doctest: +SKIP
        >>> mlnnkit.train.run(cfg, None, extra_callbacks=[cb])            # doctest: +SKIP
    """

    def __init__(self, trial: optuna.trial.Trial, monitor: str = "val_loss"):
        super().__init__()
        self.trial = trial
        self.monitor = monitor
        self.epochs_done = 0

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        import optuna

        logs = logs or {}
        if self.monitor not in logs:
            raise UserError(
                f"metric {self.monitor!r} is not logged by this model (logged: "
                f"{', '.join(sorted(logs))}); pass one of those as --metric"
            )
        value = float(logs[self.monitor])
        self.epochs_done = epoch + 1
        if not math.isfinite(value):
            raise optuna.TrialPruned(f"{self.monitor} is {value} after epoch {epoch + 1}")
        self.trial.report(value, step=epoch + 1)
        last = epoch + 1 >= int(self.params.get("epochs") or 0) > 0
        if not last and self.trial.should_prune():  # after the last epoch the work is done
            raise optuna.TrialPruned(
                f"pruned after epoch {epoch + 1}: {self.monitor} = {value:.4g}"
            )
