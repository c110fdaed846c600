"""What fine-tuning is judged by: held-out regression metrics and the verdict sentence."""

from __future__ import annotations

import numpy as np

__all__ = ["regression_metrics", "verdict"]


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
