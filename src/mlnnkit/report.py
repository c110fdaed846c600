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
