"""What fine-tuning is judged by: held-out regression metrics, for positive quantities the
ratio metrics of ocean-colour validation (Seegers et al. 2018, Morley et al. 2018), and the
verdict sentence."""

from __future__ import annotations

import numpy as np

__all__ = [
    "OCEAN_COLOUR_METRICS",
    "ocean_colour_metrics",
    "positive_outputs",
    "regression_metrics",
    "verdict",
]


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
    if "mdsa" in report["original"]:
        m0, m1 = report["original"]["mdsa"], report["finetuned"]["mdsa"]
        text += f"; held-out MdSA {m0:.3g}% -> {m1:.3g}%"
        if "scratch" in report:
            text += f" (scratch {report['scratch']['mdsa']:.3g}%)"
    return text


#: What the ocean-colour metrics are, for report.json.
OCEAN_COLOUR_METRICS = {
    "mult_bias": "10**mean(log10(p/t)): multiplicative bias (1 = none; Seegers et al. 2018)",
    "mult_error": "10**mean|log10(p/t)|: multiplicative error (1 = none; Seegers et al. 2018)",
    "mape": "100*mean(|p - t|/t), per cent",
    "mdsa": "100*(10**median|log10(p/t)| - 1): median symmetric accuracy, per cent "
    "(Morley et al. 2018)",
    "sspb": "100*sign(m)*(10**|m| - 1), m = median(log10(p/t)): symmetric signed "
    "percentage bias, per cent (Morley et al. 2018)",
}


def ocean_colour_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """The ratio metrics ocean-colour validation uses, for positive quantities.

    With ``r = log10(p / t)`` over every value where both are positive:
    ``mult_bias = 10**mean(r)``, ``mult_error = 10**mean|r|`` (Seegers et al. 2018),
    ``mape = 100 * mean(|p - t| / t)``, ``mdsa = 100 * (10**median|r| - 1)`` and
    ``sspb = 100 * sign(median r) * (10**|median r| - 1)`` (Morley et al. 2018), plus
    ``n_ratio`` (the values used) and ``n_nonpositive`` (those left out).

    Example:
        >>> m = ocean_colour_metrics(np.array([1.0, 2.0, 4.0]), np.array([2.0, 2.0, 2.0]))
        >>> round(m["mdsa"], 6), round(m["mult_bias"], 6)
        (100.0, 1.0)
    """
    t = np.asarray(y_true, dtype="float64").reshape(-1)
    p = np.asarray(y_pred, dtype="float64").reshape(-1)
    ok = np.isfinite(t) & np.isfinite(p) & (t > 0) & (p > 0)
    if not ok.any():
        nan = float("nan")
        return {k: nan for k in OCEAN_COLOUR_METRICS} | {"n_ratio": 0, "n_nonpositive": int(t.size)}
    r = np.log10(p[ok] / t[ok])
    med = float(np.median(r))
    return {
        "mult_bias": float(10 ** np.mean(r)),
        "mult_error": float(10 ** np.mean(np.abs(r))),
        "mape": float(100 * np.mean(np.abs(p[ok] - t[ok]) / t[ok])),
        "mdsa": float(100 * (10 ** np.median(np.abs(r)) - 1)),
        "sspb": float(100 * np.sign(med) * (10 ** abs(med) - 1)),
        "n_ratio": int(ok.sum()),
        "n_nonpositive": int((~ok).sum()),
    }


def positive_outputs(y_true: np.ndarray) -> list[int]:
    """The outputs whose targets are all positive: the ones the ratio metrics apply to."""
    y = np.asarray(y_true, dtype="float64").reshape(len(y_true), -1)
    return [j for j in range(y.shape[1]) if np.all(y[:, j] > 0)]
