"""Figures: training history, predicted vs true (before/after fine-tuning), confusion
matrices (transfer learning), Optuna study plots."""

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


def plot_history(
    history: dict[str, list[float]],
    path: str | Path,
    title: str = "",
    stage_starts: list[int] | None = None,
) -> Path:
    """Plot loss and every metric, training vs validation, per epoch; write a PNG.

    ``stage_starts``: epochs (1-based) where a new training stage begins (e.g. the
    fine-tuning stage of transfer learning), drawn as dotted vertical lines.
    """
    names = history_metrics(history)
    n = max(len(names), 1)
    fig, axes = plt.subplots(1, n, figsize=(4.5 * n, 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        values = history[name]
        epochs = list(range(1, len(values) + 1))
        ax.plot(epochs, values, "o-", label="training")
        if f"val_{name}" in history:
            ax.plot(epochs, history[f"val_{name}"], "s--", label="validation")
        for start in stage_starts or []:
            ax.axvline(start - 0.5, color="grey", linestyle=":")
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


def plot_predicted_vs_true(
    y_true,
    predictions: dict[str, object],
    names: list[str] | None,
    path: str | Path,
    max_rows: int = 4,
) -> Path:
    """Scatter plots of predicted vs true, one column per model (e.g. original, finetuned,
    scratch) side by side, each with the 1:1 line and its RMSE; one row per output when
    there are at most ``max_rows`` outputs, else all outputs pooled in one row.

    Example:
        >>> plot_predicted_vs_true(y, {"original": p0, "finetuned": p1}, ["chl"], "s.png")  # doctest: +SKIP
    """
    import numpy as np

    t = np.asarray(y_true, dtype="float64").reshape(len(y_true), -1)
    preds = {k: np.asarray(v, dtype="float64").reshape(len(t), -1) for k, v in predictions.items()}
    n_out = t.shape[1]
    names = list(names or [f"output {j}" for j in range(n_out)])
    rows = [[j] for j in range(n_out)] if n_out <= max_rows else [list(range(n_out))]
    labels = names if n_out <= max_rows else [f"all {n_out} outputs"]
    fig, axes = plt.subplots(
        len(rows), len(preds), figsize=(3.8 * len(preds), 3.6 * len(rows)), squeeze=False
    )
    for r, (cols, label) in enumerate(zip(rows, labels)):
        tt = t[:, cols].ravel()
        allv = np.concatenate([tt] + [p[:, cols].ravel() for p in preds.values()])
        allv = allv[np.isfinite(allv)]
        lo, hi = (float(allv.min()), float(allv.max())) if allv.size else (0.0, 1.0)
        pad = 0.03 * (hi - lo or 1.0)
        for c, (key, p) in enumerate(preds.items()):
            pp = p[:, cols].ravel()
            ax = axes[r][c]
            ax.scatter(tt, pp, s=6, alpha=0.5)
            ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=1)
            ax.set_xlim(lo - pad, hi + pad)
            ax.set_ylim(lo - pad, hi + pad)
            rmse = float(np.sqrt(np.mean((pp - tt) ** 2)))
            ax.set_title(f"{key}: {label}\nRMSE {rmse:.4g}", fontsize=9)
            ax.set_xlabel("true")
            ax.set_ylabel("predicted")
            ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return Path(path)


def plot_confusion(
    matrices: dict[str, object], class_names: list[str], path: str | Path
) -> Path:
    """Confusion matrices (rows: true class, columns: predicted), one panel per model,
    side by side, each titled with its accuracy."""
    import numpy as np

    fig, axes = plt.subplots(1, len(matrices), figsize=(4.2 * len(matrices), 4.0), squeeze=False)
    for ax, (key, m) in zip(axes[0], matrices.items()):
        m = np.asarray(m)
        acc = float(np.trace(m) / max(m.sum(), 1))
        ax.imshow(m, cmap="Blues")
        ax.set_title(f"{key}: accuracy {acc:.3f}", fontsize=9)
        ax.set_xticks(range(len(class_names)), class_names, rotation=60, fontsize=7)
        ax.set_yticks(range(len(class_names)), class_names, fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                ax.text(j, i, str(int(m[i, j])), ha="center", va="center", fontsize=6)
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
        # A study too small for its importances to differ: Optuna says so in a warning
        # (they come out equal, which the plot shows).
        warnings.filterwarnings(
            "ignore", message="Target and region quantiles", category=UserWarning
        )
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
