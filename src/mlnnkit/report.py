"""Figures: training history (and, for other workflows, before/after plots)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt

from mlnnkit._atomic import atomic_path


def history_metrics(history: dict[str, list[float]]) -> list[str]:
    """Base metric names (loss first), each with an optional ``val_`` twin."""
    names = [k for k in history if not k.startswith("val_") and k not in ("epoch", "learning_rate", "lr")]
    names.sort(key=lambda k: (k != "loss", k))
    return names


def plot_history(history: dict[str, list[float]], path: str | Path, title: str = "") -> Path:
    """Plot loss and every metric, training vs validation, per epoch; write a PNG."""
    names = history_metrics(history)
    n = max(len(names), 1)
    fig, axes = plt.subplots(1, n, figsize=(4.5 * n, 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        values = history[name]
        epochs = list(range(1, len(values) + 1))
        ax.plot(epochs, values, "o-", label="training")
        if f"val_{name}" in history:
            ax.plot(epochs, history[f"val_{name}"], "s--", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return Path(path)


def _complete(study) -> list:
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def plot_optimization_history(study, path: str | Path, metric: str = "Objective Value") -> Path:
    """Optuna's optimization history (each complete trial's value and the best so far) as
    a PNG. Raises ValueError when the study has no complete trial."""
    import warnings

    import optuna

    if not _complete(study):
        raise ValueError("no complete trial yet")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ax = optuna.visualization.matplotlib.plot_optimization_history(study, target_name=metric)
    return _save_axes(ax, path)


def plot_param_importances(study, path: str | Path, metric: str = "Objective Value") -> Path:
    """Optuna's hyperparameter importances (``optuna.importance``) as a PNG. Raises
    ValueError when fewer than two complete trials differ in their values."""
    import warnings

    import optuna

    if len(_complete(study)) < 2:
        raise ValueError("importances need at least 2 complete trials")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ax = optuna.visualization.matplotlib.plot_param_importances(study, target_name=metric)
    return _save_axes(ax, path)


def _save_axes(ax, path: str | Path) -> Path:
    ax = ax.flat[0] if hasattr(ax, "flat") else ax
    fig = ax.figure
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return Path(path)
